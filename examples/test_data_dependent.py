"""A model whose forward depends on its values, traced on the CPU with `device="cpu"`.

On the meta device tensors have no values, so `if h.mean() > 0:` or a `while`
loop on a norm cannot be decided: tracing there stops with a TraceError naming
the module and the line. `device="cpu"` runs the model for real (its own
weights, no copy), so the tree follows the branch and the iterations the data
take.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn


class EarlyExit(nn.Module):
    """An encoder block that refines its output until it is small enough (at most 4 rounds)."""

    def __init__(self, dim: int = 64):
        super().__init__()
        self.encode = nn.Linear(dim, dim)
        self.refine = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))
        self.skip = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.encode(x)
        if h.mean() > 0:  # data-dependent branch
            return self.skip(h)
        rounds = 0
        while h.norm(dim=-1).mean() > 1.0 and rounds < 4:  # data-dependent loop
            h = 0.5 * self.refine(h)
            rounds += 1
        return h


@pytest.fixture(scope="module")
def early_exit() -> EarlyExit:
    torch.manual_seed(0)
    model = EarlyExit().eval()
    with torch.no_grad():
        model.encode.bias.fill_(-1.0)  # the mean is negative: the refining loop runs
    return model


def test_early_exit_on_cpu(irene, early_exit) -> None:
    x = torch.randn(16, 32, 64, generator=torch.Generator().manual_seed(0))
    tree = irene(early_exit, x, label="cpu", device="cpu")
    rounds = [n for n in tree.modules() if n.scope.split("#")[0] == "refine"]
    assert 1 <= len(rounds) <= 4  # one node per round the data took
    assert not any(n.scope == "skip" for n in tree.walk())  # the branch not taken is not a node
