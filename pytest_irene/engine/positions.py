"""How many positions a model with an absolute position table can take, checked before tracing.

A model that looks its positions up in a learned table (BERT, GPT-2, RoBERTa, Whisper's
decoder) cannot run past the table's end: on a real device the lookup raises "index
out of range". On the meta device the lookup has no index values, so it succeeds and
a prediction for an impossible input comes out (gpt2 at 5000 tokens: 516 J). So
:func:`check_positions` refuses such a length up front, on every device, with the
model, the length and the limit, where the tracer knows the model and the input length.

The table is recognised from the model's own config, not its class: a
``transformers`` model whose config names a position limit
(``max_position_embeddings``, ``n_positions``, ``max_positions``, Whisper's
``max_target_positions``) and that holds an ``nn.Embedding`` of that many rows
(past the ``offset`` rows BART and OPT reserve) which is not its token embedding.
Models with rotary (Llama), relative (T5) or sinusoidal-by-formula positions
(CTRL) have no such table and keep working past their config's value. A table with
a ``padding_idx`` (RoBERTa, XLM-R) numbers positions from ``padding_idx + 1``, so it
holds ``padding_idx + 1`` fewer.
"""

from __future__ import annotations

import sys
from typing import Any

from torch import nn

from pytest_irene.errors import UsageError

__all__ = ["check_positions", "position_limit"]

#: Config attributes that give the length of a learned position table.
_LIMIT_NAMES: tuple[str, ...] = ("max_position_embeddings", "n_positions", "max_positions", "max_target_positions")


def _is_pretrained(module: nn.Module) -> bool:
    """A ``transformers.PreTrainedModel``, without importing transformers (a model of it has done so)."""
    transformers = sys.modules.get("transformers")
    base = getattr(transformers, "PreTrainedModel", None) if transformers is not None else None
    return base is not None and isinstance(module, base)


def _config_limits(config: Any) -> dict[int, str]:
    """Each position limit the config names -> the attribute naming it."""
    limits: dict[int, str] = {}
    for name in _LIMIT_NAMES:
        value = getattr(config, name, None)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            limits.setdefault(value, name)
    return limits


def _token_tables(module: nn.Module) -> set[int]:
    """ids of the embeddings that hold tokens, not positions (a tiny config may give them as many rows)."""
    ids: set[int] = set()
    for getter in ("get_input_embeddings", "get_output_embeddings"):
        try:
            table = getattr(module, getter)()
        except (AttributeError, NotImplementedError, TypeError):
            continue
        if table is not None:
            ids.add(id(table))
    return ids


def _rows(table: nn.Embedding) -> tuple[int, int]:
    """(rows in the config's terms, positions the table can serve)."""
    rows = int(table.num_embeddings) - int(getattr(table, "offset", 0) or 0)
    usable = rows - (int(table.padding_idx) + 1 if table.padding_idx is not None else 0)
    return rows, usable


def position_limit(module: nn.Module) -> tuple[int, str] | None:
    """``(most positions, config attribute)`` of ``module``'s learned position table; ``None`` when it has none."""
    if not _is_pretrained(module):
        return None
    limits = _config_limits(getattr(module, "config", None))
    if not limits:
        return None
    tokens = _token_tables(module)
    found = [(usable, limits[rows]) for m in module.modules() if isinstance(m, nn.Embedding) and id(m) not in tokens
             for rows, usable in [_rows(m)] if rows in limits]
    return min(found) if found else None


def check_positions(module: nn.Module, length: int | None, *, model_name: str,
                    what: str = "the input's token ids") -> None:
    """:class:`UsageError` when ``length`` positions exceed ``module``'s position table (see the module docstring);
    ``length`` ``None`` (no token ids: pixels, spectrograms) is not checked."""
    if length is None:
        return
    found = position_limit(module)
    if found is not None and length > found[0]:
        limit, attribute = found
        raise UsageError(
            f"{model_name}: {length} positions needed ({what}), but the model's position table holds {limit} "
            f"(config.{attribute}) and a real device fails past it ('index out of range'); use at most {limit} "
            "positions"
        )
