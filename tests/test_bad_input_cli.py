"""Bad input for datasets and the ``irene`` commands (issue 11): a clear error naming the file
or option, never a traceback."""

from __future__ import annotations

import json
import re
import uuid
import warnings
from pathlib import Path

import pytest

from pytest_irene.engine.dataset import DuplicateTreesWarning, iter_trees, load_dataset, write_dataset
from pytest_irene.errors import DatasetError, UsageError
from pytest_irene.outputs import OutputError, check_output_path, write_output
from test_cli import exit_code_of, run

REPO = Path(__file__).resolve().parent.parent
PC1 = REPO / "calibration" / "datasets" / "irene-pc1.jsonl.gz"


@pytest.fixture(scope="module")
def two_trees(tmp_path_factory: pytest.TempPathFactory) -> list:
    trees = load_dataset(PC1)
    return [next(t for t in trees if t.model_name == "bert-base-uncased"), next(t for t in trees if t.model_name == "gpt2")]


# -- 7. datasets ----------------------------------------------------------------------------------


def test_corrupt_gzip_names_the_file_and_line(tmp_path: Path) -> None:
    original = PC1.read_bytes()
    messages = []
    for tenth in range(1, 10):  # bytes flipped at several places inside the compressed stream
        data = bytearray(original)
        at = len(data) * tenth // 10
        data[at : at + 64] = b"\xff" * 64
        path = tmp_path / f"flipped{tenth}.jsonl.gz"
        path.write_bytes(bytes(data))
        with pytest.raises(DatasetError) as info:
            list(iter_trees(path))
        assert str(info.value).startswith(f"{path}:{info.value.line}: ") and info.value.line > 1
        messages.append(str(info.value))
    # where the deflate stream itself breaks (a raw zlib.error before), the error says so
    assert any("corrupt or truncated" in m and "invalid" in m for m in messages)


def test_deeply_nested_line_is_a_dataset_error(tmp_path: Path) -> None:
    path = tmp_path / "deep.jsonl"
    # 100 000 levels, as the run-file and model-file tests: Python 3.13's json parses 5000 (its C
    # recursion limit is higher), and the line was then only "expected a JSON object, got list"
    path.write_text("[" * 100_000 + "]" * 100_000 + "\n")
    with pytest.raises(DatasetError, match=r"deep.jsonl:1: nested too deep"):
        load_dataset(path)
    node: dict = {"scope": "", "type": "M", "level": "ml", "features": {}, "children": []}
    for _ in range(400):  # valid JSON, but a tree 400 levels deep
        node = {"scope": "s", "type": "M", "level": "module", "features": {}, "children": [node]}
    node["level"] = "model"
    deep_tree = tmp_path / "deep-tree.jsonl"
    deep_tree.write_text(json.dumps({"format": "irene-tree/1", "batch_size": 1, "seq_len": 1, "root": node}) + "\n")
    with pytest.raises(DatasetError, match=r"deep-tree.jsonl:1: .*nested deeper than 200 levels"):
        load_dataset(deep_tree)


def test_duplicate_trees_are_not_trained_on_silently(capsys, tmp_path: Path, two_trees: list) -> None:
    path = tmp_path / "dup.jsonl"
    write_dataset(path, [two_trees[0], two_trees[1], two_trees[0]])
    with pytest.warns(DuplicateTreesWarning, match=r"1 duplicate tree\(s\) \(.*dup.jsonl:3 repeats .*dup.jsonl:1\).*2 of 3 trees are distinct"):
        trees = load_dataset(path)
    assert [t.model_name for t in trees] == ["bert-base-uncased", "gpt2", "bert-base-uncased"]  # as stored
    with pytest.warns(DuplicateTreesWarning, match="4 duplicate"):
        assert len(load_dataset(path, path)) == 6  # the same file passed twice
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert len(load_dataset(PC1)) == 193  # the paper dataset has none
    code, _, err = run(capsys, "evaluate", path, "--profile", "irene-pc1", "--json")
    assert code == 0
    assert err.startswith("irene evaluate: warning: 1 duplicate tree(s)")  # one line, not a Python warning


