"""Transfer calibration: a new machine's predictor from a prior profile plus a few measured trees.

Measuring every node of every model at every input size takes days of rig time; a
team can afford a few runs. What differs between two machines is mostly *what
things cost*, not *what a model does*, so the transfer keeps the prior's structure
and refits only a handful of machine parameters:

- **all features** (physics): the wall-energy model ``a·gpu_energy_j + b·latency_s +
  c·latency_s·gpu/100 (+ d·cpu_energy_j)`` is refitted on every node of the new trees,
  each level weighing alike (``b`` is the rest of the machine's power). Three or four
  numbers from hundreds of nodes: two trees are plenty.
- **model features**: every leaf regressor's linear base (a launch floor, a cost per
  flop and a cost per byte) is rescaled by three global factors (floor, per flop, per
  byte) fitted for relative error over all new leaves, then each primitive type gets
  one factor more, shrunk toward 1 by one pseudo-measurement (a type measured at two
  shapes moves two-thirds of the way). The prior's shape knowledge (its log-space
  correction and residual memories) is kept. The glue model keeps its shares of the
  children's energy (what a module does) and rescales its machine costs (per child
  call, per extra flop, per extra byte, per token), ridge-shrunk toward the prior.

The result is an ordinary predictor of the prior's strategy (``glue``), saved like
any other. :func:`leave_one_tree_out` says how well it holds on the trees given.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pytest_irene.engine.predict.crossval import node_errors, summarise
from pytest_irene.engine.predict.energy_model import EnergyModel
from pytest_irene.engine.predict.training import dataset_info, hardware_of, training_trees
from pytest_irene.engine.predict.ranges import TrainingRanges
from pytest_irene.engine.predict.regressors import MIN_ENERGY_J, LeafRegressors
from pytest_irene.engine.predict.strategies import Predictor, predictor_from_json
from pytest_irene.engine.predict.strategies.forest import Forest, training_forest
from pytest_irene.engine.predict.strategies.glue import GluePredictor
from pytest_irene.engine.predict.strategies.physics import fit_relative_l1, physics_terms
from pytest_irene.engine.tree import RESOURCE_FEATURES, EnergyTree
from pytest_irene.errors import IreneWarning, UsageError

#: Pseudo-count of the per-type factor's shrinkage toward 1, in distinct measurements.
TYPE_FACTOR_PSEUDO_COUNT = 1.0
#: Ridge pulling the glue cost factors toward the prior's (1), in units of the data's own
#: weight along each factor: the prior counts as much as the new trees.
GLUE_FACTOR_RIDGE = 1.0
#: Bounds of every fitted factor: a machine that is 5x cheaper or dearer per unit of work
#: than the prior is out of what a few runs can calibrate.
FACTOR_BOUNDS = (0.2, 5.0)
#: Glue cost columns the transfer rescales, with the GlueModel extra column they scale.
GLUE_COSTS: tuple[str, ...] = ("per_call", "per_flop", "per_byte", "per_token")


@dataclass
class Transfer:
    """A transferred predictor and what it was fitted from."""

    predictor: Predictor
    """The new machine's predictor (same strategy and features as the prior)."""
    trees: int
    """Number of measured trees used."""
    signatures: int
    """Distinct node signatures (type, level and features) among them."""
    factors: dict[str, Any] = field(default_factory=dict)
    """Fitted machine factors, relative to the prior (1 = unchanged)."""


def node_signatures(trees: Sequence[EnergyTree], feature_names: Sequence[str]) -> int:
    """Distinct (type, level, features) among the nodes: identical layers count once."""
    seen = set()
    for tree in trees:
        for node in tree.walk():
            feats = tuple(round(float(node.features.get(f, 0.0)), 6) for f in feature_names)
            seen.add((node.type, node.level, tree.batch_size, tree.seq_len, feats))
    return len(seen)


def _not_glue(strategy: str) -> UsageError:
    return UsageError(
        f"transfer calibration needs a prior of strategy 'glue' (the default); this prior is "
        f"{strategy!r}: train the prior with --strategy glue or train from scratch"
    )


class CrossScopeTransferWarning(IreneWarning):
    """The prior predicts another energy scope than the new measurements (wall vs GPU board)."""


