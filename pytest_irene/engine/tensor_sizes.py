"""Sizes of the tensors a primitive reads and writes: the shared vocabulary of the formula modules.

Formulas see inputs and outputs as nested tuples/lists of tensors, often on the meta
device: only shapes and element sizes are used, never values.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import torch

__all__ = ["element_bytes", "first_tensor", "nbytes", "output_tensor", "tensors"]


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


def first_tensor(values: Iterable[Any]) -> torch.Tensor | None:
    """The first tensor in ``values``, ``None`` when there is none."""
    ts = tensors(list(values))
    return ts[0] if ts else None


def output_tensor(output: Any) -> torch.Tensor | None:
    """The tensor a primitive returned (the first one of a tuple/list output)."""
    if isinstance(output, torch.Tensor):
        return output
    return first_tensor(output if isinstance(output, (tuple, list)) else [])