def test_an_integer_beyond_a_float_is_a_dataset_error_not_an_overflow(capsys, tmp_path: Path, two_trees: list) -> None:
    """``1e400`` written without a point is a JSON integer, and ``math.isfinite`` overflows on it."""
    path = tmp_path / "big.jsonl"
    write_dataset(path, two_trees)
    lines = path.read_text().splitlines()
    lines[0] = re.sub(r'"flops": ?[0-9.e+-]+', '"flops": 1' + "0" * 400, lines[0], count=1)
    path.write_text("\n".join(lines) + "\n")
    for argv in (["evaluate", path, "--profile", "irene-pc1"], ["train", path, "-o", tmp_path / "m.json"]):
        code, _, err = run(capsys, *argv)
        assert code == 2 and "Traceback" not in err, err
        assert re.search(r"big.jsonl:1: field 'root[^']*flops': expected a finite number, got 10{59}$", err.strip()), err


def test_a_field_named_twice_in_a_dataset_line_is_named(tmp_path: Path, two_trees: list) -> None:
    path = tmp_path / "twice.jsonl"
    write_dataset(path, two_trees[:1])
    line = path.read_text().strip()
    path.write_text(line[:-1] + ', "batch_size": 64}\n')  # json would keep the last value silently
    with pytest.raises(DatasetError, match=r"twice.jsonl:1: field batch_size named twice in one JSON object"):
        load_dataset(path)


def test_a_finite_but_absurd_feature_is_a_dataset_error_not_nan_weights(capsys, tmp_path: Path, two_trees: list) -> None:
    """``1e160`` flops squared overflowed in the fit: ``irene train`` ended in "Out of range float values"."""
    path = tmp_path / "huge.jsonl"
    write_dataset(path, two_trees)
    lines = path.read_text().splitlines()
    lines[1] = re.sub(r'"mem_bytes": ?[0-9.e+-]+', '"mem_bytes": 1e160', lines[1], count=1)
    path.write_text("\n".join(lines) + "\n")
    code, _, err = run(capsys, "train", path, "-o", tmp_path / "m.json", "--no-crossvalidate")
    assert code == 2 and "Traceback" not in err and not (tmp_path / "m.json").exists()
    assert re.search(r"huge.jsonl:2: field '[^']*mem_bytes': expected at most 1e\+30 \(one call's count\), got 1e\+160", err)


def test_a_tree_measured_at_0_j_is_left_out_of_training_naming_it(capsys, tmp_path: Path, two_trees: list) -> None:
    """A failed reading: the fits take log energies (the model file was NaN, then not written)."""
    path = tmp_path / "zero.jsonl"
    write_dataset(path, two_trees)
    lines = path.read_text().splitlines()
    first = json.loads(lines[0])
    first["root"]["energy_j"] = 0
    path.write_text(json.dumps(first) + "\n" + lines[1] + "\n")
    code, _, err = run(capsys, "train", path, "-o", tmp_path / "m.json", "--no-crossvalidate")
    assert code == 0, err
    assert "1 tree(s) left out of training" in err and "node '<model>': a measured energy of 0 J" in err
    assert json.loads((tmp_path / "m.json").read_text())["dataset"]["trees"] == 1


def test_evaluate_on_an_empty_dataset_is_an_error(capsys, tmp_path: Path) -> None:
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    code, out, err = run(capsys, "evaluate", empty, "--profile", "irene-pc1", "--json")
    assert code == 2 and out == ""
    assert f"irene evaluate: error: DATASET: {empty}: the dataset file holds no trees" in err


