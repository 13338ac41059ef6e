"""Leaf regressors: one regressor per primitive type plus a generic one for unseen types.

Every regressor answers the same interface (:class:`Regressor`): ``fit(X, y, names)``,
``predict(X, names)`` where ``names`` are the columns of ``X``, ``to_json()`` and a
``kind`` tag; :func:`regressor_from_json` picks the class by that tag. Nothing here
dispatches on the class of a regressor.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from pytest_irene.engine.predict.regressors.anchored import ANCHOR_BASE, AnchoredRegressor
from pytest_irene.engine.predict.regressors.linear import LinearRegressor
from pytest_irene.engine.predict.regressors.lstsq import MIN_ENERGY_J
from pytest_irene.errors import ModelFileError
from pytest_irene.validate import check, count, names, require


class Regressor(Protocol):
    """What a per-type energy regressor offers (linear and anchored alike)."""

    kind: str

    @property
    def features(self) -> list[str]: ...

    def fit(self, X: np.ndarray, y: np.ndarray, names: Sequence[str] | None = None) -> Regressor: ...

    def predict(self, X: np.ndarray, names: Sequence[str] | None = None) -> np.ndarray: ...

    def to_json(self) -> dict[str, Any]: ...


#: Regressor classes by their JSON ``kind`` tag.
REGRESSOR_KINDS: dict[str, Any] = {LinearRegressor.kind: LinearRegressor, AnchoredRegressor.kind: AnchoredRegressor}


def regressor_from_json(obj: Any) -> Regressor:
    """Re-create a regressor from :meth:`to_json` output; ``ModelFileError`` on bad content."""
    check(isinstance(obj, dict), f"regressor: expected an object, got {type(obj).__name__}")
    kind = obj.get("kind")
    cls = REGRESSOR_KINDS.get(kind) if isinstance(kind, str) else None
    if cls is None:
        raise ModelFileError(f"regressor: unknown kind {kind!r:.60} (expected one of {sorted(REGRESSOR_KINDS)})")
    return cls.from_json(obj)


#: Leaf regressor flavours: ``paper`` = ordinary least squares on standardised
#: features (IrEne); ``anchored`` = :class:`AnchoredRegressor`; ``relative`` =
#: ``1/E²``-weighted least squares; ``base`` = the anchored regressor's non-negative
#: base alone (the generic regressor of ``anchored``).
LEAF_KINDS = ("paper", "anchored", "relative", "base")


def new_regressor(kind: str, features: Sequence[str]) -> Regressor:
    """A new, unfitted regressor of flavour ``kind`` (one of :data:`LEAF_KINDS`) on ``features``."""
    if kind == "paper":
        return LinearRegressor(list(features))
    if kind == "relative":
        return LinearRegressor(list(features), weighting="relative")
    if kind == "anchored":
        return AnchoredRegressor.new(features)
    if kind == "base":
        return LinearRegressor([f for f in ANCHOR_BASE if f in features], weighting="relative", nonneg=True)
    raise ValueError(f"unknown leaf regressor kind {kind!r}; expected one of {LEAF_KINDS}")


@dataclass
class LeafRegressors:
    """One regressor per primitive type plus a generic one for unseen types.

    ``features`` is the column order of the matrices passed to :meth:`fit` and
    :meth:`predict`. Types with fewer than ``min_samples`` training nodes fall
    back to the generic regressor too (a regressor fitted on two points is noise).
    """

    features: list[str]
    kind: str = "paper"
    min_samples: int = 4
    per_type: dict[str, Regressor] = field(default_factory=dict)
    generic: Regressor | None = None

    def fit(self, types: Sequence[str], X: np.ndarray, y: np.ndarray) -> LeafRegressors:
        types_arr = np.asarray(types, dtype=object)
        y = np.asarray(y, dtype=np.float64)
        X = np.asarray(X, dtype=np.float64)
        self.per_type = {}
        for t in sorted(set(types_arr.tolist())):
            mask = types_arr == t
            if int(mask.sum()) < self.min_samples:
                continue
            self.per_type[t] = new_regressor(self.kind, self.features).fit(X[mask], y[mask], self.features)
        # For unseen types only the physics survives: a launch floor plus costs per flop
        # and per byte, fitted over every primitive (leave-one-type-out on irene-pc1:
        # ~30 % mean error, against 40-60 % for richer fits that bend on one type's data).
        generic_kind = {"paper": "paper", "relative": "relative"}.get(self.kind, "base")
        self.generic = new_regressor(generic_kind, self.features).fit(X, y, self.features)
        return self

    def predict(self, types: Sequence[str], X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Predicted energies (J) and a boolean mask of rows the generic regressor predicted."""
        if self.generic is None:
            raise RuntimeError("LeafRegressors.predict called before fit")
        types_arr = np.asarray(types, dtype=object)
        X = np.asarray(X, dtype=np.float64)
        out = np.zeros(len(types_arr))
        generic = np.ones(len(types_arr), dtype=bool)
        for t, reg in self.per_type.items():
            mask = types_arr == t
            if mask.any():
                out[mask] = reg.predict(X[mask], self.features)
                generic[mask] = False
        if generic.any():
            out[generic] = self.generic.predict(X[generic], self.features)
        # Energy is positive; a linear fit can dip below zero far outside its range.
        return np.maximum(out, MIN_ENERGY_J), generic

    def to_json(self) -> dict[str, Any]:
        if self.generic is None:
            raise RuntimeError("LeafRegressors.to_json called before fit")
        return {
            "features": list(self.features),
            "kind": self.kind,
            "min_samples": self.min_samples,
            "per_type": {t: r.to_json() for t, r in sorted(self.per_type.items())},
            "generic": self.generic.to_json(),
        }

    @classmethod
    def from_json(cls, obj: Any) -> LeafRegressors:
        obj = require(obj, ("features", "kind", "min_samples", "per_type", "generic"), "leaf regressors")
        feats = names(obj["features"], "leaf regressors field 'features'")
        check(obj["kind"] in LEAF_KINDS, f"leaf regressors field 'kind': expected one of {LEAF_KINDS}")
        check(isinstance(obj["per_type"], dict), "leaf regressors field 'per_type': expected an object")
        min_samples = count(obj["min_samples"], "min_samples", "leaf regressors")
        out = cls(features=list(feats), kind=obj["kind"], min_samples=min_samples)
        for t, r in obj["per_type"].items():
            try:
                reg = regressor_from_json(r)
            except ModelFileError as exc:
                raise ModelFileError(f"leaf regressor for type {t!r}: {exc}") from None
            check(set(reg.features) <= set(feats), f"leaf regressor for {t!r} uses features not in {feats}")
            out.per_type[str(t)] = reg
        try:
            out.generic = regressor_from_json(obj["generic"])
        except ModelFileError as exc:
            raise ModelFileError(f"generic leaf regressor: {exc}") from None
        check(set(out.generic.features) <= set(feats), "generic leaf regressor uses unknown features")
        return out
