"""What to do when a model's forward fails while it is traced: hints added to the ``TraceError``.

The model's own exception says what broke (``topk(): argument 'k' must be int, not
NoneType``) but not why in terms of what the user passed: a meta device without values,
an encoder-decoder without decoder tokens, a config field left unset, a hybrid model whose
cache has no attention layer, a list of inputs spread into positional arguments. Each
rule looks at the exception and what was traced, and says the fix; none changes what runs.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import nn

from pytest_irene.engine import datadep


def failure_hint(exc: Exception, model: nn.Module, inputs: Any, module: nn.Module | None, *, on_meta: bool) -> str:
    """Every hint that applies to ``exc`` raised while tracing ``model(inputs)`` (``module``: the
    innermost module running), each starting ``"; "`` or `` (``, in one string (``""``: none)."""
    if any(name in str(exc).lower() for name in ("flex_attention", "flexattention")):
        return _FLEX_ATTENTION_HINT  # on meta too: no device would help
    hint = (datadep.meta_failure_hint(exc) if on_meta else "") + _decoder_hint(model, inputs)
    hint += _unset_config_hint(module, model, exc) + _hybrid_cache_hint(exc)
    if isinstance(inputs, (list, tuple)) and isinstance(exc, TypeError) and "positional arg" in str(exc):
        hint += (f"; a {type(inputs).__name__} of inputs is spread into positional arguments (model(*inputs)): "
                 "pass a forward's one list argument as a 1-tuple, (inputs,)")
    return hint


#: FlexAttention is a higher-order operator: it refuses meta tensors, and on a real device it has no
#: rule for the tracer's dispatch mode, so the model's error (one of those two) names neither the cause
#: nor the fix.
_FLEX_ATTENTION_HINT = (
    "; FlexAttention (torch.nn.attention.flex_attention, transformers' attn_implementation='flex_attention') "
    "cannot be traced on any device: torch runs it as a higher-order operator that takes neither meta tensors "
    "nor the tracer's dispatch mode; trace the model with attn_implementation='sdpa' (or 'eager'), which does "
    "the same attention work"
)


def _decoder_hint(model: nn.Module, inputs: Any) -> str:
    """Why an encoder-decoder's forward failed when given its encoder's inputs alone: its decoder
    had no tokens (T5 and Whisper do not make them up; BART shifts its ids), so its own error
    speaks of missing ``input_ids`` or of ``None``, not of the decoder."""
    config = getattr(model, "config", None)
    if not getattr(config, "is_encoder_decoder", False) or not isinstance(inputs, Mapping):
        return ""
    if any(k.startswith("decoder_") or k in ("labels", "encoder_outputs") for k in inputs):
        return ""
    return ("; an encoder-decoder model's forward also needs the decoder's tokens: pass decoder_input_ids "
            "(e.g. a (batch, 1) tensor of config.decoder_start_token_id), or trace a generation with "
            "max_new_tokens (trace_generate), which starts the decoder itself")


def _unset_config_hint(module: nn.Module | None, model: nn.Module, exc: Exception) -> str:
    """Why a module got ``None`` where it needs a number: its config left a setting unset (the default
    ``DeepseekV2Config`` has no ``num_experts_per_tok``: its router's ``topk(k=None)`` fails on every
    device), so the fix is in the config, not the device. Only a ``TypeError`` about ``None`` raised
    inside a module holding ``None`` attributes gets it."""
    if module is None or not isinstance(exc, TypeError) or "NoneType" not in str(exc):
        return ""
    unset = sorted(k for k, v in vars(module).items() if v is None and not k.startswith("_"))
    if not unset:
        return ""
    config = getattr(model, "config", None)
    fields = sorted(k for k, v in config.to_dict().items() if v is None and not k.endswith("_token_id")
                    and k not in _BASE_CONFIG_FIELDS) if hasattr(config, "to_dict") else []
    where = f"unset there: {', '.join(fields)}" if fields else "a MoE router's experts per token: num_experts_per_tok"
    return (f"; {type(module).__name__}'s {', '.join(unset)} {'is' if len(unset) == 1 else 'are'} None, likely the "
            "cause: a setting the model's config leaves unset fails on every device, not only on meta; set it in the "
            f"config ({where})")


#: Fields every transformers config has, ``None`` by default (not a model's setting).
_BASE_CONFIG_FIELDS = frozenset({"architectures", "dtype", "problem_type", "_name_or_path"})


def _hybrid_cache_hint(exc: Exception) -> str:
    """transformers' cache of a hybrid (Mamba + attention) model whose layers are all Mamba cannot
    tell its length (``get_seq_length``), so its forward with ``use_cache`` fails on every device."""
    if "can only be called on attention layers" not in str(exc).lower():
        return ""
    return ("; every layer of this hybrid model is Mamba/linear attention (config.layer_types or "
            "attn_layer_indices has no attention layer), and transformers' cache then cannot tell its length, "
            "on any device: pass use_cache=False with the inputs to trace a forward, or give the config at "
            "least one attention layer (a generation needs one)")


__all__ = ["failure_hint"]
