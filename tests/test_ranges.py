"""Training ranges: the profile stores them, predictions say when they leave them."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from pytest_irene.compare.records import CallRecord
from pytest_irene.engine.dataset import load_dataset
from pytest_irene.engine.predict.energy_model import EnergyModel, clear_cache
from pytest_irene.engine.predict.ranges import TrainingRanges, tree_width
from pytest_irene.errors import ModelFileError
from pytest_irene.explorer.payload import call_view
from pytest_irene.report.terminal import extrapolation_lines, render_summary

PC1 = Path(__file__).resolve().parents[1] / "calibration" / "datasets" / "irene-pc1.jsonl.gz"


@pytest.fixture(scope="module")
def trees():
    return [t for t in load_dataset(PC1) if t.batch_size == 8 and t.seq_len in (32, 256)]


def test_width_is_read_off_the_normalisation_leaves(trees):
    widths = {t.model_name: tree_width(t) for t in trees}
    assert widths["bert-base-uncased"] == 768 and widths["gpt2"] == 768
    assert widths["sshleifer/tiny-ctrl"] == 16


def test_ranges_flag_batch_sequence_width_and_unseen_types(trees):
    paper = TrainingRanges.from_trees([t for t in trees if "tiny" not in t.model_name])
    assert paper.batch_size == [8.0, 8.0] and paper.seq_len == [32.0, 256.0] and paper.widths == [768.0]
    tiny = next(t for t in trees if "tiny" in t.model_name)
    reasons = paper.extrapolation(tiny)
    assert "width 16 not trained (trained: 768)" in reasons
    assert "types never trained: ReLU" in reasons
    bert = copy.deepcopy(next(t for t in trees if t.model_name == "bert-base-uncased"))
    assert paper.extrapolation(bert) == []
    bert.batch_size = 64
    assert paper.extrapolation(bert)[0] == "batch 64 outside the trained 8"


def test_ranges_round_trip_and_validation(trees):
    ranges = TrainingRanges.from_trees(trees)
    assert TrainingRanges.from_json(json.loads(json.dumps(ranges.to_json()))) == ranges
    bad = ranges.to_json() | {"seq_len": [256.0, 32.0]}
    with pytest.raises(ModelFileError, match="seq_len"):
        TrainingRanges.from_json(bad)
    merged = ranges.merged(TrainingRanges([64.0, 64.0], [512.0, 512.0], [4096.0], ["RMSNorm"]))
    assert merged.batch_size == [8.0, 64.0] and 4096.0 in merged.widths and "RMSNorm" in merged.leaf_types


def test_bundled_profile_marks_predictions_outside_its_ranges(trees, tmp_path):
    clear_cache()
    model = EnergyModel.load("irene-pc1")
    assert model.training_ranges is not None and model.training_ranges.widths == [16.0, 768.0]
    inside = copy.deepcopy(next(t for t in trees if t.model_name == "gpt2" and t.seq_len == 32))
    outside = copy.deepcopy(inside)
    outside.batch_size, outside.seq_len = 1, 256  # the same tokens, so the same width
    model.predict_many([inside, outside])
    assert "extrapolation" not in inside.meta
    assert outside.meta["extrapolation"] == ["batch 1 outside the trained 8-32"]
    record = CallRecord("t.py::test_long", "default", outside, "irene-pc1", "model")
    assert extrapolation_lines([record]) == ["extrapolates: t.py::test_long [default]: batch 1 outside the trained 8-32"]
    assert "extrapolates: t.py::test_long" in render_summary([record])
    assert call_view(outside)["extrapolation"] == ["batch 1 outside the trained 8-32"]
    # a broken ranges block names the field when the file is loaded
    obj = model.to_json()
    obj["dataset"]["ranges"]["widths"] = [-1.0]
    with pytest.raises(ModelFileError, match="dataset.ranges"):
        EnergyModel.from_json(obj, source=tmp_path / "m.json")


def test_llama_and_generation_trees_have_their_real_width() -> None:
    """LlamaRMSNorm is an RMSNorm (6 flops per element) predicted as a LayerNorm: it gives the
    width and is no unseen type; a generation's width is its prefill's, not the summed steps'."""
    import torch

    from models import tiny_llama
    from pytest_irene import trace, trace_generate

    ranges = EnergyModel.load("irene-pc1").training_ranges
    forward = trace(tiny_llama(), torch.ones(8, 32, dtype=torch.long))
    assert tree_width(forward) == 64.0
    reasons = ranges.extrapolation(forward)
    assert "width 64 not trained (trained: 16, 768)" in reasons
    assert not any("LlamaRMSNorm" in r for r in reasons)
    generation = trace_generate(tiny_llama(), torch.ones(1, 8, dtype=torch.long), max_new_tokens=20)
    assert tree_width(generation) == 64.0


