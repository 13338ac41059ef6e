"""Small models the tests build from configs (never downloaded): one Llama builder for every test."""

from __future__ import annotations

from typing import Any

import pytest
import torch

#: A two-layer Llama with grouped-query attention: small enough for meta traces in milliseconds.
TINY_LLAMA: dict[str, Any] = dict(
    hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
    vocab_size=256,
)


def tiny_llama(device: str = "meta", **overrides: Any) -> torch.nn.Module:
    """``LlamaForCausalLM`` of :data:`TINY_LLAMA` with ``overrides``, seeded, in eval mode, on ``device``."""
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    with torch.device(device):
        return transformers.LlamaForCausalLM(transformers.LlamaConfig(**{**TINY_LLAMA, **overrides})).eval()