def test_train_checks_its_output_before_training(capsys, tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    code, _, err = run(capsys, "train", PC1, "-o", blocker / "model.json")
    assert code == 2 and "-o/--output" in err and "is not a directory" in err and "cross-validation" not in err


def test_crossvalidate_on_one_model_is_an_error(capsys, tmp_path: Path, two_trees: list) -> None:
    one = tmp_path / "one.jsonl"
    write_dataset(one, [two_trees[0]])
    code, out, err = run(capsys, "crossvalidate", one)
    assert code == 2 and out == ""
    assert "split 'lomo' holds one model out and trains on the others, but the data has only bert-base-uncased" in err


# -- 1. report paths of the commands --------------------------------------------------------------


@pytest.mark.parametrize(
    "argv",
    [
        ["predict", "--model", "distilbert-base-uncased", "--batch-size", "1", "--seq-len", "8", "--html"],
        ["sweep", "--model", "distilbert-base-uncased", "--batch-sizes", "1", "--seq-lens", "8", "--csv"],
        ["sweep", "--model", "distilbert-base-uncased", "--batch-sizes", "1", "--seq-lens", "8", "--html"],
    ],
    ids=["predict-html", "sweep-csv", "sweep-html"],
)
def test_command_report_path_is_checked_before_any_work(capsys, tmp_path: Path, argv: list[str]) -> None:
    (tmp_path / "afile").write_text("x")
    for bad, message in ((tmp_path, "is a directory"), (tmp_path / "afile" / "r.out", f"{tmp_path / 'afile'} is not a directory")):
        code, out, err = run(capsys, *argv, bad)
        assert code == 2, err
        assert f"error: {argv[-1]}={bad}: {message}" in err
        assert "Traceback" not in err and "wrote" not in err


def test_command_report_never_replaces_its_profile_or_its_other_report(capsys, tmp_path: Path) -> None:
    from pytest_irene.engine.predict.profiles import resolve_profile

    profile = tmp_path / "rig.json"
    profile.write_bytes(resolve_profile("irene-pc1").read_bytes())
    before = profile.read_bytes()
    point = ["--model", "distilbert-base-uncased", "--profile", str(profile)]
    for argv, message in (
        (["predict", *point, "--batch-size", "1", "--seq-len", "8", "--html", str(profile)],
         f"error: --html={profile}: exists and is not a pytest-irene HTML report; refusing to replace it"),
        (["sweep", *point, "--batch-sizes", "1", "--seq-lens", "8", "--csv", str(profile)],
         f"error: --csv={profile}: exists and is not a CSV of irene sweep; refusing to replace it"),
        (["sweep", *point, "--batch-sizes", "1", "--seq-lens", "8", "--csv", str(tmp_path / "s.out"),
          "--html", str(tmp_path / "s.out")],
         f"error: --html={tmp_path / 's.out'}: is also the file of --csv; give each report its own file"),
    ):
        code, _, err = run(capsys, *argv)
        assert code == 2 and message in err, err
    assert profile.read_bytes() == before and not (tmp_path / "s.out").exists()


def test_a_point_too_large_or_a_list_with_a_hole_is_a_usage_error(capsys) -> None:
    for argv, message in (
        (["predict", "--model", "gpt2", "--seq-len", "4", "--batch-size", "9" * 20],
         f"--batch-size: expected at most 65536, got {'9' * 20}"),
        (["sweep", "--model", "gpt2", "--seq-lens", "4", "--batch-sizes", "1,,2"],
         "--batch-sizes: expected comma-separated integers such as 8,16,32, got '1,,2'"),
    ):
        code, _, err = run(capsys, *argv)
        assert code == 2 and message in err and "Traceback" not in err, err


def test_write_that_fails_after_the_check_is_one_line_and_leaves_no_temp_file(tmp_path: Path) -> None:
    target = check_output_path(tmp_path / "r.html", "--html")
    target.mkdir()  # the path became a directory between the check and the write
    with pytest.raises(OutputError, match=r"^--html: cannot write .*r.html: Is a directory$"):
        write_output(target, "<html>", "--html")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.html"]
    with pytest.raises(UsageError, match="cannot write into /proc/self"):
        check_output_path("/proc/self/r.html", "--html")


# -- user sweep: factories whose module fails to import -------------------------------------------

#: Module sources that raise while they are imported, with what the error must say.
BROKEN_MODULES = {
    "syntax": ("def make(:\n    pass\n", "SyntaxError at {path}:1: invalid syntax"),
    "runtime": ("import os\nraise RuntimeError('no GPU driver')\n", "RuntimeError at {path}:2: no GPU driver"),
    "missing": ("import irene_no_such_package\n", "ModuleNotFoundError at {path}:1: No module named 'irene_no_such_package'"),
}


@pytest.mark.parametrize("kind", sorted(BROKEN_MODULES))
def test_factory_module_that_fails_to_import_is_one_line(capsys, tmp_path: Path, monkeypatch, kind: str) -> None:
    from pytest_irene.engine.factories import load_factory

    source, expected = BROKEN_MODULES[kind]
    name = f"broken_{kind}_{uuid.uuid4().hex[:8]}"
    path = tmp_path / f"{name}.py"
    path.write_text(source)
    with pytest.raises(UsageError) as info:  # the file form
        load_factory(f"{path}:make")
    assert f"cannot import {path}: {expected.format(path=path)}" in str(info.value)
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(UsageError) as info:  # the module form reports the same, not only ImportError
        load_factory(f"{name}:make")
    assert f"cannot import {name}: {expected.format(path=path)}" in str(info.value)
    for argv in (["predict", "--module", f"{path}:make", "--batch-size", "1", "--seq-len", "4"],
                 ["sweep", "--module", f"{path}:make", "--batch-sizes", "1", "--seq-lens", "4"],
                 ["serve", "--port", "0", "--allow-module", f"{path}:make"]):
        code, out, err = run(capsys, *argv)
        assert code == 2 and "Traceback" not in err, err
        assert err.startswith(f"irene {argv[0]}: error: {argv[3] if argv[0] == 'serve' else '--module'} '{path}:make'")
        assert expected.format(path=path) in err and len(err.strip().splitlines()) == 1


def test_a_missing_module_is_still_named_as_missing() -> None:
    from pytest_irene.engine.factories import load_factory

    with pytest.raises(UsageError, match=r"cannot import module 'irene_nowhere\.sub' \(No module named 'irene_nowhere'\)"):
        load_factory("irene_nowhere.sub:make")


# -- user sweep: config overrides are validated where models are built ------------------------------


@pytest.mark.parametrize(
    ("overrides", "culprit", "message"),
    [
        ({"bogus": 3}, "bogus=3", "GPT2Config has no field 'bogus'"),
        ({"n_layr": 2}, "n_layr=2", r"GPT2Config has no field 'n_layr'; did you mean n_layer\?"),
        ({"n_layer": -1}, "n_layer=-1", "must be at least 1"),
        ({"n_layer": 0, "n_head": 2}, "n_layer=0", "must be at least 1"),
        ({"n_layer": "abc"}, "n_layer='abc'", "the config rejects it: .*expected int, got str"),
        ({"n_layer": 1, "n_embd": 100}, "n_layer=1, n_embd=100", "the model cannot be built: ValueError: `embed_dim` must be divisible"),
    ],
)
def test_build_model_refuses_bad_config_overrides(overrides: dict, culprit: str, message: str) -> None:
    from pytest_irene.engine.architectures import ConfigOverrideError, build_model

    with pytest.raises(ConfigOverrideError, match=f"^build_model: gpt2 with {re.escape(culprit)}: {message}") as info:
        build_model("gpt2", **overrides)
    assert "causal LM head" not in str(info.value)


def test_build_model_refuses_bad_overrides_of_a_config_object_too() -> None:
    from pytest_irene.engine.architectures import ConfigOverrideError, build_config, build_model

    with pytest.raises(ConfigOverrideError, match="num_hidden_layers=-2: must be at least 1"):
        build_model("bert-base-uncased", num_hidden_layers=-2)
    with pytest.raises(ConfigOverrideError, match="has no field 'num_hiden_layers'; did you mean num_hidden_layers"):
        build_model(build_config("bert-base-uncased"), num_hiden_layers=2)
    tiny = build_model("bert-base-uncased", num_hidden_layers=1, hidden_size=64, num_attention_heads=2)
    assert len(tiny.encoder.layer) == 1  # good overrides still build


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ("n_layer=abc", "--config n_layer='abc': gpt2: the config rejects it"),
        ("bogus_field=2", "--config bogus_field=2: gpt2: GPT2Config has no field 'bogus_field'"),
        ("n_layer=-1", "--config n_layer=-1: gpt2: must be at least 1"),
        ("n_embd=100", "--config n_embd=100: gpt2: the model cannot be built: ValueError: `embed_dim` must be divisible"),
    ],
)
def test_calibrate_config_errors_name_the_option(capsys, config: str, message: str) -> None:
    code, out, err = run(capsys, "calibrate", "--plan-only", "--model", "gpt2", "--batch-size", "8", "--seq-len", "8",
                         "--config", config)
    assert code == 2 and out == "" and "Traceback" not in err
    assert err.startswith(f"irene calibrate: error: {message}")


