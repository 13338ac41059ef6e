"""The seven architectures of the IrEne reference dataset, buildable by name without downloads.

Their HuggingFace configs are bundled as JSON in ``pytest_irene/configs/`` (the
published hyper-parameters; ``/`` in a name becomes ``--`` in the file name), so
CI machines without network access can trace them. Models are built with
``AutoModel.from_config`` and eager attention, which is how the dataset was
measured (transformers 4.2.2 had no other attention), on the meta device by
default: tracing needs shapes, not weights.
"""

from __future__ import annotations

import json
from functools import lru_cache
from importlib import resources
from typing import Any

import torch

from pytest_irene.errors import UsageError

#: The dataset's architectures, in the order of the paper.
ARCHITECTURES: tuple[str, ...] = (
    "bert-base-uncased",
    "roberta-base",
    "distilbert-base-uncased",
    "gpt2",
    "distilgpt2",
    "openai-gpt",
    "sshleifer/tiny-ctrl",
)

#: Bundled configs that are not in the reference dataset: a Llama-3.2-1B-like decoder
#: (RMSNorm, SiLU gated MLP, rotary positions, grouped-query attention) for measuring
#: modern hardware (``benchmarks/gpu_collect.py``). Shapes only: no weights exist for it.
EXTRA_ARCHITECTURES: tuple[str, ...] = ("llama-1b-style",)

#: Models whose config has a vocabulary but no token types (inputs: ids + mask only).
_NO_TOKEN_TYPES = {"distilbert", "gpt2", "openai-gpt", "ctrl", "roberta", "llama"}


def _check_name(name: str) -> None:
    if name not in ARCHITECTURES and name not in EXTRA_ARCHITECTURES:
        known = ", ".join(ARCHITECTURES + EXTRA_ARCHITECTURES)
        raise UsageError(f"unknown architecture {name!r}; known architectures: {known}")


@lru_cache(maxsize=None)
def _config_dict(name: str) -> dict[str, Any]:
    _check_name(name)
    text = resources.files(__package__).joinpath("configs", name.replace("/", "--") + ".json").read_text("utf-8")
    return json.loads(text)


def config_dict(name: str) -> dict[str, Any]:
    """The bundled config of an architecture as a plain dict (a copy)."""
    return dict(_config_dict(name))


def build_config(name: str, **config_overrides: Any) -> Any:
    """The ``transformers`` config of a bundled architecture, with overrides (``num_hidden_layers=2``)."""
    from transformers import AutoConfig

    data = config_dict(name)
    model_type = data.pop("model_type")
    data.update(config_overrides)
    config = AutoConfig.for_model(model_type, **data)
    config._name_or_path = name
    return config


def build_model(
    name: Any, *, device: str | torch.device = "meta", causal_lm: bool = False, **config_overrides: Any
) -> torch.nn.Module:
    """Build a bundled architecture (by name) or a ``transformers`` config object, in eval mode.

    Weights are randomly initialised (or meta tensors on ``device="meta"``), never
    downloaded; attention is eager. ``config_overrides`` change config fields,
    e.g. ``build_model("bert-base-uncased", num_hidden_layers=2)``. An unknown name
    raises :class:`UsageError` listing the known ones. ``causal_lm=True`` builds the
    model with its language-model head (``AutoModelForCausalLM``), as generation needs.
    """
    from transformers import AutoModel, AutoModelForCausalLM, PretrainedConfig

    if isinstance(name, PretrainedConfig):
        config = name
        for key, value in config_overrides.items():
            setattr(config, key, value)
    elif isinstance(name, str):
        config = build_config(name, **config_overrides)
    else:
        raise UsageError(f"build_model: expected an architecture name or a transformers config, got {type(name).__name__}")
    dev = torch.device(device)
    auto = AutoModelForCausalLM if causal_lm else AutoModel
    with dev:
        try:
            model = auto.from_config(config, attn_implementation="eager")
        except ValueError as exc:
            raise UsageError(f"build_model: {getattr(config, 'model_type', name)} has no causal LM head: {exc}") from None
    return model.eval()


def _model_type(name_or_model: Any) -> tuple[str, Any]:
    if isinstance(name_or_model, str):
        data = config_dict(name_or_model)
        return data["model_type"], data
    config = getattr(name_or_model, "config", None)
    if config is None:
        raise UsageError(
            f"example_inputs: expected an architecture name or a transformers model, got {type(name_or_model).__name__}"
        )
    if not callable(getattr(config, "to_dict", None)):
        raise UsageError(
            f"example_inputs: {type(name_or_model).__name__}.config is a {type(config).__name__}, not a "
            "transformers config (no to_dict()); build the inputs yourself and pass them with the model"
        )
    return getattr(config, "model_type", ""), config.to_dict()


def example_inputs(
    name_or_model: Any, batch_size: int, seq_len: int, device: str | torch.device = "meta"
) -> dict[str, torch.Tensor]:
    """Inputs of shape ``(batch_size, seq_len)`` for a bundled architecture or a transformers model.

    ``input_ids`` (token ids within the vocabulary, avoiding the padding id) and an
    ``attention_mask`` of ones with the last position of the last row padded, as a
    tokenizer returns for a batch of uneven texts: models then apply their mask on a
    real device as they do in a meta trace. BERT-like models also get ``token_type_ids``.
    On the meta device the values are not materialised.
    """
    if batch_size <= 0 or seq_len <= 0:
        raise UsageError(f"example_inputs: batch_size and seq_len must be positive, got {batch_size} and {seq_len}")
    model_type, cfg = _model_type(name_or_model)
    dev = torch.device(device)
    vocab = int(cfg.get("vocab_size") or 2)
    ids = torch.arange(batch_size * seq_len, device=dev).reshape(batch_size, seq_len) % max(vocab - 1, 1) + 1
    if dev.type != "meta" and cfg.get("pad_token_id") is not None:
        pad = int(cfg["pad_token_id"])
        ids = torch.where(ids == pad, torch.full_like(ids, (pad + 1) % vocab), ids)
    mask = torch.ones(batch_size, seq_len, dtype=torch.long, device=dev)
    if seq_len > 1 and dev.type != "meta":
        # One padded position (the last row is one token shorter), so a model decides to
        # build and apply its attention mask on a real device exactly as the meta trace
        # assumes (and as every model of the reference dataset did).
        mask[-1, -1] = 0
    inputs = {"input_ids": ids.to(torch.long), "attention_mask": mask}
    if model_type not in _NO_TOKEN_TYPES and int(cfg.get("type_vocab_size") or 0) > 0:
        inputs["token_type_ids"] = torch.zeros(batch_size, seq_len, dtype=torch.long, device=dev)
    return inputs
