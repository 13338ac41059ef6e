"""Regressions found by a new-user sweep of the explorer: what the page says matches the
terminal, extrapolated points are marked, bad model names and hosts are refused early.

Fast: fake trees and the Flask test client; the real tracer only for the compact-variant
refusals (which must happen before any tracing)."""

from __future__ import annotations

import json
import math
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from pytest_irene.cli.serve import is_loopback, listen_host, server_url
from pytest_irene.report.tree_report import format_share
from pytest_irene.compare.comparison import Comparison, Rename
from pytest_irene.compare.records import CallRecord
from pytest_irene.engine.tree import EnergyNode, EnergyTree
from pytest_irene.errors import UsageError
from pytest_irene.explorer.html import render_report
from pytest_irene.explorer.models import resolve_model
from pytest_irene.explorer.params import ParameterError
from pytest_irene.explorer.payload import call_view
from pytest_irene.explorer.sweep import Sweep, point_from_tree
from pytest_irene.plugin.html_report import view_name
from pytest_irene.units import format_change, format_energy

STATIC = Path(__file__).resolve().parents[1] / "pytest_irene" / "explorer" / "static"


def tree(total_j: float = 1.0, *, extrapolation: list[str] | None = None, generation: bool = False) -> EnergyTree:
    root_type = "Generation" if generation else "Tiny"
    root = EnergyNode("", root_type, "model", {"flops": 3.0}, predicted_energy_j=total_j)
    root.add_child(EnergyNode("fc", "Linear", "ml", {"flops": 2.0}, predicted_energy_j=0.7 * total_j))
    out = EnergyTree(root, model_name="tiny", batch_size=2, seq_len=4)
    if extrapolation:
        out.meta["extrapolation"] = list(extrapolation)
    if generation:
        out.meta["new_tokens"] = 8
    return out


def data_of(page: str) -> dict:
    return json.loads(re.search(r'id="irene-data">(.*?)</script>', page, re.S).group(1))


def record(comparison: Comparison, **kw) -> CallRecord:
    return CallRecord("t.py::test_x", "default", tree(), "irene-pc1", "model", comparison, **kw)


# -- the badge and the summary agree with the terminal ---------------------------------------


def test_a_call_over_budget_is_badged_fail_not_pass() -> None:
    """The comparison passed but the budget failed the test: the terminal says FAILED."""
    view = call_view(tree(), record(Comparison("pass", "every module within 5.0%"), budget_j=0.001, over_budget=True))
    assert view["status"] == "pass" and view["failed"] is True
    assert view["verdict"] == "fail"


def test_a_cheaper_call_is_badged_cheaper_and_lists_its_modules() -> None:
    view = call_view(tree(), record(Comparison("pass", "cheaper", cheaper=("fc",))))
    assert view["verdict"] == "cheaper" and view["cheaper"] == ["fc"]
    assert call_view(tree(), record(Comparison("new", "no baseline yet")))["verdict"] == "new"
    assert call_view(tree())["verdict"] is None  # outside pytest: no badge


def test_renames_reach_the_page() -> None:
    rename = Rename("mlp", "ffn", "Sequential", 0.0123)
    view = call_view(tree(), record(Comparison("pass", "renamed", renames=(rename,))))
    assert view["renames"] == [rename.to_dict()]


def test_a_generation_says_per_generation_not_per_forward_pass() -> None:
    """A generation tree read back from a run file has only ``meta["new_tokens"]``."""
    assert call_view(tree(generation=True))["new_tokens"] == 8
    assert call_view(tree())["new_tokens"] is None


def test_the_report_carries_the_sessions_total_as_the_terminal_sums_it() -> None:
    data = data_of(render_report([tree(1.0), tree(0.25)]))
    assert data["total_j"] == pytest.approx(1.25)


# -- numbers formatted as the terminal formats them -------------------------------------------

