"""The explorer web app's JSON API, through Flask's test client, with the real tracer and energy model."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from pytest_irene.engine.architectures import ARCHITECTURES
from pytest_irene.explorer.app import ServerConfig, create_app
from pytest_irene.engine.predict.profiles import bundled_profiles

FACTORY_SRC = '''
from transformers import BertConfig, BertModel

def tiny_bert():
    cfg = BertConfig(num_hidden_layers=2, hidden_size=64, num_attention_heads=2,
                     intermediate_size=128, vocab_size=128, max_position_embeddings=512,
                     attn_implementation="eager")
    return BertModel(cfg)

def not_a_model():
    return 42
'''


@pytest.fixture(scope="module")
def factory_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("factories") / "tiny_models.py"
    path.write_text(FACTORY_SRC)
    return path


@pytest.fixture(scope="module")
def client(factory_file: Path):
    app = create_app(
        ServerConfig(
            allowed_modules=(f"{factory_file}:tiny_bert", f"{factory_file}:not_a_model"),
            max_batch_size=32,
            max_seq_len=256,
            max_sweep_points=6,
            cache_size=8,
        )
    )
    app.testing = True
    return app.test_client()


def test_models_lists_bundled_architectures_and_allowed_factories(client, factory_file: Path) -> None:
    body = client.get("/api/models").get_json()
    names = [m["name"] for m in body["models"]]
    assert names[: len(ARCHITECTURES)] == list(ARCHITECTURES)
    assert f"{factory_file}:tiny_bert" in names
    assert {m["kind"] for m in body["models"]} == {"bundled", "factory"}


def test_profiles(client) -> None:
    body = client.get("/api/profiles").get_json()
    assert body["profiles"] == list(bundled_profiles())
    assert body["default"] in body["profiles"]


def test_energy_returns_the_whole_predicted_tree(client) -> None:
    profile = bundled_profiles()[0]
    resp = client.get(f"/api/energy?model=bert-base-uncased&batch_size=2&seq_len=16&profile={profile}")
    assert resp.status_code == 200, resp.get_json()
    view = resp.get_json()
    root = view["tree"]["root"]
    assert root["type"] == "BertModel" and view["model_name"] == "bert-base-uncased"
    assert (view["batch_size"], view["seq_len"], view["profile"]) == (2, 16, profile)

    def walk(node):
        yield node
        for c in node["children"]:
            yield from walk(c)

    nodes = list(walk(root))
    assert len(nodes) > 100, "every module and operation of BERT-base is in the tree"
    assert all(n["predicted_energy_j"] is not None and n["predicted_energy_j"] >= 0 for n in nodes)
    assert view["total_j"] == pytest.approx(root["predicted_energy_j"]) and view["total_j"] > 0
    assert any(n["scope"] == "encoder.layer.11.attention.self.query" for n in nodes)
    ops = view["operations"]
    assert len(ops) == sum(1 for n in nodes if n["level"] == "ml")
    assert [o["energy_j"] for o in ops] == sorted((o["energy_j"] for o in ops), reverse=True)
    assert {row[0] for row in view["breakdown"]["module"]} >= {"BertLayer", "BertSelfAttention"}


def test_energy_is_cached(client) -> None:
    explorer = client.application.extensions["irene_explorer"]
    url = "/api/energy?model=distilbert-base-uncased&batch_size=8&seq_len=32"
    first = client.get(url)
    assert first.status_code == 200 and first.headers["X-Irene-Cache"] == "miss"
    hits = explorer.cache.hits
    second = client.get(url)
    assert second.headers["X-Irene-Cache"] == "hit" and explorer.cache.hits == hits + 1
    assert second.get_json() == first.get_json()
    other = client.get("/api/energy?model=distilbert-base-uncased&batch_size=8&seq_len=128")
    assert other.headers["X-Irene-Cache"] == "miss"
    assert other.get_json()["total_j"] > first.get_json()["total_j"], "longer sequences cost more"


def test_allowed_factory_model(client, factory_file: Path) -> None:
    resp = client.get(f"/api/energy?model={factory_file}:tiny_bert&batch_size=2&seq_len=8")
    assert resp.status_code == 200, resp.get_json()
    view = resp.get_json()
    assert view["title"] == f"{factory_file}:tiny_bert"
    assert len(view["tree"]["root"]["children"]) >= 2


@pytest.mark.parametrize(
    ("query", "parameter"),
    [
        ("batch_size=2&seq_len=8", "model"),
        ("model=no-such-model&batch_size=2&seq_len=8", "model"),
        ("model=os:system&batch_size=2&seq_len=8", "model"),
        ("model=bert-base-uncased&batch_size=two&seq_len=8", "batch_size"),
        ("model=bert-base-uncased&batch_size=0&seq_len=8", "batch_size"),
        ("model=bert-base-uncased&batch_size=33&seq_len=8", "batch_size"),
        ("model=bert-base-uncased&batch_size=2", "seq_len"),
        ("model=bert-base-uncased&batch_size=2&seq_len=100000", "seq_len"),
        ("model=bert-base-uncased&batch_size=2&seq_len=8&profile=../../etc/passwd", "profile"),
        ("model=bert-base-uncased&batchsize=2&seq_len=8", "batchsize"),
    ],
)
def test_bad_parameters_get_400_naming_the_parameter(client, query: str, parameter: str) -> None:
    resp = client.get(f"/api/energy?{query}")
    assert resp.status_code == 400
    body = resp.get_json()
    assert body["parameter"] == parameter
    assert parameter in body["error"]


def test_limits_are_enforced_before_any_work(client) -> None:
    explorer = client.application.extensions["irene_explorer"]
    before = (explorer.cache.hits, explorer.cache.misses)
    resp = client.get("/api/energy?model=gpt2&batch_size=1000000&seq_len=1000000")
    assert resp.status_code == 400 and "server limit" in resp.get_json()["error"]
    assert (explorer.cache.hits, explorer.cache.misses) == before


def test_factory_returning_no_module_is_an_error_not_a_crash(client, factory_file: Path) -> None:
    resp = client.get(f"/api/energy?model={factory_file}:not_a_model&batch_size=1&seq_len=4")
    assert resp.status_code == 422
    assert "torch.nn.Module" in resp.get_json()["error"]


def test_sweep_api(client) -> None:
    resp = client.get("/api/sweep?model=distilgpt2&batch_sizes=1,2&seq_lens=8,16")
    assert resp.status_code == 200, resp.get_json()
    sweep = resp.get_json()
    assert sweep["models"] == ["distilgpt2"] and sweep["batch_sizes"] == [1, 2] and sweep["seq_lens"] == [8, 16]
    assert len(sweep["points"]) == 4
    for p in sweep["points"]:
        assert sum(p["parts"].values()) == pytest.approx(p["operations_j"])
        assert set(p["parts"]) <= set(sweep["part_types"])
    totals = {(p["batch_size"], p["seq_len"]): p["total_j"] for p in sweep["points"]}
    assert totals[(2, 16)] > totals[(1, 8)]


@pytest.mark.parametrize(
    ("query", "parameter"),
    [
        ("batch_sizes=1&seq_lens=8", "model"),
        ("model=gpt2&batch_sizes=1,x&seq_lens=8", "batch_sizes"),
        ("model=gpt2&batch_sizes=1&seq_lens=8,9999", "seq_lens"),
        ("model=gpt2&model=distilgpt2&batch_sizes=1,2&seq_lens=8,16", "seq_lens"),  # 8 > 6 points
    ],
)
def test_sweep_bad_parameters(client, query: str, parameter: str) -> None:
    resp = client.get(f"/api/sweep?{query}")
    assert resp.status_code == 400
    assert resp.get_json()["parameter"] == parameter


def test_page_and_unknown_paths(client) -> None:
    page = client.get("/")
    assert page.status_code == 200 and b'"kind":"app"' in page.data
    assert not re.search(rb"""(src|href)\s*=\s*["']?\s*(https?:)?//""", page.data, re.I)
    missing = client.get("/api/nothing")
    assert missing.status_code == 404 and "error" in missing.get_json()


