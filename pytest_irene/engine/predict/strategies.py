"""Tree predictors: how leaf energies are combined into module and model energies.

IrEne predicts every node of a model tree. Leaves (ML primitives) come from the
per-type regressors of :mod:`pytest_irene.engine.predict.regressors`; what differs between
strategies is how a module's energy follows from its children:

- ``glue`` (the default, beyond the paper). With resource features (``all``) it is
  the physics of wall energy, applied to every node at every level:
  ``E ≈ a·gpu_energy_j + b·latency_s + c·latency_s·gpu/100 (+ d·cpu_energy_j)``, no
  intercept, fitted to minimise the mean relative error over all training nodes
  (the GPU's own energy plus the rest of the machine's power over the node's run
  time). With model features only, leaves use anchored regressors (see
  :mod:`pytest_irene.engine.predict.regressors`) and a module is the sum of its predicted children
  plus its *glue*, the energy spent outside the children (reshapes, residual adds,
  masks, copies), predicted by :class:`GlueModel` from what the node does beyond
  its children; module-level residual memories then recall module shapes that were
  measured in training.
- ``end2end`` (the paper): ``E(n) = Σ_c α(c)·E(c)``, ``α(c) = 1 + tanh(W·φ(f(c)) + b)/τ``
  with τ = 10 and φ polynomial features of the standardised node features,
  trained end-to-end through the tree with loss ``Σ (P−G)²/G²`` (Adam 1e-3).
- ``stepwise`` (paper ablation): the same α, trained one level at a time on the
  ground-truth energies of the children.
- ``predictedsum`` (paper ablation): a module is the sum of its predicted children.
- ``unstructured`` (paper ablation): one regressor per node type at every level,
  straight from the node's own features, ignoring the tree.

Prediction is vectorised: the nodes of one or many trees are flattened into numpy
arrays (:class:`Forest`), leaves are predicted per type in one call each, and the
tree is then folded bottom-up one depth at a time with ``np.add.at``. Torch is
only used to *train* End2End/StepWise.

Everything is deterministic: types are processed in sorted order, training trees
are sorted by (model, batch, sequence) before any seeded shuffling, so two fits on
the same data give bit-identical predictions.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import combinations_with_replacement
from typing import Any

import numpy as np

from pytest_irene.errors import ModelFileError, UsageError
from pytest_irene.engine.predict.regressors import (
    MEMORY_BANDWIDTH,
    MEMORY_BATCH_BANDWIDTH,
    LeafRegressors,
    ResidualMemory,
    _check,
    _finite,
    _floats,
    _require,
    weighted_lstsq,
)
from pytest_irene.engine.tree import OPTIONAL_RESOURCE_FEATURES, RESOURCE_FEATURES, EnergyNode, EnergyTree

#: Model features used by the predictors (``params`` is absent from the paper's data).
MODEL_FEATURE_SET: tuple[str, ...] = ("batch_size", "seq_len", "batch_seq", "flops", "mem_bytes")
#: Resource features added by ``all`` (``cpu_energy_j`` joins when every training node has it).
RESOURCE_FEATURE_SET: tuple[str, ...] = RESOURCE_FEATURES
FEATURE_SETS: tuple[str, ...] = ("model", "all")

DEFAULT_STRATEGY = "glue"
STRATEGIES: tuple[str, ...] = (DEFAULT_STRATEGY, "end2end", "stepwise", "predictedsum", "unstructured")

#: JSON format tag of a serialised predictor.
PREDICTOR_FORMAT = "irene-predictor/1"
_MIN_J = 1e-9


# -- flattening -----------------------------------------------------------------------


@dataclass
class Forest:
    """The nodes of one or more trees as flat arrays (parents before children).

    ``X`` holds ``feature_names`` columns; ``parent`` is ``-1`` for roots;
    ``energy`` is NaN where not measured.
    """

    nodes: list[EnergyNode]
    types: np.ndarray
    levels: np.ndarray
    X: np.ndarray
    feature_names: list[str]
    parent: np.ndarray
    depth: np.ndarray
    is_leaf: np.ndarray
    energy: np.ndarray
    tree_index: np.ndarray

    @property
    def max_depth(self) -> int:
        return int(self.depth.max()) if len(self.depth) else 0

    def col(self, name: str) -> np.ndarray:
        return self.X[:, self.feature_names.index(name)]

    def child_sum(self, values: np.ndarray) -> np.ndarray:
        """Per node, the sum of ``values`` over its direct children (0 for leaves)."""
        out = np.zeros(len(self.nodes))
        has = self.parent >= 0
        np.add.at(out, self.parent[has], values[has])
        return out

    def fold_with(self, leaf_values: np.ndarray, contrib, finish) -> np.ndarray:
        """Bottom-up by depth: leaves keep ``leaf_values``; an internal node gets the sum of
        ``contrib(child_idx, child_values)`` over its children, passed through
        ``finish(node_idx, summed)`` when given (one vectorised step per depth)."""
        values = np.where(self.is_leaf, leaf_values, 0.0).astype(np.float64)
        for d in range(self.max_depth, 0, -1):
            kids = np.nonzero(self.depth == d)[0]
            if len(kids) == 0:
                continue
            parents = self.parent[kids]
            acc = np.zeros(len(self.nodes))
            np.add.at(acc, parents, contrib(kids, values[kids]))
            targets = np.unique(parents)
            targets = targets[~self.is_leaf[targets]]
            summed = acc[targets]
            values[targets] = finish(targets, summed) if finish is not None else summed
        return values


def flatten(trees: Sequence[EnergyTree], feature_names: Sequence[str]) -> Forest:
    """Flatten trees into a :class:`Forest`; ``UsageError`` when a node lacks a feature."""
    nodes: list[EnergyNode] = []
    parent: list[int] = []
    depth: list[int] = []
    tree_index: list[int] = []
    for ti, tree in enumerate(trees):
        stack: list[tuple[EnergyNode, int, int]] = [(tree.root, -1, 0)]
        while stack:
            node, p, d = stack.pop()
            idx = len(nodes)
            nodes.append(node)
            parent.append(p)
            depth.append(d)
            tree_index.append(ti)
            for child in reversed(node.children):
                stack.append((child, idx, d + 1))
    names = list(feature_names)
    X = np.empty((len(nodes), len(names)))
    for i, node in enumerate(nodes):
        feats = node.features
        try:
            X[i] = [feats[f] for f in names]
        except KeyError as exc:
            tree = trees[tree_index[i]]
            missing = [f for f in names if f not in feats]
            raise UsageError(
                f"node {node.scope or '<root>'!r} of {tree.model_name or 'tree'} lacks feature(s) {missing} "
                f"needed by this predictor; trees traced without measuring have model features only "
                f"(use features='model')"
            ) from exc
    energy = np.array([np.nan if n.energy_j is None else float(n.energy_j) for n in nodes])
    return Forest(
        nodes=nodes,
        types=np.array([n.type for n in nodes], dtype=object),
        levels=np.array([n.level for n in nodes], dtype=object),
        X=X,
        feature_names=names,
        parent=np.asarray(parent, dtype=np.int64),
        depth=np.asarray(depth, dtype=np.int64),
        is_leaf=np.array([not n.children for n in nodes], dtype=bool),
        energy=energy,
        tree_index=np.asarray(tree_index, dtype=np.int64),
    )


def sort_trees(trees: Sequence[EnergyTree]) -> list[EnergyTree]:
    """Training order independent of file order: by (model, batch, sequence, root energy)."""
    return sorted(trees, key=lambda t: (t.model_name, t.batch_size, t.seq_len, t.root.energy_j or 0.0))


def feature_names_for(features: str, trees: Sequence[EnergyTree] | None = None) -> list[str]:
    """Column names of a feature set; ``all`` adds ``cpu_energy_j`` when every node has it."""
    if features == "model":
        return list(MODEL_FEATURE_SET)
    if features == "all":
        names = list(MODEL_FEATURE_SET) + list(RESOURCE_FEATURE_SET)
        if trees:
            for opt in OPTIONAL_RESOURCE_FEATURES:
                if all(opt in n.features for t in trees for n in t.walk()):
                    names.append(opt)
        return names
    raise UsageError(f"unknown feature set {features!r}; expected one of {list(FEATURE_SETS)}")


def _training_forest(trees: Sequence[EnergyTree], names: Sequence[str]) -> Forest:
    if not trees:
        raise UsageError("cannot fit a predictor on zero trees")
    forest = flatten(sort_trees(trees), names)
    if np.isnan(forest.energy).any():
        bad = forest.nodes[int(np.nonzero(np.isnan(forest.energy))[0][0])]
        raise UsageError(f"training tree node {bad.scope or '<root>'!r} has no measured energy (energy_j)")
    return forest


# -- base class -----------------------------------------------------------------------


class Predictor:
    """Predicts the energy of every node of a tree. Subclasses implement one strategy."""

    strategy: str = ""

    def __init__(self, features: str, seed: int = 0):
        if features not in FEATURE_SETS:
            raise UsageError(f"unknown feature set {features!r}; expected one of {list(FEATURE_SETS)}")
        self.features = features
        self.seed = int(seed)
        self.feature_names: list[str] = []
        self.leaves: LeafRegressors | None = None

    # subclasses
    def _fit(self, forest: Forest) -> None:
        raise NotImplementedError

    def _predict_forest(self, forest: Forest) -> tuple[np.ndarray, np.ndarray]:
        """Predicted energy per node and a mask of nodes predicted by a generic regressor."""
        raise NotImplementedError

    def _params_json(self) -> dict[str, Any]:
        raise NotImplementedError

    def _load_params(self, obj: dict[str, Any]) -> None:
        raise NotImplementedError

    # public
    @property
    def fitted(self) -> bool:
        return bool(self.feature_names)

    def fit(self, trees: Sequence[EnergyTree]) -> Predictor:
        """Fit on measured trees (every node needs ``energy``); returns ``self``."""
        self.feature_names = feature_names_for(self.features, trees)
        self._fit(_training_forest(trees, self.feature_names))
        return self

    def predict(self, tree: EnergyTree) -> None:
        """Set ``predicted_energy_j`` (J) on every node of ``tree``."""
        self.predict_many([tree])

    def predict_many(self, trees: Sequence[EnergyTree]) -> None:
        """:meth:`predict` for several trees in one vectorised pass."""
        if not self.fitted:
            raise UsageError(f"{type(self).__name__} must be fitted (or loaded) before predict")
        if not trees:
            return
        forest = flatten(trees, self.feature_names)
        values, generic = self._predict_forest(forest)
        values = np.maximum(values, _MIN_J)
        for node, value, gen in zip(forest.nodes, values.tolist(), generic.tolist(), strict=True):
            node.predicted_energy_j = value
            if gen:
                node.notes["generic_regressor"] = True
            else:
                node.notes.pop("generic_regressor", None)

    def to_json(self) -> dict[str, Any]:
        if not self.fitted:
            raise UsageError("cannot serialise a predictor that was never fitted")
        return {
            "format": PREDICTOR_FORMAT,
            "strategy": self.strategy,
            "features": self.features,
            "feature_names": list(self.feature_names),
            "seed": self.seed,
            "params": self._params_json(),
        }

    # helpers shared by strategies
    def _leaf_predictions(self, forest: Forest) -> tuple[np.ndarray, np.ndarray]:
        assert self.leaves is not None
        values = np.zeros(len(forest.nodes))
        generic = np.zeros(len(forest.nodes), dtype=bool)
        leaf = np.nonzero(forest.is_leaf)[0]
        if len(leaf):
            v, g = self.leaves.predict(forest.types[leaf], forest.X[leaf])
            values[leaf], generic[leaf] = v, g
        return values, generic

    def _fit_leaves(self, forest: Forest, kind: str) -> None:
        leaf = forest.is_leaf
        self.leaves = LeafRegressors(list(self.feature_names), kind=kind).fit(
            forest.types[leaf], forest.X[leaf], forest.energy[leaf]
        )


# -- PredictedSum ---------------------------------------------------------------------


class PredictedSumPredictor(Predictor):
    """Paper ablation: a module's energy is the sum of its children's predictions."""

    strategy = "predictedsum"

    def _fit(self, forest: Forest) -> None:
        self._fit_leaves(forest, "paper")

    def _predict_forest(self, forest: Forest) -> tuple[np.ndarray, np.ndarray]:
        leaf, generic = self._leaf_predictions(forest)
        return forest.fold_with(leaf, lambda idx, v: v, None), generic

    def _params_json(self) -> dict[str, Any]:
        assert self.leaves is not None
        return {"leaves": self.leaves.to_json()}

    def _load_params(self, obj: dict[str, Any]) -> None:
        obj = _require(obj, ("leaves",), "predictor params")
        self.leaves = LeafRegressors.from_json(obj["leaves"])


# -- End2End / StepWise ---------------------------------------------------------------


def _poly_index(n: int, degree: int) -> list[tuple[int, ...]]:
    return [c for d in range(1, degree + 1) for c in combinations_with_replacement(range(n), d)]


@dataclass
class AlphaWeighting:
    """``α = 1 + tanh(W·φ(f) + b)/τ`` with φ = standardised polynomial features.

    Inputs are standardised, expanded to all monomials up to ``degree`` and the
    monomials standardised again (so W starts on comparable scales).
    """

    degree: int
    tau: float
    mean: list[float]
    scale: list[float]
    poly_mean: list[float]
    poly_scale: list[float]
    W: list[float]
    b: float

    @classmethod
    def init(cls, X: np.ndarray, degree: int, tau: float) -> AlphaWeighting:
        mean = X.mean(axis=0)
        scale = X.std(axis=0)
        scale = np.where(scale > 0, scale, 1.0)
        P = _poly(((X - mean) / scale), degree)
        pm = P.mean(axis=0)
        ps = P.std(axis=0)
        ps = np.where(ps > 0, ps, 1.0)
        return cls(degree, tau, mean.tolist(), scale.tolist(), pm.tolist(), ps.tolist(), [0.0] * P.shape[1], 0.0)

    def phi(self, X: np.ndarray) -> np.ndarray:
        S = (X - np.asarray(self.mean)) / np.asarray(self.scale)
        return (_poly(S, self.degree) - np.asarray(self.poly_mean)) / np.asarray(self.poly_scale)

    def alpha(self, X: np.ndarray) -> np.ndarray:
        z = self.phi(X) @ np.asarray(self.W) + self.b
        return 1.0 + np.tanh(z) / self.tau

    def to_json(self) -> dict[str, Any]:
        return {
            "degree": self.degree,
            "tau": self.tau,
            "mean": self.mean,
            "scale": self.scale,
            "poly_mean": self.poly_mean,
            "poly_scale": self.poly_scale,
            "W": self.W,
            "b": self.b,
        }

    @classmethod
    def from_json(cls, obj: Any, n_features: int) -> AlphaWeighting:
        obj = _require(obj, ("degree", "tau", "mean", "scale", "poly_mean", "poly_scale", "W", "b"), "alpha weighting")
        degree = obj["degree"]
        _check(isinstance(degree, int) and 1 <= degree <= 3, "alpha weighting field 'degree': expected 1, 2 or 3")
        n_poly = len(_poly_index(n_features, degree))
        tau = _finite(obj["tau"], "tau")
        _check(tau > 0, "alpha weighting field 'tau': expected > 0")
        scale = _floats(obj["scale"], "scale", n_features)
        poly_scale = _floats(obj["poly_scale"], "poly_scale", n_poly)
        _check(all(s > 0 for s in scale + poly_scale), "alpha weighting: scales must be positive")
        return cls(
            degree=degree,
            tau=tau,
            mean=_floats(obj["mean"], "mean", n_features),
            scale=scale,
            poly_mean=_floats(obj["poly_mean"], "poly_mean", n_poly),
            poly_scale=poly_scale,
            W=_floats(obj["W"], "W", n_poly),
            b=_finite(obj["b"], "b"),
        )


def _poly(S: np.ndarray, degree: int) -> np.ndarray:
    cols = [np.prod(S[:, list(c)], axis=1) for c in _poly_index(S.shape[1], degree)]
    return np.stack(cols, axis=1) if cols else np.zeros((len(S), 0))


class _TreeBatch:
    """Per-tree arrays for minibatch training (concatenated on demand)."""

    def __init__(self, forest: Forest, phi: np.ndarray, leaf_pred: np.ndarray):
        self.parts = []
        n_trees = int(forest.tree_index.max()) + 1
        starts = np.searchsorted(forest.tree_index, np.arange(n_trees + 1))
        for t in range(n_trees):
            a, b = int(starts[t]), int(starts[t + 1])
            parent = forest.parent[a:b].copy()
            parent[parent >= 0] -= a
            self.parts.append(
                (phi[a:b], leaf_pred[a:b], parent, forest.depth[a:b], forest.is_leaf[a:b], forest.energy[a:b])
            )

    def batch(self, ids: Sequence[int]):
        phis, leafs, parents, depths, is_leaf, energy = [], [], [], [], [], []
        offset = 0
        for t in ids:
            ph, lp, pa, de, il, en = self.parts[t]
            phis.append(ph)
            leafs.append(lp)
            parents.append(np.where(pa >= 0, pa + offset, -1))
            depths.append(de)
            is_leaf.append(il)
            energy.append(en)
            offset += len(ph)
        return (
            np.concatenate(phis),
            np.concatenate(leafs),
            np.concatenate(parents),
            np.concatenate(depths),
            np.concatenate(is_leaf),
            np.concatenate(energy),
        )


class AlphaPredictor(Predictor):
    """Paper End2End (``teacher=False``) and StepWise (``teacher=True``)."""

    strategy = "end2end"
    teacher = False
    tau = 10.0
    epochs = 8
    lr = 1e-3
    trees_per_step = 1

    def __init__(self, features: str, seed: int = 0):
        super().__init__(features, seed)
        self.alpha: AlphaWeighting | None = None

    #: Degree of the polynomial features (the paper's choice; 560 columns for ``all``).
    degree = 3

    def _fit(self, forest: Forest) -> None:
        import torch

        self._fit_leaves(forest, "paper")
        leaf_pred, _ = self._leaf_predictions(forest)
        self.alpha = AlphaWeighting.init(forest.X, self.degree, self.tau)
        phi = self.alpha.phi(forest.X)
        batches = _TreeBatch(forest, phi, leaf_pred)
        n_trees = len(batches.parts)
        gen = torch.Generator().manual_seed(self.seed)
        torch_state = torch.random.get_rng_state()
        torch.manual_seed(self.seed)
        W = torch.zeros(phi.shape[1], dtype=torch.float64, requires_grad=True)
        b = torch.zeros(1, dtype=torch.float64, requires_grad=True)
        with torch.no_grad():
            W.normal_(0.0, 0.01, generator=gen)
        opt = torch.optim.Adam([W, b], lr=self.lr)
        for _epoch in range(self.epochs):
            order = torch.randperm(n_trees, generator=gen).tolist()
            for s in range(0, n_trees, self.trees_per_step):
                ph, lp, pa, de, il, en = batches.batch(order[s : s + self.trees_per_step])
                if il.all():  # no module in these trees: nothing to weight
                    continue
                loss = self._loss(torch, W, b, ph, lp, pa, de, il, en)
                opt.zero_grad()
                loss.backward()
                opt.step()
        torch.random.set_rng_state(torch_state)
        self.alpha.W = W.detach().numpy().astype(float).tolist()
        self.alpha.b = float(b.detach().numpy()[0])

    def _loss(self, torch, W, b, ph, lp, pa, de, il, en):
        phi = torch.from_numpy(ph)
        alpha = 1.0 + torch.tanh(phi @ W + b) / self.tau
        G = torch.from_numpy(en)
        internal = torch.from_numpy(~il)
        if self.teacher:
            has = pa >= 0
            idx = torch.from_numpy(pa[has])
            contrib = alpha[torch.from_numpy(has)] * G[torch.from_numpy(has)]
            pred = torch.zeros(len(en), dtype=torch.float64).index_add(0, idx, contrib)
        else:
            pred = torch.from_numpy(np.where(il, lp, 0.0))
            for d in range(int(de.max()), 0, -1):
                kids = np.nonzero(de == d)[0]
                k = torch.from_numpy(kids)
                contrib = alpha[k] * pred[k]
                pred = pred.index_add(0, torch.from_numpy(pa[kids]), contrib)
        rel = (pred - G) / G
        return (rel[internal] ** 2).sum() / max(1, len(set(de.tolist())))

    def _predict_forest(self, forest: Forest) -> tuple[np.ndarray, np.ndarray]:
        assert self.alpha is not None
        leaf, generic = self._leaf_predictions(forest)
        alpha = self.alpha.alpha(forest.X)
        return forest.fold_with(leaf, lambda idx, v: alpha[idx] * v, None), generic

    def _params_json(self) -> dict[str, Any]:
        assert self.leaves is not None and self.alpha is not None
        return {"leaves": self.leaves.to_json(), "alpha": self.alpha.to_json()}

    def _load_params(self, obj: dict[str, Any]) -> None:
        obj = _require(obj, ("leaves", "alpha"), "predictor params")
        self.leaves = LeafRegressors.from_json(obj["leaves"])
        self.alpha = AlphaWeighting.from_json(obj["alpha"], len(self.feature_names))


class End2EndPredictor(AlphaPredictor):
    strategy = "end2end"
    teacher = False


class StepWisePredictor(AlphaPredictor):
    strategy = "stepwise"
    teacher = True


# -- Unstructured ---------------------------------------------------------------------


class UnstructuredPredictor(Predictor):
    """Paper ablation: a regressor per node type at every level; the tree is ignored.

    Types never seen in training use a generic regressor of their level.
    """

    strategy = "unstructured"

    def __init__(self, features: str, seed: int = 0):
        super().__init__(features, seed)
        self.by_level: dict[str, LeafRegressors] = {}

    def _fit(self, forest: Forest) -> None:
        self.by_level = {}
        for level in ("ml", "module", "model"):
            mask = forest.levels == level
            if mask.any():
                self.by_level[level] = LeafRegressors(list(self.feature_names), kind="paper", min_samples=2).fit(
                    forest.types[mask], forest.X[mask], forest.energy[mask]
                )

    def _predict_forest(self, forest: Forest) -> tuple[np.ndarray, np.ndarray]:
        values = np.zeros(len(forest.nodes))
        generic = np.zeros(len(forest.nodes), dtype=bool)
        for level in ("ml", "module", "model"):
            mask = np.nonzero(forest.levels == level)[0]
            if len(mask) == 0:
                continue
            reg = self.by_level.get(level) or next(iter(self.by_level.values()))
            v, g = reg.predict(forest.types[mask], forest.X[mask])
            values[mask], generic[mask] = v, g
        return values, generic

    def _params_json(self) -> dict[str, Any]:
        return {"levels": {k: v.to_json() for k, v in sorted(self.by_level.items())}}

    def _load_params(self, obj: dict[str, Any]) -> None:
        obj = _require(obj, ("levels",), "predictor params")
        levels = obj["levels"]
        _check(isinstance(levels, dict) and levels, "predictor params field 'levels': expected a non-empty object")
        self.by_level = {}
        for k, v in levels.items():
            _check(k in ("ml", "module", "model"), f"predictor params: unknown level {k!r}")
            self.by_level[k] = LeafRegressors.from_json(v)


# -- Glue (default) -------------------------------------------------------------------

#: Physics inputs of the default with resource features, in order of preference.
#: Ridge on the per-category glue shares (deviations from the common share).
GLUE_RIDGE = 1e-3
PHYSICS_TERMS: tuple[str, ...] = ("gpu_energy_j", "latency_s", "latency_s*gpu", "cpu_energy_j")


def physics_terms(forest: Forest, terms: Sequence[str]) -> np.ndarray:
    """Columns of the wall-energy model: the GPU's own energy, the rest of the machine's
    power over the run time (``latency_s``), the part of it that scales with how busy
    the GPU is (``latency_s·gpu/100``: host-side work that feeds the GPU) and, where
    RAPL was readable, the CPU package energy."""
    cols = []
    for term in terms:
        if term == "latency_s*gpu":
            cols.append(forest.col("latency_s") * forest.col("gpu") / 100.0)
        else:
            cols.append(forest.col(term))
    return np.stack(cols, axis=1)


def fit_relative_l1(A: np.ndarray, y: np.ndarray, iterations: int = 30) -> np.ndarray:
    """Minimise the mean *absolute relative* error ``Σ |A·c − y| / y`` (the reported
    metric) by iteratively reweighted least squares, started from the ``1/y²`` fit."""
    w = 1.0 / np.maximum(y, _MIN_J) ** 2
    coef = weighted_lstsq(A, y, w, ridge=0.0)
    for _ in range(iterations):
        rel = np.abs(A @ coef - y) / np.maximum(y, _MIN_J)
        coef = weighted_lstsq(A, y, w / np.maximum(rel, 1e-4), ridge=0.0)
    return coef


@dataclass
class GlueModel:
    """Energy a module spends outside its children, from what it does beyond them.

    Columns (all in joules or counts, no intercept): the children's energies summed
    per child category (each leaf type seen in training, ``other`` leaves, child
    ``modules``), the node's flops and bytes beyond its children's, its number of
    children and its batch·sequence. A coefficient on a category is the share of
    glue that kind of child drags along (a MatMul/Softmax child implies head
    reshapes, scaling and masking of the same tensors; a child module implies
    almost none; many child blocks overlap slightly, giving a small negative
    share). Fitted by ``1/E(parent)²``-weighted ridge least squares on
    ground-truth children, so the error minimised is the parent's relative error.
    """

    categories: list[str]
    scale: list[float]
    coef: list[float]

    EXTRA = ("extra_flops", "extra_mem_bytes", "batch_seq")

    @property
    def columns(self) -> list[str]:
        return [f"energy:{c}" for c in self.categories] + [f"count:{c}" for c in self.categories] + list(self.EXTRA)

    def category_of(self, forest: Forest) -> np.ndarray:
        """Category index of every node as a child."""
        lookup = {c: i for i, c in enumerate(self.categories)}
        other, module = lookup["<other>"], lookup["<module>"]
        return np.array(
            [module if not leaf else lookup.get(t, other) for t, leaf in zip(forest.types, forest.is_leaf, strict=True)],
            dtype=np.int64,
        )

    def extra(self, forest: Forest, member: np.ndarray | None = None) -> np.ndarray:
        """Work beyond the children; children outside ``member`` count as the node's own work."""
        flops, mem = forest.col("flops"), forest.col("mem_bytes")
        keep = np.ones(len(forest.nodes), dtype=bool) if member is None else member
        return np.stack(
            [
                np.maximum(flops - forest.child_sum(np.where(keep, flops, 0.0)), 0.0),
                np.maximum(mem - forest.child_sum(np.where(keep, mem, 0.0)), 0.0),
                forest.col("batch_seq"),
            ],
            axis=1,
        )

    def category_sums(self, forest: Forest, values: np.ndarray, cat: np.ndarray) -> np.ndarray:
        out = np.zeros((len(forest.nodes), len(self.categories)))
        has = forest.parent >= 0
        np.add.at(out, (forest.parent[has], cat[has]), values[has])
        return out

    @classmethod
    def fit(cls, forest: Forest, min_count: int = 20) -> GlueModel:
        child = forest.parent >= 0
        leaf_child_types = forest.types[child & forest.is_leaf]
        names, counts = np.unique(leaf_child_types.astype(str), return_counts=True)
        cats = sorted(str(n) for n, c in zip(names, counts, strict=True) if c >= min_count)
        model = cls(categories=cats + ["<other>", "<module>"], scale=[], coef=[])
        internal = ~forest.is_leaf
        n_columns = len(model.columns)
        if not internal.any():  # flat data (roots without children): nothing to learn
            model.scale, model.coef = [1.0] * n_columns, [0.0] * n_columns
            return model
        cat = model.category_of(forest)
        ones = np.ones(len(forest.nodes))
        D = np.hstack(
            [
                model.category_sums(forest, forest.energy, cat),
                model.category_sums(forest, ones, cat),
                model.extra(forest),
            ]
        )[internal]
        G = forest.energy[internal]
        glue = G - forest.child_sum(forest.energy)[internal]
        w = 1.0 / np.maximum(G, _MIN_J) ** 2
        scale = np.sqrt(np.average(D**2, axis=0, weights=w))
        scale = np.where(scale > 0, scale, 1.0)
        # Shares shrink toward a common share rather than toward zero: the design gets
        # a "all children" energy column and an "all children" count column, and the
        # per-category columns only carry (ridge-penalised) deviations from them. With
        # few training architectures the per-category shares stay near the common one,
        # and a category never seen (``<other>``) gets the common share.
        k = len(model.categories)
        common = np.stack([D[:, :k].sum(axis=1), D[:, k : 2 * k].sum(axis=1)], axis=1)
        cscale = np.sqrt(np.average(common**2, axis=0, weights=w))
        cscale = np.where(cscale > 0, cscale, 1.0)
        X = np.hstack([common / cscale, D / scale])
        ridge = np.full(X.shape[1], GLUE_RIDGE)
        ridge[:2] = 1e-6
        ridge[2 + 2 * k :] = 1e-6  # extra work: physical costs, lightly shrunk
        beta = weighted_lstsq(X, glue, w, ridge=ridge)
        raw = beta[2:] / scale
        raw[:k] += beta[0] / cscale[0]
        raw[k : 2 * k] += beta[1] / cscale[1]
        model.scale, model.coef = scale.tolist(), (raw * scale).tolist()
        return model

    def glue_j(self, category_sums: np.ndarray, category_counts: np.ndarray, extra: np.ndarray) -> np.ndarray:
        D = np.hstack([category_sums, category_counts, extra])
        return (D / np.asarray(self.scale)) @ np.asarray(self.coef)

    def to_json(self) -> dict[str, Any]:
        return {"categories": list(self.categories), "scale": list(self.scale), "coef": list(self.coef)}

    @classmethod
    def from_json(cls, obj: Any) -> GlueModel:
        obj = _require(obj, ("categories", "scale", "coef"), "glue model")
        cats = obj["categories"]
        _check(
            isinstance(cats, list)
            and all(isinstance(c, str) for c in cats)
            and "<other>" in cats
            and "<module>" in cats,
            "glue model field 'categories': expected a list of names including '<other>' and '<module>'",
        )
        n = 2 * len(cats) + len(cls.EXTRA)
        scale = _floats(obj["scale"], "scale", n)
        _check(all(v > 0 for v in scale), "glue model field 'scale': expected positive values")
        return cls(list(cats), scale, _floats(obj["coef"], "coef", n))


