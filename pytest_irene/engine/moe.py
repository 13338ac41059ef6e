"""Mixture-of-experts layers: what a token-routed layer costs when the routing is unknown.

Routing is data: which expert a token goes to depends on the router's values,
which meta tensors do not have. So on the meta device the cost is counted for
the *expected* routing: every token is sent to ``top_k`` experts, the
``tokens × top_k`` rows are spread evenly over the experts, and the router runs
as traced (it is an ordinary ``Linear`` + softmax + top-k). On a real device the
routing is real and the count follows the actual tokens per expert.

Three layouts are handled:

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
  hit?") answers every expert, capped at the rows routed, and the loop that reads
  their indices back (``for idx in hit: self.experts[idx]``, Switch Transformers'
  ``self[f"expert_{idx[0]}"]``) reads ``0, 1, 2...``: the positions of the answer,
  known exactly. The experts may be a ``ModuleDict`` (Switch Transformers).
* **grouped experts** (JetMoE's ``JetMoeParallelExperts``, ScatterMoE-style): a
  top-k router hands the experts its rows per expert as a Python list
  (``expert_size.tolist()``); on meta that list is the expected one, the rows of its
  top-k spread evenly, so each expert's ``F.linear`` runs on its expected share.

A fused-experts module may hold *zero-compute* experts (LongCat-Flash's
``zero_expert_num``: the router chooses among ``total_experts``, but only the first
``num_routed_experts`` have weights; the others return their rows unchanged): their
rows cost the weighting alone.

Expected routing assumes no expert drops a token: Switch Transformers' ``expert_capacity``
(rows per expert and sequence) holds while tokens per sequence / experts stays under it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

__all__ = ["is_fused_experts", "expert_counts", "fused_experts_features", "meta_forward", "experts_in_block",
           "ExpectedRouting"]


def _weight(module: nn.Module, name: str) -> torch.Tensor | None:
    w = getattr(module, name, None)
    return w if isinstance(w, torch.Tensor) and w.dim() == 3 else None


def _bias(module: nn.Module, name: str, width: int) -> torch.Tensor | None:
    """A fused-experts bias, one row of ``width`` per expert (``(E, width)``), or ``None``."""
    b = getattr(module, name, None)
    return b if isinstance(b, torch.Tensor) and b.dim() == 2 and int(b.shape[1]) == width else None


#: Attributes naming how many experts have weights in a fused-experts module.
_ROUTED_COUNT_ATTRS = ("num_experts", "num_routed_experts")


def expert_counts(module: nn.Module) -> tuple[int, int] | None:
    """``(experts with weights, experts the router chooses from)`` of a fused-experts module, else ``None``.

    The two differ where the router may also pick zero-compute experts (LongCat-Flash:
    ``total_experts`` = ``num_routed_experts`` + ``zero_expert_num``)."""
    down = _weight(module, "down_proj")
    up = _weight(module, "gate_up_proj") if _weight(module, "gate_up_proj") is not None else _weight(module, "up_proj")
    if down is None or up is None:
        return None
    weighted = int(down.shape[0])
    named = [getattr(module, a, None) for a in _ROUTED_COUNT_ATTRS]
    if not any(isinstance(n, int) and n == weighted for n in named):
        return None
    total = getattr(module, "total_experts", weighted)
    return weighted, (total if isinstance(total, int) and total > weighted else weighted)


def is_fused_experts(module: nn.Module) -> bool:
    """A module holding every expert's weights as 3-D tensors (``num_experts`` first)."""
    return expert_counts(module) is not None


def _tensors(values: Sequence[Any]) -> list[torch.Tensor]:
    return [v for v in values if isinstance(v, torch.Tensor)]


def _expert_rows(index: torch.Tensor, n_experts: int) -> list[int]:
    """Rows each expert receives: the real counts on a real device, the expected ones on meta."""
    rows = int(index.numel())
    if index.is_meta:
        return even_split(rows, n_experts)
    counts = torch.bincount(index.reshape(-1).to(torch.long), minlength=n_experts)
    return [int(c) for c in counts[:n_experts].tolist()]


def _routing_index(ts: Sequence[torch.Tensor]) -> torch.Tensor | None:
    """The ``top_k_index`` a fused-experts module was called with (its first integer tensor after
    the hidden states), ``None`` when it was given the rows alone."""
    return next((t for t in ts[1:] if not t.is_floating_point() and t.dtype != torch.bool), None)


def expected_share(rows: int, n_experts: int, expert: int) -> int:
    """The expected routing: ``rows`` spread evenly over ``n_experts``, the remainder one row
    each to the first ones; this is ``expert``'s share."""
    base, extra = divmod(rows, n_experts)
    return base + (1 if expert < extra else 0)


def even_split(rows: int, n_experts: int) -> list[int]:
    """Every expert's :func:`expected_share` of ``rows``."""
    return [expected_share(rows, n_experts, e) for e in range(n_experts)]


