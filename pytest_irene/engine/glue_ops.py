"""Glue: the aten ops a module runs itself, outside its children, counted as the dataset counted them.

See :mod:`pytest_irene.engine.features` for the conventions; the tracer calls
:func:`glue_op_features` for every op it sees run directly in a module's forward.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch

from pytest_irene.engine.features import matmul_features
from pytest_irene.engine.tensor_sizes import first_tensor, nbytes, output_tensor, tensors

__all__ = ["ELEMENTWISE_OPS", "glue_op_features"]

#: aten op name -> (flops per result element, result-sized transfers).
ELEMENTWISE_OPS: dict[str, tuple[float, float]] = {
    **{op: (1.0, 2.0) for op in (
        "add", "add_", "sub", "sub_", "rsub", "mul", "mul_", "div", "div_", "neg", "pow", "pow_",
        "sqrt", "rsqrt", "exp", "log", "abs", "reciprocal", "square", "maximum", "minimum",
        "clamp", "clamp_", "clamp_min", "clamp_max", "addcmul", "addcdiv", "true_divide", "floor_divide",
        "mean", "sum", "var", "std", "cumsum", "exp_", "sin", "cos", "erf", "lerp",
    )},
    "tanh": (4.0, 1.0),
    "tanh_": (4.0, 1.0),
    "gelu": (6.0, 2.0),
    "gelu_": (6.0, 2.0),
    "relu": (1.0, 2.0),
    "relu_": (1.0, 2.0),
    "sigmoid": (4.0, 2.0),
    "silu": (5.0, 2.0),
    "silu_": (5.0, 2.0),
    "_softmax": (5.0, 3.0),
    "softmax": (5.0, 3.0),
    "native_layer_norm": (8.0, 4.0),
    "_fused_rms_norm": (6.0, 4.0),
    # the other activations torch fuses into one op (they were free: 0 flops for an nn.ELU or a
    # Mamba time step's softplus), counted in the spirit of the measured ones: a clamp-like one as
    # ReLU, one with an exponential as Sigmoid/SiLU, Mish as nn.Mish, log-softmax as softmax
    **{op: (1.0, 2.0) for op in (
        "hardtanh", "hardtanh_", "leaky_relu", "leaky_relu_", "_prelu_kernel", "prelu", "threshold",
        "log1p", "expm1", "sign", "relu6",
    )},
    **{op: (4.0, 2.0) for op in ("hardsigmoid", "hardsigmoid_", "hardswish", "hardswish_", "softplus")},
    **{op: (5.0, 2.0) for op in ("elu", "elu_", "selu", "selu_", "celu", "celu_", "glu", "softshrink", "logsigmoid")},
    "mish": (9.0, 2.0),
    "mish_": (9.0, 2.0),
    "_log_softmax": (5.0, 3.0),
    "log_softmax": (5.0, 3.0),
}
#: Reductions count the elements they read, not the (small) result.
_READ_SIZED = {"mean", "sum", "var", "std"}
_MATMUL_OPS = {"mm", "bmm", "matmul", "mv", "dot", "vdot"}
_ADDMM_OPS = {"addmm", "baddbmm", "addbmm", "addmv"}
_CONVOLUTION_OPS = {"convolution", "_convolution"}


def _convolution(args: Sequence[Any], out: Any) -> tuple[float, float] | None:
    """``aten.convolution(x, W, bias, stride, padding, dilation, transposed, ...)`` run outside a
    Conv module (``F.conv1d`` in a forward: Mamba's causal conv when its kernel is not installed),
    counted as the Conv/ConvTranspose formulas count it: 2 flops per weight element each output
    (a transposed one: each input) element meets, plus the bias add; input + weight + output bytes.
    It used to be free glue, so a functional convolution's work was missing."""
    res = output_tensor(out)
    if res is None or len(args) < 2 or not isinstance(args[0], torch.Tensor) or not isinstance(args[1], torch.Tensor):
        return None
    x, weight = args[0], args[1]
    transposed = bool(args[6]) if len(args) > 6 else False
    per_element = math.prod(weight.shape[1:])  # C_in/groups·kernel, or C_out/groups·kernel transposed
    flops = 2.0 * (x.numel() if transposed else res.numel()) * per_element
    if len(args) > 2 and isinstance(args[2], torch.Tensor):
        flops += res.numel()
    return flops, nbytes(x) + nbytes(weight) + nbytes(res)


#: Pairwise distances (``torch.cdist``): flops per (pair, feature). The matrix-product path for
#: euclidean distances (``_euclidean_dist``, taken past 25 rows) multiplies and adds; the direct
#: path also takes the difference. Both were free glue (a cdist of 2·100 by 512 rows of 64: 0 flops).
_DISTANCE_OPS = {"_euclidean_dist": 2.0, "_cdist_forward": 3.0}


def glue_op_features(op_name: str, args: Sequence[Any], out: Any) -> tuple[float, float] | None:
    """(flops, mem_bytes) of one aten op run as module glue, or ``None`` when the op is free."""
    rule = ELEMENTWISE_OPS.get(op_name)
    if rule is not None:
        res = output_tensor(out)
        if res is None:
            return None
        sized = res
        if op_name in _READ_SIZED:
            first = first_tensor(args)
            sized = first if first is not None else res
        return rule[0] * sized.numel(), rule[1] * nbytes(sized)
    if op_name in _MATMUL_OPS or op_name in _ADDMM_OPS:
        ts = tensors(args)
        res = output_tensor(out)
        if res is None or len(ts) < 2:
            return None
        if op_name in _ADDMM_OPS and len(ts) >= 3:
            ts = ts[1:]
        f = matmul_features(ts[0], ts[1], res)
        return f["flops"], f["mem_bytes"]
    if op_name in _CONVOLUTION_OPS:
        return _convolution(args, out)
    if op_name in _DISTANCE_OPS:
        ts = tensors(args)
        res = output_tensor(out)
        if res is None or len(ts) < 2:
            return None
        return _DISTANCE_OPS[op_name] * res.numel() * ts[0].shape[-1], nbytes(ts[0]) + nbytes(ts[1]) + nbytes(res)
    if op_name == "embedding":
        ts = tensors(args)
        res = output_tensor(out)
        if res is None or len(ts) < 2:
            return None
        return 0.0, nbytes(ts[1]) + nbytes(res)
    return None
