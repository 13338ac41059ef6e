"""Torch device names: parsed once, and asked whether they run here.

Every front-end names a device (``--irene-device``, ``irene predict --device``,
``irene calibrate --device``, ``irene(..., device=)``); each words its error for
its own option, but the rules are these two, so a CUDA-less host or a typo is
refused the same way everywhere.
"""

from __future__ import annotations

from typing import Any

from pytest_irene.errors import UsageError


def check_device(value: Any, where: str) -> str:
    """A torch device string (``meta``, ``cpu``, ``cuda:0``) to trace on, or :class:`UsageError` naming ``where``."""
    import torch

    try:
        return str(torch.device(value))
    except (RuntimeError, TypeError):
        raise UsageError(f"{where}: expected a torch device such as meta, cpu or cuda:0, got {value!r}") from None


def unavailable_reason(device: str) -> str | None:
    """Why torch cannot put a tensor on ``device`` here (``None``: it can; ``meta`` always can).

    An empty tensor is the one test that holds for every backend: a CPU-only torch, a
    missing GPU, ``cuda:3`` on a one-GPU host."""
    import torch

    if torch.device(device).type == "meta":
        return None
    try:
        torch.empty(0, device=device)
    except Exception as exc:  # noqa: BLE001 - AssertionError (not compiled with CUDA), RuntimeError (no such GPU)
        return " ".join(str(exc).split()) or type(exc).__name__
    return None


__all__ = ["check_device", "unavailable_reason"]
