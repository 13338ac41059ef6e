"""The ``irene`` commands of the energy engine: train, predict, crossvalidate, evaluate."""

from __future__ import annotations

import json
import re
import sys
import textwrap
import uuid
from pathlib import Path

import pytest

from pytest_irene.cli import main
from pytest_irene.engine.dataset import load_dataset, write_dataset
from pytest_irene.engine.predict.energy_model import EnergyModel, clear_cache

REPO = Path(__file__).resolve().parent.parent
PC1 = REPO / "calibration" / "datasets" / "irene-pc1.jsonl.gz"


@pytest.fixture(scope="module")
def subset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    trees = [
        t
        for t in load_dataset(PC1)
        if t.model_name in ("bert-base-uncased", "distilbert-base-uncased", "gpt2") and t.batch_size in (8, 32)
    ]
    path = tmp_path_factory.mktemp("data") / "subset.jsonl"
    write_dataset(path, trees)
    return path


@pytest.fixture(autouse=True)
def _fresh_cache():
    clear_cache()
    yield
    clear_cache()


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def exit_code_of(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    """Exit code of a command whether it returns or argparse exits, with stderr."""
    try:
        code = main([str(a) for a in argv])
    except SystemExit as exc:
        code = exc.code  # type: ignore[assignment]
    return int(code or 0), capsys.readouterr().err


# -- train ---------------------------------------------------------------------------------


def test_train_writes_a_loadable_model(capsys, subset: Path, tmp_path: Path):
    out_file = tmp_path / "models" / "rig.json"
    code, out, err = run(capsys, "train", subset, "-o", out_file, "--features", "model")
    assert code == 0, err
    assert f"wrote {out_file}" in out and "lomo cross-validation" in out
    model = EnergyModel.load(out_file)
    assert model.profile == "rig" and model.feature_sets == ("model",)
    assert set(model.cv_errors["model"]["levels"]["model"]) == {
        "bert-base-uncased", "distilbert-base-uncased", "gpt2", "average"
    }


def test_train_defaults_to_both_feature_sets_and_takes_profile_and_strategy(capsys, subset: Path, tmp_path: Path):
    out_file = tmp_path / "x.json"
    code, _, err = run(
        capsys, "train", subset, "-o", out_file, "--profile", "my-rig", "--strategy", "predictedsum", "--no-crossvalidate"
    )
    assert code == 0, err
    model = EnergyModel.load(out_file)
    assert (model.profile, model.strategy, model.feature_sets, model.cv_errors) == (
        "my-rig", "predictedsum", ("model", "all"), {}
    )


@pytest.mark.parametrize(
    "extra, needle",
    [
        (["--strategy", "magic"], "--strategy: expected one of"),
        (["--features", "gpu"], "--features: expected one of model, all, got 'gpu'"),
    ],
)
def test_train_bad_options_exit_2(capsys, subset: Path, tmp_path: Path, extra, needle):
    code, err = exit_code_of(capsys, "train", subset, "-o", tmp_path / "m.json", *extra)
    assert code == 2 and needle in err
    assert not (tmp_path / "m.json").exists()


def test_train_missing_dataset_and_output_dir_exit_2(capsys, subset: Path, tmp_path: Path):
    code, err = exit_code_of(capsys, "train", tmp_path / "nope.jsonl", "-o", tmp_path / "m.json")
    assert code == 2 and "nope.jsonl" in err and "no such dataset file" in err
    code, err = exit_code_of(capsys, "train", subset, "-o", tmp_path)
    assert code == 2 and "-o/--output" in err and "directory" in err
    code, err = exit_code_of(capsys, "train", subset)  # -o is required
    assert code == 2 and "-o/--output" in err


# -- crossvalidate ----------------------------------------------------------------------------


def test_crossvalidate_json_prints_exactly_one_object(capsys, subset: Path):
    code, out, err = run(capsys, "crossvalidate", subset, "--json")
    assert code == 0, err
    obj = json.loads(out)  # the whole stdout is one JSON document
    assert out.strip().count("\n") == 0
    assert obj["features"] == "model" and obj["split"] == "lomo" and obj["strategy"]
    assert set(obj["levels"]) == {"ml", "module", "model"}
    for row in obj["levels"].values():
        assert set(row) == {"bert-base-uncased", "distilbert-base-uncased", "gpt2", "average"}
        assert all(isinstance(v, float) and v >= 0 for v in row.values())


@pytest.mark.parametrize("split", ["seq", "batch"])
def test_crossvalidate_splits_and_feature_sets(capsys, subset: Path, split: str):
    code, out, _ = run(capsys, "crossvalidate", subset, "--json", "--split", split, "--features", "all")
    obj = json.loads(out)
    assert code == 0 and obj["split"] == split and obj["features"] == "all"
    assert obj["levels"]["model"]["average"] > 0


def test_crossvalidate_table(capsys, subset: Path):
    code, out, _ = run(capsys, "crossvalidate", subset, "--strategy", "predictedsum")
    assert code == 0
    assert "predictedsum, model features, lomo split" in out and "average" in out and "gpt2" in out


@pytest.mark.parametrize(
    "extra, needle",
    [(["--split", "random"], "--split: expected one of lomo, seq, batch"), (["--features", "x"], "--features")],
)
def test_crossvalidate_bad_options_exit_2(capsys, subset: Path, extra, needle):
    code, err = exit_code_of(capsys, "crossvalidate", subset, *extra)
    assert code == 2 and needle in err


def test_crossvalidate_bad_dataset_line_names_file_and_line(capsys, tmp_path: Path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"format": "irene-tree/1", "batch_size": 0}\n')
    code, err = exit_code_of(capsys, "crossvalidate", bad)
    assert code == 2 and "bad.jsonl:1" in err and "batch_size" in err


# -- evaluate ----------------------------------------------------------------------------------


def test_evaluate_json_on_held_out_and_training_data(capsys, subset: Path, tmp_path: Path):
    model_file = tmp_path / "m.json"
    assert run(capsys, "train", subset, "-o", model_file, "--no-crossvalidate")[0] == 0
    held_out = tmp_path / "roberta.jsonl"
    write_dataset(held_out, [t for t in load_dataset(PC1) if t.model_name == "roberta-base" and t.batch_size == 8])

    code, out, err = run(capsys, "evaluate", held_out, "--profile", model_file, "--json")
    obj = json.loads(out)
    assert code == 0, err
    assert obj["profile"] == "m" and obj["features"] == "model" and obj["trees"] == 8
    assert obj["training_data"] is False and obj["training_trees"] == 0
    assert set(obj["levels"]["model"]) == {"roberta-base", "average"}
    assert 0 < obj["levels"]["model"]["average"] < 50

    code, out, _ = run(capsys, "evaluate", subset, "--profile", model_file, "--features", "all")
    assert code == 0 and "note: all trees are the model's own training data" in out

    # some training trees, reordered, in another file with held-out ones: recognised tree by tree
    mixed = tmp_path / "mixed.jsonl.gz"
    write_dataset(mixed, load_dataset(subset)[:3][::-1] + load_dataset(held_out)[:2])
    code, out, _ = run(capsys, "evaluate", mixed, "--profile", model_file, "--json")
    obj = json.loads(out)
    assert code == 0 and obj["training_data"] is True and obj["training_trees"] == 3 and obj["trees"] == 5
    code, out, _ = run(capsys, "evaluate", mixed, "--profile", model_file)
    assert "note: 3 of 5 trees are the model's own training data" in out


def test_evaluate_bad_profile_exit_2(capsys, subset: Path):
    code, err = exit_code_of(capsys, "evaluate", subset, "--profile", "irene-pc7")
    assert code == 2 and "--profile" in err and "irene-pc1" in err
    code, err = exit_code_of(capsys, "evaluate", subset)  # --profile is required
    assert code == 2 and "--profile" in err


# -- predict -----------------------------------------------------------------------------------


def test_predict_bundled_architecture_prints_tree_bottlenecks_breakdown(capsys):
    code, out, err = run(
        capsys, "predict", "--model", "distilbert-base-uncased", "--batch-size", "8", "--seq-len", "32", "--breakdown"
    )
    assert code == 0, err
    assert "distilbert-base-uncased  batch 8 x seq 32:" in out and "(profile irene-pc1, model features)" in out
    assert "Top 10 bottleneck modules" in out and "Energy by module type" in out
    assert "transformer.layer.5.ffn" in out and "TransformerBlock" in out
    code, out, _ = run(capsys, "predict", "--model", "distilbert-base-uncased", "--batch-size", "8", "--seq-len", "32")
    assert "Energy by module type" not in out


def test_predict_json_is_one_object_consistent_with_the_api(capsys):
    code, out, err = run(capsys, "predict", "--model", "gpt2", "--batch-size", "8", "--seq-len", "64", "--json", "--top", "3")
    assert code == 0, err
    obj = json.loads(out)
    assert (obj["model_name"], obj["batch_size"], obj["seq_len"], obj["profile"]) == ("gpt2", 8, 64, "irene-pc1")
    assert len(obj["bottlenecks"]) == 3 and obj["breakdown"]
    assert obj["tree"]["root"]["predicted_energy_j"] == pytest.approx(obj["total_j"])

    from pytest_irene.engine.architectures import build_model, example_inputs
    from pytest_irene.pipeline import predict

    tree = predict(build_model("gpt2"), example_inputs("gpt2", 8, 64))
    assert tree.total_j == pytest.approx(obj["total_j"], rel=1e-12)


def test_predict_takes_the_compact_variants_sweep_takes(capsys):
    """``ARCH[L=4,H=256]``: the sweep's point and the predicted tree are one tree."""
    code, out, err = run(capsys, "predict", "--model", "bert-base-uncased[L=2,H=128]", "--batch-size", "2",
                         "--seq-len", "16", "--json")
    assert code == 0, err
    obj = json.loads(out)
    assert obj["model_name"] == "bert-base-uncased[L=2,H=128]"
    from pytest_irene.explorer.models import predict_tree, resolve_model

    point = predict_tree(resolve_model("bert-base-uncased[L=2,H=128]"), 2, 16, "irene-pc1")
    assert obj["total_j"] == pytest.approx(point.total_j, rel=1e-12)
    code, _, err = run(capsys, "predict", "--model", "bert-base-uncased[L=2,H=100]", "--batch-size", "1", "--seq-len", "8")
    assert code == 2 and "--model: 'bert-base-uncased[L=2,H=100]': H (hidden size) must be a positive multiple of 64" in err


def test_predict_html_writes_the_explorer_page_of_the_printed_tree(capsys, tmp_path: Path):
    page = tmp_path / "bert.html"
    code, out, err = run(
        capsys, "predict", "--model", "distilbert-base-uncased", "--batch-size", "4", "--seq-len", "32",
        "--json", "--html", str(page),
    )
    assert code == 0, err
    printed = json.loads(out)
    match = re.search(r'<script type="application/json" id="irene-data">(.*?)</script>', page.read_text(), re.S)
    assert match, "the page carries its data"
    (call,) = json.loads(match.group(1))["calls"]
    assert (call["model_name"], call["batch_size"], call["seq_len"]) == ("distilbert-base-uncased", 4, 32)
    assert call["profile"] == printed["profile"] == "irene-pc1" and call["status"] is None
    assert call["total_j"] == pytest.approx(printed["total_j"], rel=1e-12)
    assert call["tree"] == printed["tree"]


@pytest.fixture
def factory_file(tmp_path: Path) -> Path:
    path = tmp_path / "my_models.py"
    path.write_text(
        textwrap.dedent(
            """
            import torch
            from torch import nn

            class Block(nn.Module):
                def __init__(self):
                    super().__init__()
                    self.up = nn.Linear(64, 256)
                    self.act = nn.GELU()
                    self.down = nn.Linear(256, 64)
                def forward(self, x):
                    return self.down(self.act(self.up(x)))

            class Net(nn.Module):
                def __init__(self):
                    super().__init__()
                    self.block = Block()
                    self.norm = nn.LayerNorm(64)
                def forward(self, x):
                    return self.norm(self.block(x))
                def irene_inputs(self, batch_size, seq_len, device="meta"):
                    return torch.zeros(batch_size, seq_len, 64, device=device)

            def with_inputs(batch_size, seq_len):
                return Net(), torch.zeros(batch_size, seq_len, 64)

            def plain():
                return Net()

            def bare():
                return nn.Linear(4, 4)

            def not_a_module():
                return "hello"
            """
        )
    )
    return path


@pytest.mark.parametrize("factory", ["with_inputs", "plain"])
def test_predict_module_factory(capsys, factory_file: Path, factory: str):
    code, out, err = run(
        capsys, "predict", "--module", f"{factory_file}:{factory}", "--batch-size", "4", "--seq-len", "16", "--json"
    )
    assert code == 0, err
    obj = json.loads(out)
    assert obj["model_name"] == "Net" and obj["batch_size"] == 4 and obj["seq_len"] == 16
    assert obj["bottlenecks"][0]["scope"] == "block"
    scopes = {n["scope"] for n in obj["tree"]["root"]["children"]}
    assert scopes == {"block", "norm"}
    assert obj["total_j"] > 0


def test_predict_module_sizes_come_from_the_factorys_inputs(capsys, tmp_path: Path):
    """--batch-size/--seq-len build inputs; a factory's own inputs (here one unbatched sequence of
    10 tokens) decide what the tree reports, as in the plugin. Before, the CLI's 2 x 8 won."""
    path = tmp_path / "unbatched.py"
    path.write_text(textwrap.dedent(
        """
        import torch

        def make():
            m = torch.nn.MultiheadAttention(16, 2)
            x = torch.randn(10, 16)
            return m, (x, x, x)
        """
    ))
    code, out, err = run(capsys, "predict", "--module", f"{path}:make", "--batch-size", "2", "--seq-len", "8", "--json")
    assert code == 0, err
    obj = json.loads(out)
    assert (obj["batch_size"], obj["seq_len"]) == (1, 10)


def test_predict_module_by_name_from_the_current_directory(capsys, factory_file: Path, monkeypatch):
    """``irene`` does not put the project on sys.path; a dotted reference is found in the cwd, as ``python -m``."""
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(factory_file.parent))])
    monkeypatch.chdir(factory_file.parent)
    name = f"my_models_{uuid.uuid4().hex[:8]}"
    factory_file.rename(factory_file.with_name(f"{name}.py"))
    code, out, err = run(capsys, "predict", "--module", f"{name}:plain", "--batch-size", "2", "--seq-len", "8", "--json")
    assert code == 0, err
    assert json.loads(out)["model_name"] == "Net"
    monkeypatch.delitem(sys.modules, name)


