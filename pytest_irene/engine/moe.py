"""Mixture-of-experts layers: what a token-routed layer costs when the routing is unknown.

Routing is data: which expert a token goes to depends on the router's values,
which meta tensors do not have. So on the meta device the cost is counted for
the *expected* routing: every token is sent to ``top_k`` experts, the
``tokens × top_k`` rows are spread evenly over the experts, and the router runs
as traced (it is an ordinary ``Linear`` + softmax + top-k). On a real device the
routing is real and the count follows the actual tokens per expert.

Two layouts are handled:

* **fused experts** (transformers 5: ``MixtralExperts``, ``Qwen2MoeExperts``,
  ``Qwen3MoeExperts``...): one module holding 3-D ``gate_up_proj``/``up_proj``
  and ``down_proj`` weights, called as ``experts(hidden, top_k_index,
  top_k_weights)``. It is a formula leaf (:func:`fused_experts_features`); on
  the meta device its forward is replaced by one returning a zero tensor of the
  right shape (the loop over hit experts needs ``nonzero``). Llama 4's
  ``Llama4TextExperts`` is called with the rows alone, every token repeated for every
  expert (its transformers code runs them all, dense): every row counts there.
* **a list of experts** (a hand-written top-k MoE, older transformers): a block
  with an ``experts`` ``ModuleList`` selects tokens with ``torch.where(mask)`` /
  ``nonzero``. On meta that answers with the expected count (rows / experts,
  the remainder spread one row at a time), so each expert runs its own module
  tree on its expected share. A 1-D mask over the experts ("which experts are
  hit?") answers every expert, capped at the rows routed.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

__all__ = ["is_fused_experts", "fused_experts_features", "meta_forward", "experts_in_block", "ExpectedRouting"]


def _weight(module: nn.Module, name: str) -> torch.Tensor | None:
    w = getattr(module, name, None)
    return w if isinstance(w, torch.Tensor) and w.dim() == 3 else None


def is_fused_experts(module: nn.Module) -> bool:
    """A module holding every expert's weights as 3-D tensors (``num_experts`` first)."""
    down = _weight(module, "down_proj")
    up = _weight(module, "gate_up_proj") if _weight(module, "gate_up_proj") is not None else _weight(module, "up_proj")
    n = getattr(module, "num_experts", None)
    return down is not None and up is not None and isinstance(n, int) and down.shape[0] == n


def _tensors(values: Sequence[Any]) -> list[torch.Tensor]:
    return [v for v in values if isinstance(v, torch.Tensor)]


def _expert_rows(index: torch.Tensor, n_experts: int) -> list[int]:
    """Rows each expert receives: the real counts on a real device, the expected ones on meta."""
    rows = int(index.numel())
    if index.is_meta:
        base, extra = divmod(rows, n_experts)
        return [base + (1 if e < extra else 0) for e in range(n_experts)]
    counts = torch.bincount(index.reshape(-1).to(torch.long), minlength=n_experts)
    return [int(c) for c in counts[:n_experts].tolist()]


def _routing_index(ts: Sequence[torch.Tensor]) -> torch.Tensor | None:
    """The ``top_k_index`` a fused-experts module was called with (its first integer tensor after
    the hidden states), ``None`` when it was given the rows alone."""
    return next((t for t in ts[1:] if not t.is_floating_point() and t.dtype != torch.bool), None)


def _laid_out_rows(hidden: torch.Tensor, n_experts: int) -> list[int]:
    """Rows each expert runs when the caller laid them out per expert (``(E·rows, H)`` viewed as
    ``(E, rows, H)``): every row it is given, on every device."""
    base, extra = divmod(int(hidden.numel() // max(int(hidden.shape[-1]), 1)), n_experts)
    return [base + (1 if e < extra else 0) for e in range(n_experts)]


def fused_experts_features(module: Any, inputs: Sequence[Any], output: Any) -> dict[str, float]:
    """Fused experts: per routed row ``up (+gate)`` and ``down`` products, the activation, the weighting.

    Flops per row: ``2·H·U`` (``U`` = 2·I with a gate, else I) + ``2·I·H`` + ``5·I``
    (SiLU) + ``I`` (gate × up) + ``2·H`` (routing weight and scatter-add). Bytes:
    the rows read and written, plus the weights of every expert that gets a row.

    Called with the hidden states alone (Llama 4's ``Llama4TextExperts``: the caller sends every
    token to every expert, scaled by its router score, and sums the results itself), the module
    runs every row it is given, so every row counts, without the weighting (its caller's glue).
    Such a module counted 0 flops before, on meta and on a real device alike.
    """
    ts = _tensors(list(inputs))
    if not ts:
        return {"flops": 0.0, "mem_bytes": 0.0}
    hidden, index = ts[0], _routing_index(ts)
    up = _weight(module, "gate_up_proj")
    gated = up is not None
    if up is None:
        up = _weight(module, "up_proj")
    down = _weight(module, "down_proj")
    assert up is not None and down is not None
    n_experts = int(module.num_experts)
    h = int(hidden.shape[-1])
    up_n = up.shape[1] if up.shape[2] == h else up.shape[2]  # transposed layouts store (E, H, U)
    inner = up_n // 2 if gated else up_n
    weighting = 2.0 * h if index is not None else 0.0
    per_row = 2.0 * h * up_n + 2.0 * inner * h + 5.0 * inner + (inner if gated else 0) + weighting
    rows = _expert_rows(index, n_experts) if index is not None else _laid_out_rows(hidden, n_experts)
    routed = sum(rows)
    es = hidden.element_size()
    per_expert_w = (up[0].numel() + down[0].numel()) * up.element_size()
    hit = sum(1 for r in rows if r > 0)
    mem = routed * h * es * 2.0 + routed * (up_n + inner) * es + hit * per_expert_w
    return {"flops": per_row * routed, "mem_bytes": float(mem)}


def meta_forward(module: nn.Module) -> Any:
    """A forward for a fused-experts module on meta: the result's shape, no routing loop."""

    def forward(hidden_states: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        return torch.zeros_like(hidden_states)

    return forward


def experts_in_block(module: nn.Module) -> int | None:
    """The number of experts of a block that routes tokens to an ``experts`` ``ModuleList``, else ``None``."""
    experts = getattr(module, "experts", None)
    if isinstance(experts, nn.ModuleList) and len(experts) >= 2:
        return len(experts)
    return None


class ExpectedRouting:
    """Answers ``nonzero`` on meta inside a list-of-experts block with the expected row counts."""

    def __init__(self, n_experts: int):
        self.n_experts = n_experts
        self.calls = 0
        self.rows = 0

    def nonzero(self, mask: torch.Tensor) -> torch.Tensor:
        numel = int(mask.numel())
        if mask.dim() == 1 and numel == self.n_experts:
            count = min(numel, self.rows or numel)  # which experts are hit: all of them
        else:
            self.rows = max(self.rows, numel)
            base, extra = divmod(numel, self.n_experts)
            count = base + (1 if self.calls % self.n_experts < extra else 0)
            self.calls += 1
        return torch.empty((count, max(mask.dim(), 1)), dtype=torch.long, device="meta")
