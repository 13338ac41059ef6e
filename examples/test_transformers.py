"""Energy tests for HuggingFace encoders and decoders.

Each `irene(model, inputs, label=...)` call traces the forward pass, predicts
the energy of every module with the energy model, compares every module with
the committed baseline (examples/.irene/) and returns the predicted tree.
"""

from __future__ import annotations

import pytest

from conftest import token_batch


def test_bert_encoder(irene, bert) -> None:
    tree = irene(bert, token_batch(8, 128), label="encoder")
    # the tree is a normal object: assert on it like on any result
    assert tree.total_j > 0
    layer = tree["encoder.layer.0"]
    assert 0 < layer.predicted_energy_j < tree.total_j
    # attention and feed-forward are where a BERT layer spends its energy
    top = {row[0] for row in tree.breakdown()[:6]}
    assert {"BertLayer", "BertAttention"} <= top


def test_bert_short_and_long_inputs(irene, bert) -> None:
    short = irene(bert, token_batch(8, 32), label="seq32")
    long = irene(bert, token_batch(8, 256), label="seq256")
    # several calls per test, told apart by label; energy grows with length
    assert long.total_j > short.total_j


@pytest.mark.irene(budget="4J", tolerance="3%")
def test_gpt2_decoder(irene, gpt2) -> None:
    tree = irene(gpt2, token_batch(4, 128), label="decoder")
    blocks = [n for n in tree.modules() if n.type == "GPT2Block"]
    assert len(blocks) == 2
