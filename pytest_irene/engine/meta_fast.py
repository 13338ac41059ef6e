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


def fast_sdpa(args: tuple[Any, ...], kwargs: dict[str, Any]) -> torch.Tensor | None:
    """``F.scaled_dot_product_attention`` on meta: ``(..., L, Ev)`` from the query and value shapes."""
    q = args[0] if args else kwargs.get("query")
    v = args[2] if len(args) > 2 else kwargs.get("value")
    if not (isinstance(q, torch.Tensor) and isinstance(v, torch.Tensor) and q.is_meta and v.is_meta):
        return None
    if q.dim() < 2 or v.dim() < 2:
        return None
    return torch.empty((*q.shape[:-1], v.shape[-1]), dtype=q.dtype, device="meta")