@pytest.mark.parametrize(
    "ref, needle",
    [
        ("{f}:not_a_module", "the factory returned str"),
        ("{f}:bare", "without inputs"),
        ("{f}:missing", "no callable 'missing'"),
        ("{d}/nowhere.py:make", "no such file"),
        ("no_colon_here", "expected MODULE:FACTORY"),
    ],
)
def test_predict_bad_module_exit_2(capsys, factory_file: Path, ref: str, needle: str):
    ref = ref.format(f=factory_file, d=factory_file.parent)
    code, err = exit_code_of(capsys, "predict", "--module", ref, "--batch-size", "2", "--seq-len", "8")
    assert code == 2 and "--module" in err and needle in err


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["--model", "bert-huge", "--batch-size", "8", "--seq-len", "8"], "--model: unknown architecture 'bert-huge'"),
        (["--model", "gpt2", "--batch-size", "0", "--seq-len", "8"], "--batch-size: expected a positive integer"),
        (["--model", "gpt2", "--batch-size", "x", "--seq-len", "8"], "--batch-size"),
        (["--model", "gpt2", "--batch-size", "2"], "--seq-len"),
        (["--batch-size", "2", "--seq-len", "8"], "--model"),
        (["--model", "gpt2", "--module", "a:b", "--batch-size", "2", "--seq-len", "8"], "not allowed with"),
        (["--model", "gpt2", "--batch-size", "2", "--seq-len", "8", "--profile", "pc9"], "--profile: unknown energy model"),
        (["--model", "gpt2", "--batch-size", "2", "--seq-len", "8", "--features", "some"], "--features"),
    ],
)
def test_predict_bad_options_exit_2(capsys, argv: list[str], needle: str):
    code, err = exit_code_of(capsys, "predict", *argv)
    assert code == 2 and needle in err


