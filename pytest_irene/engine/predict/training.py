"""Training an energy model file: one predictor per feature set, fitted on measured datasets.

:func:`train_energy_model` loads ``irene-tree/1`` datasets, checks they agree on
what their joules cover (:func:`energy_scope_of`), cross-validates with the first
split that applies, fits the predictors and returns an
:class:`~pytest_irene.engine.predict.energy_model.EnergyModel` ready to save. The
file format itself (load, validate, save) is :mod:`.energy_model`.
"""

from __future__ import annotations

import dataclasses
import math
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pytest_irene.engine.feature_sets import FEATURE_SETS
from pytest_irene.engine.predict.energy_model import EnergyModel
from pytest_irene.engine.predict.ranges import TrainingRanges
from pytest_irene.engine.tree import DEFAULT_ENERGY_SCOPE, ENERGY_SCOPES, RESOURCE_FEATURES, EnergyNode, EnergyTree
from pytest_irene.errors import IreneWarning, UsageError


#: Fields of a tree's ``meta.host`` that one calibration session measured, not the machine: two
#: sessions on one rig read a different idle power, and their trees are still one machine's.
SESSION_FIELDS = ("idle_power_w", "meter")


def hardware_of(trees: Sequence[EnergyTree]) -> dict[str, Any]:
    """The rig's fingerprint recorded by ``measure_tree`` (``meta.host``) when every tree agrees on
    the machine, with the latest session's fields (as ``irene calibrate`` records them); ``{}`` else.
    Requiring every field equal dropped the fingerprint of a dataset of two sessions on one rig."""
    hosts = [t.meta.get("host") for t in trees]
    if not hosts or not all(isinstance(h, dict) for h in hosts):
        return {}

    def machine(host: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in host.items() if k not in SESSION_FIELDS}

    if all(machine(h) == machine(hosts[0]) for h in hosts):  # type: ignore[arg-type]
        return dict(hosts[-1])  # type: ignore[arg-type]
    return {}


class MixedMachinesWarning(IreneWarning):
    """The training trees were measured on more than one machine."""


def _machine_of(tree: EnergyTree) -> str:
    """Which machine measured ``tree``: its host fingerprint's CPU and GPUs where the rig
    recorded one, else the profile tag of its line (``irene-pc1``, ``irene-pc2``)."""
    host = tree.meta.get("host")
    if isinstance(host, dict) and (host.get("cpu_model") or host.get("gpus")):
        gpus = ", ".join(str(g) for g in host.get("gpus") or []) or "no GPU"
        return f"{host.get('cpu_model', '?')} + {gpus}"
    return tree.profile or "unnamed machine"


def warn_mixed_machines(trees: Sequence[EnergyTree], where: str) -> None:
    """Warn when ``trees`` come from several machines: one profile then predicts an average
    of machines that none of them is, and its hardware cannot be recorded. Not refused like
    mixed energy scopes (the joules are the same quantity), but rarely what was meant."""
    counts: dict[str, int] = {}
    for tree in trees:
        machine = _machine_of(tree)
        counts[machine] = counts.get(machine, 0) + 1
    if len(counts) > 1:
        listed = ", ".join(f"{m} ({n} trees)" for m, n in sorted(counts.items()))
        warnings.warn(
            MixedMachinesWarning(
                f"{where} mixes trees of {len(counts)} machines: {listed}. A profile predicts one machine: "
                "train one profile per machine, or fit a new machine from a few trees with --prior"
            ),
            stacklevel=3,
        )


def energy_scope_of(trees: Sequence[EnergyTree], where: str = "the training data") -> str:
    """The one energy scope of ``trees`` (see :attr:`EnergyTree.energy_scope`); ``UsageError`` when they
    mix scopes: wall and GPU-board joules are different quantities and one regressor cannot learn both."""
    scopes = sorted({t.energy_scope for t in trees})
    bad = [s for s in scopes if s not in ENERGY_SCOPES]
    if bad:
        raise UsageError(f"{where}: unknown energy_scope {bad[0]!r} in the trees' meta; expected one of {list(ENERGY_SCOPES)}")
    if len(scopes) > 1:
        raise UsageError(
            f"{where} mixes energy scopes {scopes}: train one profile per scope (a tree's meta.energy_scope "
            f"says what its energy_j covers; lines without it are {DEFAULT_ENERGY_SCOPE!r})"
        )
    return scopes[0] if scopes else DEFAULT_ENERGY_SCOPE