ENERGIES_J = [0.0, 1e-9, 3.2e-7, 9.99949e-7, 1.23456e-5, 0.001, 0.00099996, 0.0123, 0.2689941121898043,
              0.3049046, 0.99996, 1.0, 1.5, 12.3456, 999.96, 1234.5, 3.6e6, 7.2e9, -0.0042, 2.5e-12]
CHANGES = [0.045, -0.1234, 0.0, -0.0004, 0.40499, 2.5, 0.0025, -0.0025, 0.0075, 0.0125]  # ties: half to even


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed (the browser tests cover the page)")
def test_js_formats_energies_shares_and_changes_exactly_as_the_terminal() -> None:
    """The page said ``1.000 mJ``, ``8.90 %`` and ``+4.5 %`` where the terminal said ``1 mJ``,
    ``8.9%`` and ``+4.5%``; the JS now mirrors :func:`format_energy`/``format_share``/:func:`format_change`."""
    script = (STATIC / "format.js").read_text() + (
        "\nconsole.log(JSON.stringify({j: %s.map(globalThis.Irene.fmtJ), c: %s.map(globalThis.Irene.fmtChange),"
        " s: [0.089, 0.19, 1, 0.0004, 0.0025, 0.0075].map(globalThis.Irene.fmtPct)}));" % (json.dumps(ENERGIES_J), json.dumps(CHANGES))
    )
    out = json.loads(subprocess.run(["node", "-e", script], capture_output=True, text=True, check=True).stdout)
    assert out["j"] == [format_energy(j) for j in ENERGIES_J]
    assert out["c"] == [format_change(c) for c in CHANGES]
    assert out["s"] == ["8.9%", "19.0%", "100.0%", "0.0%", "0.2%", "0.8%"] == [
        format_share(s) for s in (0.089, 0.19, 1, 0.0004, 0.0025, 0.0075)]


# -- sweeps mark extrapolated points ----------------------------------------------------------


def test_sweep_points_carry_why_they_extrapolate_into_json_and_csv() -> None:
    inside, outside = tree(1.0), tree(2.0, extrapolation=["batch 2 outside the trained 8-32", "types never trained: X"])
    sweep = Sweep("irene-pc1", ["tiny"], [2], [4], [point_from_tree("a", inside), point_from_tree("b", outside)])
    points = sweep.to_dict()["points"]
    assert [p["extrapolation"] for p in points] == [[], ["batch 2 outside the trained 8-32", "types never trained: X"]]
    rows = sweep.to_csv().splitlines()
    assert rows[0].split(",")[-1] == "extrapolation"
    assert rows[1].endswith(",") and rows[2].endswith("batch 2 outside the trained 8-32; types never trained: X")
    assert math.isclose(float(rows[2].split(",")[4]), 2.0)


# -- compact variants: refused before any work, strictly parsed -------------------------------


@pytest.mark.parametrize("name", ["gpt2[L=2,H=128]", "distilbert-base-uncased[L=2,H=128]", "llama-1b-style[L=2,H=128]"])
def test_a_compact_variant_of_a_non_bert_architecture_is_a_400_naming_the_ones_that_work(name: str) -> None:
    """It was a 422 "GPT2Config has no field 'intermediate_size'" or a failed trace (Llama)."""
    with pytest.raises(ParameterError) as info:
        resolve_model(name)
    assert info.value.parameter == "model"
    assert "has no compact variants" in str(info.value) and "bert-base-uncased, roberta-base" in str(info.value)


@pytest.mark.parametrize("name", ["bert-base-uncased[L=１,H=64]", "bert-base-uncased[L=1_0,H=64]",
                                  "bert-base-uncased[L=1,H=64,L=2]", "bert-base-uncased[L=2]"])
def test_compact_values_are_ascii_integers_given_once(name: str) -> None:
    """``L=1,H=64,L=2`` silently built L=2; ``１`` and ``1_0`` were taken by ``int()``."""
    with pytest.raises(ParameterError, match="each once, as integers"):
        resolve_model(name)
    assert resolve_model("bert-base-uncased[ L = 2 , H = 128 ]").name == "bert-base-uncased[L=2,H=128]"


