"""PredictedSum (paper ablation): a module's energy is the sum of its children's predictions."""

from __future__ import annotations

from typing import Any

import numpy as np

from pytest_irene.engine.predict.regressors import LeafRegressors
from pytest_irene.engine.predict.strategies.base import Predictor
from pytest_irene.engine.predict.strategies.forest import Forest
from pytest_irene.validate import require


class PredictedSumPredictor(Predictor):
    """Paper ablation: a module's energy is the sum of its children's predictions."""

    strategy = "predictedsum"

    def fit_forest(self, forest: Forest) -> None:
        self.fit_leaves(forest, "paper")

    def predict_forest(self, forest: Forest) -> tuple[np.ndarray, np.ndarray]:
        leaf, generic = self.leaf_predictions(forest)
        return forest.fold_with(leaf, lambda idx, v: v, None), generic

    def params_json(self) -> dict[str, Any]:
        assert self.leaves is not None
        return {"leaves": self.leaves.to_json()}

    def load_params(self, obj: dict[str, Any]) -> None:
        obj = require(obj, ("leaves",), "predictor params")
        self.leaves = LeafRegressors.from_json(obj["leaves"])