def test_calibrate_names_its_options(capsys, monkeypatch) -> None:
    base = ["calibrate", "--plan-only", "--model", "gpt2", "--batch-size", "1", "--seq-len", "4"]
    code, _, err = run(capsys, *base, "--window", "-1")
    assert code == 2 and err.startswith("irene calibrate: error: --window: must be positive") and "window_s" not in err
    code, _, err = run(capsys, *base, "--rounds", "0")
    assert code == 2 and err.startswith("irene calibrate: error: --rounds: must be a positive integer")
    code, _, err = run(capsys, *base, "--config", "n_layer=1", "--config", "n_layer=2")
    assert code == 2 and "--config: n_layer given twice" in err
    code, _, err = run(capsys, "calibrate", "--plan-only", "--prior", "nope")
    assert code == 2 and err.startswith("irene calibrate: error: --prior: unknown energy model 'nope'")
    # the transfer plan's closing hint names the prior given (a tiny plan: building the real one takes 20 s)
    monkeypatch.setattr("pytest_irene.engine.predict.transfer.TRANSFER_PLAN", [("distilgpt2", 1, 4)])
    from pytest_irene.engine.predict.profiles import resolve_profile

    prior = str(resolve_profile("irene-pc1"))  # the profile's file: a prior given by path
    code, out, err = run(capsys, "calibrate", "--plan-only", "--prior", prior,
                         "--config", "n_layer=1", "--config", "n_embd=32", "--config", "n_head=2")
    assert code == 0, err
    assert f"measure it with --prior {prior} " in out and "--prior irene-pc1" not in out
    assert "assuming the meter's nominal report period of 5 s" in out  # printed before any meter reported


