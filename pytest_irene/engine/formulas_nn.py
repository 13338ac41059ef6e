"""Formulas of the ``torch.nn`` primitives the reference dataset never measured.

Vision, audio and recent decoders use modules the 2021 encoders of ``irene-pc1``
did not have (convolution stems, batch norms, pools, up-sampling, rotary
tables). Without a formula such a module is a leaf with 0 flops and 0 bytes and
is predicted at a constant, whatever its size. The counts follow the same
conventions as :mod:`pytest_irene.engine.features` (``E`` = result elements,
``u`` = one result-sized transfer); matrix products (convolutions) agree with
``torch.utils.flop_counter.FlopCounterMode``:

=======================  ==================================  ===========================
primitive                flops                               mem_bytes
=======================  ==================================  ===========================
ConvTranspose1d/2d/3d    2·in·(C_out/groups·kernel) + bias   x + W + out
BatchNorm (eval)         2·E (scale and shift)               x + out + 4 per-channel vectors
GroupNorm / InstanceNorm 8·E (as LayerNorm)                  4·u
Max/Avg pool             out·kernel (one op per window read)  x + out
Adaptive pools           input elements (each read once)     x + out
Upsample / interpolate   E (nearest) or 4·E (linear family)  x + out
Rotary embedding table   3·E over cos and sin (outer product  2·u
                         and the two trigonometric ops)
LSTM / GRU / RNN         2·rows·Σ weights + 4·rows·gates     x + out + weights
                         (rows = steps × batch)
torch._scaled_mm (fp8)   2·M·K·N (bias fused)                every operand (fp8: 1 byte) + out
F.conv1d/2d/3d           as Conv1d/2d/3d, from the weight    x + W + out
                         argument (+ bias when given)
=======================  ==================================  ===========================
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch

from pytest_irene.engine.tensor_sizes import nbytes, tensors

__all__ = ["NN_FORMULAS", "nn_heuristic"]


def _io(inputs: Sequence[Any], output: Any) -> tuple[torch.Tensor, torch.Tensor] | None:
    ins, outs = tensors(list(inputs)), tensors(output)
    if not ins or not outs:
        return None
    return ins[0], outs[0]


_ZERO = {"flops": 0.0, "mem_bytes": 0.0}


def conv_transpose(module: Any, inputs: Sequence[Any], output: Any) -> dict[str, float]:
    """A transposed convolution: every input element is spread over ``C_out/groups·kernel`` outputs."""
    io = _io(inputs, output)
    weight = getattr(module, "weight", None)
    if io is None or not isinstance(weight, torch.Tensor):
        return dict(_ZERO)
    x, out = io
    per_in = math.prod(weight.shape[1:])  # weight: (C_in, C_out/groups, *kernel)
    flops = 2.0 * x.numel() * per_in
    if getattr(module, "bias", None) is not None:
        flops += out.numel()
    return {"flops": flops, "mem_bytes": nbytes(x) + nbytes(weight) + nbytes(out)}


def batch_norm(module: Any, inputs: Sequence[Any], output: Any) -> dict[str, float]:
    """Inference batch norm: one multiply-add per element with per-channel mean, var, weight, bias."""
    io = _io(inputs, output)
    if io is None:
        return dict(_ZERO)
    x, out = io
    channels = x.shape[1] if x.dim() > 1 else x.numel()
    return {"flops": 2.0 * out.numel(), "mem_bytes": nbytes(x) + nbytes(out) + 4.0 * channels * out.element_size()}


def _norm_like(module: Any, inputs: Sequence[Any], output: Any) -> dict[str, float]:
    """Group/instance norm: statistics over groups then scale, counted as LayerNorm (8·E, 4·u)."""
    io = _io(inputs, output)
    if io is None:
        return dict(_ZERO)
    _, out = io
    return {"flops": 8.0 * out.numel(), "mem_bytes": 4.0 * nbytes(out)}


def _kernel_elements(module: Any, dims: int) -> int:
    kernel = getattr(module, "kernel_size", 1)
    if isinstance(kernel, int):
        return kernel**dims
    return math.prod(int(k) for k in kernel)


def _pool(dims: int) -> Any:
    def formula(module: Any, inputs: Sequence[Any], output: Any) -> dict[str, float]:
        io = _io(inputs, output)
        if io is None:
            return dict(_ZERO)
        x, out = io
        return {"flops": float(out.numel() * _kernel_elements(module, dims)), "mem_bytes": nbytes(x) + nbytes(out)}

    formula.__doc__ = f"A {dims}-D max/avg pool: one comparison or add per element of each window."
    return formula


def adaptive_pool(module: Any, inputs: Sequence[Any], output: Any) -> dict[str, float]:
    """An adaptive pool reads every input element once (windows tile the input)."""
    io = _io(inputs, output)
    if io is None:
        return dict(_ZERO)
    x, out = io
    return {"flops": float(max(x.numel(), out.numel())), "mem_bytes": nbytes(x) + nbytes(out)}


def upsample(module: Any, inputs: Sequence[Any], output: Any) -> dict[str, float]:
    """Nearest up-sampling copies (1 op per output); linear modes weigh neighbours (4 ops per output)."""
    io = _io(inputs, output)
    if io is None:
        return dict(_ZERO)
    x, out = io
    mode = str(getattr(module, "mode", "nearest"))
    per = 1.0 if mode.startswith("nearest") else 4.0
    return {"flops": per * out.numel(), "mem_bytes": nbytes(x) + nbytes(out)}


def rotary(module: Any, inputs: Sequence[Any], output: Any) -> dict[str, float]:
    """A rotary table (``cos``, ``sin``): outer product of positions and frequencies, then cos and sin."""
    outs = tensors(output)
    if not outs:
        return dict(_ZERO)
    elements = sum(t.numel() for t in outs)
    return {"flops": 3.0 * elements, "mem_bytes": 2.0 * sum(nbytes(t) for t in outs)}


def scaled_mm(fn: Any, inputs: Sequence[Any], output: Any) -> dict[str, float]:
    """``torch._scaled_mm(a, b, scale_a, scale_b, bias=...)``: the fp8 GEMM of a hand-written or
    library fp8 Linear (``a`` the activations, ``b`` the weight, both 1 byte per element): 2·M·K·N,
    the bias fused as in addmm; bytes are every operand at its own element size (scales and bias
    included) + the result in its ``out_dtype``. Uncounted, it was free glue: 0 flops."""
    ts = tensors(list(inputs))
    outs = tensors(output)
    if len(ts) < 2 or not outs or ts[0].dim() < 1:
        return dict(_ZERO)
    out = outs[0]
    flops = 2.0 * out.numel() * int(ts[0].shape[-1])
    return {"flops": flops, "mem_bytes": sum(nbytes(t) for t in ts) + nbytes(out)}


def conv_fn(fn: Any, inputs: Sequence[Any], output: Any) -> dict[str, float]:
    """``F.conv2d(x, W, b, ...)`` outside a ``Conv2d`` module (a hand-written stem, Mamba's slow
    path): the module's count, ``2·out·(C_in/groups·kernel)`` (+ the bias add), x + W + out bytes."""
    ts = tensors(list(inputs))
    outs = tensors(output)
    if len(ts) < 2 or not outs:
        return dict(_ZERO)
    x, weight, out = ts[0], ts[1], outs[0]
    flops = 2.0 * out.numel() * math.prod(weight.shape[1:])
    if len(ts) >= 3:  # a bias tensor (the other arguments are ints and tuples)
        flops += out.numel()
    return {"flops": flops, "mem_bytes": nbytes(x) + nbytes(weight) + nbytes(out)}