def load_prior(prior: str | os.PathLike[str], energy_scope: str, option: str) -> EnergyModel:
    """The prior's energy model, refused (naming ``option``) when the transfer cannot start from it:
    a file that does not load, or a strategy other than ``glue``. Called before anything is measured:
    a calibration found that out after its last tree.

    A prior of another energy scope than the new measurements (a ``wall`` prior for a first
    ``gpu-board`` rig) is allowed, since it is often the only prior there is, but warned about: the
    transfer refits the costs and keeps the prior's glue shares, which hold the rest of the
    machine's power at the wall and not on the board."""
    from pytest_irene.errors import ModelFileError

    try:
        model = EnergyModel.load(prior)
    except ModelFileError as exc:
        raise ModelFileError(f"{option}: {exc}") from None
    if model.strategy != "glue":
        raise UsageError(f"{option}={prior}: {_not_glue(model.strategy)}")
    if model.energy_scope != energy_scope:
        warnings.warn(
            CrossScopeTransferWarning(
                f"{option}={prior} predicts {model.energy_scope} energy and the new measurements are {energy_scope} "
                "energy: the transfer refits the costs but keeps the prior's glue shares, so expect a larger error "
                f"than from a {energy_scope} prior (the leave-one-tree-out error says how large)"
            ),
            stacklevel=2,
        )
    return model


def transfer(prior: Predictor, trees: Sequence[EnergyTree]) -> Transfer:
    """Fit a new machine's predictor from ``prior`` and measured ``trees`` (see module doc)."""
    if not isinstance(prior, GluePredictor):
        raise _not_glue(prior.strategy)
    trees = list(trees)
    if not trees:
        raise UsageError("transfer calibration needs at least one measured tree")
    missing = [f for f in prior.feature_names if any(f not in t.root.features for t in trees)]
    if missing:
        raise UsageError(
            f"transfer of the {prior.features!r} feature set: the measured trees lack {missing}; "
            "measure them on the rig (resource features) or transfer features 'model' only"
        )
    forest = training_forest(trees, prior.feature_names)
    new = predictor_from_json(prior.to_json())  # an independent copy
    assert isinstance(new, GluePredictor)
    if prior.features == "all":
        factors = _transfer_physics(new, forest)
    else:
        factors = _transfer_leaves(new, forest)
        factors.update(_transfer_glue(new, forest))
    return Transfer(new, len(trees), node_signatures(trees, prior.feature_names), factors)


def _bounded(values: np.ndarray) -> np.ndarray:
    return np.clip(np.nan_to_num(values, nan=1.0), *FACTOR_BOUNDS)


def _transfer_physics(new: GluePredictor, forest: Forest) -> dict[str, Any]:
    names = new.physics_names()
    weights = np.zeros(len(forest.nodes))
    for level in np.unique(forest.levels):
        mask = forest.levels == level
        weights[mask] = 1.0 / mask.sum()  # each level weighs alike (one root against hundreds of leaves)
    coef = fit_relative_l1(physics_terms(forest, names), forest.energy, weights=weights)
    old = dict(new.physics)
    new.physics = {f: float(c) for f, c in zip(names, coef, strict=True)}
    return {"physics": dict(new.physics), "prior_physics": old}


