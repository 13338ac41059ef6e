"""Energy tests for HuggingFace encoders and decoders at production size.

Each `irene(model, inputs, label=...)` call traces the forward pass on the meta
device, predicts the energy of every module with the energy model, compares
every module with the committed baseline (examples/.irene/) and returns the
predicted tree. A test's own budget (`@pytest.mark.irene(budget=...)`) wins over
`--irene-budget`: a team gives each model the budget it can afford.
"""

from __future__ import annotations

import pytest

from conftest import token_batch

BERT_VOCAB = 30522
LLAMA_VOCAB = 128256


@pytest.mark.irene(budget="150J")
def test_bert_encoder(irene, bert) -> None:
    tree = irene(bert, token_batch(32, 256, BERT_VOCAB), label="encoder")
    # the tree is a normal object: assert on it like on any result
    assert tree.total_j > 0
    layer = tree["encoder.layer.0"]
    assert 0 < layer.predicted_energy_j < tree.total_j
    # attention and feed-forward are where a BERT layer spends its energy
    top = {row[0] for row in tree.breakdown()[:6]}
    assert {"BertLayer", "BertAttention"} <= top


@pytest.mark.irene(budget="150J")
def test_bert_short_and_long_inputs(irene, bert) -> None:
    short = irene(bert, token_batch(32, 64, BERT_VOCAB), label="seq64")
    long = irene(bert, token_batch(32, 128, BERT_VOCAB), label="seq128")
    # several calls per test, told apart by label; energy grows with length
    assert long.total_j > short.total_j


@pytest.mark.irene(budget="600J", tolerance="3%")
def test_llama3_8b_prefill(irene, llama) -> None:
    tree = irene(llama, token_batch(1, 512, LLAMA_VOCAB), label="prefill")
    layers = [n for n in tree.modules() if n.type == "LlamaDecoderLayer"]
    assert len(layers) == 32
    # the output projection over a 128k vocabulary is gated like every other module
    assert tree["lm_head"].predicted_energy_j > 0


@pytest.mark.irene(budget="4kJ", tolerance="3%")
def test_llama3_8b_generation(irene, llama) -> None:
    # the whole generate(): a 512-token prompt, then 256 new tokens decoded with the KV cache
    tree = irene(llama, token_batch(1, 512, LLAMA_VOCAB), label="generate", max_new_tokens=256)
    assert [child.scope for child in tree.root.children] == ["prefill", "decode"]
    # what a chat product pays per generated token, prefill included
    assert 0 < tree.per_token_j < tree.total_j