def test_calibrate_checks_its_output_paths_before_measuring(capsys, tmp_path: Path) -> None:
    (tmp_path / "afile").write_text("x")
    base = ["calibrate", "--model", "gpt2", "--batch-size", "1", "--seq-len", "4", "--meter", "rapl"]
    code, _, err = run(capsys, *base, "--dataset", tmp_path / "afile" / "d.jsonl", "-o", tmp_path / "m.json")
    assert code == 2 and f"error: --dataset={tmp_path / 'afile' / 'd.jsonl'}: {tmp_path / 'afile'} is not a directory" in err
    code, _, err = run(capsys, *base, "--dataset", tmp_path / "d.jsonl", "-o", tmp_path)
    assert code == 2 and f"error: -o/--output={tmp_path}: is a directory" in err


# -- user sweep: every bundled architecture is known everywhere ------------------------------------


def test_llama_1b_style_is_known_to_every_command(capsys, tmp_path: Path) -> None:
    from pytest_irene.engine.architectures import EXTRA_ARCHITECTURES, known_architectures
    from pytest_irene.explorer.models import bundled_architectures, resolve_model

    assert "llama-1b-style" in EXTRA_ARCHITECTURES and bundled_architectures() == known_architectures()
    assert resolve_model("llama-1b-style").architecture == "llama-1b-style"
    code, out, err = run(capsys, "predict", "--model", "llama-1b-style", "--batch-size", "1", "--seq-len", "8", "--json")
    assert code == 0, err
    assert json.loads(out)["tree"]["root"]["type"] == "LlamaModel"
    code, out, err = run(capsys, "sweep", "--model", "llama-1b-style", "--batch-sizes", "1", "--seq-lens", "8")
    assert code == 0 and out.splitlines()[1].startswith("llama-1b-style,"), err
    tiny = ["num_hidden_layers=1", "hidden_size=64", "intermediate_size=128", "num_attention_heads=4",
            "num_key_value_heads=2", "head_dim=16", "vocab_size=256", "bos_token_id=1", "eos_token_id=2"]
    code, out, err = run(capsys, "calibrate", "--plan-only", "--model", "llama-1b-style", "--batch-size", "1",
                         "--seq-len", "4", *[a for kv in tiny for a in ("--config", kv)])
    assert code == 0 and "llama-1b-style b1 s4:" in out, err
    code, _, err = run(capsys, "predict", "--model", "llama-2b", "--batch-size", "1", "--seq-len", "8")
    assert code == 2 and "--model: unknown architecture 'llama-2b'" in err and "llama-1b-style" in err


