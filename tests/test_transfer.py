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


def test_a_remeasured_size_is_held_out_with_its_twin_one_row_each(trees):
    """Two trees of one model and size were one row (one fold's error overwrote the other's), and each
    fold kept the twin in training: the held-out error was a fit error."""
    prior = make_predictor("glue", "model").fit(trees)
    two = [t for t in trees if t.batch_size == 16 and t.seq_len == 64]
    again = copy.deepcopy([t for t in two if t.model_name == "gpt2"])
    result = leave_one_tree_out(prior, two + again)
    assert set(result["levels"]["model"]) == {"bert-base-uncased b16 s64", "gpt2 b16 s64 #1", "gpt2 b16 s64 #2", "average"}
    # held out together, the twins are predicted by the same fit, from bert alone: as far off as one gpt2 alone
    alone = leave_one_tree_out(prior, two)["levels"]["model"]["gpt2 b16 s64"]
    assert result["levels"]["model"]["gpt2 b16 s64 #1"] == pytest.approx(alone)
    assert "nothing to hold out" in leave_one_tree_out(prior, again + copy.deepcopy(again))["note"]


def test_a_type_the_transfer_cannot_regress_stays_marked_as_never_trained(tmp_path, trees):
    """A leaf type only in the new trees was listed as trained, yet the transfer (which rescales the
    prior's regressors and makes none) predicts it with the generic regressor: the mark was lost."""
    from pytest_irene.engine.predict.transfer import transfer_energy_model

    new = copy.deepcopy([t for t in trees if t.batch_size == 16 and t.seq_len == 64])
    for node in new[0].walk():
        if node.type == "Tanh":
            node.type = "SiLU"
    data = tmp_path / "new.jsonl"
    write_dataset(data, new)
    model = transfer_energy_model([data], prior="irene-pc1", profile="rig", feature_sets=("model",), crossvalidate=False)
    assert "SiLU" not in model.training_ranges.leaf_types
    assert model.training_ranges.leaf_types == EnergyModel.load("irene-pc1").training_ranges.leaf_types


def test_a_prior_the_transfer_cannot_start_from_is_refused_before_measuring(tmp_path, trees, capsys):
    """``irene calibrate --prior`` measured the whole plan, then refused an End2End prior."""
    prior = tmp_path / "e2e.json"
    data = tmp_path / "few.jsonl"
    write_dataset(data, trees[:6])
    assert main(["train", str(data), "--strategy", "predictedsum", "--features", "model", "-o", str(prior)]) == 0
    capsys.readouterr()
    args = ["calibrate", "--model", "bert-base-uncased", "--batch-size", "2", "--seq-len", "8", "--meter", "rapl",
            "--dataset", str(tmp_path / "rig.jsonl"), "-o", str(tmp_path / "rig.json"), "--prior", str(prior)]
    for plan in ([], ["--plan-only"]):
        assert main(args + plan) == 2
        err = capsys.readouterr().err
        assert f"--prior={prior}: transfer calibration needs a prior of strategy 'glue'" in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["e2e.json", "few.jsonl"]
