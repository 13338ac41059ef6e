"""dtype as a model feature, and what a profile's energy covers (``energy_scope``).

One profile must be able to hold fp32 and bf16 measurements, so the tracer records
each node's element size (``bytes_per_element``) and counts bytes with it; and a
profile trained on NVML's GPU-board counter must never pass for wall energy.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch

from pytest_irene.engine.architectures import build_model, example_inputs
from pytest_irene.engine.dataset import load_dataset, tree_from_dict, write_dataset
from pytest_irene.engine.predict.energy_model import EnergyModel, clear_cache, train_energy_model
from pytest_irene.engine.predict.strategies import make_predictor, predictor_from_json
from pytest_irene.engine.tracing import trace
from pytest_irene.errors import DatasetError, ModelFileError, UsageError
from pytest_irene.explorer.payload import call_view
from pytest_irene.report.tree_report import header

REPO = Path(__file__).resolve().parent.parent
PC1 = REPO / "calibration" / "datasets" / "irene-pc1.jsonl.gz"


@pytest.fixture(autouse=True)
def _fresh_cache():
    clear_cache()
    yield
    clear_cache()


def _tiny_bert(dtype: torch.dtype) -> torch.nn.Module:
    model = build_model("bert-base-uncased", num_hidden_layers=1, hidden_size=64, num_attention_heads=4, intermediate_size=128)
    return model.to(dtype)


def test_bf16_moves_half_the_bytes_of_fp32():
    inputs = example_inputs("bert-base-uncased", 4, 16)
    fp32 = trace(_tiny_bert(torch.float32), inputs)
    bf16 = trace(_tiny_bert(torch.bfloat16), inputs)
    assert fp32.meta["dtype"] == "float32" and bf16.meta["dtype"] == "bfloat16"
    pairs = list(zip(fp32.walk(), bf16.walk(), strict=True))
    for a, b in pairs:
        assert a.scope == b.scope
        assert a.features["flops"] == b.features["flops"]
        assert (a.features["bytes_per_element"], b.features["bytes_per_element"]) == (4.0, 2.0)
    for a, b in pairs:
        if a.type in ("Linear", "MatMul", "LayerNorm", "Softmax", "GELUActivation"):
            assert b.features["mem_bytes"] == a.features["mem_bytes"] / 2, a.scope
    # the whole model: everything but the int64 token ids halves
    ratio = bf16.root.features["mem_bytes"] / fp32.root.features["mem_bytes"]
    assert 0.5 <= ratio < 0.51


def test_a_node_records_the_dtype_it_computes_in():
    """Llama-style attention upcasts its softmax to fp32: that node moves fp32 bytes in a bf16 model."""
    model = build_model("llama-1b-style", num_hidden_layers=1, hidden_size=64, intermediate_size=128,
                        num_attention_heads=4, num_key_value_heads=2, head_dim=16, vocab_size=256)
    tree = trace(model.to(torch.bfloat16), example_inputs(model, 2, 8))
    sizes = {n.type: n.features["bytes_per_element"] for n in tree.walk()}
    assert sizes["Linear"] == 2.0 and sizes["LlamaRMSNorm"] == 2.0
    assert sizes["Softmax"] == 4.0


def test_autocast_is_refused_on_meta_and_followed_on_the_cpu():
    """Autocast casts the tensors of its device type only: a meta trace under it counted fp32 silently."""
    from tests.models import hf_model

    model = _tiny_bert(torch.float32)
    cpu_model = hf_model("BertModel", "BertConfig", num_hidden_layers=1, hidden_size=64, num_attention_heads=4,
                         intermediate_size=128)
    inputs = example_inputs("bert-base-uncased", 2, 8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        with pytest.raises(UsageError, match=r"torch.autocast\('cpu', dtype=torch.bfloat16\) is active, but the meta "
                                             r"device does not follow autocast.*device='cpu'.*model.to\(torch.bfloat16\)"):
            trace(model, inputs)
        on_cpu = trace(cpu_model, example_inputs("bert-base-uncased", 2, 8, device="cpu"), device="cpu")
    linears = [n for n in on_cpu.walk() if n.type == "Linear"]
    assert linears and all(n.features["bytes_per_element"] == 2.0 for n in linears)
    assert trace(model, inputs).meta["dtype"] == "float32"  # outside autocast, as before


def _as_dtype(tree, size: float, energy_factor: float, dtype: str):
    out = tree_from_dict(json.loads(json.dumps(tree.to_dict())))
    for node in out.walk():
        node.features["bytes_per_element"] = size
        node.features["mem_bytes"] *= size / 4.0
        node.energy_j = (node.energy_j or 0.0) * energy_factor
    out.meta["dtype"] = dtype
    return out


@pytest.fixture(scope="module")
def mixed_trees():
    """PC1 trees as measured (fp32) and as if measured again in bf16 at 60 % of the energy."""
    base = [t for t in load_dataset(PC1) if t.model_name in ("bert-base-uncased", "gpt2") and t.batch_size == 8]
    return [_as_dtype(t, 4.0, 1.0, "float32") for t in base] + [_as_dtype(t, 2.0, 0.6, "bfloat16") for t in base]


def test_one_predictor_holds_fp32_and_bf16(mixed_trees):
    predictor = make_predictor("glue", "model").fit(mixed_trees)
    assert predictor.feature_names[-1] == "bytes_per_element"
    again = predictor_from_json(json.loads(json.dumps(predictor.to_json())))
    assert again.feature_names == predictor.feature_names
    n = len(mixed_trees) // 2
    fp32, bf16 = copy.deepcopy(mixed_trees[:n]), copy.deepcopy(mixed_trees[n:])
    again.predict_many(fp32 + bf16)
    for a, b in zip(fp32, bf16):
        assert b.root.predicted_energy_j == pytest.approx(0.6 * a.root.predicted_energy_j, rel=0.1)


def test_a_predictor_trained_without_dtypes_does_not_ask_for_them():
    trees = [t for t in load_dataset(PC1) if t.model_name == "gpt2" and t.batch_size == 8]
    assert "bytes_per_element" not in make_predictor("glue", "model").fit(trees).feature_names


def _write(tmp_path: Path, trees, scope: str | None, name: str) -> Path:
    trees = [tree_from_dict(json.loads(json.dumps(t.to_dict()))) for t in trees]
    for t in trees:
        if scope is not None:
            t.meta["energy_scope"] = scope
    path = tmp_path / name
    write_dataset(path, trees)
    return path


def test_a_profile_trained_on_gpu_board_energy_says_so(tmp_path: Path, mixed_trees):
    path = _write(tmp_path, mixed_trees, "gpu-board", "nvml.jsonl.gz")
    model = train_energy_model([path], profile="nvml-test", feature_sets=("model",), crossvalidate=False)
    assert model.energy_scope == "gpu-board"
    assert model.dataset_info["dtypes"] == ["bfloat16", "float32"]
    model.save(tmp_path / "nvml-test.json")
    loaded = EnergyModel.load(tmp_path / "nvml-test.json")
    assert loaded.energy_scope == "gpu-board"
    tree = loaded.predict(trace(_tiny_bert(torch.bfloat16), example_inputs("bert-base-uncased", 2, 8)))
    assert tree.meta["energy_scope"] == "gpu-board"
    assert "GPU-board energy only (NVML), not wall" in header(tree).plain
    assert call_view(tree)["energy_scope"] == "gpu-board"


def test_the_bundled_pc1_profile_is_wall_energy():
    model = EnergyModel.load("irene-pc1")
    assert model.energy_scope == "wall"
    tree = model.predict(trace(_tiny_bert(torch.float32), example_inputs("bert-base-uncased", 2, 8)))
    assert "[wall energy]" in header(tree).plain


def test_training_refuses_to_mix_wall_and_gpu_board(tmp_path: Path, mixed_trees):
    wall = _write(tmp_path, mixed_trees[:2], None, "wall.jsonl")
    board = _write(tmp_path, mixed_trees[2:4], "gpu-board", "board.jsonl")
    with pytest.raises(UsageError, match=r"mixes energy scopes \['gpu-board', 'wall'\]"):
        train_energy_model([wall, board], profile="mixed", feature_sets=("model",), crossvalidate=False)


def test_bad_scopes_are_named(tmp_path: Path, mixed_trees):
    line = mixed_trees[0].to_dict()
    line["meta"]["energy_scope"] = "gpu"
    with pytest.raises(DatasetError, match="meta.energy_scope.*expected one of"):
        tree_from_dict(line, "x.jsonl", 3)
    doc = json.loads(EnergyModel.load("irene-pc1").dumps())
    doc["energy_scope"] = "board"
    with pytest.raises(ModelFileError, match="field 'energy_scope': expected one of"):
        EnergyModel.from_json(doc, "m.json")


def test_the_pytest_header_says_what_the_profile_covers(pytester: pytest.Pytester):
    from inner import run

    doc = json.loads(EnergyModel.load("irene-pc1").dumps())
    doc["energy_scope"] = "gpu-board"
    (pytester.path / "board.json").write_text(json.dumps(doc))
    pytester.makepyfile(test_nothing="def test_nothing():\n    pass\n")
    wall = run(pytester, "--collect-only")
    wall.stdout.fnmatch_lines(["*irene: profile irene-pc1 (stands for IrEne PC1*; wall energy), features*"])
    board = run(pytester, "--collect-only", "--irene-profile", str(pytester.path / "board.json"))
    board.stdout.fnmatch_lines(["*irene: profile *board.json (stands for *; GPU-board energy only (NVML), not wall)*"])


def test_a_transferred_profile_takes_the_scope_of_the_new_data(tmp_path: Path, mixed_trees):
    from pytest_irene.engine.predict.transfer import transfer_energy_model

    board = _write(tmp_path, [t for t in mixed_trees if t.meta["dtype"] == "float32"][:2], "gpu-board", "board.jsonl")
    from pytest_irene.engine.predict.transfer import CrossScopeTransferWarning

    with pytest.warns(CrossScopeTransferWarning, match="predicts wall energy and the new measurements are gpu-board"):
        model = transfer_energy_model([board], prior="irene-pc1", profile="board", feature_sets=("model",), crossvalidate=False)
    assert model.energy_scope == "gpu-board"


def test_editing_a_model_files_content_leaves_the_cached_model_alone():
    """Found by the full suite: a test breaking ``dataset.ranges`` in ``to_json()``'s result broke
    the cached bundled profile for every later test in the same process."""
    model = EnergyModel.load("irene-pc1")
    doc = model.to_json()
    doc["dataset"]["ranges"]["widths"] = [-1.0]
    doc["hardware"]["description"] = "changed"
    assert EnergyModel.load("irene-pc1").training_ranges.widths == [16.0, 768.0]
    assert EnergyModel.load("irene-pc1").hardware.get("description") != "changed"


def test_a_measured_tree_is_not_relabelled_by_a_profile_of_another_scope(mixed_trees):
    """Predicting GPU-board measurements with the wall profile used to overwrite the tree's
    ``energy_scope``: the measured board joules then read as wall joules beside wall predictions."""
    board = tree_from_dict(json.loads(json.dumps(mixed_trees[0].to_dict())))
    board.meta["energy_scope"] = "gpu-board"
    model = EnergyModel.load("irene-pc1")
    with pytest.raises(UsageError, match=r"measured 'gpu-board' energy but .* predicts 'wall' energy"):
        model.predict(board)
    assert board.energy_scope == "gpu-board" and board.root.predicted_energy_j is None
    traced = model.predict(trace(_tiny_bert(torch.float32), example_inputs("bert-base-uncased", 2, 8)))
    assert traced.energy_scope == "wall"  # an unmeasured tree takes the profile's scope
