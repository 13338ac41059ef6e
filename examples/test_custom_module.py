"""Energy tests for your own `nn.Module`: a small text classifier."""

from __future__ import annotations

import pytest
import torch
from torch import nn


class TextClassifier(nn.Module):
    """Embedding, one transformer encoder block written by hand, mean pooling, a classifier head."""

    def __init__(self, vocab_size: int = 4096, dim: int = 128, heads: int = 4, ffn: int = 512, classes: int = 5):
        super().__init__()
        self.embed = nn.Embedding(vocab_size, dim)
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.norm1 = nn.LayerNorm(dim)
        self.ffn = nn.Sequential(nn.Linear(dim, ffn), nn.GELU(), nn.Linear(ffn, dim))
        self.norm2 = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, classes)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        x = self.embed(input_ids)
        attended, _ = self.attn(x, x, x, need_weights=False)
        x = self.norm1(x + attended)
        x = self.norm2(x + self.ffn(x))
        return self.head(x.mean(dim=1))


@pytest.fixture(scope="module")
def classifier() -> TextClassifier:
    torch.manual_seed(0)
    return TextClassifier().eval()


@pytest.mark.parametrize("batch_size", [1, 8, 32])
def test_classifier_batch_sizes(irene, classifier, batch_size: int) -> None:
    ids = torch.randint(0, 4096, (batch_size, 64), generator=torch.Generator().manual_seed(batch_size))
    tree = irene(classifier, ids)
    assert tree["ffn"].predicted_energy_j > 0
    assert tree.batch_size == batch_size
