"""The gate covers every module a user can name, and tells a rename from a change.

Regression tests for two bugs of issue 10: the gate missed leaf modules
(``lm_head`` +53 % passed because only non-leaf modules were stored), and a pure
rename (``self.mlp`` -> ``self.ffn``) failed with "4 module(s) changed".
Real traces and the bundled energy model; models are built on the meta device.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from pytest_irene.compare.baselines import ModuleEnergy, entry_from_tree, tree_energies
from pytest_irene.compare.baseline_store import BaselineStore
from pytest_irene.compare.records import CallRecord, comparison_from_dict
from pytest_irene.compare.gate import compare, culprits
from pytest_irene.compare.renames import find_renames
from pytest_irene.engine.predict.energy_model import EnergyModel
from pytest_irene.engine.tracing import trace
from pytest_irene.engine.tree import EnergyTree
from pytest_irene.report.failure import failure_text
from tests.models import tiny_llama


@pytest.fixture(scope="module")
def energy_model() -> EnergyModel:
    return EnergyModel.load("irene-pc1")


def predicted(model: nn.Module, inputs: object, energy_model: EnergyModel) -> EnergyTree:
    return energy_model.predict(trace(model, inputs, device="meta"), features="model")


def llama(vocab_size: int, energy_model: EnergyModel) -> EnergyTree:
    model = tiny_llama(vocab_size=vocab_size, max_position_embeddings=256)
    return predicted(model, {"input_ids": torch.zeros(8, 128, dtype=torch.long)}, energy_model)


def entry(tree: EnergyTree):
    return entry_from_tree(tree, profile="p", features="model")


def test_lm_head_growth_fails_and_is_named_though_the_root_is_within_tolerance(energy_model: EnergyModel) -> None:
    base, wider = llama(1000, energy_model), llama(2000, energy_model)
    assert "lm_head" in entry(base).modules
    comp = compare(entry(base), wider, tolerance=0.05, min_delta=0.001)
    root = next(d for d in comp.deltas if d.scope == "")
    head = next(d for d in comp.deltas if d.scope == "lm_head")
    assert abs(root.change) < 0.05 < head.change  # the total alone would let it through
    assert comp.status == "fail" and head.failed
    assert [d.scope for d in culprits(comp.failed_modules)] == ["lm_head"]
    assert "starting at lm_head" in comp.reason
    text = failure_text([CallRecord("t.py::t", "lm", wider, "p", "model", comparison=comp)])
    assert "lm_head" in text and "Linear" in text


def test_a_conv_stem_and_a_lone_linear_under_the_root_are_gated(energy_model: EnergyModel) -> None:
    class Net(nn.Module):
        def __init__(self, channels: int, classes: int):
            super().__init__()
            self.stem = nn.Conv2d(3, channels, 3, padding=1)
            self.head = nn.Linear(channels, classes)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.head(self.stem(x).flatten(2).transpose(1, 2))

    image = torch.zeros(8, 3, 64, 64)
    base = entry(predicted(Net(16, 10), image, energy_model))
    assert {"stem", "head"} <= set(base.modules)
    wider_stem = compare(base, predicted(Net(64, 10), image, energy_model), tolerance=0.05, min_delta=0.0)
    assert wider_stem.status == "fail" and "stem" in {d.scope for d in culprits(wider_stem.failed_modules)}
    more_classes = compare(base, predicted(Net(16, 1000), image, energy_model), tolerance=0.05, min_delta=0.0)
    assert [d.scope for d in culprits(more_classes.failed_modules)] == ["head"]


def test_every_named_module_is_a_scope_and_no_functional_primitive_is(energy_model: EnergyModel) -> None:
    transformers = pytest.importorskip("transformers")
    config = transformers.BertConfig(
        vocab_size=500, hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64
    )
    # eager attention: matmul and softmax primitives, as in the reference dataset
    model = transformers.AutoModel.from_config(config, attn_implementation="eager").eval()
    tree = predicted(model, {"input_ids": torch.zeros(2, 16, dtype=torch.long)}, energy_model)
    scopes = set(tree_energies(tree))
    assert any(not n.is_module for n in tree.walk())  # the tracer did see functional primitives
    assert not any("matmul#" in s or "softmax#" in s for s in scopes)
    not_run = (nn.Dropout, nn.Identity, nn.ModuleList)  # no computation, or never called
    named = {name for name, m in model.named_modules() if not isinstance(m, not_run)}
    assert scopes == named


TWO_LAYERS = """
import torch
from torch import nn


class Layer(nn.Module):
    def __init__(self, width):
        super().__init__()
        self.{name} = nn.Sequential(nn.Linear(64, width), nn.GELU(), nn.Linear(width, 64))

    def forward(self, x):
        return x + self.{name}(x)