class GluePredictor(Predictor):
    """The default strategy (see the module docstring): physics with resource features;
    anchored leaves, glue and module memories with model features.

    Only leaves of a type never seen in training are flagged ``generic_regressor``;
    with resource features the physics model is the same for every type, so nothing
    is generic there."""

    strategy = "glue"

    #: Module-shape coordinates of the module-level residual memories.
    MEMORY_FEATURES = ("flops", "mem_bytes", "batch_size", "seq_len", "n_children")

    def __init__(self, features: str, seed: int = 0):
        super().__init__(features, seed)
        self.physics: dict[str, float] = {}
        self.glue: GlueModel | None = None
        self.memories: list[ResidualMemory] = []

    def _memory_inputs(self, forest: Forest, member: np.ndarray | None = None) -> np.ndarray:
        keep = np.ones(len(forest.nodes), dtype=bool) if member is None else member
        n_children = forest.child_sum(keep.astype(np.float64))
        cols = [n_children if f == "n_children" else forest.col(f) for f in self.MEMORY_FEATURES]
        return np.stack(cols, axis=1)

    def _physics_names(self) -> list[str]:
        return [t for t in PHYSICS_TERMS if t.split("*")[0] in self.feature_names]

    def _fit(self, forest: Forest) -> None:
        if self.features == "all":
            # One model for every node at every level: wall energy is physics, not structure.
            names = self._physics_names()
            coef = fit_relative_l1(physics_terms(forest, names), forest.energy)
            self.physics = {f: float(c) for f, c in zip(names, coef, strict=True)}
            self.leaves = None
            return
        self._fit_leaves(forest, "anchored")
        glue = self.glue = GlueModel.fit(forest)
        # Module-level memories of what the smooth glue model still misses on module
        # shapes measured in training (same idea as the leaves' memories; far from
        # every measured shape they vanish and the glue model alone predicts).
        internal = ~forest.is_leaf
        cat = glue.category_of(forest)
        ones = np.ones(len(forest.nodes))
        smooth = forest.child_sum(forest.energy) + glue.glue_j(
            glue.category_sums(forest, forest.energy, cat), glue.category_sums(forest, ones, cat), glue.extra(forest)
        )
        ok = internal & (smooth > 0)
        resid = np.log(forest.energy[ok]) - np.log(smooth[ok])
        Xm = self._memory_inputs(forest)[ok]
        names = list(self.MEMORY_FEATURES)
        self.memories = [
            ResidualMemory(names, [MEMORY_BATCH_BANDWIDTH if f == "batch_size" else MEMORY_BANDWIDTH for f in names]),
            ResidualMemory(names, [MEMORY_BANDWIDTH for _ in names]),
        ]
        for mem in self.memories:
            mem.fit(Xm, resid)
            resid = resid - mem.predict(Xm)

    def _predict_forest(self, forest: Forest) -> tuple[np.ndarray, np.ndarray]:
        if self.features == "all":
            names = self._physics_names()
            coef = np.asarray([self.physics[f] for f in names])
            return physics_terms(forest, names) @ coef, np.zeros(len(forest.nodes), dtype=bool)
        glue = self.glue
        assert glue is not None
        leaf, generic = self._leaf_predictions(forest)
        # A leaf of a type never seen in training is predicted for display, but how
        # its parent accounts for it is ambiguous: the activation modules of recent
        # transformers were plain functions inside their parent in the training data
        # (their work is glue the parent already prices), while a genuinely new heavy
        # primitive is not. The parent is therefore estimated both ways: "folded" (the
        # unseen child's work counted as the parent's own glue work) and "standard"
        # (the child summed like any other); the folded estimate is used, bounded
        # below by the sum of all children and above by the standard estimate.
        cat = glue.category_of(forest)
        everyone = np.ones(len(forest.nodes), dtype=bool)
        member = ~generic
        values = np.where(forest.is_leaf, leaf, 0.0)
        parts = {}
        for name, mask in (("standard", everyone), ("folded", member)):
            log_corr = np.zeros(len(forest.nodes))
            internal = np.nonzero(~forest.is_leaf)[0]
            Xm = self._memory_inputs(forest, mask)[internal]
            for mem in self.memories:
                log_corr[internal] += mem.predict(Xm)
            parts[name] = (
                glue.extra(forest, mask),
                glue.category_sums(forest, mask.astype(np.float64), cat),
                log_corr,
                mask,
            )
        has_generic = np.zeros(len(forest.nodes), dtype=bool)
        has_generic[forest.parent[generic & (forest.parent >= 0)]] = True
        for d in range(forest.max_depth, 0, -1):
            kids = np.nonzero(forest.depth == d)[0]
            parents = forest.parent[kids]
            targets = np.unique(parents)
            targets = targets[~forest.is_leaf[targets]]
            everything = np.zeros(len(forest.nodes))
            np.add.at(everything, parents, values[kids])
            estimate = {}
            for name, (extra, counts, log_corr, mask) in parts.items():
                sums = np.zeros((len(forest.nodes), len(glue.categories)))
                np.add.at(sums, (parents, cat[kids]), np.where(mask[kids], values[kids], 0.0))
                smooth = sums[targets].sum(axis=1) + glue.glue_j(sums[targets], counts[targets], extra[targets])
                estimate[name] = np.maximum(smooth, _MIN_J) * np.exp(log_corr[targets])
            folded = np.minimum(np.maximum(estimate["folded"], everything[targets]), estimate["standard"])
            values[targets] = np.where(has_generic[targets], folded, estimate["standard"])
        return values, generic

    def _params_json(self) -> dict[str, Any]:
        if self.features == "all":
            return {"physics": dict(self.physics)}
        assert self.leaves is not None and self.glue is not None
        return {
            "leaves": self.leaves.to_json(),
            "glue": self.glue.to_json(),
            "memories": [m.to_json() for m in self.memories],
        }

    def _load_params(self, obj: dict[str, Any]) -> None:
        if self.features == "all":
            obj = _require(obj, ("physics",), "predictor params")
            phys = obj["physics"]
            _check(isinstance(phys, dict), "predictor params field 'physics': expected an object")
            names = self._physics_names()
            _check(set(phys) == set(names), f"predictor params field 'physics': expected coefficients for {names}")
            self.physics = {f: _finite(phys[f], f"physics.{f}") for f in names}
            return
        obj = _require(obj, ("leaves", "glue", "memories"), "predictor params")
        self.leaves = LeafRegressors.from_json(obj["leaves"])
        self.glue = GlueModel.from_json(obj["glue"])
        _check(isinstance(obj["memories"], list), "predictor params field 'memories': expected a list")
        self.memories = [ResidualMemory.from_json(m) for m in obj["memories"]]
        for mem in self.memories:
            _check(
                mem.features == list(self.MEMORY_FEATURES),
                f"predictor params: module memory features must be {list(self.MEMORY_FEATURES)}",
            )


