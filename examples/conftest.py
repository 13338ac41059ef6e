"""Models for the example energy tests, built from configs (no weights are downloaded).

Sizes are small enough for a CI runner; the architectures are the real
HuggingFace BERT and GPT-2 code paths (eager attention), so what the energy
gate sees is what a bert-base or gpt2 would do, only narrower.
"""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModel, BertConfig, GPT2Config

#: Feed-forward width of the BERT example. Widen it (say to 1024) and run
#: `pytest examples`: the gate fails and names encoder.layer.*.intermediate.
BERT_INTERMEDIATE_SIZE = 512


@pytest.fixture(scope="session")
def bert() -> torch.nn.Module:
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=2048,
        hidden_size=128,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=BERT_INTERMEDIATE_SIZE,
        max_position_embeddings=256,
    )
    return AutoModel.from_config(config, attn_implementation="eager").eval()


@pytest.fixture(scope="session")
def gpt2() -> torch.nn.Module:
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=2048, n_positions=256, n_embd=128, n_layer=2, n_head=2)
    return AutoModel.from_config(config, attn_implementation="eager").eval()


def token_batch(batch_size: int, seq_len: int, vocab_size: int = 2048) -> dict[str, torch.Tensor]:
    """A batch of random token ids and a full attention mask."""
    generator = torch.Generator().manual_seed(batch_size * 1000 + seq_len)
    ids = torch.randint(0, vocab_size, (batch_size, seq_len), generator=generator)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