def test_a_16_bit_model_is_marked_as_extrapolating_from_an_fp32_profile(tmp_path) -> None:
    """irene-pc1 was measured in fp32 (its lines carry no element size): a bf16 model is predicted
    from its halved bytes alone, and the prediction must say so. Recording the element sizes in
    the bundled file kept its energy-model version, so no stored baseline went stale."""
    import torch

    from pytest_irene import predict
    from pytest_irene.compare.baselines import energy_model_version

    clear_cache()
    ranges = EnergyModel.load("irene-pc1").training_ranges
    assert ranges is not None and ranges.element_bytes == [4.0]
    model = torch.nn.Sequential(torch.nn.Linear(768, 768), torch.nn.LayerNorm(768))
    fp32 = predict(model, torch.randn(8, 64, 768))
    bf16 = predict(model.to(torch.bfloat16), torch.randn(8, 64, 768, dtype=torch.bfloat16))
    assert "extrapolation" not in fp32.meta
    assert bf16.meta["extrapolation"] == [
        "16-bit (bf16/fp16) elements never trained (trained: 32-bit (fp32)); predicted from the bytes alone"
    ]
    # older files have no element sizes: not checked, and still read
    doc = ranges.to_json()
    doc.pop("element_bytes")
    assert TrainingRanges.from_json(doc).extrapolation(bf16) == []
    with pytest.raises(ModelFileError, match="element_bytes"):
        TrainingRanges.from_json(doc | {"element_bytes": [0.0]})
    # the version ignores the new field: the file hashes as it did without it
    bundled = Path(__file__).parents[1] / "models" / "irene-pc1.json"
    obj = json.loads(bundled.read_text())
    obj["dataset"]["ranges"].pop("element_bytes")
    from pytest_irene.engine.predict.model_file import dump_json

    (tmp_path / "old.json").write_text(dump_json(obj) + "\n")
    assert energy_model_version(bundled) == energy_model_version(tmp_path / "old.json")


def test_every_generation_says_its_decode_steps_extrapolate() -> None:
    """The reference data holds no decode step: the report must say so, not only the README."""
    from pytest_irene import build_model, example_inputs, predict
    from pytest_irene.engine.predict.ranges import DECODE_EXTRAPOLATES

    model = build_model("gpt2", num_hidden_layers=1, causal_lm=True)
    forward = predict(model, example_inputs("gpt2", 8, 64))
    generation = predict(model, example_inputs("gpt2", 8, 64), max_new_tokens=3)
    assert DECODE_EXTRAPOLATES not in forward.meta.get("extrapolation", [])
    assert DECODE_EXTRAPOLATES in generation.meta["extrapolation"]


class TwoTowers:
    """A CLIP-like model: text ids through one LayerNorm, patches (more tokens) through another."""

    @staticmethod
    def build(width: int = 16):  # type: ignore[no-untyped-def]
        import torch

        class Model(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.text = torch.nn.Embedding(100, width)
                self.text_norm = torch.nn.LayerNorm(width)
                self.patches = torch.nn.Linear(48, width)
                self.vision_norm = torch.nn.LayerNorm(width)

            def forward(self, input_ids, pixel_values):  # type: ignore[no-untyped-def]
                return self.text_norm(self.text(input_ids)).mean() + self.vision_norm(self.patches(pixel_values)).mean()

        return Model()


@pytest.mark.parametrize("device", ["meta", "cpu"])
def test_a_tower_of_other_tokens_does_not_misread_the_width(device: str) -> None:
    """The width was a norm's flops over the tree's tokens (the text's): CLIP at width 16 with 65
    patches beside 32 ids read 32.5, "width not trained"."""
    import torch

    from pytest_irene.engine.tracing import trace

    model = TwoTowers.build(16).to(device)
    tree = trace(model, {"input_ids": torch.zeros(8, 32, dtype=torch.long, device=device),
                         "pixel_values": torch.zeros(8, 65, 48, device=device)}, device=device)
    assert (tree.batch_size, tree.seq_len) == (8, 32)
    assert tree["vision_norm"].notes["norm_width"] == 16
    assert tree_width(tree) == 16.0
    assert not any("width" in r for r in EnergyModel.load("irene-pc1").training_ranges.extrapolation(tree))