#: Elementwise flops per gate element and time step of a recurrent cell (bias adds, the gate's
#: activation, the state update), on top of its matrix products.
RNN_GATE_FLOPS = 4.0


def recurrent(module: Any, inputs: Sequence[Any], output: Any) -> dict[str, float]:
    """``nn.LSTM``/``nn.GRU``/``nn.RNN``: every weight matrix is applied once per time step and
    sample, 2 flops per weight element (``2·rows·Σ W``, rows = steps × batch), plus
    :data:`RNN_GATE_FLOPS` per gate element; bytes are the input, the output and every weight.
    One formula on every device: on CPU the fused ``aten.lstm`` hides its products from the
    op counter, on meta they are decomposed, so counting the ops would disagree."""
    x = inputs[0] if inputs else None
    data = getattr(x, "data", None) if x is not None and not isinstance(x, torch.Tensor) else x  # PackedSequence
    outs = tensors(output)
    if not isinstance(data, torch.Tensor) or not outs:
        return dict(_ZERO)
    rows = math.prod(data.shape[:-1])  # (steps, batch) in either order, or a packed sequence's rows
    weights = [p for name, p in module.named_parameters() if name.startswith("weight_")]
    gate_rows = sum(int(w.shape[0]) for name, w in module.named_parameters() if name.startswith("weight_hh"))
    flops = 2.0 * rows * sum(w.numel() for w in weights) + RNN_GATE_FLOPS * rows * gate_rows
    mem = nbytes(data) + nbytes(outs[0]) + sum(nbytes(w) for w in weights)
    return {"flops": float(flops), "mem_bytes": float(mem)}


