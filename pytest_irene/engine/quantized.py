"""Quantized and low-precision weights: torch's quantized layers, int8/fp8 weights, their notes.

torch's eager quantization (``quantize_dynamic``, static ``convert``) replaces ``nn.Linear`` by
layers that hold no parameters (``weight()`` unpacks an int8 or fp16 pack) and whose GEMMs have
no meta kernel; hand-written weight-only layers and fp8 keep int8/fp8 tensors as buffers. The
features count such weights at their stored element size, the tracer names their dtype on the
node (``notes["weight_dtype"]``) and the training ranges flag a precision never trained.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from pytest_irene.engine.tensor_sizes import first_tensor, low_precision, nbytes, output_tensor
from pytest_irene.engine.tree import EnergyNode


#: Packages of torch's eager quantization (``quantize_dynamic``, static ``convert``). Their
#: ``Linear`` holds no parameters: ``weight()`` is a method unpacking its int8 (or fp16) weight.
_TORCH_QUANTIZED = ("torch.ao.nn.quantized", "torch.nn.quantized", "torch.ao.nn.intrinsic.quantized")
#: Bytes per scale of a quantized weight as fbgemm/qnnpack keep it: an fp32 scale and an int32 zero point.
QUANT_SCALE_BYTES = 8.0


def is_torch_quantized_linear(module: Any) -> bool:
    """torch's quantized ``Linear`` (dynamic or static) or a subclass (the fused ``LinearReLU``): named
    ``Linear`` like ``nn.Linear`` but no subclass of it, and with no ``weight`` tensor, so the
    ``Linear`` formula counted it as 0 flops."""
    return any(c.__name__ == "Linear" and c.__module__.startswith(_TORCH_QUANTIZED) for c in type(module).__mro__)


def quantized_weight(module: Any) -> torch.Tensor | None:
    """The unpacked weight of torch's quantized ``Linear`` (qint8: 1 byte per element; fp16 under
    ``quantize_dynamic(dtype=torch.float16)``), ``None`` for any other module."""
    if not is_torch_quantized_linear(module):
        return None
    getter = getattr(module, "weight", None)
    weight = getter() if callable(getter) else None
    if not isinstance(weight, torch.Tensor):
        return None
    packed_dtype = getattr(getattr(module, "_packed_params", None), "dtype", None)
    if packed_dtype == torch.float16 and weight.dtype != torch.float16:  # fp16 packs unpack as fp32
        return torch.empty(weight.shape, dtype=torch.float16, device="meta")  # only its size is read
    return weight


def quant_scale_bytes(weight: torch.Tensor) -> float:
    """Bytes of a quantized weight's scales and zero points: one pair per output channel
    (per-channel schemes) or one for the tensor; none for a plain (fp16/fp8) weight."""
    if not weight.is_quantized:
        return 0.0
    per_channel = weight.qscheme() in (torch.per_channel_affine, torch.per_channel_symmetric,
                                       torch.per_channel_affine_float_qparams)
    return QUANT_SCALE_BYTES * (weight.q_per_channel_scales().numel() if per_channel else 1)


def quantized_linear(module: Any, inputs: Sequence[Any], output: Any) -> dict[str, float]:
    """torch's quantized ``Linear``: one fused GEMM over x's rows (the kernel flattens x whatever its
    rank, the bias rides along, as addmm): 2·M·K·N flops; x + W (at its own element size: int8 is 1
    byte) + its scales + out. The dynamic kernel's quantization of x is inside the op, not counted apart."""
    x, out, weight = first_tensor(inputs), output_tensor(output), quantized_weight(module)
    if x is None or out is None or weight is None:
        return {"flops": 0.0, "mem_bytes": 0.0}
    n = out.shape[-1] if out.dim() else 1
    m = out.numel() // max(n, 1)
    flops = 2.0 * m * x.shape[-1] * n + (out.numel() if type(module).__name__.endswith("ReLU") else 0)  # fused ReLU
    return {"flops": flops, "mem_bytes": nbytes(x) + nbytes(weight) + quant_scale_bytes(weight) + nbytes(out)}


def quantize_cast(module: Any, inputs: Sequence[Any], output: Any) -> dict[str, float]:
    """torch's ``Quantize``/``DeQuantize`` (a static-quantized model's entry and exit): one scale and
    shift per element (1·E); x read and the result written at their own element sizes (fp32 <-> int8).
    Without it they were leaves with no work at all."""
    x, out = first_tensor(inputs), output_tensor(output)
    if x is None or out is None:
        return {"flops": 0.0, "mem_bytes": 0.0}
    return {"flops": float(out.numel()), "mem_bytes": nbytes(x) + nbytes(out)}


