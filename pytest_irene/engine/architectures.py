"""The seven architectures of the IrEne reference dataset, buildable by name without downloads.

Their HuggingFace configs are bundled as JSON in ``pytest_irene/configs/`` (the
published hyper-parameters; ``/`` in a name becomes ``--`` in the file name), so
CI machines without network access can trace them. Models are built with
``AutoModel.from_config`` and eager attention, which is how the dataset was
measured (transformers 4.2.2 had no other attention), on the meta device by
default: tracing needs shapes, not weights.
"""

from __future__ import annotations

import difflib
import json
import re
from functools import lru_cache
from importlib import resources
from typing import Any

import torch

from pytest_irene.engine.model_inputs import needs_ids, other_inputs
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


def known_architectures() -> tuple[str, ...]:
    """Every architecture buildable by name: the dataset's, then the extra bundled configs.

    The one answer to "is this a known architecture" for :func:`build_model`, the
    ``irene`` commands and the explorer, so none of them refuses a name another accepts."""
    return ARCHITECTURES + EXTRA_ARCHITECTURES


def check_architecture(name: Any, option: str | None = None) -> str:
    """``name`` when it is a :func:`known_architectures` name, else a :class:`UsageError` listing them.

    ``option`` (``--model``) starts the message when a front-end took the name from one."""
    known = known_architectures()
    if not isinstance(name, str) or name not in known:
        prefix = f"{option}: " if option else ""
        raise UsageError(f"{prefix}unknown architecture {name!r}; known architectures: {', '.join(known)}")
    return name


@lru_cache(maxsize=None)
def _config_dict(name: str) -> dict[str, Any]:
    check_architecture(name)
    text = resources.files(__package__).joinpath("configs", name.replace("/", "--") + ".json").read_text("utf-8")
    return json.loads(text)


def config_dict(name: str) -> dict[str, Any]:
    """The bundled config of an architecture as a plain dict (a copy)."""
    return dict(_config_dict(name))


class ConfigOverrideError(UsageError):
    """Config overrides :func:`build_model` refuses.

    ``overrides`` holds the ones at fault (a key the config does not have, a value
    its class rejects, a count below one, a model that cannot be built with them)
    and ``problem`` says why in the library's words, so a front-end can name its own
    option instead (``irene calibrate --config KEY=VALUE``)."""

    def __init__(self, architecture: str, overrides: dict[str, Any], problem: str) -> None:
        self.architecture = architecture
        self.overrides = dict(overrides)
        self.problem = problem
        super().__init__(f"build_model: {architecture} with {format_overrides(overrides)}: {problem}")


def format_overrides(overrides: dict[str, Any]) -> str:
    """``n_layer=2, n_embd=64``: overrides as a user writes them."""
    return ", ".join(f"{key}={value!r}" for key, value in overrides.items())


#: Config fields that count something (layers, heads, widths, positions, vocabulary): below one,
#: a model has nothing to count (``n_layer=-1`` builds a model without layers) or cannot be built.
_COUNT_FIELD = re.compile(
    r"^(num|n)_|_(layers?|heads?|size|dim|positions|embd|embeddings|ctx|inner)$|^(dim|hidden_dim|d_model|dff|d_ff)$"
)
#: Fields a user cannot meaningfully override (they say which class the config is).
_FIXED_FIELDS = frozenset({"model_type", "transformers_version"})


def _fields(config: Any) -> set[str]:
    """The names a config answers to: its serialised fields, their aliases and its settable properties."""
    names = set(config.to_dict()) | set(getattr(config, "attribute_map", None) or {})
    names |= {n for n in dir(type(config)) if isinstance(getattr(type(config), n, None), property)}
    return {n for n in names if not n.startswith("_")} - _FIXED_FIELDS


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def _check_overrides(label: str, config: Any, overrides: dict[str, Any]) -> None:
    """Refuse keys ``config`` does not have (suggesting close names) and counts below one.

    ``config`` is the architecture's config before the overrides: a key it lacks
    would be stored and ignored by the model, so a typo would silently build the
    unchanged architecture."""
    fields = _fields(config)
    for key, value in overrides.items():
        if key not in fields:
            close = difflib.get_close_matches(key, sorted(fields), n=3, cutoff=0.6)
            hint = f"; did you mean {' or '.join(close)}?" if close else ""
            raise ConfigOverrideError(label, {key: value}, f"{type(config).__name__} has no field {key!r}{hint}")
        default = getattr(config, key, None)
        counts = _COUNT_FIELD.search(key) and (default is None or (type(default) is int and default >= 1))
        if counts and type(value) is int and value < 1:
            problem = f"must be at least 1 (it counts layers, heads, positions or units), got {value}"
            raise ConfigOverrideError(label, {key: value}, problem)