def _leaf_terms(leaves: LeafRegressors, forest: Forest, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Floor / per-flop / per-byte joules of each leaf in ``idx`` and its shape multiplier."""
    names = leaves.features
    terms = np.zeros((len(idx), 3))
    mult = np.ones(len(idx))
    types = forest.types[idx]
    X = forest.X[idx]
    for t in sorted(set(types.tolist())):
        m = types == t
        reg = leaves.per_type.get(t)
        if reg is None:  # unseen type: the generic base, no shape multiplier
            terms[m] = _base_columns(leaves.generic, X[m], names)
        else:
            part, mult[m] = reg.base_terms(X[m], names)
            terms[m] = _align(part, reg.base.features)
    return terms, mult


def _base_columns(base: Any, X: np.ndarray, names: Sequence[str]) -> np.ndarray:
    return _align(base.terms(X, names), base.features)


def _align(terms: np.ndarray, features: Sequence[str]) -> np.ndarray:
    """Columns ``[floor, flops, mem_bytes]`` from a base's ``[floor] + features`` terms."""
    out = np.zeros((len(terms), 3))
    out[:, 0] = terms[:, 0]
    for i, f in enumerate(features):
        out[:, 1 + ("flops", "mem_bytes").index(f)] = terms[:, 1 + i]
    return out


def _transfer_leaves(new: GluePredictor, forest: Forest) -> dict[str, Any]:
    from scipy.optimize import nnls

    leaves = new.leaves
    assert leaves is not None and leaves.generic is not None
    idx = np.nonzero(forest.is_leaf)[0]
    y = forest.energy[idx]
    terms, mult = _leaf_terms(leaves, forest, idx)
    A = terms * mult[:, None]
    used = np.abs(A).sum(axis=0) > 0
    sw = 1.0 / np.maximum(y, MIN_ENERGY_J)  # relative error
    scale = np.ones(3)
    if used.any():
        scale[used] = nnls(A[:, used] * sw[:, None], y * sw)[0]
    scale = _bounded(np.where(scale > 0, scale, 1.0))
    base_pred = np.maximum(A @ scale, MIN_ENERGY_J)
    per_type: dict[str, float] = {}
    types = forest.types[idx]
    for t in sorted(leaves.per_type):
        m = types == t
        if not m.any():
            continue
        distinct = len(np.unique(np.round(np.column_stack([forest.X[idx][m], y[m]]), 12), axis=0))
        log_ratio = float(np.mean(np.log(np.maximum(y[m], MIN_ENERGY_J) / base_pred[m])))
        per_type[t] = float(_bounded(np.array([np.exp(log_ratio * distinct / (distinct + TYPE_FACTOR_PSEUDO_COUNT))]))[0])

    def costs(base_features: Sequence[str], k: float) -> list[float]:
        return [scale[1 + ("flops", "mem_bytes").index(f)] * k for f in base_features]

    new.leaves = LeafRegressors(
        features=list(leaves.features),
        kind=leaves.kind,
        min_samples=leaves.min_samples,
        per_type={
            t: reg.scaled(scale[0] * per_type.get(t, 1.0), costs(reg.base.features, per_type.get(t, 1.0)))
            for t, reg in leaves.per_type.items()
        },
        generic=leaves.generic.scaled(scale[0], costs(leaves.generic.features, 1.0)),
    )
    return {
        "leaf_floor": float(scale[0]),
        "leaf_per_flop": float(scale[1]),
        "leaf_per_byte": float(scale[2]),
        "leaf_type": per_type,
    }


def _transfer_glue(new: GluePredictor, forest: Forest) -> dict[str, Any]:
    glue = new.glue
    assert glue is not None
    internal = ~forest.is_leaf
    if not internal.any():
        return {}
    k = len(glue.categories)
    contrib = glue.contributions_j(forest)
    log_corr = np.zeros(len(forest.nodes))
    Xm = new.memory_inputs(forest)
    for mem in new.memories:
        log_corr += mem.predict(Xm)
    measured = forest.energy
    # What the cost terms must add: the measured energy without the memories' bend,
    # less the children and the shares of their energy.
    target = measured / np.exp(log_corr) - forest.child_sum(measured) - contrib[:, :k].sum(axis=1)
    A = np.column_stack([contrib[:, k : 2 * k].sum(axis=1), contrib[:, 2 * k], contrib[:, 2 * k + 1], contrib[:, 2 * k + 2]])
    A, target = A[internal], target[internal]
    sw = np.exp(log_corr[internal]) / np.maximum(measured[internal], MIN_ENERGY_J)  # relative error of the parent
    Aw = A * sw[:, None]
    residual = (target - A.sum(axis=1)) * sw  # solve for the change from the prior's factors (1)
    ridge = GLUE_FACTOR_RIDGE * len(target) * np.eye(A.shape[1]) * np.maximum(np.mean(Aw**2, axis=0), 1e-30)
    delta = np.linalg.solve(Aw.T @ Aw + ridge, Aw.T @ residual)
    factors = _bounded(1.0 + delta)
    new.glue = glue.scaled(*factors.tolist())
    return {f"glue_{name}": float(v) for name, v in zip(GLUE_COSTS, factors, strict=True)}


def leave_one_tree_out(prior: Predictor, trees: Sequence[EnergyTree]) -> dict[str, Any]:
    """Percent errors per level when each tree is predicted by a transfer fitted on the others.

    ``{"split": "leave-one-tree-out", "levels": {...}}`` like cross-validation; with a
    single tree there is nothing to hold out (``levels`` empty, ``note`` says so). A tree
    measured again (same model and input size) is held out with its twins, one row each: kept
    in training, a twin made the held-out error a fit error, and one key per size dropped a row."""
    trees = list(trees)
    runs: dict[tuple[str, int, int], list[EnergyTree]] = {}
    for tree in trees:
        runs.setdefault((tree.model_name, tree.batch_size, tree.seq_len), []).append(tree)
    if len(runs) < 2:
        what = "one measured tree" if len(trees) == 1 else "one model and input size measured"
        return {"split": "leave-one-tree-out", "levels": {}, "note": f"{what}: nothing to hold out"}
    errors: dict[str, dict[str, list[float]]] = {}
    for (model, batch, seq), held in runs.items():
        fitted = transfer(prior, [t for t in trees if all(t is not h for h in held)]).predictor
        for n, tree in enumerate(held):
            fitted.predict(tree)
            key = f"{model} b{batch} s{seq}" + (f" #{n + 1}" if len(held) > 1 else "")
            errors[key] = next(iter(node_errors([tree]).values()))
    for tree in trees:  # the held-out predictions were ours; leave the caller's trees clean
        for node in tree.walk():
            node.predicted_energy_j = None
    return {"split": "leave-one-tree-out", "levels": summarise(errors)}


#: The smallest measurement plan the transfer needs: one input size of an encoder and a
#: decoder (``benchmarks/bench_transfer.py`` measures what it buys on a second machine).
TRANSFER_PLAN: tuple[tuple[str, int, int], ...] = (("bert-base-uncased", 16, 128), ("gpt2", 16, 128))


def transfer_energy_model(
    dataset_paths: Sequence[str | os.PathLike[str]],
    *,
    prior: str | os.PathLike[str],
    profile: str,
    feature_sets: Sequence[str] | None = None,
    hardware: dict[str, Any] | None = None,
    crossvalidate: bool = True,
) -> EnergyModel:
    """An energy model for a new machine: ``prior``'s predictors transferred with the measured
    trees of ``dataset_paths`` (see the module doc). ``feature_sets`` defaults to every set
    of the prior the data can feed (``all`` needs resource features on every tree). The
    leave-one-tree-out errors are stored as the file's ``cv_errors``."""
    from pytest_irene.engine.dataset import dataset_hash

    paths = [Path(p) for p in dataset_paths]
    if not paths:
        raise UsageError("train --prior: expected at least one dataset file")
    trees, scope = training_trees(paths, "train --prior")
    prior_model = load_prior(prior, scope, "--prior")
    if feature_sets is None:
        complete = all(all(f in t.root.features for f in RESOURCE_FEATURES) for t in trees)
        feature_sets = [f for f in prior_model.feature_sets if f == "model" or complete]
    predictors: dict[str, Any] = {}
    cv_errors: dict[str, Any] = {}
    factors: dict[str, Any] = {}
    used: dict[str, Any] = {}
    for name in feature_sets:
        if name not in prior_model.feature_sets:
            raise UsageError(
                f"--prior {prior_model.describe()} has no {name!r} feature set (it has {list(prior_model.feature_sets)})"
            )
        result = transfer(prior_model.predictors[name], trees)
        predictors[name] = result.predictor
        factors[name] = result.factors
        used[name] = {"trees": result.trees, "signatures": result.signatures}
        if crossvalidate:
            cv_errors[name] = leave_one_tree_out(prior_model.predictors[name], trees)
    ranges = TrainingRanges.from_trees(trees)
    if prior_model.training_ranges is not None:  # the structure is the prior's: so is what it knows
        ranges = ranges.merged(prior_model.training_ranges)
    info = dataset_info(trees, predictors, ranges)
    return EnergyModel(
        profile=profile,
        hardware=dict(hardware) if hardware is not None else hardware_of(trees),
        dataset_hash=dataset_hash(*paths),
        predictors=predictors,
        strategy=prior_model.strategy,
        cv_errors=cv_errors,
        dataset_files=[p.name for p in paths],
        dataset_info=info,
        hyper_parameters={
            "transfer": {
                "prior": prior_model.profile,
                "prior_dataset_hash": prior_model.dataset_hash,
                "used": used,
                "factors": factors,
            },
            "cv_split": "leave-one-tree-out" if crossvalidate else None,
        },
        energy_scope=scope,  # what the new machine's data measured, whatever the prior's was
    )


__all__ = [
    "TRANSFER_PLAN",
    "CrossScopeTransferWarning",
    "Transfer",
    "leave_one_tree_out",
    "load_prior",
    "node_signatures",
    "transfer",
    "transfer_energy_model",
]