# -- user sweep: --device is where model features are traced ---------------------------------------

DATA_DEPENDENT = '''
import torch

class Gate(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(8, 8)

    def forward(self, x):
        if x.sum() > 0:  # a branch on a tensor value: meta tensors have none
            return self.lin(x)
        return self.lin(self.lin(x))

def make_dd(batch_size=2, seq_len=4):
    return Gate(), torch.ones(batch_size, 8)
'''


def test_device_traces_data_dependent_models_in_predict_and_sweep(capsys, tmp_path: Path) -> None:
    path = tmp_path / "dd.py"
    path.write_text(DATA_DEPENDENT)
    predict = ["predict", "--module", f"{path}:make_dd", "--batch-size", "2", "--seq-len", "4", "--json"]
    code, _, err = run(capsys, *predict)
    assert code == 2 and "depends on tensor values" in err  # meta by default, as the plugin
    code, out, err = run(capsys, *predict, "--device", "cpu")
    assert code == 0, err
    tree = json.loads(out)["tree"]
    assert tree["meta"]["traced_on"] == "cpu" and [c["scope"] for c in tree["root"]["children"]] == ["lin"]
    sweep = ["sweep", "--module", f"{path}:make_dd", "--batch-sizes", "2", "--seq-lens", "4"]
    code, _, err = run(capsys, *sweep)
    assert code == 2 and "depends on tensor values" in err
    code, out, err = run(capsys, *sweep, "--device", "cpu")
    assert code == 0 and out.splitlines()[1].startswith(f"{path}:make_dd,"), err


def test_device_is_validated(capsys) -> None:
    import torch

    base = ["predict", "--model", "distilgpt2", "--batch-size", "1", "--seq-len", "4"]
    code, _, err = run(capsys, *base, "--device", "gpu0")
    assert code == 2 and "--device: expected a torch device such as meta, cpu or cuda:0, got 'gpu0'" in err
    missing = f"cuda:{torch.cuda.device_count()}"  # one past the last GPU: absent on every machine
    for argv in (base, ["sweep", "--model", "distilgpt2", "--batch-sizes", "1", "--seq-lens", "4"]):
        code, _, err = run(capsys, *argv, "--device", missing)
        assert code == 2 and f"--device: device '{missing}' is not available on this machine" in err, err
        assert len(err.strip().splitlines()) == 1