def test_serve_refuses_an_unknown_profile_before_listening(tmp_path: Path) -> None:
    import argparse

    from pytest_irene.cli import serve
    from pytest_irene.errors import IreneError

    parser = argparse.ArgumentParser(prog="irene")
    serve.register(parser.add_subparsers())
    args = parser.parse_args(["serve", "--port", "0", "--profile", str(tmp_path / "missing.json")])
    with pytest.raises(IreneError, match="missing.json"):
        args.func(args)


def test_a_model_file_as_default_profile_is_listed(tmp_path: Path) -> None:
    from pytest_irene.engine.predict.profiles import resolve_profile

    path = str(resolve_profile(bundled_profiles()[0]))
    app = create_app(ServerConfig(default_profile=path))
    body = app.test_client().get("/api/profiles").get_json()
    assert body["default"] == path and body["profiles"][0] == path


def test_irene_serve_serves_the_api(tmp_path: Path) -> None:
    """The real console entry point: start ``irene serve --port 0``, ask the API, stop it."""
    import json
    import subprocess
    import sys
    import urllib.request

    root = Path(__file__).resolve().parents[1]
    proc = subprocess.Popen(
        [sys.executable, "-m", "pytest_irene.cli", "serve", "--port", "0", "--max-batch-size", "4"],
        cwd=root, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        line = proc.stdout.readline()
        match = re.search(r"http://127\.0\.0\.1:(\d+)/", line)
        assert match, (line, proc.stderr.read() if proc.poll() is not None else "")
        base = f"http://127.0.0.1:{match.group(1)}"
        with urllib.request.urlopen(base + "/api/models", timeout=30) as resp:
            assert "gpt2" in [m["name"] for m in json.load(resp)["models"]]
        try:
            urllib.request.urlopen(base + "/api/energy?model=gpt2&batch_size=5&seq_len=8", timeout=30)
            raise AssertionError("the limit was not applied")
        except urllib.error.HTTPError as exc:
            assert exc.code == 400 and json.load(exc)["parameter"] == "batch_size"
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        proc.stdout.close()
        proc.stderr.close()


# -- issue 11: compact variants are capped; one slow request does not hold the others up -------------


@pytest.mark.parametrize(
    ("model", "needle"),
    [
        ("bert-base-uncased[L=2000,H=64]", "L (layers) must be at most 48"),
        ("bert-base-uncased[L=0,H=64]", "L (layers) must be at least 1"),
        ("bert-base-uncased[L=-1,H=64]", "L (layers) must be at least 1"),
        ("bert-base-uncased[L=2,H=0]", "H (hidden size) must be a positive multiple of 64"),
        ("bert-base-uncased[L=2,H=-64]", "H (hidden size) must be a positive multiple of 64"),
        ("bert-base-uncased[L=2,H=100]", "H (hidden size) must be a positive multiple of 64"),
        ("bert-base-uncased[L=2,H=65536]", "H (hidden size) must be at most 2048 (32 heads"),
        ("bert-base-uncased[L=2,H=64,X=1]", "expected ARCH[L=<layers>,H=<hidden>]"),
    ],
)
def test_compact_variant_bounds_get_400_naming_the_parameter(client, model: str, needle: str) -> None:
    explorer = client.application.extensions["irene_explorer"]
    before = explorer.cache.misses
    resp = client.get("/api/energy", query_string={"model": model, "batch_size": 1, "seq_len": 8})
    assert resp.status_code == 400, resp.get_json()
    body = resp.get_json()
    assert body["parameter"] == "model" and needle in body["error"]
    assert explorer.cache.misses == before  # refused before any work


def _gated_server(max_concurrent: int, busy_timeout_s: float = 30.0):
    """A server whose predictions of one model wait on a gate (the real tracer for the others)."""
    import threading

    from pytest_irene.explorer.models import predict_tree

    started, gate = threading.Event(), threading.Event()

    def predict(spec, batch_size, seq_len, profile):
        if spec.name == "bert-base-uncased[L=2,H=128]":
            started.set()
            assert gate.wait(20), "the slow request was never released"
        return predict_tree(spec, batch_size, seq_len, profile)

    app = create_app(ServerConfig(predict=predict, max_concurrent=max_concurrent, busy_timeout_s=busy_timeout_s))
    return app, started, gate


def test_one_slow_request_does_not_hold_the_others_up() -> None:
    import threading

    app, started, gate = _gated_server(max_concurrent=2)
    slow: dict = {}
    worker = threading.Thread(
        target=lambda: slow.update(resp=app.test_client().get(
            "/api/energy?model=bert-base-uncased[L=2,H=128]&batch_size=1&seq_len=8"))
    )
    worker.start()
    try:
        assert started.wait(20)
        fast = app.test_client().get("/api/energy?model=distilbert-base-uncased&batch_size=1&seq_len=8")
        assert fast.status_code == 200 and "resp" not in slow  # answered while the slow one still runs
    finally:
        gate.set()
        worker.join(30)
    assert slow["resp"].status_code == 200


def test_a_request_that_finds_every_slot_taken_gets_503() -> None:
    import threading

    app, started, gate = _gated_server(max_concurrent=1, busy_timeout_s=0.2)
    worker = threading.Thread(
        target=lambda: app.test_client().get("/api/energy?model=bert-base-uncased[L=2,H=128]&batch_size=1&seq_len=8")
    )
    worker.start()
    try:
        assert started.wait(20)
        busy = app.test_client().get("/api/energy?model=distilbert-base-uncased&batch_size=1&seq_len=8")
        assert busy.status_code == 503 and "busy" in busy.get_json()["error"]
    finally:
        gate.set()
        worker.join(30)


def test_no_other_tree_waits_behind_a_slow_one() -> None:
    """Each tree has its own lock: a slow tree never holds up another, whatever the keys hash to."""
    import threading

    from pytest_irene.explorer.models import predict_tree, resolve_model

    started, gate, computed = threading.Event(), threading.Event(), []
    quick = predict_tree(resolve_model("distilbert-base-uncased"), 1, 8, "irene-pc1")

    def predict(spec, batch_size, seq_len, profile):
        computed.append(batch_size)
        if batch_size == 1:
            started.set()
            assert gate.wait(20), "the slow request was never released"
        return quick

    app = create_app(ServerConfig(predict=predict, max_concurrent=2, busy_timeout_s=5))
    url = "/api/energy?model=distilbert-base-uncased&seq_len=8&batch_size="
    worker = threading.Thread(target=lambda: app.test_client().get(url + "1"))
    worker.start()
    try:
        assert started.wait(20)
        # far more trees than the 64 hashed locks the explorer once shared between keys
        statuses = {b: app.test_client().get(url + str(b)).status_code for b in range(2, 202)}
        assert set(statuses.values()) == {200} and worker.is_alive()
    finally:
        gate.set()
        worker.join(30)
    assert sorted(computed) == list(range(1, 202))
    assert app.extensions["irene_explorer"]._key_locks == {}  # no lock outlives its requests


def test_concurrent_requests_for_one_tree_compute_it_once() -> None:
    import threading

    from pytest_irene.explorer.models import predict_tree

    started, gate, computed = threading.Event(), threading.Event(), []

    def predict(spec, batch_size, seq_len, profile):
        computed.append(spec)
        started.set()
        assert gate.wait(20), "the first request was never released"
        return predict_tree(spec, batch_size, seq_len, profile)

    app = create_app(ServerConfig(predict=predict, max_concurrent=4))
    url = "/api/energy?model=distilbert-base-uncased&batch_size=1&seq_len=8"
    responses: list = []
    workers = [threading.Thread(target=lambda: responses.append(app.test_client().get(url))) for _ in range(4)]
    workers[0].start()
    assert started.wait(20)
    for w in workers[1:]:
        w.start()
    gate.set()
    for w in workers:
        w.join(30)
    assert [r.status_code for r in responses] == [200] * 4 and len(computed) == 1
    assert sorted(r.headers["X-Irene-Cache"] for r in responses) == ["hit", "hit", "hit", "miss"]


# -- user sweep: every error is JSON, parameters are taken once and echoed as sent -----------------


def test_a_wrong_method_gets_a_json_405(client) -> None:
    resp = client.post("/api/energy?model=gpt2&batch_size=1&seq_len=8")
    assert resp.status_code == 405 and resp.is_json
    assert resp.get_json()["error"].startswith("POST is not allowed on /api/energy (allowed: GET")
    assert "GET" in resp.headers["Allow"]


@pytest.mark.parametrize(
    ("endpoint", "query", "parameter"),
    [
        ("energy", "model=gpt2&model=distilgpt2&batch_size=1&seq_len=8", "model"),
        ("energy", "model=gpt2&batch_size=1&batch_size=2&seq_len=8", "batch_size"),
        ("sweep", "model=gpt2&batch_sizes=1&batch_sizes=2&seq_lens=8", "batch_sizes"),
    ],
)
def test_a_repeated_parameter_is_refused_not_half_read(client, endpoint: str, query: str, parameter: str) -> None:
    resp = client.get(f"/api/{endpoint}?{query}")
    assert resp.status_code == 400
    assert resp.get_json() == {"error": f"{parameter}: given 2 times; give it once", "parameter": parameter}


def test_a_non_ascii_digit_is_refused_and_echoed_as_sent() -> None:
    """curl sends ``batch_size=８`` unescaped: werkzeug's server re-encoded it to latin-1 mojibake."""
    import json
    import socket
    import threading

    from pytest_irene.cli.serve import make_explorer_server

    server = make_explorer_server("127.0.0.1", 0, create_app(ServerConfig()))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with socket.create_connection(("127.0.0.1", server.server_port), timeout=30) as conn:
            conn.sendall("GET /api/energy?model=gpt2&batch_size=８&seq_len=8 HTTP/1.0\r\n\r\n".encode())
            data = b""
            while chunk := conn.recv(65536):
                data += chunk
    finally:
        server.shutdown()
        server.server_close()
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400")
    assert json.loads(body) == {"error": "batch_size: expected an integer, got '８'", "parameter": "batch_size"}


def test_serve_names_a_host_it_cannot_listen_on(capsys) -> None:
    from pytest_irene.cli import main

    assert main(["serve", "--host", "256.1.1.1", "--port", "0"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("irene serve: error: --host: '256.1.1.1' is not an address or a host name")
    assert len(err.strip().splitlines()) == 1


def test_a_model_file_profile_answers_to_its_stored_name(tmp_path: Path) -> None:
    import json

    from pytest_irene.engine.predict.profiles import resolve_profile

    data = json.loads(Path(resolve_profile(bundled_profiles()[0])).read_text())
    data["profile"] = "rig"
    path = tmp_path / "rig.json"
    path.write_text(json.dumps(data))
    client = create_app(ServerConfig(default_profile=str(path))).test_client()
    for name in (str(path), "rig"):
        resp = client.get(f"/api/energy?model=distilgpt2&batch_size=1&seq_len=8&profile={name}")
        assert resp.status_code == 200, resp.get_json()
        assert resp.get_json()["profile"] == str(path)
    resp = client.get("/api/energy?model=distilgpt2&batch_size=1&seq_len=8&profile=rag")
    assert resp.status_code == 400 and resp.get_json()["parameter"] == "profile"


def test_a_usage_error_from_tracing_is_a_400_and_a_broken_factory_a_422(monkeypatch, tmp_path: Path) -> None:
    """A size the model refuses (a sequence past its position table) is the request's fault."""
    from pytest_irene.errors import UsageError

    broken = tmp_path / "broken_factory.py"
    broken.write_text("raise RuntimeError('cannot reach the model hub')\n")
    client = create_app(ServerConfig(allowed_modules=(f"{broken}:make",))).test_client()
    resp = client.get(f"/api/energy?model={broken}:make&batch_size=1&seq_len=8")
    assert resp.status_code == 422
    assert f"cannot import {broken}: RuntimeError at {broken}:1: cannot reach the model hub" in resp.get_json()["error"]

    long = create_app(ServerConfig(max_seq_len=4096)).test_client()  # the server's cap is not the model's
    resp = long.get("/api/energy?model=distilgpt2&batch_size=1&seq_len=2000")
    assert resp.status_code == 400 and "position table holds 1024" in resp.get_json()["error"]

    def refuse(*args, **kwargs):
        raise UsageError("trace: seq_len 600 exceeds the 512 positions of this model")

    monkeypatch.setattr("pytest_irene.engine.tracing.trace", refuse)
    resp = client.get("/api/energy?model=distilgpt2&batch_size=1&seq_len=600")
    assert resp.status_code == 400
    assert resp.get_json() == {
        "error": "distilgpt2 at batch size 1, sequence length 600: trace: seq_len 600 exceeds the 512 positions of this model"
    }


def test_models_lists_the_extra_bundled_architectures(client) -> None:
    from pytest_irene.engine.architectures import EXTRA_ARCHITECTURES

    names = [m["name"] for m in client.get("/api/models").get_json()["models"]]
    assert set(EXTRA_ARCHITECTURES) <= set(names)


def test_a_server_configuration_of_the_wrong_types_is_refused_when_the_app_is_made() -> None:
    """``"16"`` as a limit made every request a 500; one factory as a string allowed its characters."""
    from pytest_irene.errors import IreneError

    for values, message in (
        ({"allowed_modules": "pkg.mod:make"}, "'allowed_modules': expected a list of 'module:factory' strings"),
        ({"max_batch_size": "16"}, "'max_batch_size': expected an integer >= 1, got '16'"),
        ({"max_concurrent": 0}, "'max_concurrent': expected an integer >= 1, got 0"),
        ({"busy_timeout_s": float("nan")}, "'busy_timeout_s': expected seconds > 0"),
        ({"nope": 1}, "unknown server configuration keys ['nope']"),
    ):
        with pytest.raises(IreneError, match=re.escape(message)):
            create_app(values)
    assert create_app({"allowed_modules": ["pkg.mod:make"], "cache_size": 0}) is not None
