"""Bundled architectures: build by name without downloads, example inputs, tiny-ctrl's sizes."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from pytest_irene.engine.architectures import ARCHITECTURES, build_config, build_model, config_dict, example_inputs
from pytest_irene.engine.dataset import iter_trees
from pytest_irene.errors import UsageError
from pytest_irene.engine.tracing import trace

DATASET = Path(__file__).resolve().parents[1] / "calibration" / "datasets" / "irene-pc1.jsonl.gz"
EXPECTED_ROOTS = {
    "bert-base-uncased": "BertModel",
    "roberta-base": "RobertaModel",
    "distilbert-base-uncased": "DistilBertModel",
    "gpt2": "GPT2Model",
    "distilgpt2": "GPT2Model",
    "openai-gpt": "OpenAIGPTModel",
    "sshleifer/tiny-ctrl": "CTRLModel",
}
LAYERS_KEY = {"bert": "num_hidden_layers", "roberta": "num_hidden_layers", "distilbert": "n_layers"}


def test_the_seven_dataset_architectures() -> None:
    assert ARCHITECTURES == tuple(EXPECTED_ROOTS)


@pytest.mark.parametrize("name", ARCHITECTURES)
def test_build_by_name_on_meta_with_overrides(name: str) -> None:
    model_type = config_dict(name)["model_type"]
    model = build_model(name, **{LAYERS_KEY.get(model_type, "n_layer"): 1})
    assert type(model).__name__ == EXPECTED_ROOTS[name]
    assert not model.training
    assert all(p.device.type == "meta" for p in model.parameters())
    assert model.config._attn_implementation == "eager"
    assert model.config._name_or_path == name
    inputs = example_inputs(name, 2, 5)
    assert inputs["input_ids"].shape == (2, 5) and inputs["attention_mask"].shape == (2, 5)
    assert ("token_type_ids" in inputs) == (name == "bert-base-uncased")
    tree = trace(model, inputs)
    assert (tree.batch_size, tree.seq_len, tree.model_name) == (2, 5, name)


def test_full_sizes_match_the_published_models() -> None:
    model = build_model("bert-base-uncased")
    assert sum(p.numel() for p in model.parameters()) == 109_482_240  # bert-base-uncased incl. pooler
    assert sum(p.numel() for p in build_model("gpt2").parameters()) == 124_439_808
    assert sum(p.numel() for p in build_model("distilbert-base-uncased").parameters()) == 66_362_880


def test_unknown_name_lists_the_known_ones() -> None:
    with pytest.raises(UsageError, match="unknown architecture 'bert-large'.*bert-base-uncased.*sshleifer/tiny-ctrl"):
        build_model("bert-large")
    with pytest.raises(UsageError, match="unknown architecture"):
        example_inputs("nope", 1, 1)
    with pytest.raises(UsageError):
        build_model(42)


def test_config_object_and_real_device() -> None:
    config = build_config("gpt2", n_layer=1, n_embd=16, n_head=2)
    model = build_model(config, device="cpu")
    assert model.config.n_layer == 1 and next(model.parameters()).device.type == "cpu"
    inputs = example_inputs(model, 2, 3, device="cpu")
    assert int(inputs["input_ids"].max()) < config.vocab_size
    with torch.no_grad():
        out = model(**inputs)
    assert out.last_hidden_state.shape == (2, 3, 16)
    with pytest.raises(UsageError, match="positive"):
        example_inputs(model, 0, 3)


def test_tiny_ctrl_sizes_reproduce_the_dataset_tree() -> None:
    ref = next(t for t in iter_trees(DATASET) if t.model_name == "sshleifer/tiny-ctrl")
    tree = trace(build_model("sshleifer/tiny-ctrl"), example_inputs("sshleifer/tiny-ctrl", ref.batch_size, ref.seq_len))
    mine = {n.scope: n for n in tree.walk()}
    assert set(mine) == {n.scope for n in ref.walk()}
    for node in ref.walk():
        live = mine[node.scope]
        assert live.type == node.type
        if node.level == "ml" or node.type == "ReLU":
            assert live.features["flops"] == node.features["flops"], node.scope
            assert live.features["mem_bytes"] == node.features["mem_bytes"], node.scope
        else:
            assert live.features["flops"] == pytest.approx(node.features["flops"], rel=0.01)
            assert live.features["mem_bytes"] == pytest.approx(node.features["mem_bytes"], rel=0.02)
