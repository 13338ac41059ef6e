"""Elementwise aten ops on meta tensors without torch's Python meta kernels.

A meta tensor has no values, so an elementwise op's result is only a shape (the
operands' broadcast) and a dtype (torch's type promotion). torch computes that
in Python reference code (about 0.5 ms per op), which makes a meta trace of a
32-layer decoder take seconds; here it takes microseconds. Results are
contiguous (a real op may return another layout; a trace only reads shapes).
Anything unusual (an ``out=`` argument, a non-meta operand, an op not listed)
returns ``None`` and takes torch's own path.
"""

from __future__ import annotations

from typing import Any

import torch

__all__ = ["fast_elementwise", "fast_sdpa"]

#: Elementwise and two shape-only ops beyond them: a biased Linear's ``addmm`` and LayerNorm's
#: ``native_layer_norm`` (BERT, BART, Whisper), whose Python meta kernels cost 0.5-1.5 ms each.

aten = torch.ops.aten
#: Ops whose result is the broadcast of their operands, in the promoted dtype.
_BINARY = {
    aten.add.Tensor, aten.sub.Tensor, aten.mul.Tensor, aten.add.Scalar, aten.sub.Scalar, aten.mul.Scalar,
    aten.maximum.default, aten.minimum.default, aten.pow.Tensor_Scalar, aten.pow.Tensor_Tensor,
}
#: Ops that always give a floating result (integer inputs are promoted to the default dtype).
_TO_FLOAT = {aten.div.Tensor, aten.div.Scalar}
_UNARY = {
    aten.neg.default, aten.rsqrt.default, aten.sqrt.default, aten.exp.default, aten.sin.default, aten.cos.default,
    aten.tanh.default, aten.sigmoid.default, aten.silu.default, aten.relu.default, aten.gelu.default,
    aten.reciprocal.default, aten.erf.default, aten.abs.default, aten.log.default,
}
_INPLACE = {aten.add_.Tensor, aten.mul_.Tensor, aten.sub_.Tensor, aten.div_.Tensor, aten.add_.Scalar, aten.mul_.Scalar}


def _promoted(a: torch.Tensor, b: Any) -> torch.dtype:
    return torch.result_type(a, b)


def fast_elementwise(func: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> torch.Tensor | None:
    """The meta result of an elementwise op, or ``None`` to let torch compute it."""
    if kwargs.get("out") is not None or not args or not isinstance(args[0], torch.Tensor) or not args[0].is_meta:
        return None
    a = args[0]
    if func in _INPLACE:
        other = args[1] if len(args) > 1 else None
        if isinstance(other, torch.Tensor) and (not other.is_meta or torch.broadcast_shapes(a.shape, other.shape) != a.shape):
            return None
        return a
    if func in _UNARY:
        if func is aten.gelu.default and kwargs:
            return None
        dtype = a.dtype if a.is_floating_point() or func in (aten.neg.default, aten.abs.default, aten.relu.default) \
            else torch.get_default_dtype()
        return torch.empty(a.shape, dtype=dtype, device="meta")
    if func is aten.addmm.default:
        return _addmm(args, kwargs)
    if func is aten.native_layer_norm.default:
        return _layer_norm(args, kwargs)
    if func in _BINARY or func in _TO_FLOAT:
        if len(args) < 2 or any(k not in ("alpha",) for k in kwargs):
            return None
        b = args[1]
        if isinstance(b, torch.Tensor):
            if not b.is_meta:
                return None
            shape = torch.broadcast_shapes(a.shape, b.shape)
        elif isinstance(b, (int, float, bool)):
            shape = a.shape
        else:
            return None
        dtype = _promoted(a, b)
        if func in _TO_FLOAT and not (dtype.is_floating_point or dtype.is_complex):
            dtype = torch.get_default_dtype()
        return torch.empty(shape, dtype=dtype, device="meta")
    return None


def _addmm(args: tuple[Any, ...], kwargs: dict[str, Any]) -> torch.Tensor | None:
    """``bias + mat1 @ mat2``: ``(n, m)`` from two same-dtype 2-D matrices (the bias broadcasts)."""
    if len(args) != 3 or kwargs:
        return None
    bias, m1, m2 = args
    if not all(isinstance(t, torch.Tensor) and t.is_meta for t in (bias, m1, m2)):
        return None
    if m1.dim() != 2 or m2.dim() != 2 or m1.dtype != m2.dtype or bias.dtype != m1.dtype:
        return None
    shape = (m1.shape[0], m2.shape[1])
    try:
        if m1.shape[1] != m2.shape[0] or torch.broadcast_shapes(bias.shape, shape) != shape:
            return None
    except RuntimeError:  # shapes that do not broadcast: torch's own path raises its message
        return None
    return torch.empty(shape, dtype=m1.dtype, device="meta")


def _layer_norm(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """``(out, mean, rstd)``: ``out`` like the input; mean and rstd over the leading dimensions, in
    the computation dtype (float32 for half types), as torch's meta kernel gives them."""
    from torch._prims_common import get_computation_dtype

    if kwargs or len(args) != 5 or not isinstance(args[1], (list, tuple)):
        return None
    x, shape = args[0], list(args[1])
    if not x.is_floating_point() or len(shape) > x.dim() or list(x.shape[x.dim() - len(shape):]) != shape:
        return None
    lead = x.dim() - len(shape)
    stats = (*x.shape[:lead], *([1] * len(shape)))
    acc = get_computation_dtype(x.dtype)
    return (
        torch.empty(x.shape, dtype=x.dtype, device="meta"),
        torch.empty(stats, dtype=acc, device="meta"),
        torch.empty(stats, dtype=acc, device="meta"),
    )


def fast_sdpa(args: tuple[Any, ...], kwargs: dict[str, Any]) -> torch.Tensor | None:
    """``F.scaled_dot_product_attention`` on meta: ``(..., L, Ev)`` from the query and value shapes."""
    q = args[0] if args else kwargs.get("query")
    v = args[2] if len(args) > 2 else kwargs.get("value")
    if not (isinstance(q, torch.Tensor) and isinstance(v, torch.Tensor) and q.is_meta and v.is_meta):
        return None
    if q.dim() < 2 or v.dim() < 2:
        return None
    return torch.empty((*q.shape[:-1], v.shape[-1]), dtype=q.dtype, device="meta")
