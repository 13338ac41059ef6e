"""Unstructured (paper ablation): one regressor per node type at every level, ignoring the tree."""

from __future__ import annotations

from typing import Any

import numpy as np

from pytest_irene.engine.predict.regressors import LeafRegressors
from pytest_irene.engine.predict.strategies.base import Predictor
from pytest_irene.engine.predict.strategies.forest import Forest
from pytest_irene.validate import check, require


class UnstructuredPredictor(Predictor):
    """Paper ablation: a regressor per node type at every level; the tree is ignored.

    Types never seen in training use a generic regressor of their level.
    """

    strategy = "unstructured"

    def __init__(self, features: str, seed: int = 0):
        super().__init__(features, seed)
        self.by_level: dict[str, LeafRegressors] = {}

    def fit_forest(self, forest: Forest) -> None:
        self.by_level = {}
        for level in ("ml", "module", "model"):
            mask = forest.levels == level
            if mask.any():
                self.by_level[level] = LeafRegressors(list(self.feature_names), kind="paper", min_samples=2).fit(
                    forest.types[mask], forest.X[mask], forest.energy[mask]
                )

    def predict_forest(self, forest: Forest) -> tuple[np.ndarray, np.ndarray]:
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

    def params_json(self) -> dict[str, Any]:
        return {"levels": {k: v.to_json() for k, v in sorted(self.by_level.items())}}

    def leaf_sets(self) -> list[LeafRegressors]:
        """One set of per-type regressors per level."""
        return [self.by_level[k] for k in sorted(self.by_level)]

    def load_params(self, obj: dict[str, Any]) -> None:
        obj = require(obj, ("levels",), "predictor params")
        levels = obj["levels"]
        check(isinstance(levels, dict) and levels, "predictor params field 'levels': expected a non-empty object")
        self.by_level = {}
        for k, v in levels.items():
            check(k in ("ml", "module", "model"), f"predictor params: unknown level {k!r}")
            self.by_level[k] = LeafRegressors.from_json(v)