# -- factory / loading ----------------------------------------------------------------

_CLASSES: dict[str, type[Predictor]] = {
    "glue": GluePredictor,
    "end2end": End2EndPredictor,
    "stepwise": StepWisePredictor,
    "predictedsum": PredictedSumPredictor,
    "unstructured": UnstructuredPredictor,
}


def make_predictor(strategy: str = DEFAULT_STRATEGY, features: str = "model", seed: int = 0) -> Predictor:
    """A new, unfitted predictor; ``UsageError`` naming the valid choices on a bad name."""
    if strategy not in _CLASSES:
        raise UsageError(f"unknown strategy {strategy!r}; expected one of {list(STRATEGIES)}")
    if features not in FEATURE_SETS:
        raise UsageError(f"unknown feature set {features!r}; expected one of {list(FEATURE_SETS)}")
    return _CLASSES[strategy](features, seed)


def predictor_from_json(obj: Any) -> Predictor:
    """Re-create a fitted predictor from :meth:`Predictor.to_json`; ``ModelFileError`` on bad content."""
    obj = _require(obj, ("format", "strategy", "features", "feature_names", "seed", "params"), "predictor")
    _check(obj["format"] == PREDICTOR_FORMAT, f"predictor: expected format {PREDICTOR_FORMAT!r}, got {obj['format']!r}")
    _check(
        obj["strategy"] in _CLASSES,
        f"predictor: unknown strategy {obj['strategy']!r}; expected one of {list(STRATEGIES)}",
    )
    _check(
        obj["features"] in FEATURE_SETS,
        f"predictor: unknown feature set {obj['features']!r}; expected one of {list(FEATURE_SETS)}",
    )
    names = obj["feature_names"]
    _check(
        isinstance(names, list) and all(isinstance(n, str) for n in names) and len(names) > 0,
        "predictor field 'feature_names': expected a non-empty list of names",
    )
    expected = feature_names_for(obj["features"])
    _check(
        names[: len(expected)] == expected
        and all(n in OPTIONAL_RESOURCE_FEATURES for n in names[len(expected) :])
        and len(set(names)) == len(names),
        f"predictor field 'feature_names': expected {expected} (+ optional {list(OPTIONAL_RESOURCE_FEATURES)}) "
        f"for feature set {obj['features']!r}, got {names}",
    )
    seed = obj["seed"]
    _check(isinstance(seed, int) and not isinstance(seed, bool), "predictor field 'seed': expected an integer")
    pred = _CLASSES[obj["strategy"]](obj["features"], seed)
    pred.feature_names = list(names)
    params = obj["params"]
    _check(isinstance(params, dict), "predictor field 'params': expected an object")
    try:
        pred._load_params(params)
    except ModelFileError:
        raise
    except (TypeError, ValueError, KeyError) as exc:  # malformed nested content
        raise ModelFileError(f"predictor params: malformed content ({exc})") from exc
    return pred


__all__ = [
    "DEFAULT_STRATEGY",
    "FEATURE_SETS",
    "STRATEGIES",
    "Forest",
    "Predictor",
    "feature_names_for",
    "flatten",
    "make_predictor",
    "predictor_from_json",
]
