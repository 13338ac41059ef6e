"""Transfer calibration: a new machine from a prior profile plus a few measured trees."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest

from pytest_irene.cli import main
from pytest_irene.engine.dataset import load_dataset, write_dataset
from pytest_irene.engine.predict.crossval import node_errors, summarise
from pytest_irene.engine.predict.energy_model import EnergyModel, clear_cache
from pytest_irene.engine.predict.strategies import make_predictor
from pytest_irene.engine.predict.transfer import leave_one_tree_out, transfer
from pytest_irene.errors import UsageError

PC1 = Path(__file__).resolve().parents[1] / "calibration" / "datasets" / "irene-pc1.jsonl.gz"


@pytest.fixture(scope="module")
def trees():
    keep = {"bert-base-uncased", "gpt2"}
    return [t for t in load_dataset(PC1) if t.model_name in keep and t.batch_size in (8, 16) and t.seq_len <= 128]


def other_machine(trees, leaf_factor: float, glue_j_per_token: float):
    """The same trees on a made-up machine: leaves cost ``leaf_factor`` times as much and every
    module spends ``glue_j_per_token`` J more per token of its input beyond its children."""
    out = []
    for tree in trees:
        t = copy.deepcopy(tree)
        tokens = t.batch_size * t.seq_len

        def rescale(node):
            if not node.children:
                node.energy_j *= leaf_factor
                return node.energy_j
            own = node.energy_j - sum(c.energy_j for c in node.children)
            node.energy_j = sum(rescale(c) for c in node.children) + own * leaf_factor + glue_j_per_token * tokens
            return node.energy_j

        rescale(t.root)
        out.append(t)
    return out


def errors(predictor, trees):
    trees = copy.deepcopy(trees)
    predictor.predict_many(trees)
    return {lv: v["average"] for lv, v in summarise(node_errors(trees)).items()}


@pytest.mark.parametrize("features", ["model", "all"])
def test_transfer_from_two_trees_beats_the_prior_on_the_new_machine(trees, features):
    prior = make_predictor("glue", features).fit(trees)
    new = other_machine(trees, 0.7, 1e-6)
    two = [t for t in new if t.batch_size == 16 and t.seq_len == 64]
    rest = [t for t in new if not (t.batch_size == 16 and t.seq_len == 64)]
    assert len(two) == 2
    result = transfer(prior, two)
    assert result.trees == 2 and result.signatures > 10
    before, after = errors(prior, rest), errors(result.predictor, rest)
    for level in ("ml", "module", "model"):
        assert before[level] > 10.0  # the prior is off by the machine's costs
        assert after[level] < before[level] / 4, (level, before[level], after[level])
    if features == "model":
        assert 0.6 < result.factors["leaf_per_flop"] < 0.8
    # the prior itself is untouched
    assert errors(prior, trees)["ml"] < 10.0


def test_transfer_needs_a_glue_prior_and_measured_features(trees):
    with pytest.raises(UsageError, match="strategy 'glue'"):
        transfer(make_predictor("predictedsum", "model").fit(trees[:4]), trees[:2])
    prior = make_predictor("glue", "all").fit(trees)
    traced = copy.deepcopy(trees[:1])
    for node in traced[0].walk():
        node.features.pop("latency_s")
    with pytest.raises(UsageError, match="lack"):
        transfer(prior, traced)


def test_leave_one_tree_out(trees):
    prior = make_predictor("glue", "model").fit(trees)
    two = [t for t in trees if t.batch_size == 16 and t.seq_len == 64]
    result = leave_one_tree_out(prior, two)
    assert result["split"] == "leave-one-tree-out"
    assert set(result["levels"]["model"]) == {"bert-base-uncased b16 s64", "gpt2 b16 s64", "average"}
    assert all(n.predicted_energy_j is None for t in two for n in t.walk())
    assert leave_one_tree_out(prior, two[:1])["levels"] == {}


def test_cli_train_with_prior(tmp_path, trees, capsys):
    clear_cache()
    data = tmp_path / "two.jsonl"
    write_dataset(data, [t for t in other_machine(trees, 0.8, 0.0) if t.batch_size == 16 and t.seq_len == 64])
    out = tmp_path / "rig.json"
    assert main(["train", str(data), "--prior", "irene-pc1", "-o", str(out)]) == 0
    text = capsys.readouterr().out
    assert "transferred from irene-pc1 with 2 tree(s)" in text
    assert "leave-one-tree-out" in text
    model = EnergyModel.load(out)
    assert model.feature_sets == ("model", "all")
    assert model.hyper_parameters["transfer"]["prior"] == "irene-pc1"
    assert model.cv_errors["model"]["split"] == "leave-one-tree-out"
    assert main(["train", str(data), "--prior", "no-such-profile", "-o", str(out)]) != 0
    assert "no-such-profile" in capsys.readouterr().err


def test_calibrate_plan_only_measures_nothing(tmp_path, capsys):
    args = ["calibrate", "--plan-only", "--model", "bert-base-uncased", "--batch-size", "2", "--seq-len", "8"]
    tiny = ["num_hidden_layers=1", "hidden_size=32", "intermediate_size=32", "num_attention_heads=2"]
    for kv in tiny:
        args += ["--config", kv]
    assert main(args) == 0
    text = capsys.readouterr().out
    assert "planned rig time" in text and "bert-base-uncased b2 s8" in text
    assert not list(tmp_path.iterdir())
    assert main(["calibrate", "--model", "gpt2", "--batch-size", "2", "--seq-len", "8"]) != 0
    assert "--meter is required" in capsys.readouterr().err