# -- user sweep: no generation with an encoder -----------------------------------------------------


def test_generation_of_an_encoder_only_model_is_refused(capsys, tmp_path: Path) -> None:
    from pytest_irene.engine.architectures import build_model, generation_problem

    code, out, err = run(capsys, "predict", "--model", "bert-base-uncased", "--batch-size", "1", "--seq-len", "4",
                         "--new-tokens", "3")
    assert code == 2 and out == ""
    assert err.startswith("irene predict: error: --new-tokens: bert-base-uncased is an encoder-only model (bert)")
    for name in ("roberta-base", "distilbert-base-uncased"):
        assert "encoder-only" in generation_problem(name)
    with pytest.raises(UsageError, match="encoder-only"):
        build_model("bert-base-uncased", causal_lm=True)
    assert generation_problem("gpt2") is None and generation_problem("llama-1b-style") is None
    decoder = build_model("bert-base-uncased", causal_lm=True, is_decoder=True, num_hidden_layers=1)
    assert type(decoder).__name__ == "BertLMHeadModel"  # BERT configured as a decoder may generate
    path = tmp_path / "enc.py"
    path.write_text("from transformers import BertConfig, BertLMHeadModel\n"
                    "def make():\n    return BertLMHeadModel(BertConfig(num_hidden_layers=1, hidden_size=32, "
                    "num_attention_heads=2, intermediate_size=64, vocab_size=64))\n")
    code, _, err = run(capsys, "predict", "--module", f"{path}:make", "--batch-size", "1", "--seq-len", "4",
                       "--new-tokens", "2")
    assert code == 2 and "--new-tokens: " in err and "encoder-only" in err


# -- user sweep: messages name what is wrong -------------------------------------------------------


def test_crossvalidate_on_an_empty_file_says_it_holds_no_trees(capsys, tmp_path: Path) -> None:
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    code, out, err = run(capsys, "crossvalidate", empty)
    assert code == 2 and out == ""
    assert err.strip() == f"irene crossvalidate: error: DATASET: {empty}: the dataset file holds no trees"


def test_a_single_value_option_given_twice_is_refused(capsys) -> None:
    code, err = exit_code_of(capsys, "predict", "--model", "gpt2", "--model", "distilgpt2", "--batch-size", "1",
                             "--seq-len", "4")
    assert code == 2 and "irene predict: error: argument --model: given more than once" in err
    code, err = exit_code_of(capsys, "predict", "--model", "distilgpt2", "--batch-size", "1", "--seq-len", "4",
                             "--profile", "irene-pc1", "--profile", "irene-pc1")
    assert code == 2 and "argument --profile: given more than once" in err  # even with the default's value
    code, err = exit_code_of(capsys, "export", "a.json", "--format", "bencher", "-o", "x.json", "--output", "y.json")
    assert code == 2 and "argument -o/--output: given more than once" in err
    from pytest_irene.cli import build_parser

    args = build_parser().parse_args(["sweep", "--model", "gpt2", "--model", "distilgpt2", "--batch-sizes", "1",
                                      "--seq-lens", "4"])
    assert args.model == ["gpt2", "distilgpt2"] and not any(k.startswith("_irene") for k in vars(args))


def test_sweep_refuses_compact_variants_of_a_factory(capsys, tmp_path: Path) -> None:
    path = tmp_path / "dd.py"
    path.write_text(DATA_DEPENDENT)
    code, out, err = run(capsys, "sweep", "--module", f"{path}:make_dd", "--layers", "2", "--hidden", "128",
                         "--batch-sizes", "1", "--seq-lens", "4")
    assert code == 2 and out == ""
    assert err.startswith("irene sweep: error: --layers/--hidden: compact variants are built from bundled --model")
