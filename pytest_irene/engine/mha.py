"""``nn.MultiheadAttention`` decomposed into its projections and attention, like any other attention.

``nn.MultiheadAttention`` calls ``F.multi_head_attention_forward`` with its
weights instead of calling its ``out_proj`` module, so a trace would see one
opaque module (predicted by the generic regressor). The tracer runs that
function without counting its inner ops and adds these leaves under the
module instead, computed from the shapes:

* ``in_proj`` (one packed ``Linear`` for self-attention) or ``q_proj``,
  ``k_proj``, ``v_proj``;
* ``matmul#0`` (``q @ kᵀ`` per head), ``softmax#0``, ``matmul#1`` (``attn @ v``);
* ``out_proj``;

plus the query scaling (1 flop per query element) as the module's own glue. Each
projection carries its share of the module's parameters (its slice of
``in_proj_weight`` and ``in_proj_bias``, or its own weight), so the leaves' params
add up to the module's (``add_bias_kv``'s two vectors stay with the module). The
query's shape also gives the trace its token layout (batch, tokens), whatever the
module's ``batch_first``.
"""

from __future__ import annotations

import inspect
from typing import Any, NamedTuple

import torch

from pytest_irene.engine.features import matmul_features
from pytest_irene.engine.tensor_sizes import nbytes

__all__ = ["MHA_FUNCTION", "MhaLeaf", "MhaTrace", "mha_leaves"]

MHA_FUNCTION = torch.nn.functional.multi_head_attention_forward
_SIGNATURE = inspect.signature(MHA_FUNCTION)


class MhaLeaf(NamedTuple):
    """One leaf of the decomposition. ``name`` is a projection's (``in_proj``, ``out_proj``) or a
    functional primitive's kind (``matmul``, ``softmax``), which the tracer numbers like any other."""

    name: str
    type: str
    features: dict[str, float]
    params: float


class MhaTrace(NamedTuple):
    """What one ``multi_head_attention_forward`` call adds to the tree."""

    leaves: list[MhaLeaf]
    glue: tuple[float, float]
    """The module's own (flops, bytes): the query scaling and the mask."""
    layout: tuple[int, int]
    """(batch, query tokens): the function takes ``(L, N, E)`` (``batch_first`` modules transpose
    before calling it) or an unbatched ``(L, E)``, so this is the token layout for any ``batch_first``."""


def _meta(*shape: int, like: torch.Tensor) -> torch.Tensor:
    return torch.empty(shape, dtype=like.dtype, device="meta")


def _linear(x_rows: int, k: int, n: int, like: torch.Tensor) -> dict[str, float]:
    es = like.element_size()
    return {"flops": 2.0 * x_rows * k * n, "mem_bytes": float((x_rows * k + k * n + x_rows * n) * es)}


def _numel(t: Any) -> float:
    return float(t.numel()) if isinstance(t, torch.Tensor) else 0.0


def _projections(a: dict[str, Any], rows: tuple[int, int], dims: tuple[int, int, int],
                 like: torch.Tensor) -> list[MhaLeaf]:
    """The input projections with their parameters: the packed ``in_proj_weight`` (and bias) for
    self-attention, else its thirds (or the separate q/k/v weights) and the bias's thirds."""
    tgt_rows, src_rows = rows
    e, kdim, vdim = dims
    bias = _numel(a.get("in_proj_bias")) / 3.0  # packed [b_q, b_k, b_v], also with separate weights
    separate = bool(a.get("use_separate_proj_weight", False))
    if not separate and a["query"] is a["key"] and a["key"] is a["value"]:
        params = _numel(a.get("in_proj_weight")) + 3 * bias
        return [MhaLeaf("in_proj", "Linear", _linear(tgt_rows, e, 3 * e, like), params)]

    def weight(name: str, in_dim: int) -> float:  # its own weight, else its third of in_proj_weight
        return _numel(a.get(f"{name}_proj_weight")) if separate else float(e * in_dim)

    return [
        MhaLeaf("q_proj", "Linear", _linear(tgt_rows, e, e, like), weight("q", e) + bias),
        MhaLeaf("k_proj", "Linear", _linear(src_rows, kdim, e, like), weight("k", kdim) + bias),
        MhaLeaf("v_proj", "Linear", _linear(src_rows, vdim, e, like), weight("v", vdim) + bias),
    ]


def mha_leaves(args: tuple[Any, ...], kwargs: dict[str, Any]) -> MhaTrace:
    """The leaves, glue and token layout of one ``multi_head_attention_forward`` call."""
    bound = _SIGNATURE.bind(*args, **kwargs)
    a = bound.arguments
    q, k, v = a["query"], a["key"], a["value"]
    heads = int(a["num_heads"])
    e = int(q.shape[-1])
    tgt, src = int(q.shape[0]), int(k.shape[0])
    batch = int(q.shape[1]) if q.dim() == 3 else 1
    kdim, vdim = int(k.shape[-1]), int(v.shape[-1])
    leaves = _projections(a, (tgt * batch, src * batch), (e, kdim, vdim), q)
    head_dim = e // heads
    bh = batch * heads
    qh, kt, vh = _meta(bh, tgt, head_dim, like=q), _meta(bh, head_dim, src, like=q), _meta(bh, src, head_dim, like=q)
    scores = _meta(bh, tgt, src, like=q)
    leaves.append(MhaLeaf("matmul", "MatMul", matmul_features(qh, kt, scores), 0.0))
    softmax = {"flops": 5.0 * scores.numel(), "mem_bytes": 3.0 * nbytes(scores)}
    leaves.append(MhaLeaf("softmax", "Softmax", softmax, 0.0))
    leaves.append(MhaLeaf("matmul", "MatMul", matmul_features(scores, vh, _meta(bh, tgt, head_dim, like=q)), 0.0))
    out_params = _numel(a.get("out_proj_weight")) + _numel(a.get("out_proj_bias"))
    leaves.append(MhaLeaf("out_proj", "Linear", _linear(tgt * batch, e, e, q), out_params))
    glue_flops = float(tgt * batch * e)
    glue = (glue_flops, 2.0 * glue_flops * q.element_size())
    if a.get("attn_mask") is not None or a.get("key_padding_mask") is not None:
        glue = (glue[0] + scores.numel(), glue[1] + 2.0 * nbytes(scores))
    return MhaTrace(leaves, glue, (batch, tgt))
