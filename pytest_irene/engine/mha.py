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

plus the query scaling (1 flop per query element) as the module's own glue.
"""

from __future__ import annotations

import inspect
from typing import Any

import torch

from pytest_irene.engine.features import matmul_features
from pytest_irene.engine.tensor_sizes import nbytes

__all__ = ["MHA_FUNCTION", "mha_leaves"]

MHA_FUNCTION = torch.nn.functional.multi_head_attention_forward
_SIGNATURE = inspect.signature(MHA_FUNCTION)


def _meta(*shape: int, like: torch.Tensor) -> torch.Tensor:
    return torch.empty(shape, dtype=like.dtype, device="meta")


def _linear(x_rows: int, k: int, n: int, like: torch.Tensor) -> dict[str, float]:
    es = like.element_size()
    return {"flops": 2.0 * x_rows * k * n, "mem_bytes": float((x_rows * k + k * n + x_rows * n) * es)}


def mha_leaves(args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[list[tuple[str, str, dict[str, float]]], tuple[float, float]]:
    """``([(suffix, type, features)], (glue flops, glue bytes))`` of one ``multi_head_attention_forward`` call."""
    bound = _SIGNATURE.bind(*args, **kwargs)
    a = bound.arguments
    q, k, v = a["query"], a["key"], a["value"]
    heads = int(a["num_heads"])
    e = int(q.shape[-1])
    tgt, src = int(q.shape[0]), int(k.shape[0])
    batch = int(q.shape[1]) if q.dim() == 3 else 1
    kdim, vdim = int(k.shape[-1]), int(v.shape[-1])
    leaves: list[tuple[str, str, dict[str, float]]] = []
    if not a.get("use_separate_proj_weight", False) and q is k and k is v:
        leaves.append(("in_proj", "Linear", _linear(tgt * batch, e, 3 * e, q)))
    else:
        leaves.append(("q_proj", "Linear", _linear(tgt * batch, e, e, q)))
        leaves.append(("k_proj", "Linear", _linear(src * batch, kdim, e, q)))
        leaves.append(("v_proj", "Linear", _linear(src * batch, vdim, e, q)))
    head_dim = e // heads
    bh = batch * heads
    qh, kt, vh = _meta(bh, tgt, head_dim, like=q), _meta(bh, head_dim, src, like=q), _meta(bh, src, head_dim, like=q)
    scores = _meta(bh, tgt, src, like=q)
    leaves.append(("matmul#0", "MatMul", matmul_features(qh, kt, scores)))
    leaves.append(("softmax#0", "Softmax", {"flops": 5.0 * scores.numel(), "mem_bytes": 3.0 * nbytes(scores)}))
    leaves.append(("matmul#1", "MatMul", matmul_features(scores, vh, _meta(bh, tgt, head_dim, like=q))))
    leaves.append(("out_proj", "Linear", _linear(tgt * batch, e, e, q)))
    glue_flops = float(tgt * batch * e)
    glue = (glue_flops, 2.0 * glue_flops * q.element_size())
    if a.get("attn_mask") is not None or a.get("key_padding_mask") is not None:
        glue = (glue[0] + scores.numel(), glue[1] + 2.0 * nbytes(scores))
    return leaves, glue
