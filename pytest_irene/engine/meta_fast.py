"""Elementwise aten ops on meta tensors without torch's Python meta kernels.

A meta tensor has no values, so an elementwise op's result is only a shape (the
operands' broadcast) and a dtype (torch's type promotion). torch computes that
in Python reference code (about 0.5 ms per op), which makes a meta trace of a
32-layer decoder take seconds; here it takes microseconds. Results are
contiguous (a real op may return another layout; a trace only reads shapes).
Anything unusual (an ``out=`` argument, a non-meta operand, an op not listed, a
non-floating operand) returns ``None`` and takes torch's own path, so a fast path is
never laxer than torch's meta kernel.

:func:`check_dtypes` restores the dtype checks that torch's meta kernels skip but its
CPU and CUDA kernels make (``addmm``, ``mm``, ``mv``, ``convolution``, LayerNorm's
parameters, GELU/SiLU of integers, a cast an in-place op cannot make): without them a
meta trace predicts an input the model could never run (an int or bf16 input to an
fp32 ``Linear``), which ``device="cpu"`` refuses. The error is the kernel's
``RuntimeError``, which the tracer reports as it reports any failing forward.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from pytest_irene.engine.glue_ops import ELEMENTWISE_OPS

__all__ = ["check_dtypes", "fast_elementwise", "fast_sdpa"]

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


# -- the dtype checks of torch's real kernels ------------------------------------------------------

#: torch dtypes as torch's C++ kernels name them in their messages.
_KERNEL_NAMES: dict[torch.dtype, str] = {
    torch.float32: "Float", torch.float64: "Double", torch.float16: "Half", torch.bfloat16: "BFloat16",
    torch.int64: "Long", torch.int32: "Int", torch.int16: "Short", torch.int8: "Char", torch.uint8: "Byte",
    torch.bool: "Bool", torch.complex64: "ComplexFloat", torch.complex128: "ComplexDouble",
}
_REDUCED_FLOATS = (torch.bfloat16, torch.float16)


def _name(t: torch.Tensor | torch.dtype) -> str:
    dtype = t.dtype if isinstance(t, torch.Tensor) else t
    return _KERNEL_NAMES.get(dtype, str(dtype).removeprefix("torch."))


def _same(message: str, *tensors: Any) -> None:
    """Every tensor operand in one dtype, else the kernel's ``RuntimeError`` (``message`` gets the names)."""
    ts = [t for t in tensors if isinstance(t, torch.Tensor)]
    if any(t.dtype != ts[0].dtype for t in ts):
        raise RuntimeError(message.format(*(_name(t) for t in ts)))


def _check_addmm(args: tuple[Any, ...]) -> None:
    bias, m1, m2 = args[:3]
    _same("mat1 and mat2 must have the same dtype, but got {} and {}", m1, m2)
    _same("self and mat2 must have the same dtype, but got {} and {}", bias, m2)


def _check_mm(args: tuple[Any, ...]) -> None:
    _same("expected m1 and m2 to have the same dtype, but got: {} != {}", args[0], args[1])


def _check_mv(args: tuple[Any, ...]) -> None:
    _same("mv: expected the matrix and the vector to have the same dtype, but got {} and {}", args[0], args[1])


def _check_convolution(args: tuple[Any, ...]) -> None:
    _same("Input type ({}) and weight type ({}) should be the same", args[0], args[1])


def _check_layer_norm(args: tuple[Any, ...]) -> None:
    """Weight and bias share a dtype: the input's, or float32 under a bf16/fp16 input (CPU's mixed mode)."""
    x = args[0]
    params = [t for t in args[2:4] if isinstance(t, torch.Tensor)]
    for p in params:
        mixed_ok = x.dtype in _REDUCED_FLOATS and p.dtype == torch.float32 and all(q.dtype == p.dtype for q in params)
        if p.dtype != x.dtype and not mixed_ok:
            raise RuntimeError(f"mixed dtype: expected the LayerNorm parameters to have scalar type {_name(x)} "
                               f"(or Float for a BFloat16/Half input), but found {_name(p)}")


def _float_only(kernel: str) -> Callable[[tuple[Any, ...]], None]:
    def check(args: tuple[Any, ...]) -> None:
        x = args[0]
        if isinstance(x, torch.Tensor) and not x.is_floating_point():
            raise RuntimeError(f"\"{kernel}\" not implemented for '{_name(x)}'")
    return check


_DTYPE_CHECKS: dict[Any, Callable[[tuple[Any, ...]], None]] = {
    aten.addmm.default: _check_addmm,
    aten.mm.default: _check_mm,
    aten.mv.default: _check_mv,
    aten.convolution.default: _check_convolution,
    aten.native_layer_norm.default: _check_layer_norm,
    aten.gelu.default: _float_only("GeluKernelImpl"),
    aten.silu.default: _float_only("silu"),
}


def check_dtypes(func: Any, args: tuple[Any, ...]) -> None:
    """Raise the ``RuntimeError`` a CPU/CUDA kernel raises for operands of dtypes it cannot mix,
    for the ops whose meta kernel does not check them (see the module docstring), and what they
    raise for arithmetic on fp8 (:func:`_refuse_fp8_arithmetic`)."""
    _refuse_fp8_arithmetic(func, args)
    check = _DTYPE_CHECKS.get(func)
    if check is not None:
        check(args)


