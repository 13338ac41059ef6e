"""Cross-validation: error computation, split semantics, result structure."""

from __future__ import annotations

from pathlib import Path

import pytest

from pytest_irene.engine.predict.crossval import PAPER_MODELS, crossvalidate, level_errors, split_trees
from pytest_irene.engine.dataset import load_dataset
from pytest_irene.errors import UsageError
from pytest_irene.engine.tree import EnergyNode, EnergyTree

REFERENCE = Path(__file__).resolve().parents[1] / "calibration" / "datasets" / "irene-pc1.jsonl.gz"


def hand_tree(model: str, scale: float = 1.0, batch: int = 8, seq: int = 32) -> EnergyTree:
    f = lambda flops: {"flops": flops, "mem_bytes": flops / 2}
    root = EnergyNode("", "Net", "model", f(30.0 * scale), energy_j=10.0 * scale)
    block = root.add_child(EnergyNode("block", "Block", "module", f(20.0 * scale), energy_j=6.0 * scale))
    block.add_child(EnergyNode("block.fc", "Linear", "ml", f(15.0 * scale), energy_j=4.0 * scale))
    block.add_child(EnergyNode("block.mm", "MatMul", "ml", f(5.0 * scale), energy_j=1.0 * scale))
    root.add_child(EnergyNode("head", "Linear", "ml", f(10.0 * scale), energy_j=3.0 * scale))
    tree = EnergyTree(root, model_name=model, batch_size=batch, seq_len=seq)
    tree.set_tree_features()
    return tree


class FixedPredictor:
    """Predicts a fixed value per scope: lets the test check the error arithmetic alone."""

    def __init__(self, values):
        self.values = values

    def predict_many(self, trees):
        for tree in trees:
            for node in tree.walk():
                node.predicted_energy_j = self.values[node.scope]


def test_level_errors_on_hand_made_trees():
    a, b = hand_tree("a"), hand_tree("b")
    pred = FixedPredictor({"": 11.0, "block": 6.0, "block.fc": 5.0, "block.mm": 1.0, "head": 3.3})
    out = level_errors([a, b], pred)
    # ml: fc 25 %, mm 0 %, head 10 % -> 11.67 ; module: 0 % ; model: 10 %
    assert out["ml"]["a"] == pytest.approx(35.0 / 3)
    assert out["module"]["a"] == pytest.approx(0.0)
    assert out["model"]["b"] == pytest.approx(10.0)
    assert out["model"]["average"] == pytest.approx(10.0)
    assert set(out) == {"ml", "module", "model"}


@pytest.fixture(scope="module")
def trees():
    return load_dataset(REFERENCE)


def test_lomo_folds_hold_out_each_paper_model_and_always_train_tiny_ctrl(trees):
    folds = split_trees(trees, "lomo")
    assert [name for name, _, _ in folds] == list(PAPER_MODELS)
    for name, train, test in folds:
        assert {t.model_name for t in test} == {name}
        assert name not in {t.model_name for t in train}
        assert "sshleifer/tiny-ctrl" in {t.model_name for t in train}
        assert len(train) + len(test) == len(trees)


def test_seq_split_holds_out_two_longest_sequences_per_model(trees):
    [(_, train, test)] = split_trees(trees, "seq")
    assert {t.seq_len for t in test} == {224, 256}
    assert max(t.seq_len for t in train) == 192
    assert len(train) + len(test) == len(trees)


def test_batch_split_holds_out_largest_batch(trees):
    [(_, train, test)] = split_trees(trees, "batch")
    assert {t.batch_size for t in test} == {32}
    assert max(t.batch_size for t in train) == 24


def test_width_split_trains_on_the_paper_models_and_tests_the_others(trees):
    [(name, train, test)] = split_trees(trees, "width")
    assert name == "width"
    assert {t.model_name for t in train} == set(PAPER_MODELS)
    assert {t.model_name for t in test} == {"sshleifer/tiny-ctrl"}
    small = [t for t in trees if t.seq_len <= 64 and t.batch_size <= 16]
    out = crossvalidate(small, features="model", split="width")
    assert out["split"] == "width" and set(out["levels"]["model"]) == {"sshleifer/tiny-ctrl", "average"}
    with pytest.raises(UsageError, match="split 'width'"):
        split_trees([t for t in trees if t.model_name in PAPER_MODELS], "width")


def test_unknown_split_is_a_usage_error(trees):
    with pytest.raises(UsageError, match="unknown split"):
        split_trees(trees, "random")


def test_crossvalidate_structure_and_accuracy(trees):
    """Default strategy, model features, lomo: loose behavioural bounds (targets live in benchmarks)."""
    out = crossvalidate(trees, features="model", split="lomo")
    assert out["features"] == "model" and out["strategy"] == "glue" and out["split"] == "lomo"
    for level in ("ml", "module", "model"):
        assert set(out["levels"][level]) == set(PAPER_MODELS) | {"average"}
    assert out["levels"]["model"]["average"] < 5.0
    assert out["levels"]["ml"]["average"] < 8.0


def test_crossvalidate_all_features_uses_physics(trees):
    out = crossvalidate(trees, features="all", split="batch")
    assert out["levels"]["model"]["average"] < 1.5
    assert out["levels"]["module"]["average"] < 1.5


def test_level_errors_accepts_predict_only_objects():
    class PerTree:
        def predict(self, tree):
            for node in tree.walk():
                node.predicted_energy_j = node.energy_j * 1.02

    out = level_errors([hand_tree("a", scale=3.0)], PerTree())
    assert all(out[level]["a"] == pytest.approx(2.0) for level in ("ml", "module", "model"))


def test_seq_and_batch_report_only_paper_models(trees):
    subset = [t for t in trees if t.model_name in ("gpt2", "sshleifer/tiny-ctrl") and t.batch_size <= 16]
    out = crossvalidate(subset, features="all", split="seq")
    assert set(out["levels"]["model"]) == {"gpt2", "average"}