class UnmeasuredTreesWarning(IreneWarning):
    """Some training trees have nodes without a measured energy and are left out of training."""


def _unmeasured_node(tree: EnergyTree) -> tuple[EnergyNode, str] | None:
    """The first node a regressor cannot learn from, and why: no energy (the rig notes ``unmeasured``
    on a node whose replay failed), or 0 J (a failed reading: the fits work on log energies, and
    relative errors divide by the energy)."""
    for node in tree.walk():
        if node.energy_j is None:
            reason = node.notes.get("unmeasured")
            return node, f"no measured energy{f' ({reason})' if reason else ''}"
        if node.energy_j <= 0:
            return node, "a measured energy of 0 J"
    return None


def measured_trees(trees: Sequence[EnergyTree], where: str) -> list[EnergyTree]:
    """The trees whose every node has a measured, positive ``energy_j``; the others are left out with an
    :class:`UnmeasuredTreesWarning` naming the first and why. A calibration keeps such a tree, and
    one of them must not make hours of measurements untrainable; a regressor cannot learn a node it
    has no energy for."""
    complete, incomplete = [], []
    for tree in trees:
        bad = _unmeasured_node(tree)
        (complete if bad is None else incomplete).append((tree, bad))
    if not complete and incomplete:
        node, why = incomplete[0][1]
        raise UsageError(
            f"{where}: no tree has a measured energy on every node (the first: node {node.scope or '<model>'!r}, "
            f"{why}; is this a dataset of predictions, irene predict --json, instead of measurements?)"
        )
    if incomplete:
        tree, (node, why) = incomplete[0]
        more = f" and {len(incomplete) - 1} more" if len(incomplete) > 1 else ""
        warnings.warn(
            UnmeasuredTreesWarning(
                f"{where}: {len(incomplete)} tree(s) left out of training, with nodes without a measured energy: "
                f"{tree.model_name or 'unnamed'} (batch {tree.batch_size}, seq {tree.seq_len}), node "
                f"{node.scope or '<model>'!r}: {why}{more}"
            ),
            stacklevel=3,
        )
    return [tree for tree, _ in complete]


def training_trees(paths: Sequence[Path], command: str) -> tuple[list[EnergyTree], str]:
    """The trees ``command`` (``train``, ``train --prior``) learns from, and their energy scope.

    One reading for plain and transfer training: a :class:`UsageError` when the files hold no
    tree, trees with an unmeasured node left out (:func:`measured_trees`), one energy scope
    required (:func:`energy_scope_of`) and a warning for several machines."""
    from pytest_irene.engine.dataset import load_dataset

    where = f"{command}: the dataset(s) {[str(p) for p in paths]}"
    trees = load_dataset(*paths)
    if not trees:
        raise UsageError(f"{where} hold no trees")
    trees = measured_trees(trees, where)
    scope = energy_scope_of(trees, where)
    warn_mixed_machines(trees, where)
    return trees, scope


def _crossvalidate_any(trees: Sequence[EnergyTree], features: str, strategy: str, seed: int) -> dict[str, Any]:
    """Cross-validation errors with the first split that applies to this data (see
    :data:`~pytest_irene.engine.predict.crossval.TRAINING_SPLITS`)."""
    from pytest_irene.engine.predict.crossval import TRAINING_SPLITS, crossvalidate

    problems = []
    for split in TRAINING_SPLITS:
        try:
            result = crossvalidate(trees, features=features, strategy=strategy, split=split, seed=seed)
        except UsageError as exc:
            problems.append(f"{split}: {exc}")
            continue
        averages = [row.get("average") for row in result["levels"].values()]
        if not any(isinstance(a, float) and math.isfinite(a) for a in averages):
            problems.append(f"{split}: no held-out tree to test on")
            continue
        return {"split": split, "levels": result["levels"]}
    return {"split": None, "levels": {}, "note": "no cross-validation split applies: " + "; ".join(problems)}