def bilinear(module: Any, inputs: Sequence[Any], output: Any) -> dict[str, float]:
    """``nn.Bilinear``: ``y_o = x1·W_o·x2 + b_o``, 2 flops per weight element per row (``2·rows·Σ W``)
    plus the bias add; bytes are both inputs, the weight and the output. Its ``aten._trilinear``
    was free glue, so the layer's whole product was missing."""
    ins, outs = tensors(list(inputs)), tensors(output)
    weight = getattr(module, "weight", None)
    if len(ins) < 2 or not outs or not isinstance(weight, torch.Tensor):
        return dict(_ZERO)
    out = outs[0]
    rows = out.numel() // max(int(weight.shape[0]), 1)
    flops = 2.0 * rows * weight.numel()
    bias = getattr(module, "bias", None)
    if isinstance(bias, torch.Tensor):
        flops += out.numel()
    mem = nbytes(ins[0]) + nbytes(ins[1]) + nbytes(weight) + (nbytes(bias) if isinstance(bias, torch.Tensor) else 0) + nbytes(out)
    return {"flops": float(flops), "mem_bytes": float(mem)}


#: Type name -> formula, merged into the registry of :mod:`pytest_irene.engine.features`.
NN_FORMULAS: dict[str, Any] = {
    "ConvTranspose1d": conv_transpose,
    "ConvTranspose2d": conv_transpose,
    "ConvTranspose3d": conv_transpose,
    "BatchNorm1d": batch_norm,
    "BatchNorm2d": batch_norm,
    "BatchNorm3d": batch_norm,
    "SyncBatchNorm": batch_norm,
    "GroupNorm": _norm_like,
    "InstanceNorm1d": _norm_like,
    "InstanceNorm2d": _norm_like,
    "InstanceNorm3d": _norm_like,
    "MaxPool1d": _pool(1),
    "MaxPool2d": _pool(2),
    "MaxPool3d": _pool(3),
    "AvgPool1d": _pool(1),
    "AvgPool2d": _pool(2),
    "AvgPool3d": _pool(3),
    "AdaptiveAvgPool1d": adaptive_pool,
    "AdaptiveAvgPool2d": adaptive_pool,
    "AdaptiveAvgPool3d": adaptive_pool,
    "AdaptiveMaxPool1d": adaptive_pool,
    "AdaptiveMaxPool2d": adaptive_pool,
    "AdaptiveMaxPool3d": adaptive_pool,
    "Upsample": upsample,
    "UpsamplingNearest2d": upsample,
    "UpsamplingBilinear2d": upsample,
    "Bilinear": bilinear,
    "LSTM": recurrent,
    "GRU": recurrent,
    "RNN": recurrent,
    "ScaledMM": scaled_mm,  # torch._scaled_mm, the fp8 GEMM (the tracer names its node type Linear)
    "ConvFn": conv_fn,  # F.conv1d/2d/3d (node types Conv1d/2d/3d)
}


def nn_heuristic(name: str) -> Any:
    """Families recognised by class name: rotary tables (``LlamaRotaryEmbedding``...), batch/group norms."""
    low = name.lower()
    if low.endswith("rotaryembedding") or low.endswith("rotaryembeddings"):
        return rotary
    if low.endswith("batchnorm2d") or low.endswith("batchnorm"):
        return batch_norm
    if low.endswith("groupnorm"):
        return _norm_like
    return None