def test_predict_all_features_refuses_a_host_that_is_not_the_rig(capsys, monkeypatch: pytest.MonkeyPatch):
    import pytest_irene.rig.runtime as runtime

    laptop = {"cpu_model": "Laptop CPU", "cpu_count": 8, "memory_gib": 16.0, "gpus": [], "driver_version": None}
    monkeypatch.setattr(runtime, "host_fingerprint", lambda **_: dict(laptop), raising=False)
    code, err = exit_code_of(
        capsys, "predict", "--model", "gpt2", "--batch-size", "2", "--seq-len", "8", "--features", "all"
    )
    assert code == 2
    assert "--features all: this host is not the rig profile irene-pc1 was calibrated on" in err
    assert "Laptop CPU" in err and "--features model" in err


def test_predict_all_features_measures_on_the_rig(capsys, subset: Path, factory_file: Path, tmp_path: Path):
    """On the rig the profile was trained for, --features all runs the node runner for real.

    This host is that rig (the model records this host's fingerprint). A CPU-only
    host measures no GPU features, which the 'all' regressors of GPU data need:
    the command then says what is missing instead of predicting garbage.
    """
    from pytest_irene.engine.predict.energy_model import train_energy_model
    from pytest_irene.rig.runtime import host_fingerprint

    model_file = tmp_path / "here.json"
    train_energy_model([subset], profile="here", hardware=host_fingerprint(), crossvalidate=False).save(model_file)
    code, out, err = run(
        capsys, "predict", "--module", f"{factory_file}:with_inputs", "--batch-size", "2", "--seq-len", "4",
        "--features", "all", "--profile", model_file, "--device", "cpu", "--json",
    )
    if host_fingerprint().get("gpus"):
        pytest.skip("GPU host: CPU measurement of a GPU-trained model is not comparable")
    assert code == 2
    assert "features='all' needs resource features measured on this host" in err
    assert "gpu_energy_j" in err