#: Class name in torch's quantized packages -> its formula's registry name (dotted: no class is named
#: so, and transformers' own ``QuantizedLinear``, an ``nn.Linear`` with int8 weights, keeps ``Linear``'s).
_TORCH_QUANTIZED_TYPES = {"Quantize": "torch.ao.QuantizeCast", "DeQuantize": "torch.ao.QuantizeCast"}


def torch_quantized_name(module: Any) -> str | None:
    """The formula registry name of a module of torch's quantized packages: matched by package, since
    their names (``Linear``) are ``nn``'s own or generic (``Quantize``: a VQ-VAE's codebook too)."""
    cls = type(module)
    name = "torch.ao.Linear" if is_torch_quantized_linear(module) else _TORCH_QUANTIZED_TYPES.get(cls.__name__)
    if name is None or not cls.__module__.startswith(_TORCH_QUANTIZED):
        return None
    return name


def stored_low_precision(module: Any) -> list[torch.Tensor]:
    """The low-precision weights ``module`` itself stores (not its children's): int8/fp8 parameters and
    buffers (hand-written weight-only layers, a model cast to fp8), uint8 parameters (int4/int2 packed
    two or four to a byte: a uint8 buffer may be a mask, a parameter is a weight) and torch's quantized
    weight (qint8, or fp16 under ``quantize_dynamic(dtype=torch.float16)``)."""
    if not isinstance(module, torch.nn.Module):
        return []
    found = [t for t in module.parameters(recurse=False) if low_precision(t) or t.dtype == torch.uint8]  # packed int4
    found += [t for t in module.buffers(recurse=False) if low_precision(t)]
    weight = quantized_weight(module)
    return found + ([weight] if weight is not None else [])


def stored_weight_count(module: Any) -> float:
    """Weights ``module`` itself stores that ``parameters()`` misses: int8/fp8 buffers and torch's packed
    quantized weight (and its bias); a quantized model otherwise had 0 params."""
    count = sum(b.numel() for b in module.buffers(recurse=False) if low_precision(b))
    if is_torch_quantized_linear(module):
        weight = quantized_weight(module)
        bias = module.bias() if callable(getattr(module, "bias", None)) else None
        count += (weight.numel() if weight is not None else 0) + (bias.numel() if isinstance(bias, torch.Tensor) else 0)
    return float(count)


def note_weight_dtype(node: EnergyNode, weights: list[torch.Tensor]) -> None:
    """Name on ``node`` the dtype of the low-precision weights it stores or multiplies by
    (``notes["weight_dtype"]``, ``notes["weight_bytes_per_element"]``): its ``bytes_per_element`` is its
    result's (fp32 out of an int8 GEMM), so only this says a profile never saw such weights."""
    if weights:
        node.notes["weight_dtype"] = str(weights[0].dtype).removeprefix("torch.")
        node.notes["weight_bytes_per_element"] = float(weights[0].element_size())


#: torch's dynamic-quantized GEMMs (``quantize_dynamic``'s ``Linear``), which have no meta kernel.
_QUANTIZED_LINEAR_OPS = ("linear_dynamic", "linear_relu_dynamic", "linear_dynamic_fp16", "linear_relu_dynamic_fp16")


def quantized_linear_meta(func: Any, args: tuple[Any, ...]) -> torch.Tensor | None:
    """The result of a dynamic-quantized GEMM run on meta: torch registers no meta kernel for it, so on
    meta a ``quantize_dynamic`` model failed ("could not find the fake impl"). It is x's rows times the
    packed weight's output features, in x's dtype; ``None`` for any other op."""
    if getattr(func, "namespace", None) != "quantized" or func.overloadpacket.__name__ not in _QUANTIZED_LINEAR_OPS:
        return None
    x, packed = args[0], args[1]
    ops = torch.ops.quantized
    unpack = ops.linear_unpack_fp16 if "fp16" in func.overloadpacket.__name__ else ops.linear_unpack
    out_features = int(unpack(packed)[0].shape[0])
    return torch.empty((*x.shape[:-1], out_features), dtype=x.dtype, device="meta")


__all__ = [
    "QUANT_SCALE_BYTES", "is_torch_quantized_linear", "note_weight_dtype", "quant_scale_bytes", "quantize_cast",
    "quantized_linear", "quantized_linear_meta", "quantized_weight", "stored_low_precision", "stored_weight_count",
    "torch_quantized_name",
]
