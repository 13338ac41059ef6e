"""The gate on generation trees: a costlier decoder fails and names the decode modules that moved."""

from __future__ import annotations

import torch

import pytest_irene
from pytest_irene.compare.baselines import entry_from_tree
from pytest_irene.compare.gate import compare, culprits
from pytest_irene.engine.predict.energy_model import EnergyModel
from tests.models import tiny_llama


def generation(ffn: int, energy_model: EnergyModel):
    model = tiny_llama(vocab_size=1000, hidden_size=256, intermediate_size=ffn, max_position_embeddings=256)
    prompt = {"input_ids": torch.zeros(4, 64, dtype=torch.long)}
    return energy_model.predict(pytest_irene.trace_generate(model, prompt, max_new_tokens=32), features="model")


def test_a_costlier_decoder_fails_and_names_the_decode_modules() -> None:
    energy_model = EnergyModel.load("irene-pc1")
    base = entry_from_tree(generation(512, energy_model), profile="p", features="model")
    assert {"prefill", "decode", "decode.lm_head"} <= set(base.modules)
    wider = generation(2048, energy_model)
    comp = compare(base, wider, tolerance=0.05, min_delta=0.001)
    assert comp.status == "fail" and "starting at decode.model.layers.0.mlp" in comp.reason
    named = {d.scope for d in culprits(comp.failed_modules)}
    assert {f"decode.model.layers.{i}.mlp.{p}" for i in (0, 1) for p in ("gate_proj", "up_proj", "down_proj")} <= named
    assert not any(s.startswith("decode.model.layers.0.self_attn") for s in named)  # attention did not change
    same = compare(base, generation(512, energy_model), tolerance=0.05, min_delta=0.001)
    assert same.status == "pass"
