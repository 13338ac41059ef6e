"""Example inputs of a transformers model by what its forward reads, not only token ids.

:func:`pytest_irene.engine.architectures.example_inputs` builds ``input_ids`` for the
bundled text models. A user's vision or speech model (``irene predict --module``, the
explorer) reads something else: given ``input_ids`` a ViT fails deep in its forward
(``'NoneType' object has no attribute 'dtype'``). So the model's ``main_input_name``
decides here, with the sizes taken from its config:

* ``pixel_values``: ``(batch, num_channels, image_size, image_size)``; a dual encoder (CLIP,
  SigLIP) gets them beside its ids; a NaFlex tower (SigLIP 2) gets its flattened patches, their
  mask and grid sizes; a model that also reads a ``pixel_mask`` (DETR and the other
  detectors) gets one with the last image's bottom half padded, as a detection processor pads
  images of uneven sizes to one batch: like the ids' one padded position, it makes the model apply
  its attention mask on a real device as the meta trace assumes (with no pixel mask, DETR's
  encoder skipped it on the CPU and the two trees differed);
* ``input_features`` with ``num_mel_bins`` (Whisper): ``(batch, mel bins, frames)``, the
  frames the encoder requires (twice its ``max_source_positions``); CLAP's audio tower (its config
  has a ``spec_size``) reads ``(batch, 1, frames, mel bins)``, beside the ids of ``ClapModel``
  (given Whisper's layout, or nothing beside the ids, it failed deep in its audio encoder);
* ``input_values`` (wav2vec2, HuBERT, WavLM, SpeechT5): ``(batch, samples)``, as many samples as
  give ``seq_len`` frames after the feature extractor's convolutions; the same name holds a
  spectrogram ``(batch, max_length, mel bins)`` for AST (its position table fixes the frames) and
  a ``(batch, audio channels, samples)`` waveform for a neural codec (Encodec, DAC, Mimi: the config
  has ``upsampling_ratios``), ``seq_len`` frames of ``hop_length`` samples. Given a
  ``(batch, samples)`` waveform, AST and Encodec failed deep in their first layer.

An encoder-decoder gets its encoder's inputs only, as ``trace_generate`` takes them; a single
forward of one that needs ``decoder_input_ids`` (T5, Whisper) is refused by the tracer saying so.
"""

from __future__ import annotations

import inspect
import math
from typing import Any

import torch

__all__ = ["forward_params", "needs_ids", "other_inputs"]

_DEFAULT_IMAGE_SIZE = 224


def forward_params(model: Any) -> set[str]:
    """The names ``model.forward`` takes (empty when its signature cannot be read)."""
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


def _patches(cfg: dict[str, Any], batch_size: int, dev: torch.device) -> dict[str, torch.Tensor]:
    """A NaFlex vision tower's inputs (SigLIP 2: its forward takes ``spatial_shapes``): the image
    as ``num_patches`` flattened patches ``(batch, patches, channels·patch²)``, every patch real
    in ``pixel_attention_mask``, and a square grid in ``spatial_shapes``, kept on the CPU: the model
    reads those sizes as numbers (to resize its position table), which a meta tensor has not."""
    vision = cfg.get("vision_config") if isinstance(cfg.get("vision_config"), dict) else cfg
    patches = int(vision.get("num_patches") or 256)
    patch, channels = int(vision.get("patch_size") or 16), int(vision.get("num_channels") or 3)
    side = math.isqrt(patches)
    return {
        "pixel_values": _noise((batch_size, side * side, channels * patch * patch), dev),
        "pixel_attention_mask": torch.ones((batch_size, side * side), dtype=torch.long, device=dev),
        "spatial_shapes": torch.tensor([[side, side]] * batch_size, dtype=torch.long),
    }


