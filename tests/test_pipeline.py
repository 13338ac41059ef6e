"""The one pipeline: the feature-mode decision (with its reason code) and trace-or-measure."""

from __future__ import annotations

import pytest
import torch

from pytest_irene.errors import UsageError
from pytest_irene.pipeline import (
    HOST_DIFFERS,
    HOST_MATCHES,
    MODEL_OFF_GPU,
    NO_FINGERPRINT,
    NO_RESOURCE_SET,
    REQUESTED,
    FeatureModeRefused,
    build_tree,
    choose_features,
)

RIG = {"cpu_model": "Rig CPU", "cpu_count": 8, "memory_gib": 32.0, "gpus": ["GPU X"], "driver_version": "1"}


def test_every_outcome_has_its_code_and_a_message():
    laptop = dict(RIG, cpu_model="Laptop CPU", cpu_count=4)
    assert choose_features("model", RIG, host=RIG).code == REQUESTED
    assert choose_features("auto", RIG, host=RIG, available=("model",)).code == NO_RESOURCE_SET
    assert choose_features("auto", {}, host=RIG).code == NO_FINGERPRINT
    here = choose_features("auto", RIG, host=RIG, device="cuda:0")
    assert (here.features, here.code) == ("all", HOST_MATCHES)
    assert here.message.startswith("auto: host matches the calibration rig (Rig CPU x8")
    away = choose_features("auto", RIG, host=laptop)
    assert (away.features, away.code) == ("model", HOST_DIFFERS) and len(away.differences) == 2
    assert away.summary == "this host differs from the calibration rig: " + away.differences[0]
    assert away.message.endswith("; resource features would not transfer, so model features are used")


def test_a_gpu_profile_falls_back_to_model_features_for_a_model_off_the_gpu():
    off = choose_features("auto", RIG, host=RIG, device="cpu")
    assert (off.features, off.code) == ("model", MODEL_OFF_GPU)
    assert "but the model is on cpu" in off.message and "would not transfer" not in off.message
    assert choose_features("all", RIG, host=RIG, device="cpu").features == "all"  # 'all' insists
    cpu_rig = dict(RIG, gpus=[])
    assert choose_features("auto", cpu_rig, host=cpu_rig, device="cpu").code == HOST_MATCHES


def test_all_is_refused_with_the_decision_attached():
    with pytest.raises(FeatureModeRefused, match="--x=all: this host differs") as info:
        choose_features("all", RIG, host=dict(RIG, gpus=[]), option="--x")
    assert info.value.mode.code == HOST_DIFFERS and isinstance(info.value, UsageError)


def test_build_tree_traces_on_meta_and_refuses_to_measure_a_meta_model():
    model = torch.nn.Sequential(torch.nn.Linear(4, 3))
    tree = build_tree(model, torch.zeros(2, 4), "model")
    assert tree.root.features["flops"] > 0 and next(model.parameters()).device.type == "cpu"
    with pytest.raises(UsageError, match="--o=all measures the model: it must be on a real device"):
        build_tree(model.to("meta"), torch.zeros(2, 4, device="meta"), "all", option="--o")
    with pytest.raises(UsageError, match=r"features: expected one of \['model', 'all'\], got 'x'"):
        build_tree(model, torch.zeros(2, 4), "x")


def test_predict_refuses_sizes_that_are_not_positive_integers():
    """``pytest_irene.predict(model, x, batch_size=-3)`` used -3 as a feature of every node."""
    import pytest_irene

    model = torch.nn.Sequential(torch.nn.Linear(4, 3))
    for kwargs in ({"batch_size": -3}, {"seq_len": 0}, {"seq_len": 1.5}):
        (argument, value), = kwargs.items()
        with pytest.raises(UsageError, match=f"{argument}: expected a positive integer, got {value}"):
            pytest_irene.predict(model, torch.zeros(2, 4), **kwargs)
    tree = pytest_irene.predict(model, torch.zeros(2, 4), batch_size=3, seq_len=7)
    assert (tree.batch_size, tree.seq_len) == (3, 7) and tree.total_j > 0




def test_explicit_sizes_must_match_a_generation_s_prompt() -> None:
    from models import tiny_llama

    prompt = torch.ones(2, 6, dtype=torch.long)
    tree = build_tree(tiny_llama(), prompt, "model", max_new_tokens=3, batch_size=2, seq_len=6)
    assert (tree.batch_size, tree.seq_len) == (2, 6)
    with pytest.raises(UsageError, match=r"seq_len=64 with max_new_tokens: a generation's sizes are its prompt's \(seq_len 6\)"):
        build_tree(tiny_llama(), prompt, "model", max_new_tokens=3, seq_len=64)