def test_the_api_refuses_a_gpt2_compact_variant_with_400() -> None:
    from pytest_irene.explorer.app import ServerConfig, create_app

    def predict(*args):  # pragma: no cover - must not be reached
        raise AssertionError("refused before any prediction")

    client = create_app(ServerConfig(predict=predict)).test_client()
    resp = client.get("/api/energy", query_string={"model": "gpt2[L=2,H=128]", "batch_size": 1, "seq_len": 8})
    assert resp.status_code == 400 and resp.get_json()["parameter"] == "model"


def test_sweep_cli_refuses_compact_gpt2_and_a_bad_profile_before_any_point(capsys: pytest.CaptureFixture[str]) -> None:
    from pytest_irene.cli import main

    assert main(["sweep", "--model", "gpt2", "--layers", "2", "--hidden", "128", "--batch-sizes", "8", "--seq-lens", "32"]) == 2
    assert "--model: gpt2 has no compact variants" in capsys.readouterr().err
    assert main(["sweep", "--model", "gpt2", "--batch-sizes", "8", "--seq-lens", "32", "--profile", "nope"]) == 2
    err = capsys.readouterr().err
    assert "unknown energy model 'nope'" in err and "sweep " not in err.split("error:")[0], "no progress bar first"


# -- irene serve --host ------------------------------------------------------------------------


def test_serve_prints_a_usable_url_for_ipv6_and_refuses_an_empty_host() -> None:
    assert server_url("::1", 8000) == "http://[::1]:8000/"  # was http://::1:8000/
    assert server_url("127.0.0.1", 8000) == "http://127.0.0.1:8000/"
    assert listen_host("[::1]") == "::1"
    with pytest.raises(UsageError, match="--host: empty"):
        listen_host("")  # was "listening on :" and the URL http://:PORT/


def test_only_non_loopback_hosts_get_the_no_authentication_warning() -> None:
    assert all(is_loopback(h) for h in ("127.0.0.1", "127.0.0.2", "::1", "localhost"))
    assert not any(is_loopback(h) for h in ("0.0.0.0", "::", "192.168.1.2", "example.org"))


# -- pytest-html views --------------------------------------------------------------------------


def test_explorer_views_of_different_tests_never_share_a_file() -> None:
    """``test_x[a b]`` and ``test_x[a/b]`` both became ``t.py_test_x_a_b.html``: one link showed the other's calls."""
    ids = ["t.py::test_x[a b]", "t.py::test_x[a/b]", "t.py::test_x[héllo]", "t.py::test_x[hüllo]",
           "t.py::test_" + "y" * 200 + "[1]", "t.py::test_" + "y" * 200 + "[2]"]
    names = [view_name(i) for i in ids]
    assert len(set(names)) == len(ids)
    assert all(re.fullmatch(r"[A-Za-z0-9._-]+\.html", n) and len(n) < 170 for n in names)
    assert view_name(ids[0]) == view_name(ids[0]), "the same in every xdist worker"


def test_every_response_says_nosniff_and_refuses_framing() -> None:
    """An error echoes the request (``unknown model '<script>...'``): it must never be sniffed as HTML."""
    from pytest_irene.explorer.app import create_app

    client = create_app().test_client()
    for url in ("/", "/api/energy?model=%3Cscript%3Ealert(1)%3C/script%3E&batch_size=1&seq_len=8", "/nope"):
        resp = client.get(url)
        assert resp.headers["X-Content-Type-Options"] == "nosniff", url
        assert resp.headers["X-Frame-Options"] == "DENY", url
    assert resp.content_type == "application/json"


def test_models_say_which_architectures_have_compact_variants() -> None:
    """The page enables its L/H fields from this (tests/test_browser.py drives them)."""
    from pytest_irene.explorer.app import create_app

    models = {m["name"]: m for m in create_app().test_client().get("/api/models").get_json()["models"]}
    assert models["bert-base-uncased"]["compact"] is True and models["roberta-base"]["compact"] is True
    assert models["gpt2"]["compact"] is False and models["llama-1b-style"]["compact"] is False