def _refuse_fp8_arithmetic(func: Any, args: tuple[Any, ...]) -> None:
    """Raise what the CPU/CUDA kernels raise for arithmetic on fp8 tensors (``"add_stub" not implemented
    for 'Float8_e4m3fn'``): torch's meta kernels take them, so a model cast whole with
    ``.to(torch.float8_e4m3fn)`` traced on meta although it runs nowhere. fp8 stores weights and feeds
    ``torch._scaled_mm``; copies, casts, views and GEMMs pass, as do ``abs`` and fp8 × fp8 ``mul``
    (the CPU has them)."""
    name = func.overloadpacket.__name__ if hasattr(func, "overloadpacket") else ""
    if name not in ELEMENTWISE_OPS or name == "abs":
        return
    operands = [a for a in args if isinstance(a, torch.Tensor)]
    fp8 = next((t for t in operands if "float8" in str(t.dtype)), None)
    if fp8 is None or (name in ("mul", "mul_") and len(operands) == 2):
        return
    raise NotImplementedError(
        f"{name!r} is not implemented for {str(fp8.dtype).removeprefix('torch.')} tensors on CPU or CUDA: "
        "fp8 stores weights and feeds fp8 GEMMs (torch._scaled_mm), it does not compute; keep the model "
        "in bf16/fp32 and store fp8 weights only (dequantize with w.to(x.dtype) * scale, or call torch._scaled_mm)"
    )


def _check_inplace_cast(a: torch.Tensor, other: Any) -> None:
    """An in-place op keeps ``a``'s dtype: a result that cannot be cast back to it (an int tensor
    times a float) is refused, as by torch's kernels (its meta kernel lets some through)."""
    result = torch.result_type(a, other)
    if not torch.can_cast(result, a.dtype):
        raise RuntimeError(f"result type {_name(result)} can't be cast to the desired output type {_name(a)}")


def fast_elementwise(func: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> torch.Tensor | None:
    """The meta result of an elementwise op, or ``None`` to let torch compute it."""
    if kwargs.get("out") is not None or not args or not isinstance(args[0], torch.Tensor) or not args[0].is_meta:
        return None
    a = args[0]
    if func in _INPLACE:
        other = args[1] if len(args) > 1 else None
        if isinstance(other, torch.Tensor) and (not other.is_meta or torch.broadcast_shapes(a.shape, other.shape) != a.shape):
            return None
        if other is not None:
            _check_inplace_cast(a, other)
        return a
    if func in _UNARY:
        if (func is aten.gelu.default and kwargs) or not a.is_floating_point():
            return None
        return torch.empty(a.shape, dtype=a.dtype, device="meta")
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
        if dtype == torch.bool:
            return None  # bool arithmetic: torch's kernel refuses some (``-`` of two bools)
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
    k = args[1] if len(args) > 1 else kwargs.get("key")
    if not (isinstance(q, torch.Tensor) and isinstance(v, torch.Tensor) and q.is_meta and v.is_meta):
        return None
    if q.dim() < 2 or v.dim() < 2:
        return None
    if isinstance(k, torch.Tensor) and not q.dtype == k.dtype == v.dtype:
        raise RuntimeError(f"Expected query, key, and value to have the same dtype, but got query.dtype: {_name(q)} "
                           f"key.dtype: {_name(k)} and value.dtype: {_name(v)} instead.")
    if isinstance(k, torch.Tensor):
        gqa = bool(args[7] if len(args) > 7 else kwargs.get("enable_gqa", False))
        _check_sdpa_heads(q, k, v, gqa)
    return torch.empty((*q.shape[:-1], v.shape[-1]), dtype=q.dtype, device="meta")


def _check_sdpa_heads(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, gqa: bool) -> None:
    """What the real kernels refuse: heads (and batch) that do not broadcast, unless ``enable_gqa``
    and the key's heads divide the query's. Without it a config with ``num_key_value_heads`` other
    than the heads traced on meta and failed on the CPU."""
    if k.dim() < 3 or q.dim() < 3 or k.shape[-3] == q.shape[-3]:
        lead_q, lead_k = q.shape[:-2], k.shape[:-2]
    elif gqa:
        if q.shape[-3] % k.shape[-3] or v.shape[-3] != k.shape[-3]:
            raise RuntimeError("Number of heads in key and value must divide the number of heads in query")
        lead_q, lead_k = q.shape[:-3], k.shape[:-3]
    else:
        lead_q, lead_k = q.shape[:-2], k.shape[:-2]
    try:
        torch.broadcast_shapes(lead_q, lead_k)
    except RuntimeError:
        hint = ""
        if k.dim() >= 3 and q.dim() >= 3 and k.shape[-3] < q.shape[-3]:
            hint = " (grouped-query attention needs enable_gqa=True)"
        elif k.dim() >= 3 and q.dim() >= 3 and k.shape[-3] > q.shape[-3]:  # no flag makes this valid
            hint = " (the key has more heads than the query: a config's num_key_value_heads above its heads?)"
        raise RuntimeError(f"scaled_dot_product_attention: the query's batch and heads {tuple(lead_q)} and the key's "
                           f"{tuple(lead_k)} do not broadcast{hint}") from None
    if k.shape[-1] != q.shape[-1]:
        raise RuntimeError(f"scaled_dot_product_attention: the key's last dimension {k.shape[-1]} differs from "
                           f"the query's {q.shape[-1]}")