class Net(nn.Module):
    def __init__(self, widths):
        super().__init__()
        self.layers = nn.ModuleList([Layer(w) for w in widths])

    def forward(self, x):
        for layer in self.layers:
            x = layer(x)
        return x
"""


def two_layers(name: str, widths: tuple[int, int], energy_model: EnergyModel) -> EnergyTree:
    space: dict = {}
    exec(TWO_LAYERS.format(name=name), space)
    return predicted(space["Net"](widths).eval(), torch.zeros(8, 128, 64), energy_model)


def test_a_pure_rename_passes_and_is_reported(energy_model: EnergyModel) -> None:
    base = entry(two_layers("mlp", (256, 512), energy_model))
    renamed = two_layers("ffn", (256, 512), energy_model)
    comp = compare(base, renamed, tolerance=0.05, min_delta=0.001)
    assert comp.status == "pass" and not comp.failed_modules
    assert [(r.old, r.new) for r in comp.renames] == [("layers.0.mlp", "layers.0.ffn"), ("layers.1.mlp", "layers.1.ffn")]
    assert ("layers.1.mlp.2", "layers.1.ffn.2") in comp.renames[1].scopes
    assert "2 module(s) renamed (layers.0.mlp -> layers.0.ffn, layers.1.mlp -> layers.1.ffn)" in comp.reason
    moved = next(d for d in comp.deltas if d.scope == "layers.0.ffn.0")
    assert moved.was == "layers.0.mlp.0" and moved.change == 0.0
    assert not [d for d in comp.deltas if d.baseline_j is None or d.now_j is None]  # no add/remove left
    assert comparison_from_dict(json.loads(json.dumps(comp.to_dict())), "c") == comp  # xdist hand-over, run files

    strict = compare(base, renamed, tolerance=0.05, min_delta=0.001, strict=True)
    assert strict.status == "fail" and "--irene-strict" in strict.reason
    assert {d.scope for d in strict.failed_modules} == {"layers.0.ffn", "layers.1.ffn"}
    text = failure_text([CallRecord("t.py::t", "net", renamed, "p", "model", comparison=strict)])
    assert "renamed modules: layers.0.mlp -> layers.0.ffn (Sequential" in text


def test_a_rename_that_also_changes_the_computation_fails(energy_model: EnergyModel) -> None:
    base = entry(two_layers("mlp", (256, 512), energy_model))
    comp = compare(base, two_layers("ffn", (256, 1024), energy_model), tolerance=0.05, min_delta=0.001)
    assert comp.status == "fail"
    assert [(r.old, r.new) for r in comp.renames] == [("layers.0.mlp", "layers.0.ffn")]
    assert "layers.1.ffn" in {d.scope for d in comp.failed_modules if d.baseline_j is None}
    assert "layers.1.mlp" in {d.scope for d in comp.deltas if d.now_j is None}  # gone: a decrease
    strict = compare(base, two_layers("ffn", (256, 1024), energy_model), tolerance=0.05, min_delta=0.001, fail_on="any")
    assert "layers.1.mlp" in {d.scope for d in strict.failed_modules if d.now_j is None}


def test_find_renames_prefers_the_same_parent_and_needs_the_same_types() -> None:
    e = ModuleEnergy
    was = {"": e("M", 3.0), "a.x": e("Block", 1.0), "a.x.fc": e("Linear", 0.5), "b.x": e("Block", 1.0),
           "b.x.fc": e("Linear", 0.5)}
    now = {"": e("M", 3.0), "b.y": e("Block", 1.0), "b.y.fc": e("Linear", 0.5), "a.y": e("Block", 1.0),
           "a.y.fc": e("Linear", 0.5)}
    renames = find_renames(was, now, tolerance=0.05, min_delta=0.0)
    assert [(r.old, r.new) for r in renames] == [("a.x", "a.y"), ("b.x", "b.y")]
    other_type = {**now, "a.y.fc": e("Conv1D", 0.5)}
    assert [(r.old, r.new) for r in find_renames(was, other_type, tolerance=0.05, min_delta=0.0)] == [("b.x", "b.y")]
    other_shape = {"": e("M", 3.0), "a.y": e("Block", 1.0), "a.y.proj": e("Linear", 0.5)}
    assert find_renames(was, other_shape, tolerance=0.05, min_delta=0.0) == []


def test_a_v1_baseline_loads_passes_and_is_rewritten_with_leaves(tmp_path: Path, energy_model: EnergyModel) -> None:
    tree = llama(1000, energy_model)
    old = entry_from_tree(tree, profile="p", features="model")
    v1 = {"profile": "p", "features": "model", "inputs": old.inputs, "model_name": old.model_name,
          "energy_model": "", "root": {"type": old.root.type, "energy_j": old.root.energy_j},
          "modules": {s: {"type": m.type, "energy_j": m.energy_j}
                      for s, m in tree_energies(tree, leaves=False).items() if s}}
    path = tmp_path / "m.json"
    path.write_text(json.dumps({"format": "irene-baselines/1", "tests": {"m.py::t": {"default": v1}}}))
    stored = BaselineStore(tmp_path).get("m.py::t", "default")
    assert stored is not None and not stored.leaves and "lm_head" not in stored.modules
    comp = compare(stored, tree, tolerance=0.05, min_delta=0.001)
    assert comp.status == "pass" and "irene-baselines/1" in comp.reason and comp.legacy_baseline
    assert not compare(entry_from_tree(tree, profile="p", features="model"), tree, tolerance=0.05, min_delta=0.001).legacy_baseline
    assert "lm_head" not in {d.scope for d in comp.deltas}  # not reported as added
    # a rebuilt baseline adds the leaf scopes; an untouched /1 entry keeps saying it has none
    BaselineStore(tmp_path).save({("m.py::u", "default"): entry_from_tree(tree, profile="p", features="model")})
    doc = json.loads(path.read_text())
    assert doc["format"] == "irene-baselines/2"
    assert doc["tests"]["m.py::t"]["default"]["leaves"] is False
    assert "lm_head" in doc["tests"]["m.py::u"]["default"]["modules"]
    assert doc["tests"]["m.py::u"]["default"]["leaves"] is True


RENAMED = """
import torch
from torch import nn


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.{name} = nn.Sequential(nn.Linear(64, 512), nn.GELU(), nn.Linear(512, 64))
        self.head = nn.Linear(64, 8)

    def forward(self, x):
        return self.head(self.{name}(x))