def test_train_without_resource_features_trains_model_features_only(capsys, subset: Path, tmp_path: Path):
    from pytest_irene.engine.tree import RESOURCE_FEATURES

    trees = load_dataset(subset)
    for tree in trees:
        for node in tree.walk():
            for name in RESOURCE_FEATURES:
                node.features.pop(name, None)
    stripped = tmp_path / "cpu-rig.jsonl"
    write_dataset(stripped, trees)
    code, _, err = run(capsys, "train", stripped, "-o", tmp_path / "cpu.json", "--no-crossvalidate")
    assert code == 0, err
    assert EnergyModel.load(tmp_path / "cpu.json").feature_sets == ("model",)
    code, err = exit_code_of(capsys, "train", stripped, "-o", tmp_path / "x.json", "--features", "all")
    assert code == 2 and "resource features" in err and not (tmp_path / "x.json").exists()


def test_predict_with_a_model_file_path(capsys, subset: Path, tmp_path: Path):
    model_file = tmp_path / "mine.json"
    assert run(capsys, "train", subset, "-o", model_file, "--features", "model", "--no-crossvalidate")[0] == 0
    code, out, err = run(
        capsys, "predict", "--model", "bert-base-uncased", "--batch-size", "8", "--seq-len", "32",
        "--profile", model_file, "--json",
    )
    assert code == 0, err
    assert json.loads(out)["profile"] == "mine"