def train_energy_model(
    dataset_paths: Sequence[str | os.PathLike[str]],
    *,
    profile: str,
    feature_sets: Sequence[str] = FEATURE_SETS,
    strategy: str | None = None,
    hardware: dict[str, Any] | None = None,
    seed: int = 0,
    crossvalidate: bool = True,
) -> EnergyModel:
    """Fit one predictor per feature set on measured datasets and record its cross-validation errors.

    ``hardware`` defaults to the host fingerprint that ``measure_tree`` stored in the
    trees (``meta.host``) when every tree agrees, else ``{}``. The errors come from
    leave-one-model-out when the data has paper models, else from the ``seq`` or
    ``batch`` split; ``crossvalidate=False`` skips them (empty ``cv_errors``).
    """
    from pytest_irene.engine.dataset import dataset_hash
    from pytest_irene.engine.predict.strategies import DEFAULT_STRATEGY, make_predictor

    if not dataset_paths:
        raise UsageError("train: expected at least one dataset file")
    if not isinstance(profile, str) or not profile:
        raise UsageError(f"profile: expected a non-empty name, got {profile!r}")
    sets = list(dict.fromkeys(feature_sets))
    if not sets or any(s not in FEATURE_SETS for s in sets):
        raise UsageError(f"features: expected some of {list(FEATURE_SETS)}, got {list(feature_sets)}")
    strategy = strategy or DEFAULT_STRATEGY
    paths = [Path(p) for p in dataset_paths]
    trees, scope = training_trees(paths, "train")
    if "all" in sets:
        lacking = next((t for t in trees if any(f not in t.root.features for f in RESOURCE_FEATURES)), None)
        if lacking is not None:
            raise UsageError(
                f"features 'all': tree {lacking.model_name} (batch {lacking.batch_size}, seq {lacking.seq_len}) "
                f"has no resource features {list(RESOURCE_FEATURES)}; train with features 'model' only"
            )
    predictors: dict[str, Any] = {}
    cv_errors: dict[str, Any] = {}
    for name in FEATURE_SETS:
        if name not in sets:
            continue
        if crossvalidate:
            cv_errors[name] = _crossvalidate_any(trees, name, strategy, seed)
        predictors[name] = make_predictor(strategy, name, seed=seed).fit(trees)
    for tree in trees:  # cross-validation wrote predictions into the training trees; they are ours
        for node in tree.walk():
            node.predicted_energy_j = None
    return EnergyModel(
        profile=profile,
        hardware=dict(hardware) if hardware is not None else hardware_of(trees),
        dataset_hash=dataset_hash(*paths),
        predictors=predictors,
        strategy=strategy,
        cv_errors=cv_errors,
        dataset_files=[p.name for p in paths],
        dataset_info=dataset_info(trees, predictors),
        hyper_parameters={"seed": seed, "cv_split": "lomo, else seq, else batch" if crossvalidate else None},
        energy_scope=scope,
    )


def dataset_info(trees: Sequence[EnergyTree], predictors: dict[str, Any],
                 ranges: TrainingRanges | None = None) -> dict[str, Any]:
    """Facts about the training data: trees, models, ranges (``ranges``, default the trees'), the
    trees' fingerprints (so ``irene evaluate`` knows its own training data) and, where the lines say,
    their dtypes. The ranges' leaf types are those ``predictors`` have a regressor of their own for:
    a type seen in fewer trees than a regressor needs, or added by a transfer (which rescales the
    prior's regressors and makes none), goes through the generic regressor and must stay marked."""
    from pytest_irene.engine.dataset import tree_fingerprint

    info: dict[str, Any] = {"trees": len(trees), "models": sorted({t.model_name for t in trees})}
    ranges = ranges if ranges is not None else TrainingRanges.from_trees(trees)
    regressed = [set(p.leaves.per_type) for p in predictors.values() if getattr(p, "leaves", None) is not None]
    if regressed:
        ranges = dataclasses.replace(ranges, leaf_types=sorted(set().union(*regressed)))
    info["ranges"] = ranges.to_json()
    info["tree_fingerprints"] = sorted({tree_fingerprint(t) for t in trees})
    dtypes = sorted({str(t.meta["dtype"]) for t in trees if "dtype" in t.meta})
    if dtypes:
        info["dtypes"] = dtypes
    return info


__all__ = [
    "MixedMachinesWarning",
    "UnmeasuredTreesWarning",
    "dataset_info",
    "energy_scope_of",
    "hardware_of",
    "measured_trees",
    "train_energy_model",
    "training_trees",
    "warn_mixed_machines",
]
