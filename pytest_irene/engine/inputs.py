"""What a model's inputs say: batch size, tokens per sample, the ids' length, and moving them.

The tracer's sizes come from here, in one place: token ids ``(batch, seq)`` when the
inputs hold them; otherwise (embeddings, pixels, spectrograms, MLP features) the layout
of the first layer that knows its input's (:func:`pytest_irene.engine.tracer.token_layout`).
Explicit sizes are checked (:func:`check_count`), since every node carries them as features.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Mapping
from typing import Any

import torch

from pytest_irene.errors import UsageError


def to_device(value: Any, device: torch.device) -> Any:
    """``value`` with every tensor moved to ``device`` (tuples, lists and mappings walked); the one such helper.

    A tensor passed twice stays one tensor (``mha(x, x, x)`` is self-attention, one packed
    projection, only while its query *is* its key), on meta as on a real device."""
    return _moved(value, device, {})


def _moved(value: Any, device: torch.device, done: dict[int, torch.Tensor]) -> Any:
    if isinstance(value, torch.Tensor):
        if id(value) not in done:
            done[id(value)] = value.to(device)
        return done[id(value)]
    if isinstance(value, tuple):
        return tuple(_moved(v, device, done) for v in value)
    if isinstance(value, list):
        return [_moved(v, device, done) for v in value]
    if isinstance(value, Mapping):  # dict, transformers' BatchEncoding
        return {k: _moved(v, device, done) for k, v in value.items()}
    return value


def _flat_tensors(value: Any) -> list[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, (tuple, list)):
        return [t for v in value for t in _flat_tensors(v)]
    if isinstance(value, Mapping):
        return [t for v in value.values() for t in _flat_tensors(v)]
    return []


def _is_ids(t: torch.Tensor) -> bool:
    """A 2-D integer tensor: token ids ``(batch, seq)`` (or a mask or type ids over them)."""
    return t.dim() == 2 and not t.is_floating_point() and not t.is_complex() and t.dtype != torch.bool


def infer_batch_seq(inputs: Any) -> tuple[int, int]:
    """(batch size, sequence length) of model inputs.

    The first 2-D integer tensor (``input_ids``: ``(batch, seq)``) decides; otherwise
    the first tensor's dims 0 and 1 (a 1-D tensor is a batch of one sequence).
    """
    tensors = _flat_tensors(inputs)
    if not tensors:
        raise UsageError("trace: inputs must be a tensor, a tuple or a dict holding at least one tensor")
    for t in tensors:
        if _is_ids(t):
            return int(t.shape[0]), int(t.shape[1])
    first = tensors[0]
    if first.dim() == 0:
        return 1, 1
    if first.dim() == 1:
        return 1, int(first.shape[0])
    return int(first.shape[0]), int(first.shape[1])


def ids_length(inputs: Any) -> int | None:
    """Positions per sample the inputs ask for: the longest 2-D integer tensor (ids, decoder ids,
    masks; a mask over a cache covers it too); ``None`` without ids (pixels, spectrograms)."""
    lengths = [int(t.shape[1]) for t in _flat_tensors(inputs) if _is_ids(t)]
    return max(lengths) if lengths else None


def check_count(argument: str, value: Any) -> int:
    """``value`` as an int when it is a positive integer, else :class:`UsageError` naming ``argument``.

    An explicit ``batch_size``/``seq_len`` becomes a feature of every node: a zero or a
    negative one would be predicted as if it were a size."""
    try:
        number = operator.index(value) if not isinstance(value, bool) else 0
    except TypeError:
        number = 0
    if number <= 0:
        raise UsageError(f"{argument}: expected a positive integer, got {value!r}")
    return number


def batch_and_tokens(inputs: Any, layout: tuple[int, int] | None, inferred: tuple[int, int]) -> tuple[int, int]:
    """(batch, tokens per sample): the ids' shape; for embeddings, pixels or spectrograms what the
    model processes (the first layer that knows its input's layout: a token-wise layer's
    ``(B, S, D)``, an RNN's or ``nn.MultiheadAttention``'s by its ``batch_first``), never a hidden
    or channel dim; else a CNN's every spatial position."""
    tensors = _flat_tensors(inputs)
    first = tensors[0] if tensors else None  # the model's main input: ids, pixels or a spectrogram
    if first is None or not first.is_floating_point():
        return inferred
    if first.dim() == 2:  # (B, D) features into a token-wise layer: one token each; else a waveform
        return layout if layout == (int(first.shape[0]), 1) else inferred
    if first.dim() < 3:
        return inferred
    if layout is not None:
        return layout  # ViT patches + class token, Whisper frames, a seq-first GRU's (batch, steps)
    return inferred[0], int(math.prod(first.shape[2:]))


__all__ = ["batch_and_tokens", "check_count", "ids_length", "infer_batch_seq", "to_device"]