def test_net(irene):
    irene(Net(), torch.zeros(8, 128, 64), label="net")
"""


def test_the_plugin_passes_a_rename_and_fails_it_under_strict(pytester: pytest.Pytester) -> None:
    from inner import run

    pytester.makepyfile(test_net=RENAMED.format(name="mlp"))
    run(pytester, "--irene-save").assert_outcomes(passed=1)
    pytester.makepyfile(test_net=RENAMED.format(name="ffn"))
    result = run(pytester, "-rP")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(
        ["*renamed modules (same types and energies, not failed):*", "*test_net.py::test_net ?net?: mlp -> ffn (Sequential*"]
    )
    strict = run(pytester, "--irene-strict", "--irene-markdown=summary.md")
    strict.assert_outcomes(failed=1)
    assert "renamed from `mlp`" in (pytester.path / "summary.md").read_text()
    strict.stdout.fnmatch_lines(["*1 module(s) renamed (mlp -> ffn) and --irene-strict is set*"])
    strict.stdout.fnmatch_lines(["*test_net.py::test_net ?net?: ffn (Sequential) renamed from mlp*"])


def test_same_inputs_read_as_other_tokens_are_gated_not_skipped() -> None:
    """A ViT whose patch size went 8 -> 4 reads the same pixels as 65 tokens instead of 17: that is
    the model's change, and was skipped as "another input size". New images still skip."""
    from transformers import ViTConfig, ViTModel

    from pytest_irene import predict
    from pytest_irene.compare.baselines import INPUT_ELEMENTS_KEY, OTHER_INPUT_ELEMENTS_KEY

    def vit(patch: int, side: int = 32):
        cfg = ViTConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                        image_size=side, patch_size=patch)
        return predict(ViTModel(cfg), torch.randn(2, 3, side, side))

    base = entry_from_tree(vit(8), profile="irene-pc1", features="model")
    assert base.inputs == {"batch_size": 2, "seq_len": 17, INPUT_ELEMENTS_KEY: 2 * 3 * 32 * 32, OTHER_INPUT_ELEMENTS_KEY: 0}
    finer = compare(base, vit(4), tolerance=0.01, min_delta=1e-6)
    assert finer.status in ("pass", "fail") and finer.reason.startswith(
        "tokens per sample 17 -> 65 with the same inputs (the model reads them differently); ")
    assert compare(base, vit(8, side=64), tolerance=0.01, min_delta=1e-6).status == "skipped"
    old = entry_from_tree(vit(8), profile="irene-pc1", features="model")
    del old.inputs[INPUT_ELEMENTS_KEY]  # a baseline saved before the key: compared as it was
    assert compare(old, vit(4), tolerance=0.01, min_delta=1e-6).status == "skipped"
