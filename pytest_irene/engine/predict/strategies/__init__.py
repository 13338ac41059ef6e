"""Tree predictors: how leaf energies are combined into module and model energies.

IrEne predicts every node of a model tree. Leaves (ML primitives) come from the
per-type regressors of :mod:`pytest_irene.engine.predict.regressors`; what differs
between strategies is how a module's energy follows from its children. One module
per strategy:

- :mod:`.glue` (``glue``, the default, beyond the paper): physics with resource
  features (:mod:`.physics`); anchored leaves plus each module's glue
  (:mod:`.glue_model`) and module memories with model features.
- :mod:`.end2end` (``end2end``, the paper; ``stepwise``, its ablation): α-weighted
  sums of children (:mod:`.alpha`).
- :mod:`.predicted_sum` (``predictedsum``, paper ablation): the sum of the children.
- :mod:`.unstructured` (``unstructured``, paper ablation): a regressor per type at
  every level.

:mod:`.base` holds the :class:`Predictor` interface and the feature sets,
:mod:`.forest` the flattened trees every strategy works on. Everything is
deterministic: types are processed in sorted order, training trees are sorted
before any seeded shuffling, so two fits on the same data give bit-identical
predictions.
"""

from __future__ import annotations

from typing import Any

from pytest_irene.engine.predict.strategies.base import (
    FEATURE_SETS,
    MODEL_FEATURE_SET,
    PREDICTOR_FORMAT,
    RESOURCE_FEATURE_SET,
    Predictor,
    feature_names_for,
    optional_features,
)
from pytest_irene.engine.predict.strategies.end2end import End2EndPredictor, StepWisePredictor
from pytest_irene.engine.predict.strategies.forest import Forest, flatten, sort_trees
from pytest_irene.engine.predict.strategies.glue import GluePredictor
from pytest_irene.engine.predict.strategies.predicted_sum import PredictedSumPredictor
from pytest_irene.engine.predict.strategies.unstructured import UnstructuredPredictor
from pytest_irene.errors import ModelFileError, UsageError
from pytest_irene.validate import check, require

DEFAULT_STRATEGY = "glue"
STRATEGIES: tuple[str, ...] = (DEFAULT_STRATEGY, "end2end", "stepwise", "predictedsum", "unstructured")


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
    obj = require(obj, ("format", "strategy", "features", "feature_names", "seed", "params"), "predictor")
    check(obj["format"] == PREDICTOR_FORMAT, f"predictor: expected format {PREDICTOR_FORMAT!r}, got {obj['format']!r}")
    check(
        obj["strategy"] in _CLASSES,
        f"predictor: unknown strategy {obj['strategy']!r}; expected one of {list(STRATEGIES)}",
    )
    check(
        obj["features"] in FEATURE_SETS,
        f"predictor: unknown feature set {obj['features']!r}; expected one of {list(FEATURE_SETS)}",
    )
    names = obj["feature_names"]
    check(
        isinstance(names, list) and all(isinstance(n, str) for n in names) and len(names) > 0,
        "predictor field 'feature_names': expected a non-empty list of names",
    )
    expected = feature_names_for(obj["features"])
    check(
        names[: len(expected)] == expected
        and all(n in optional_features(obj["features"]) for n in names[len(expected) :])
        and len(set(names)) == len(names),
        f"predictor field 'feature_names': expected {expected} (+ optional {list(optional_features(obj['features']))}) "
        f"for feature set {obj['features']!r}, got {names}",
    )
    seed = obj["seed"]
    check(isinstance(seed, int) and not isinstance(seed, bool), "predictor field 'seed': expected an integer")
    pred = _CLASSES[obj["strategy"]](obj["features"], seed)
    pred.feature_names = list(names)
    params = obj["params"]
    check(isinstance(params, dict), "predictor field 'params': expected an object")
    try:
        pred.load_params(params)
    except ModelFileError:
        raise
    except (TypeError, ValueError, KeyError) as exc:  # malformed nested content
        raise ModelFileError(f"predictor params: malformed content ({exc})") from exc
    for leaves in pred.leaf_sets():
        # The regressors index the predictor's feature matrix by these names: another order
        # would silently read batch size as flops.
        check(
            leaves.features == pred.feature_names,
            f"predictor params: leaf regressors field 'features': expected the predictor's feature_names "
            f"{pred.feature_names}, got {leaves.features}",
        )
    return pred


__all__ = [
    "DEFAULT_STRATEGY",
    "FEATURE_SETS",
    "MODEL_FEATURE_SET",
    "RESOURCE_FEATURE_SET",
    "STRATEGIES",
    "Forest",
    "Predictor",
    "feature_names_for",
    "flatten",
    "make_predictor",
    "predictor_from_json",
    "sort_trees",
]
