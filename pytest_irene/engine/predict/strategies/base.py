"""The predictor interface every strategy implements, and the feature sets it reads.

A strategy subclasses :class:`Predictor` and fills in four hooks:
:meth:`~Predictor.fit_forest`, :meth:`~Predictor.predict_forest`,
:meth:`~Predictor.params_json` and :meth:`~Predictor.load_params`. Fitting,
predicting whole trees, flagging generic predictions and the JSON envelope live
here, once.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from pytest_irene.engine.feature_sets import FEATURE_SETS
from pytest_irene.engine.predict.regressors import MIN_ENERGY_J, LeafRegressors
from pytest_irene.engine.predict.strategies.forest import Forest, flatten, training_forest
from pytest_irene.engine.tree import OPTIONAL_MODEL_FEATURES, OPTIONAL_RESOURCE_FEATURES, RESOURCE_FEATURES, EnergyTree
from pytest_irene.errors import UsageError

#: Model features used by the predictors (``params`` is absent from the paper's data).
MODEL_FEATURE_SET: tuple[str, ...] = ("batch_size", "seq_len", "batch_seq", "flops", "mem_bytes")
#: Resource features added by ``all`` (``cpu_energy_j`` joins when every training node has it).
RESOURCE_FEATURE_SET: tuple[str, ...] = RESOURCE_FEATURES

#: JSON format tag of a serialised predictor.
PREDICTOR_FORMAT = "irene-predictor/1"


def feature_names_for(features: str, trees: Sequence[EnergyTree] | None = None) -> list[str]:
    """Column names of a feature set. Optional features join at the end when every node of
    ``trees`` has them: ``bytes_per_element`` (the dtype) for both sets, ``cpu_energy_j`` for ``all``."""
    if features not in FEATURE_SETS:
        raise UsageError(f"unknown feature set {features!r}; expected one of {list(FEATURE_SETS)}")
    names = list(MODEL_FEATURE_SET) + (list(RESOURCE_FEATURE_SET) if features == "all" else [])
    if trees:
        for opt in optional_features(features):
            if all(opt in n.features for t in trees for n in t.walk()):
                names.append(opt)
    return names


def optional_features(features: str) -> tuple[str, ...]:
    """Features that may follow a feature set's fixed columns, in the order they are appended."""
    return OPTIONAL_RESOURCE_FEATURES + OPTIONAL_MODEL_FEATURES if features == "all" else OPTIONAL_MODEL_FEATURES


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
    def fit_forest(self, forest: Forest) -> None:
        raise NotImplementedError

    def predict_forest(self, forest: Forest) -> tuple[np.ndarray, np.ndarray]:
        """Predicted energy per node and a mask of nodes predicted by a generic regressor."""
        raise NotImplementedError

    def params_json(self) -> dict[str, Any]:
        raise NotImplementedError

    def load_params(self, obj: dict[str, Any]) -> None:
        raise NotImplementedError

    def leaf_sets(self) -> list[LeafRegressors]:
        """Every :class:`LeafRegressors` this predictor holds (the loader checks that each reads
        the predictor's own columns); a strategy holding several overrides it."""
        return [] if self.leaves is None else [self.leaves]

    # public
    @property
    def fitted(self) -> bool:
        return bool(self.feature_names)

    def fit(self, trees: Sequence[EnergyTree]) -> Predictor:
        """Fit on measured trees (every node needs ``energy``); returns ``self``."""
        self.feature_names = feature_names_for(self.features, trees)
        self.fit_forest(training_forest(trees, self.feature_names))
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
        values, generic = self.predict_forest(forest)
        values = np.maximum(values, MIN_ENERGY_J)
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
            "params": self.params_json(),
        }

    # helpers shared by strategies
    def leaf_predictions(self, forest: Forest) -> tuple[np.ndarray, np.ndarray]:
        assert self.leaves is not None
        values = np.zeros(len(forest.nodes))
        generic = np.zeros(len(forest.nodes), dtype=bool)
        leaf = np.nonzero(forest.is_leaf)[0]
        if len(leaf):
            v, g = self.leaves.predict(forest.types[leaf], forest.X[leaf])
            values[leaf], generic[leaf] = v, g
        return values, generic

    def fit_leaves(self, forest: Forest, kind: str) -> None:
        leaf = forest.is_leaf
        self.leaves = LeafRegressors(list(self.feature_names), kind=kind).fit(
            forest.types[leaf], forest.X[leaf], forest.energy[leaf]
        )
