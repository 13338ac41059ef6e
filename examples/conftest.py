"""Models for the example energy tests, at the sizes teams deploy, built from configs.

Every model is built on the meta device: its parameters have shapes and no
storage, so a Llama-3-8B-shaped decoder costs no memory and no download, and
tracing it costs about as much as tracing a 2-layer toy. The architectures are
the real HuggingFace code paths (eager attention, so the tree shows the
attention's matrix products and softmax as the reference dataset did).
"""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModel, AutoModelForCausalLM, BertConfig, LlamaConfig, ViTConfig

#: Feed-forward width of bert-base. Widen it (say to 4096) and run
#: `pytest examples`: the gate fails and names encoder.layer.*.intermediate.
BERT_INTERMEDIATE_SIZE = 3072

#: Llama-3-8B's shape: hidden 4096, 32 layers, FFN 14336, 32 heads, 8 KV heads, vocab 128256.
LLAMA3_8B = {
    "hidden_size": 4096,
    "num_hidden_layers": 32,
    "intermediate_size": 14336,
    "num_attention_heads": 32,
    "num_key_value_heads": 8,
    "vocab_size": 128256,
    "max_position_embeddings": 8192,
    "rope_theta": 500000.0,
}


def on_meta(build, config):
    """``build(config)`` with every parameter on the meta device: shapes only, no weights allocated."""
    with torch.device("meta"):
        return build(config, attn_implementation="eager").eval()


@pytest.fixture(scope="session")
def bert() -> torch.nn.Module:
    """bert-base-uncased: 12 layers, hidden 768, 12 heads."""
    return on_meta(AutoModel.from_config, BertConfig(intermediate_size=BERT_INTERMEDIATE_SIZE))


@pytest.fixture(scope="session")
def llama() -> torch.nn.Module:
    """A decoder of Llama-3-8B's shape (8.0 B parameters, none of them allocated)."""
    return on_meta(AutoModelForCausalLM.from_config, LlamaConfig(**LLAMA3_8B))


@pytest.fixture(scope="session")
def vit() -> torch.nn.Module:
    """ViT-B/16 at 224 x 224: 196 patches + the class token, 12 layers, hidden 768."""
    return on_meta(AutoModel.from_config, ViTConfig(image_size=224, patch_size=16))


def token_batch(batch_size: int, seq_len: int, vocab_size: int) -> dict[str, torch.Tensor]:
    """A batch of token ids and a full attention mask (the values do not matter on meta)."""
    ids = torch.zeros(batch_size, seq_len, dtype=torch.long)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
