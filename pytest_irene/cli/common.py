"""Helpers shared by the ``train``/``predict``/``crossvalidate``/``evaluate`` commands."""

from __future__ import annotations

import json
import sys
from typing import Any

from pytest_irene.engine.feature_sets import FEATURE_SETS
from pytest_irene.errors import UsageError

#: What ``--features`` accepts: the feature sets of a model file (no ``auto`` outside pytest).
FEATURE_CHOICES: tuple[str, ...] = FEATURE_SETS


def check_choice(option: str, value: str, choices: tuple[str, ...] | list[str]) -> str:
    """``value`` when it is one of ``choices``, else a :class:`UsageError` naming ``option``."""
    if value not in choices:
        raise UsageError(f"{option}: expected one of {', '.join(choices)}, got {value!r}")
    return value


def check_strategy(value: str | None) -> str:
    """The strategy named by ``--strategy`` (the predictor's default when not given)."""
    from pytest_irene.engine.predict.strategies import DEFAULT_STRATEGY, STRATEGIES

    return check_choice("--strategy", value or DEFAULT_STRATEGY, list(STRATEGIES))


def positive_int(option: str, value: Any, maximum: int | None = None) -> int:
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise UsageError(f"{option}: expected a positive integer, got {value!r:.60}") from None
    if number <= 0 or str(number) != str(value).strip().lstrip("+"):
        raise UsageError(f"{option}: expected a positive integer, got {value!r:.60}")
    if maximum is not None and number > maximum:
        raise UsageError(f"{option}: expected at most {maximum}, got {value!r:.60}")
    return number


def check_device_option(option: str, value: str, *, real: bool = False) -> str:
    """The torch device ``option`` names when this machine has it, else a :class:`UsageError`.

    ``meta`` (tracing without weights) is always there; ``real=True`` refuses it
    (measuring needs a device that runs). Any other device is asked for an empty
    tensor, the one test that holds for every backend (a CPU-only torch, a missing
    GPU, ``cuda:3`` on a one-GPU host), so ``--device cuda`` on a machine without
    CUDA is refused here instead of being ignored or failing deep in a trace."""
    import torch

    from pytest_irene.engine.devices import check_device, unavailable_reason

    device = check_device(value, option)
    if torch.device(device).type == "meta" and real:
        raise UsageError(f"{option}: 'meta' runs nothing; --features all needs cpu or cuda")
    reason = unavailable_reason(device)
    if reason is not None:
        raise UsageError(f"{option}: device {value!r} is not available on this machine ({reason})")
    return device


def load_trees(paths: list[str], option: str = "DATASET") -> list:
    """Every tree of the dataset files a command was given; a :class:`UsageError` when they hold none.

    Without trees a command has nothing to work on, and the error it would raise
    later (a split without the models it needs, a regressor without samples)
    would blame something else than the empty file."""
    from pytest_irene.engine.dataset import load_dataset

    trees = load_dataset(*paths)
    if not trees:
        which = "the dataset file holds" if len(paths) == 1 else "the dataset files hold"
        raise UsageError(f"{option}: {', '.join(map(str, paths))}: {which} no trees")
    return trees


def print_json(obj: Any) -> None:
    """Exactly one JSON object on stdout, nothing else."""
    from pytest_irene.validate import finite_or_none

    sys.stdout.write(json.dumps(finite_or_none(obj), allow_nan=False) + "\n")  # NaN/inf (a level without any node): null
    sys.stdout.flush()


def console(stderr: bool = False):
    from rich.console import Console

    out = Console(stderr=stderr, highlight=False, soft_wrap=False)
    if not out.is_terminal:  # piped or captured: do not cut module scopes at 80 columns
        out = Console(stderr=stderr, highlight=False, soft_wrap=False, width=160)
    return out
