"""The default strategy, ``glue`` (beyond the paper).

With resource features (``all``) it is the physics of wall energy
(:mod:`.physics`), applied to every node at every level. With model features only,
leaves use anchored regressors (:mod:`pytest_irene.engine.predict.regressors`) and
a module is the sum of its predicted children plus its *glue*, the energy spent
outside the children (reshapes, residual adds, masks, copies), predicted by
:class:`~.glue_model.GlueModel` from what the node does beyond its children;
module-level residual memories then recall module shapes measured in training.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from pytest_irene.engine.predict.regressors import (
    MEMORY_BATCH_LOG_WIDTH,
    MEMORY_LOG_WIDTH,
    MIN_ENERGY_J,
    LeafRegressors,
    ResidualMemory,
)
from pytest_irene.engine.predict.strategies.base import Predictor
from pytest_irene.engine.predict.strategies.forest import Forest
from pytest_irene.engine.predict.strategies.glue_model import GlueModel
from pytest_irene.engine.predict.strategies.physics import PHYSICS_TERMS, fit_relative_l1, physics_terms
from pytest_irene.validate import check, finite, require


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

    def memory_inputs(self, forest: Forest, member: np.ndarray | None = None) -> np.ndarray:
        """Module-shape coordinates (:attr:`MEMORY_FEATURES`) of every node; children outside
        ``member`` are not counted in ``n_children``."""
        keep = np.ones(len(forest.nodes), dtype=bool) if member is None else member
        n_children = forest.child_sum(keep.astype(np.float64))
        cols = [n_children if f == "n_children" else forest.col(f) for f in self.MEMORY_FEATURES]
        return np.stack(cols, axis=1)

    def physics_names(self) -> list[str]:
        """The :data:`PHYSICS_TERMS` this predictor's feature names allow, in order."""
        return [t for t in PHYSICS_TERMS if t.split("*")[0] in self.feature_names]

    def fit_forest(self, forest: Forest) -> None:
        if self.features == "all":
            # One model for every node at every level: wall energy is physics, not structure.
            names = self.physics_names()
            coef = fit_relative_l1(physics_terms(forest, names), forest.energy)
            self.physics = {f: float(c) for f, c in zip(names, coef, strict=True)}
            self.leaves = None
            return
        self.fit_leaves(forest, "anchored")
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
        Xm = self.memory_inputs(forest)[ok]
        names = list(self.MEMORY_FEATURES)
        self.memories = [
            ResidualMemory(names, [MEMORY_BATCH_LOG_WIDTH if f == "batch_size" else MEMORY_LOG_WIDTH for f in names]),
            ResidualMemory(names, [MEMORY_LOG_WIDTH for _ in names]),
        ]
        for mem in self.memories:
            mem.fit(Xm, resid)
            resid = resid - mem.predict(Xm)

    def predict_forest(self, forest: Forest) -> tuple[np.ndarray, np.ndarray]:
        if self.features == "all":
            names = self.physics_names()
            coef = np.asarray([self.physics[f] for f in names])
            return physics_terms(forest, names) @ coef, np.zeros(len(forest.nodes), dtype=bool)
        glue = self.glue
        assert glue is not None
        leaf, generic = self.leaf_predictions(forest)
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
            Xm = self.memory_inputs(forest, mask)[internal]
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
                estimate[name] = np.maximum(smooth, MIN_ENERGY_J) * np.exp(log_corr[targets])
            folded = np.minimum(np.maximum(estimate["folded"], everything[targets]), estimate["standard"])
            values[targets] = np.where(has_generic[targets], folded, estimate["standard"])
        return values, generic

    def params_json(self) -> dict[str, Any]:
        if self.features == "all":
            return {"physics": dict(self.physics)}
        assert self.leaves is not None and self.glue is not None
        return {
            "leaves": self.leaves.to_json(),
            "glue": self.glue.to_json(),
            "memories": [m.to_json() for m in self.memories],
        }

    def load_params(self, obj: dict[str, Any]) -> None:
        if self.features == "all":
            obj = require(obj, ("physics",), "predictor params")
            phys = obj["physics"]
            check(isinstance(phys, dict), "predictor params field 'physics': expected an object")
            names = self.physics_names()
            check(set(phys) == set(names), f"predictor params field 'physics': expected coefficients for {names}")
            self.physics = {f: finite(phys[f], f"physics.{f}") for f in names}
            return
        obj = require(obj, ("leaves", "glue", "memories"), "predictor params")
        self.leaves = LeafRegressors.from_json(obj["leaves"])
        self.glue = GlueModel.from_json(obj["glue"])
        check(isinstance(obj["memories"], list), "predictor params field 'memories': expected a list")
        self.memories = [ResidualMemory.from_json(m) for m in obj["memories"]]
        for mem in self.memories:
            check(
                mem.features == list(self.MEMORY_FEATURES),
                f"predictor params: module memory features must be {list(self.MEMORY_FEATURES)}",
            )