def _culprits(model_type: str, data: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """The overrides the config class rejects on their own (all of them when none does alone)."""
    from transformers import AutoConfig

    alone = {}
    for key, value in overrides.items():
        try:
            AutoConfig.for_model(model_type, **{**data, key: value})
        except Exception:  # noqa: BLE001 - whatever the config class raises, this key is at fault
            alone[key] = value
    return alone or dict(overrides)


def build_config(name: str, **config_overrides: Any) -> Any:
    """The ``transformers`` config of a bundled architecture, with overrides (``num_hidden_layers=2``).

    Overrides are validated here, the one place every front-end builds through:
    an unknown key, a value the config class rejects or a count below one is a
    :class:`ConfigOverrideError` naming the key, never a silently ignored field."""
    from transformers import AutoConfig

    data = config_dict(name)
    model_type = data.pop("model_type")
    config = AutoConfig.for_model(model_type, **data)
    if config_overrides:
        _check_overrides(name, config, config_overrides)
        try:
            config = AutoConfig.for_model(model_type, **{**data, **config_overrides})
        except Exception as exc:  # noqa: BLE001 - the config class's own validation, in its words
            culprits = _culprits(model_type, data, config_overrides)
            raise ConfigOverrideError(name, culprits, f"the config rejects it: {_one_line(exc)}") from None
    config._name_or_path = name
    return config


def _as_config(name_or_config: Any) -> Any:
    return build_config(name_or_config) if isinstance(name_or_config, str) else name_or_config


def is_encoder_only(name_or_config: Any) -> bool:
    """True for an encoder (BERT, RoBERTa, DistilBERT): it has a masked-LM head and its config is
    neither a decoder (``is_decoder``) nor an encoder-decoder.

    Such a model reads the whole sequence at once; its ``*ForCausalLM`` class (where
    one exists) runs it unmasked unless ``is_decoder=True``, so "generating" with it
    would predict a decode loop the model never runs."""
    from transformers import AutoModelForMaskedLM, PretrainedConfig

    config = _as_config(name_or_config)
    if not isinstance(config, PretrainedConfig):
        return False
    masked = type(config) in AutoModelForMaskedLM._model_mapping
    return masked and not getattr(config, "is_decoder", False) and not getattr(config, "is_encoder_decoder", False)


def generation_problem(name_or_config: Any) -> str | None:
    """Why a bundled architecture or config cannot be built to generate text, or ``None`` when it can.

    The rule behind ``build_model(..., causal_lm=True)`` and ``irene predict
    --new-tokens``: an encoder-only model does not generate, and a model type
    without a causal language-model class has no head to pick tokens with."""
    from transformers import AutoModelForCausalLM

    config = _as_config(name_or_config)
    label = getattr(config, "_name_or_path", "") or getattr(config, "model_type", type(config).__name__)
    if is_encoder_only(config):
        return (
            f"{label} is an encoder-only model ({config.model_type}): it reads the whole sequence at once and "
            "does not generate; a generation needs a decoder such as gpt2 or llama-1b-style"
        )
    if type(config) not in AutoModelForCausalLM._model_mapping:
        model_type = getattr(config, "model_type", "?")
        return f"{label} has no causal LM head: transformers has no {model_type} causal language model"
    return None


def build_model(
    name: Any, *, device: str | torch.device = "meta", causal_lm: bool = False, **config_overrides: Any
) -> torch.nn.Module:
    """Build a bundled architecture (by name) or a ``transformers`` config object, in eval mode.

    Weights are randomly initialised (or meta tensors on ``device="meta"``), never
    downloaded; attention is eager. ``config_overrides`` change config fields,
    e.g. ``build_model("bert-base-uncased", num_hidden_layers=2)``; an unknown key,
    a rejected value or an unbuildable combination is a :class:`ConfigOverrideError`
    naming the overrides. An unknown name raises :class:`UsageError` listing the
    known ones. ``causal_lm=True`` builds the model with its language-model head
    (``AutoModelForCausalLM``), as generation needs; an encoder-only model or one
    without such a head is refused (:func:`generation_problem`).
    """
    from transformers import AutoModel, AutoModelForCausalLM, PretrainedConfig

    if isinstance(name, PretrainedConfig):
        config = name
        label = getattr(config, "_name_or_path", "") or config.model_type
        _check_overrides(label, config, config_overrides)
        for key, value in config_overrides.items():
            try:
                setattr(config, key, value)
            except Exception as exc:  # noqa: BLE001 - the config class's own validation
                raise ConfigOverrideError(label, {key: value}, f"the config rejects it: {_one_line(exc)}") from None
    elif isinstance(name, str):
        config = build_config(name, **config_overrides)
        label = name
    else:
        raise UsageError(f"build_model: expected an architecture name or a transformers config, got {type(name).__name__}")
    if causal_lm:
        problem = generation_problem(config)
        if problem is not None:
            raise UsageError(f"build_model: {problem}")
    dev = torch.device(device)
    auto = AutoModelForCausalLM if causal_lm else AutoModel
    with dev:
        try:
            model = auto.from_config(config, attn_implementation="eager")
        except Exception as exc:  # noqa: BLE001 - a config the model class cannot be built from
            problem = f"the model cannot be built: {type(exc).__name__}: {_one_line(exc)}"
            if config_overrides:
                raise ConfigOverrideError(label, config_overrides, problem) from None
            raise UsageError(f"build_model: {label}: {problem}") from None
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

    A transformers model gets what its forward reads (:mod:`pytest_irene.engine.model_inputs`):
    pixels (beside the ids of a dual encoder such as CLIP), a spectrogram or a waveform instead of ids.

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
    if isinstance(name_or_model, str):
        return inputs
    media = other_inputs(name_or_model, cfg, batch_size, seq_len, dev)
    return {**(inputs if needs_ids(name_or_model) else {}), **media}