def _laid_out_rows(hidden: torch.Tensor, n_experts: int) -> list[int]:
    """Rows each expert runs when the caller laid them out per expert (``(E·rows, H)`` viewed as
    ``(E, rows, H)``): every row it is given, on every device."""
    return even_split(int(hidden.numel() // max(int(hidden.shape[-1]), 1)), n_experts)


def fused_experts_features(module: Any, inputs: Sequence[Any], output: Any) -> dict[str, float]:
    """Fused experts: per routed row ``up (+gate)`` and ``down`` products, the activation, the weighting.

    Flops per row: ``2·H·U`` (``U`` = 2·I with a gate, else I) + ``2·I·H`` + ``5·I``
    (SiLU) + ``I`` (gate × up) + ``2·H`` (routing weight and scatter-add). Bytes:
    the rows read and written, plus the weights of every expert that gets a row.

    Called with the hidden states alone (Llama 4's ``Llama4TextExperts``: the caller sends every
    token to every expert, scaled by its router score, and sums the results itself), the module
    runs every row it is given, so every row counts, without the weighting (its caller's glue).
    Such a module counted 0 flops before, on meta and on a real device alike.

    Rows routed to zero-compute experts (:func:`expert_counts`) are weighted and added back,
    nothing more: ``2·H`` flops and their read and write.

    Experts with biases (GPT-OSS's ``gate_up_proj_bias``, ``down_proj_bias``: one row per expert)
    add them to every routed row, ``U + H`` flops, and each expert hit reads its rows of them.
    GPT-OSS's clamped SwiGLU is counted as the SiLU gate above (a few flops per ``I`` fewer).
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
    counts = expert_counts(module)
    assert up is not None and down is not None and counts is not None
    weighted, total = counts
    h = int(hidden.shape[-1])
    up_n = up.shape[1] if up.shape[2] == h else up.shape[2]  # transposed layouts store (E, H, U)
    inner = up_n // 2 if gated else up_n
    weighting = 2.0 * h if index is not None else 0.0
    biases = [b for b in (_bias(module, "gate_up_proj_bias", up_n), _bias(module, "down_proj_bias", h)) if b is not None]
    per_row = (2.0 * h * up_n + 2.0 * inner * h + 5.0 * inner + (inner if gated else 0) + weighting
               + sum(b.shape[1] for b in biases))
    every = _expert_rows(index, total) if index is not None else _laid_out_rows(hidden, weighted)
    rows, unweighted = every[:weighted], sum(every[weighted:])  # zero-compute experts: weighting only
    routed = sum(rows)
    es = hidden.element_size()
    per_expert_w = ((up[0].numel() + down[0].numel()) * up.element_size()
                    + sum(b[0].numel() * b.element_size() for b in biases))
    hit = sum(1 for r in rows if r > 0)
    mem = (routed + unweighted) * h * es * 2.0 + routed * (up_n + inner) * es + hit * per_expert_w
    return {"flops": per_row * routed + weighting * unweighted, "mem_bytes": float(mem)}


def meta_forward(module: nn.Module) -> Any:
    """A forward for a fused-experts module on meta: the result's shape, no routing loop."""

    def forward(hidden_states: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        return torch.zeros_like(hidden_states)

    return forward


def _is_router(module: nn.Module) -> bool:
    """A top-k router (JetMoE's ``JetMoeTopKGating``, which also counts the rows per expert for its
    grouped experts): a module naming its ``num_experts`` and its ``top_k``."""
    n, k = getattr(module, "num_experts", None), getattr(module, "top_k", None)
    return isinstance(n, int) and n >= 2 and isinstance(k, int) and k >= 1


def experts_in_block(module: nn.Module) -> int | None:
    """The number of experts of a block that routes tokens to an ``experts`` ``ModuleList`` or
    ``ModuleDict`` (Switch Transformers), or of a top-k router (:func:`_is_router`), else ``None``."""
    experts = getattr(module, "experts", None)
    if isinstance(experts, (nn.ModuleList, nn.ModuleDict)) and len(experts) >= 2:
        return len(experts)
    return int(module.num_experts) if _is_router(module) else None


class ExpectedRouting:
    """Answers the routing questions asked on meta inside a MoE block with the expected routing.

    ``nonzero`` of a mask over rows answers rows / experts; of a 1-D mask over the experts
    ("which are hit?") every expert, whose indices read back (``item()`` of a view of that
    answer) as their positions; a per-expert count copied to a Python list answers the rows
    of the block's last ``topk`` spread evenly."""

    def __init__(self, n_experts: int):
        self.n_experts = n_experts
        self.calls = 0
        self.rows = 0
        self.hit: torch.Tensor | None = None  # the answer to "which experts are hit?"
        self.topk_rows = 0  # (tokens × top_k) of the last top-k selection seen in the block

    def nonzero(self, mask: torch.Tensor) -> torch.Tensor:
        numel = int(mask.numel())
        if mask.dim() == 1 and numel == self.n_experts:
            count = min(numel, self.rows or numel)  # which experts are hit: all of them
            self.hit = torch.empty((count, 1), dtype=torch.long, device="meta")
            return self.hit
        self.rows = max(self.rows, numel)
        count = expected_share(numel, self.n_experts, self.calls % self.n_experts)
        self.calls += 1
        return torch.empty((count, max(mask.dim(), 1)), dtype=torch.long, device="meta")

    def expert_index(self, t: torch.Tensor) -> int | None:
        """The value of one element of the "which experts are hit?" answer (its row: experts
        ``0, 1, 2...``), ``None`` for any other tensor."""
        hit = self.hit
        if hit is None or t.numel() != 1 or (t is not hit and t._base is not hit):
            return None
        return int(t.storage_offset()) // int(hit.shape[1])

    def saw_topk(self, indices: torch.Tensor) -> None:
        """Record a top-k selection's indices: its rows are what the experts receive."""
        self.topk_rows = int(indices.numel())

    def rows_per_expert(self, t: torch.Tensor) -> torch.Tensor | None:
        """Expected rows per expert (a CPU tensor) for a per-expert integer count copied off the
        device, ``None`` when ``t`` is no such count or no top-k was seen."""
        if t.is_floating_point() or t.dtype == torch.bool or tuple(t.shape) != (self.n_experts,) or not self.topk_rows:
            return None
        return torch.tensor(even_split(self.topk_rows, self.n_experts), dtype=t.dtype)