def _pixel_mask(pixels: torch.Tensor) -> torch.Tensor:
    """``(batch, height, width)`` ones, the last image's bottom half padded (zeros) on a real device
    (see the module docstring); on meta the values are not materialised."""
    batch, height, width = int(pixels.shape[0]), int(pixels.shape[-2]), int(pixels.shape[-1])
    mask = torch.ones((batch, height, width), dtype=torch.long, device=pixels.device)
    if height > 1 and pixels.device.type != "meta":
        mask[-1, height // 2:, :] = 0
    return mask


def _dual_encoder(model: Any, cfg: dict[str, Any]) -> bool:
    """CLIP, SigLIP, CLAP: a text and a vision (or audio) tower, both run by one forward. A
    vision-language generator (LLaVA) has a vision config too, but runs text alone, and its images
    need image tokens in the ids, so it gets none here."""
    can_generate = getattr(model, "can_generate", None)
    towers = any(isinstance(cfg.get(key), dict) for key in ("vision_config", "audio_config"))
    return towers and callable(can_generate) and not can_generate()


def _samples_for_frames(cfg: dict[str, Any], frames: int) -> int:
    """Waveform samples the conv feature extractor turns into exactly ``frames`` frames."""
    samples = frames
    for kernel, stride in reversed(list(zip(cfg.get("conv_kernel") or [], cfg.get("conv_stride") or []))):
        samples = (samples - 1) * int(stride) + int(kernel)
    return samples


def _input_values(cfg: dict[str, Any], batch_size: int, seq_len: int, dev: torch.device) -> torch.Tensor:
    """``input_values`` by what the config says the model reads (see the module docstring): a conv
    feature extractor's waveform first (SpeechT5 has mel bins too, for its speech decoder)."""
    if not cfg.get("conv_kernel"):
        if cfg.get("num_mel_bins") and cfg.get("max_length"):
            return _noise((batch_size, int(cfg["max_length"]), int(cfg["num_mel_bins"])), dev)
        ratios = cfg.get("upsampling_ratios")
        if ratios:
            hop = int(cfg.get("hop_length") or math.prod(int(r) for r in ratios))
            return _noise((batch_size, int(cfg.get("audio_channels") or 1), seq_len * hop), dev)
    return _noise((batch_size, _samples_for_frames(cfg, seq_len)), dev)


def _input_features(cfg: dict[str, Any], batch_size: int, seq_len: int, dev: torch.device) -> torch.Tensor | None:
    """A spectrogram by the (audio) config, ``None`` without mel bins: CLAP's ``(batch, 1, frames, mel
    bins)`` (4 channels when it fuses crops) with as many frames as the ``spec_size`` image its encoder
    reshapes them into holds; Whisper's ``(batch, mel bins, frames)``, the frames its encoder requires."""
    if not cfg.get("num_mel_bins"):
        return None
    mel = int(cfg["num_mel_bins"])
    if cfg.get("spec_size"):
        size = int(cfg["spec_size"])
        return _noise((batch_size, 4 if cfg.get("enable_fusion") else 1, size * max(size // mel, 1), mel), dev)
    frames = 2 * int(cfg.get("max_source_positions") or seq_len)
    return _noise((batch_size, mel, frames), dev)


def _noise(shape: tuple[int, ...], dev: torch.device) -> torch.Tensor:
    return torch.empty(shape, device=dev) if dev.type == "meta" else torch.randn(shape, device=dev)


def other_inputs(model: Any, cfg: dict[str, Any], batch_size: int, seq_len: int,
                 dev: torch.device) -> dict[str, torch.Tensor]:
    """What ``model`` reads besides (or instead of) ``input_ids``/``attention_mask``; empty for a
    plain text model."""
    main = getattr(model, "main_input_name", "input_ids")
    params = forward_params(model)
    out: dict[str, torch.Tensor] = {}
    if main == "pixel_values" or ("pixel_values" in params and _dual_encoder(model, cfg)):
        if {"spatial_shapes", "pixel_attention_mask"} <= params:
            return _patches(cfg, batch_size, dev)
        out["pixel_values"] = _pixels(cfg, batch_size, dev)
        if "pixel_mask" in params:
            out["pixel_mask"] = _pixel_mask(out["pixel_values"])
    elif main == "input_features" or ("input_features" in params and _dual_encoder(model, cfg)):
        audio = cfg.get("audio_config") if isinstance(cfg.get("audio_config"), dict) else cfg
        features = _input_features(audio, batch_size, seq_len, dev)
        if features is not None:
            out["input_features"] = features
    elif main == "input_values":
        out["input_values"] = _input_values(cfg, batch_size, seq_len, dev)
    return out
