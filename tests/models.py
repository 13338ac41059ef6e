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


def hf_model(model_cls: str, config_cls: str, **config: Any) -> torch.nn.Module:
    """``transformers.<model_cls>(transformers.<config_cls>(**config))``, seeded, in eval mode (on the CPU)."""
    import transformers

    torch.manual_seed(0)
    return getattr(transformers, model_cls)(getattr(transformers, config_cls)(**config)).eval()


def assert_same_tree(a: Any, b: Any) -> None:
    """Two traces of one model (meta and CPU, say) agree node by node: scopes, types, features, sizes."""
    assert [(n.scope, n.type, n.features) for n in a.walk()] == [(n.scope, n.type, n.features) for n in b.walk()]
    assert (a.batch_size, a.seq_len) == (b.batch_size, b.seq_len)
