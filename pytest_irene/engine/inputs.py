"""What a model's inputs say: batch size, tokens per sample, the ids' length, and moving them.

The tracer's sizes come from here, in one place: token ids ``(batch, seq)`` when the
inputs hold them; otherwise (embeddings, pixels, spectrograms, MLP features) the layout
of the first layer that knows its input's (:func:`token_layout`).
Explicit sizes are checked (:func:`check_count`), since every node carries them as features.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from pytest_irene.engine.quantized import is_torch_quantized_linear
from pytest_irene.engine.tensor_sizes import low_precision
from pytest_irene.errors import UsageError


def to_device(value: Any, device: torch.device) -> Any:
    """``value`` with every tensor moved to ``device`` (tuples, lists and mappings walked); the one such helper.

    A tensor passed twice stays one tensor (``mha(x, x, x)`` is self-attention, one packed
    projection, only while its query *is* its key), on meta as on a real device. A meta tensor
    (``example_inputs``' default) cannot move to a real device: a usage error says so."""
    return _moved(value, device, {})


def _moved(value: Any, device: torch.device, done: dict[int, torch.Tensor]) -> Any:
    if isinstance(value, torch.Tensor):
        if value.is_meta and device.type != "meta":
            raise UsageError(
                f"an input tensor {tuple(value.shape)} is on the meta device (it holds no values) and cannot run on "
                f"{device}: build the inputs there (example_inputs(model, batch_size, seq_len, device='{device}')) "
                "or pass real tensors")
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


def main_input_elements(inputs: Any) -> int | None:
    """Elements of the model's main input (the first tensor: ids, pixels, a spectrogram), ``None``
    without one. Two calls with the same count read the same input, so a change of their tokens
    per sample (a ViT's patch size) is the model's, not the test's (see :mod:`pytest_irene.compare.gate`)."""
    tensors = _flat_tensors(inputs)
    return int(tensors[0].numel()) if tensors else None


def other_input_elements(inputs: Any) -> int | None:
    """Elements of every input after the main one (a CLIP's pixels beside its ids, a mask), ``None``
    without a main input. The tree's batch and tokens are read off the main input alone, so bigger
    images for a CLIP looked like the same call: the gate blamed the model for the test's change."""
    tensors = _flat_tensors(inputs)
    return int(sum(t.numel() for t in tensors[1:])) if tensors else None


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


def batch_and_tokens(inputs: Any, layout: tuple[int, int] | None, inferred: tuple[int, int],
                     rows: tuple[int, int] | None = None) -> tuple[int, int]:
    """(batch, tokens per sample): the ids' shape; for embeddings, pixels or spectrograms what the
    model processes (the first layer that knows its input's layout, ``layout``: a token-wise
    layer's ``(B, S, D)``, an RNN's or ``nn.MultiheadAttention``'s by its ``batch_first``, an
    unbatched layer's one sample), never a hidden or channel dim; else a CNN's every spatial position.

    ``rows`` is ``(B, 1)`` when a token-wise layer was given ``(B, D)`` rows: the layout of a 2-D
    features input (an MLP), but only a classifier head's in an image model, so not used there."""
    tensors = _flat_tensors(inputs)
    first = tensors[0] if tensors else None  # the model's main input: ids, pixels or a spectrogram
    if first is None or not first.is_floating_point():
        return inferred
    if first.dim() == 2:  # (B, D) features, a (B, samples) waveform, an unbatched (L, E) sequence
        return layout or rows or inferred
    if first.dim() < 2:
        return inferred
    if layout is not None and (first.dim() == 3 or layout[0] == int(first.shape[0])):
        return layout  # ViT patches + class token, Whisper frames, a seq-first GRU's (batch, steps)
    return int(first.shape[0]), int(math.prod(first.shape[2:]))  # a CNN's positions, dim 0 its batch


#: The functional forms of the norms: a module's own weights used functionally make the leaf its
#: module form would be (:mod:`pytest_irene.engine.tracer`), read with the same layout.
_FUNCTIONAL_NORMS = tuple(f for f in (nn.functional.layer_norm, getattr(nn.functional, "rms_norm", None)) if f)


def _token_wise(module: Any) -> bool:
    """A leaf that works token by token (Linear, Bilinear, LayerNorm, RMSNorm, a quantized Linear, or
    ``F.linear``/``F.layer_norm``/``F.rms_norm`` on a module's weights): its input's dim 1 is the
    tokens. A functional ``F.linear(x, self.weight)`` read ``x``'s features as its tokens."""
    if not isinstance(module, nn.Module):
        return module is nn.functional.linear or module in _FUNCTIONAL_NORMS
    return isinstance(module, (nn.Linear, nn.Bilinear)) or _is_norm(module) or _quantized_layer(module)


def _quantized_layer(module: nn.Module) -> bool:
    """torch's quantized ``Linear`` (no ``nn.Linear`` subclass) or a module storing int8/fp8 weights
    itself (a hand-written weight-only or fp8 layer, whose GEMM is a functional leaf): a layer applied
    token by token. Without it a quantized MLP's ``(B, S, D)`` input was read as D tokens per sample."""
    if is_torch_quantized_linear(module):
        return True
    own = (*module.parameters(recurse=False), *module.buffers(recurse=False))
    return any(low_precision(t) for t in own)


def norm_width(module: Any, inputs: tuple[Any, ...]) -> int | None:
    """The width a LayerNorm/RMSNorm leaf (module or functional) normalises: its input's last
    dimension, ``None`` for any other leaf. Read off the call, since a model's towers may run their
    norms over different token counts (see :func:`pytest_irene.engine.predict.ranges.tree_width`)."""
    x = inputs[0] if inputs and isinstance(inputs[0], torch.Tensor) else None
    if x is None or x.dim() < 1 or not _is_norm(module):
        return None
    return int(x.shape[-1])


def _is_norm(module: Any) -> bool:
    """A LayerNorm or RMSNorm (by type or by the name families the formulas recognise), or its
    functional form."""
    if not isinstance(module, nn.Module):
        return module in _FUNCTIONAL_NORMS
    name = type(module).__name__.lower()
    return isinstance(module, nn.LayerNorm) or name.endswith("rmsnorm") or name.endswith("layernorm")


def _norms_a_convolution(module: Any, caller: nn.Module | None) -> bool:
    """A norm called by a module that holds a convolution normalises that convolution's channels
    (wav2vec2-large's, HuBERT-large's and WavLM-large's feature layers: conv, transpose, LayerNorm;
    a patch embedding's norm): its positions are the convolution's, not yet the model's tokens.
    wav2vec2-large's first such norm saw 16,399 positions per sample where the encoder reads 256
    frames."""
    if caller is None or not _is_norm(module):
        return False
    return any(isinstance(child, nn.modules.conv._ConvNd) for child in caller.children())


def token_layout(module: Any, inputs: tuple[Any, ...], caller: nn.Module | None = None) -> tuple[int, int] | None:
    """``(batch, tokens per sample)`` of ``module``'s input, for a module whose input says it.

    A token-wise layer's ``(B, S, D)`` input (the common batch-first case); a recurrent layer's
    input by its ``batch_first`` (``(B, L, H)`` or ``(L, B, H)``, unbatched ``(L, H)``), since
    its hidden size is no sequence; an unbatched convolution's ``(C, *spatial)`` (one sample of
    its positions: dim 0 is its channels, not a batch). ``nn.MultiheadAttention`` reports its own
    from the query (:func:`pytest_irene.engine.mha.mha_leaves`). ``None`` for anything else (a
    ``PackedSequence``, a batched convolution: its positions are not yet the model's tokens, e.g.
    ViT's patches before the class token; a norm beside a convolution in ``caller``, the module
    that called it: :func:`_norms_a_convolution`); ``(B, D)`` rows are :func:`row_layout`'s.
    """
    x = inputs[0] if inputs and isinstance(inputs[0], torch.Tensor) else None
    if x is None or not x.is_floating_point():
        return None
    if isinstance(module, nn.RNNBase):
        if x.dim() == 2:
            return 1, int(x.shape[0])
        if x.dim() == 3:
            batch, tokens = (x.shape[0], x.shape[1]) if module.batch_first else (x.shape[1], x.shape[0])
            return int(batch), int(tokens)
        return None
    if isinstance(module, nn.modules.conv._ConvNd) and x.dim() == len(module.kernel_size) + 1:  # (C, *spatial)
        return 1, int(math.prod(x.shape[1:]))
    if _token_wise(module) and x.dim() == 3 and not _norms_a_convolution(module, caller):
        return int(x.shape[0]), int(x.shape[1])
    return None


def row_layout(module: Any, inputs: tuple[Any, ...]) -> tuple[int, int] | None:
    """``(B, 1)`` for a token-wise layer given ``(B, D)`` rows: one token per sample.

    Kept apart from :func:`token_layout`: it is the layout of an MLP's input, but in an image or
    sequence model it is only the head's (a classifier on pooled features), not the tokens."""
    x = inputs[0] if inputs and isinstance(inputs[0], torch.Tensor) else None
    if x is None or not x.is_floating_point() or x.dim() != 2 or not _token_wise(module):
        return None
    return int(x.shape[0]), 1


__all__ = ["batch_and_tokens", "check_count", "ids_length", "infer_batch_seq", "main_input_elements",
           "norm_width", "other_input_elements", "row_layout", "to_device",
           "token_layout"]