def test_predict_module_by_import_path_from_the_project_directory(
    capsys, factory_file: Path, monkeypatch: pytest.MonkeyPatch
):
    import sys

    monkeypatch.chdir(factory_file.parent)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(factory_file.parent))])
    monkeypatch.delitem(sys.modules, "my_models", raising=False)
    try:
        code, out, err = run(
            capsys, "predict", "--module", "my_models:with_inputs", "--batch-size", "2", "--seq-len", "8", "--json"
        )
    finally:
        sys.modules.pop("my_models", None)
    assert code == 0, err
    assert json.loads(out)["model_name"] == "Net"


def test_a_closed_stdout_pipe_ends_quietly() -> None:
    """``irene predict ... | head -c 1`` printed a BrokenPipeError traceback; now it exits 1, silent."""
    import subprocess

    proc = subprocess.Popen(
        [sys.executable, "-m", "pytest_irene.cli", "predict", "--model", "gpt2", "--batch-size", "1",
         "--seq-len", "8", "--json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    proc.stdout.close()  # the reader is gone before the first write
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 1 and b"Traceback" not in err and b"BrokenPipe" not in err, err.decode()


def test_an_abbreviated_option_is_refused_not_guessed(capsys):
    """argparse takes ``--plan-onl`` for ``--plan-only`` by default: a typo would run whatever
    option it happens to prefix. The ``irene`` parsers want every option spelt in full."""
    code, err = exit_code_of(
        capsys, "predict", "--model", "bert-base-uncased", "--batch-size", "1", "--seq-len", "8", "--dep", "2"
    )
    assert code == 2 and "unrecognized arguments: --dep 2" in err


def test_the_cli_and_the_plugin_load_without_posix_only_modules() -> None:
    """Windows has no ``fcntl``, ``pty``, ``tty`` or ``termios``: importing one at the top of the
    baselines store or of the emulator's command made the plugin, or every ``irene`` command, fail
    to load there. A fresh interpreter with those modules blocked must load both."""
    import subprocess

    code = (
        "import sys\n"
        "for name in ('fcntl', 'pty', 'tty', 'termios'):\n"
        "    sys.modules[name] = None\n"
        "import pytest_irene.plugin, pytest_irene.compare.baseline_store\n"
        "from pytest_irene.cli import build_parser\n"
        "build_parser()\n"
        "print('loaded')\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "loaded" in done.stdout, done.stderr
