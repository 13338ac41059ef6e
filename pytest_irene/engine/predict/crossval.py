"""Cross-validation of predictors on measured trees, the way IrEne reports errors.

Error of a node = ``100·|predicted − measured| / measured`` (percent). For each
held-out model the errors are averaged over the nodes of each level (``ml``,
``module``, ``model``), then over the models (``average``).

Splits:

- ``lomo``: leave one model out over the six paper models; ``sshleifer/tiny-ctrl``
  (and any other model not in :data:`PAPER_MODELS`) only ever trains.
- ``seq``: per model, train on all but its two longest sequence lengths, test on
  those two (extrapolation to longer inputs); one fit, errors per model.
- ``batch``: per model, train on all but its largest batch size, test on it.
- ``width``: train on the six paper models (hidden size 768 everywhere), test on every
  other model (``sshleifer/tiny-ctrl``: hidden 16, a new width); errors are reported
  for those other models.

In every split the errors are reported for the six paper models (tiny-ctrl's held-out
trees of ``seq``/``batch`` are predicted but not averaged in), unless the file holds
none of them, in which case every model is reported.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from pytest_irene.errors import UsageError
from pytest_irene.engine.predict.strategies import DEFAULT_STRATEGY, Predictor, make_predictor
from pytest_irene.engine.tree import LEVELS, EnergyTree

#: The six models the paper evaluates on (leave-one-model-out targets).
PAPER_MODELS: tuple[str, ...] = (
    "bert-base-uncased",
    "distilbert-base-uncased",
    "roberta-base",
    "gpt2",
    "distilgpt2",
    "openai-gpt",
)
#: Every split :func:`crossvalidate` knows (``irene crossvalidate --split``).
SPLITS: tuple[str, ...] = ("lomo", "seq", "batch", "width")
#: The splits tried, in order, when a model file is trained; the first that applies is recorded.
TRAINING_SPLITS: tuple[str, ...] = ("lomo", "seq", "batch")


def node_errors(trees: Sequence[EnergyTree]) -> dict[str, dict[str, list[float]]]:
    """Percent errors of already-predicted trees: ``{model: {level: [errors]}}``.

    Nodes without measured energy, with zero measured energy or without a
    prediction are skipped (there is nothing to compare against).
    """
    out: dict[str, dict[str, list[float]]] = {}
    for tree in trees:
        per_level = out.setdefault(tree.model_name, {lv: [] for lv in LEVELS})
        for node in tree.walk():
            if node.energy_j is None or node.energy_j <= 0 or node.predicted_energy_j is None:
                continue
            per_level[node.level].append(100.0 * abs(node.predicted_energy_j - node.energy_j) / node.energy_j)
    return out


def summarise(errors: dict[str, dict[str, list[float]]]) -> dict[str, dict[str, float]]:
    """Mean error per level and model, plus ``average`` over models (models sorted)."""
    levels: dict[str, dict[str, float]] = {}
    for level in ("ml", "module", "model"):
        row: dict[str, float] = {}
        for model in sorted(errors):
            vals = errors[model].get(level, [])
            if vals:
                row[model] = float(np.mean(vals))
        row["average"] = float(np.mean(list(row.values()))) if row else float("nan")
        levels[level] = row
    return levels


def level_errors(trees: Sequence[EnergyTree], predictor: Predictor) -> dict[str, dict[str, float]]:
    """Predict ``trees`` with a fitted predictor and return per-level, per-model percent errors.

    Works with anything that has ``predict_many(trees)`` or ``predict(tree)``.
    """
    many = getattr(predictor, "predict_many", None)
    if many is not None:
        many(list(trees))
    else:
        for tree in trees:
            predictor.predict(tree)
    return summarise(node_errors(trees))


def split_trees(
    trees: Sequence[EnergyTree], split: str
) -> list[tuple[str, list[EnergyTree], list[EnergyTree]]]:
    """The folds of a split as ``(name, train, test)``; deterministic, sorted."""
    trees = list(trees)
    if split == "lomo":
        present = [m for m in PAPER_MODELS if any(t.model_name == m for t in trees)]
        if not present:
            raise UsageError(f"split 'lomo' needs trees of at least one of {list(PAPER_MODELS)}")
        folds = []
        for model in present:
            train = [t for t in trees if t.model_name != model]
            test = [t for t in trees if t.model_name == model]
            if train:
                folds.append((model, train, test))
        if not folds:
            models = sorted({t.model_name for t in trees})
            raise UsageError(
                f"split 'lomo' holds one model out and trains on the others, but the data has only "
                f"{', '.join(models)}; give trees of at least two models, or use split 'seq' or 'batch'"
            )
        return folds
    if split in ("seq", "batch"):
        train, test = [], []
        for model in sorted({t.model_name for t in trees}):
            mine = [t for t in trees if t.model_name == model]
            if split == "seq":
                held = set(sorted({t.seq_len for t in mine})[-2:])
                key = "seq_len"
            else:
                held = set(sorted({t.batch_size for t in mine})[-1:])
                key = "batch_size"
            if len({getattr(t, key) for t in mine}) <= len(held):
                train.extend(mine)  # nothing left to train on for this model: it only trains
                continue
            for t in mine:
                (test if getattr(t, key) in held else train).append(t)
        if not test or not train:
            raise UsageError(f"split {split!r} left no trees to train or to test on")
        return [(split, train, test)]
    if split == "width":
        train = [t for t in trees if t.model_name in PAPER_MODELS]
        test = [t for t in trees if t.model_name not in PAPER_MODELS]
        if not train or not test:
            raise UsageError(
                f"split 'width' trains on the paper models {list(PAPER_MODELS)} and tests on the others "
                f"(e.g. sshleifer/tiny-ctrl); this data has {len(train)} tree(s) of the first and {len(test)} of the second"
            )
        return [("width", train, test)]
    raise UsageError(f"unknown split {split!r}; expected one of {list(SPLITS)}")


def crossvalidate(
    trees: Sequence[EnergyTree],
    *,
    features: str = "model",
    strategy: str = DEFAULT_STRATEGY,
    split: str = "lomo",
    seed: int = 0,
) -> dict[str, Any]:
    """Cross-validated percent errors per level and held-out model (see module docstring).

    Predictions are written into copies' fields of the given trees (``predicted_energy_j``
    is overwritten on the test trees of each fold).
    """
    errors: dict[str, dict[str, list[float]]] = {}
    for _name, train, test in split_trees(trees, split):
        predictor = make_predictor(strategy, features, seed=seed).fit(train)
        predictor.predict_many(test)
        for model, per_level in node_errors(test).items():
            if split == "lomo" and model not in PAPER_MODELS:
                continue
            slot = errors.setdefault(model, {lv: [] for lv in LEVELS})
            for lv, vals in per_level.items():
                slot[lv].extend(vals)
    if split in ("seq", "batch"):
        errors = {m: v for m, v in errors.items() if m in PAPER_MODELS} or errors
    return {"features": features, "strategy": strategy, "split": split, "levels": summarise(errors)}
