"""Sizes of the tensors a primitive reads and writes: the shared vocabulary of the formula modules.

Formulas see inputs and outputs as nested tuples/lists of tensors, often on the meta
device: only shapes and element sizes are used, never values.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import torch

__all__ = ["element_bytes", "first_tensor", "low_precision", "nbytes", "output_tensor", "tensors"]


def tensors(values: Any) -> list[torch.Tensor]:
    """Every tensor in ``values`` (a tensor, or tuples/lists of them, nested), in order."""
    if isinstance(values, torch.Tensor):
        return [values]
    if isinstance(values, (tuple, list)):
        return [t for v in values for t in tensors(v)]
    return []


def nbytes(t: torch.Tensor) -> float:
    """Bytes of a tensor's elements (its logical size, not its storage)."""
    return float(t.numel() * t.element_size())


def element_bytes(value: Any) -> int | None:
    """Element size of the first floating-point tensor in ``value`` (tensors, tuples, lists,
    dicts and transformers' ``ModelOutput``), bytes: 4 for fp32, 2 for bf16/fp16; ``None``
    when it holds none. This is the dtype a node computes in (its ``bytes_per_element``)."""
    if isinstance(value, torch.Tensor):
        return value.element_size() if value.is_floating_point() else None
    items = value.values() if isinstance(value, Mapping) else value if isinstance(value, (tuple, list)) else ()
    for item in items:
        found = element_bytes(item)
        if found is not None:
            return found
    return None


#: Element types of stored low-precision weights (int8 hand-written weight-only layers, fp8, torch's
#: quantized tensors). ``uint8`` is left out: old checkpoints keep boolean masks in it (GPT-2's
#: causal ``bias`` buffer in transformers 4.x), which are no weights.
_LOW_PRECISION: frozenset[torch.dtype] = frozenset(
    d for d in (torch.int8, torch.qint8, torch.quint8, getattr(torch, "quint4x2", None),
                *(getattr(torch, n, None) for n in ("float8_e4m3fn", "float8_e5m2", "float8_e4m3fnuz",
                                                     "float8_e5m2fnuz", "float8_e8m0fnu")))
    if d is not None
)


def low_precision(t: Any) -> bool:
    """Whether ``t`` is a tensor of stored low-precision weights (int8, fp8, a quantized tensor):
    its elements are not the dtype the model computes in, so they are named apart
    (``notes["weight_dtype"]``) and flagged when a profile never trained them."""
    return isinstance(t, torch.Tensor) and (t.dtype in _LOW_PRECISION or t.is_quantized)


def first_tensor(values: Iterable[Any]) -> torch.Tensor | None:
    """The first tensor in ``values``, ``None`` when there is none."""
    ts = tensors(list(values))
    return ts[0] if ts else None


def output_tensor(output: Any) -> torch.Tensor | None:
    """The tensor a primitive returned (the first one of a tuple/list output)."""
    if isinstance(output, torch.Tensor):
        return output
    return first_tensor(output if isinstance(output, (tuple, list)) else [])
