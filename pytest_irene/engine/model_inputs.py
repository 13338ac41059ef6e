"""Example inputs of a transformers model by what its forward reads, not only token ids.

:func:`pytest_irene.engine.architectures.example_inputs` builds ``input_ids`` for the
bundled text models. A user's vision or speech model (``irene predict --module``, the
explorer) reads something else: given ``input_ids`` a ViT fails deep in its forward
(``'NoneType' object has no attribute 'dtype'``). So the model's ``main_input_name``
decides here, with the sizes taken from its config:

* ``pixel_values``: ``(batch, num_channels, image_size, image_size)``; a dual encoder (CLIP,
  SigLIP) gets them beside its ids;
* ``input_features`` with ``num_mel_bins`` (Whisper): ``(batch, mel bins, frames)``, the
  frames the encoder requires (twice its ``max_source_positions``);
* ``input_values`` (wav2vec2, HuBERT, WavLM): ``(batch, samples)``, as many samples as give
  ``seq_len`` frames after the feature extractor's convolutions.

An encoder-decoder gets its encoder's inputs only, as ``trace_generate`` takes them; a single
forward of one that needs ``decoder_input_ids`` (T5, Whisper) is refused by the tracer saying so.
"""

from __future__ import annotations

import inspect
from typing import Any

import torch

__all__ = ["needs_ids", "other_inputs"]

_DEFAULT_IMAGE_SIZE = 224


def _forward_params(model: Any) -> set[str]:
    try:
        return set(inspect.signature(model.forward).parameters)
    except (TypeError, ValueError, AttributeError):
        return set()


def needs_ids(model: Any) -> bool:
    """Whether ``model`` reads token ids: a bundled name or a model whose main input is ``input_ids``."""
    return getattr(model, "main_input_name", "input_ids") == "input_ids"


def _side(size: Any) -> int:
    """An image side from a config's ``image_size`` (an int, or ``[h, w]``: the first)."""
    if isinstance(size, (list, tuple)) and size:
        size = size[0]
    return int(size) if isinstance(size, int) and size > 0 else _DEFAULT_IMAGE_SIZE


def _pixels(cfg: dict[str, Any], batch_size: int, dev: torch.device) -> torch.Tensor:
    vision = cfg.get("vision_config") if isinstance(cfg.get("vision_config"), dict) else cfg
    side = _side(vision.get("image_size"))
    channels = int(vision.get("num_channels") or 3)
    return _noise((batch_size, channels, side, side), dev)


def _dual_encoder(model: Any, cfg: dict[str, Any]) -> bool:
    """CLIP, SigLIP: a text and a vision tower, both run by one forward. A vision-language
    generator (LLaVA) has a vision config too, but runs text alone, and its images need image
    tokens in the ids, so it gets none here."""
    can_generate = getattr(model, "can_generate", None)
    return isinstance(cfg.get("vision_config"), dict) and callable(can_generate) and not can_generate()


def _samples_for_frames(cfg: dict[str, Any], frames: int) -> int:
    """Waveform samples the conv feature extractor turns into exactly ``frames`` frames."""
    samples = frames
    for kernel, stride in reversed(list(zip(cfg.get("conv_kernel") or [], cfg.get("conv_stride") or []))):
        samples = (samples - 1) * int(stride) + int(kernel)
    return samples


def _noise(shape: tuple[int, ...], dev: torch.device) -> torch.Tensor:
    return torch.empty(shape, device=dev) if dev.type == "meta" else torch.randn(shape, device=dev)


def other_inputs(model: Any, cfg: dict[str, Any], batch_size: int, seq_len: int,
                 dev: torch.device) -> dict[str, torch.Tensor]:
    """What ``model`` reads besides (or instead of) ``input_ids``/``attention_mask``; empty for a
    plain text model."""
    main = getattr(model, "main_input_name", "input_ids")
    params = _forward_params(model)
    out: dict[str, torch.Tensor] = {}
    if main == "pixel_values" or ("pixel_values" in params and _dual_encoder(model, cfg)):
        out["pixel_values"] = _pixels(cfg, batch_size, dev)
    elif main == "input_features" and cfg.get("num_mel_bins"):
        frames = 2 * int(cfg.get("max_source_positions") or seq_len)
        out["input_features"] = _noise((batch_size, int(cfg["num_mel_bins"]), frames), dev)
    elif main == "input_values":
        out["input_values"] = _noise((batch_size, _samples_for_frames(cfg, seq_len)), dev)
    return out
