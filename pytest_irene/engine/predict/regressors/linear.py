"""Linear regressor on (optionally log) standardised features: the paper's ML-level model.

Why linear: the energy of an ML primitive (``Linear``, ``MatMul``, ``Softmax``)
is, to first order, proportional to the work it does (flops) and the bytes it
moves; a linear model on a handful of features extrapolates to input sizes and
widths the training data never had, where flexible learners memorise shapes.
With ``weighting="relative"`` each sample is weighted by ``1/y²`` so the fit
minimises *relative* error, which is what every reported error measures.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pytest_irene.engine.predict.regressors.lstsq import DEFAULT_RIDGE, MIN_ENERGY_J, columns, weighted_lstsq
from pytest_irene.validate import check, finite, flag, floats, names, non_negative, require

#: Sample weightings of a fit: ordinary least squares, or ``1/y²`` (relative error).
WEIGHTINGS = ("none", "relative")


@dataclass
class LinearRegressor:
    """``y = intercept + coef · (t(x) − mean) / scale`` with optional log input/target.

    ``t`` is the identity or ``log1p`` (``log_inputs``); with ``log_target`` the
    model predicts ``log(y)`` and returns ``exp`` of it. Constant features get
    scale 1 so they contribute nothing.
    """

    features: list[str]
    """Input columns, in order (node feature names)."""
    log_inputs: bool = False
    """Fit on ``log1p`` of the inputs."""
    log_target: bool = False
    """Fit ``log(y)`` and predict ``exp`` of the linear model."""
    weighting: str = "none"
    """``none`` (ordinary least squares) or ``relative`` (weights ``1/y²``)."""
    intercept_: bool = True
    """Fit an intercept (stored as ``fit_intercept``)."""
    nonneg: bool = False
    """Constrain intercept and coefficients to be >= 0 (inputs RMS-scaled, not centred)."""
    clip_inputs: bool = False
    """Clip (transformed) inputs to the training range ``[lo, hi]`` before predicting."""
    ridge: float = DEFAULT_RIDGE
    """Ridge penalty on the standardised coefficients, relative to the total weight."""
    mean: list[float] = field(default_factory=list)
    """Per-input centring (fitted)."""
    scale: list[float] = field(default_factory=list)
    """Per-input scale (fitted, > 0)."""
    coef: list[float] = field(default_factory=list)
    """Coefficients on the standardised inputs (fitted)."""
    intercept: float = 0.0
    """Intercept (fitted)."""
    lo: list[float] = field(default_factory=list)
    """Training minimum of each transformed input (only with ``clip_inputs``)."""
    hi: list[float] = field(default_factory=list)
    """Training maximum of each transformed input (only with ``clip_inputs``)."""

    kind = "linear"

    def _transform(self, X: np.ndarray) -> np.ndarray:
        X = np.asarray(X, dtype=np.float64)
        Z = np.log1p(np.maximum(X, 0.0)) if self.log_inputs else X
        if self.clip_inputs and self.lo:
            # Outside the training range the model holds its edge value instead of
            # extrapolating a fitted curvature (used for corrections, not for physics).
            Z = np.clip(Z, np.asarray(self.lo), np.asarray(self.hi))
        return Z

    def fit(self, X: np.ndarray, y: np.ndarray, names: Sequence[str] | None = None) -> LinearRegressor:
        """Fit on ``X`` (columns ``names``; ``None``: exactly :attr:`features`) and energies ``y`` (J)."""
        self.lo, self.hi = [], []
        Z = self._transform(columns(X, names, self.features))
        y = np.asarray(y, dtype=np.float64)
        if self.clip_inputs:
            self.lo = (Z.min(axis=0) if len(Z) else np.zeros(Z.shape[1])).tolist()
            self.hi = (Z.max(axis=0) if len(Z) else np.zeros(Z.shape[1])).tolist()
        if self.nonneg:
            return self._fit_nonneg(Z, y)
        mean = Z.mean(axis=0) if len(Z) else np.zeros(Z.shape[1])
        scale = Z.std(axis=0) if len(Z) else np.ones(Z.shape[1])
        scale = np.where(scale > 1e-12 * np.maximum(np.abs(mean), 1.0), scale, 1.0)
        S = (Z - mean) / scale
        target = np.log(np.maximum(y, MIN_ENERGY_J)) if self.log_target else y
        w = None
        if self.weighting == "relative" and not self.log_target:
            w = 1.0 / np.maximum(y, MIN_ENERGY_J) ** 2
        cols = [np.ones((len(S), 1))] if self.intercept_ else []
        design = np.hstack(cols + [S]) if len(S) else np.zeros((0, S.shape[1] + len(cols)))
        if len(y) == 0:
            beta = np.zeros(design.shape[1])
        else:
            beta = weighted_lstsq(design, target, w, ridge=self.ridge)
        self.mean, self.scale = mean.tolist(), scale.tolist()
        if self.intercept_:
            self.intercept, self.coef = float(beta[0]), beta[1:].tolist()
        else:
            self.intercept, self.coef = 0.0, beta.tolist()
        return self

    def _fit_nonneg(self, Z: np.ndarray, y: np.ndarray) -> LinearRegressor:
        """Non-negative (relative-)weighted least squares on RMS-scaled, uncentred inputs.

        Energy is a sum of non-negative costs (a launch floor, per flop, per byte):
        forcing the signs keeps a fit on large shapes sane on tiny ones.
        """
        from scipy.optimize import nnls

        scale = np.sqrt(np.mean(Z**2, axis=0)) if len(Z) else np.ones(Z.shape[1])
        scale = np.where(scale > 0, scale, 1.0)
        cols = [np.ones((len(Z), 1))] if self.intercept_ else []
        A = np.hstack(cols + [Z / scale])
        w = np.ones(len(y)) if self.weighting != "relative" else 1.0 / np.maximum(y, MIN_ENERGY_J) ** 2
        sw = np.sqrt(w)
        beta = nnls(A * sw[:, None], y * sw)[0] if len(y) else np.zeros(A.shape[1])
        self.mean, self.scale = [0.0] * Z.shape[1], scale.tolist()
        if self.intercept_:
            self.intercept, self.coef = float(beta[0]), beta[1:].tolist()
        else:
            self.intercept, self.coef = 0.0, beta.tolist()
        return self

    def predict(self, X: np.ndarray, names: Sequence[str] | None = None) -> np.ndarray:
        """Predicted energies (J) for ``X`` (columns ``names``; ``None``: exactly :attr:`features`)."""
        S = (self._transform(columns(X, names, self.features)) - np.asarray(self.mean)) / np.asarray(self.scale)
        out = S @ np.asarray(self.coef) + self.intercept
        return np.exp(np.clip(out, -50.0, 50.0)) if self.log_target else out

    def scaled(self, intercept_factor: float, coef_factors: Sequence[float]) -> LinearRegressor:
        """A copy with the intercept and each coefficient multiplied (a non-negative base's
        floor and per-unit costs on another machine); ``ValueError`` on a centred model,
        whose intercept is not a floor."""
        if any(m != 0.0 for m in self.mean) or self.log_inputs or self.log_target:
            raise ValueError("only an uncentred linear model in raw inputs can be rescaled term by term")
        out = LinearRegressor(**{k: getattr(self, k) for k in self.__dataclass_fields__})
        out.intercept = self.intercept * float(intercept_factor)
        out.coef = [c * float(f) for c, f in zip(self.coef, coef_factors, strict=True)]
        out.mean, out.scale, out.lo, out.hi = list(self.mean), list(self.scale), list(self.lo), list(self.hi)
        return out

    def terms(self, X: np.ndarray, names: Sequence[str] | None = None) -> np.ndarray:
        """Per row, the intercept and each coefficient's contribution (columns sum to :meth:`predict`
        for a model without log target)."""
        S = (self._transform(columns(X, names, self.features)) - np.asarray(self.mean)) / np.asarray(self.scale)
        return np.hstack([np.full((len(S), 1), self.intercept), S * np.asarray(self.coef)])

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "features": list(self.features),
            "log_inputs": self.log_inputs,
            "log_target": self.log_target,
            "weighting": self.weighting,
            "fit_intercept": self.intercept_,
            "nonneg": self.nonneg,
            "clip_inputs": self.clip_inputs,
            "ridge": self.ridge,
            "lo": list(self.lo),
            "hi": list(self.hi),
            "mean": list(self.mean),
            "scale": list(self.scale),
            "coef": list(self.coef),
            "intercept": self.intercept,
        }

    @classmethod
    def from_json(cls, obj: Any) -> LinearRegressor:
        obj = require(
            obj,
            (
                "features",
                "log_inputs",
                "log_target",
                "weighting",
                "fit_intercept",
                "nonneg",
                "clip_inputs",
                "lo",
                "hi",
                "mean",
                "scale",
                "coef",
                "intercept",
            ),
            "linear regressor",
        )
        feats = names(obj["features"], "linear regressor field 'features'")
        n = len(feats)
        check(
            obj["weighting"] in WEIGHTINGS,
            f"linear regressor field 'weighting': expected one of {list(WEIGHTINGS)}, got {obj['weighting']!r:.60}",
        )
        reg = cls(
            features=list(feats),
            log_inputs=flag(obj["log_inputs"], "log_inputs"),
            log_target=flag(obj["log_target"], "log_target"),
            weighting=obj["weighting"],
            intercept_=flag(obj["fit_intercept"], "fit_intercept"),
            nonneg=flag(obj["nonneg"], "nonneg"),
            clip_inputs=flag(obj["clip_inputs"], "clip_inputs"),
            # A fitting hyper-parameter only (prediction does not use it); older files lack it.
            ridge=finite(obj.get("ridge", DEFAULT_RIDGE), "ridge"),
        )
        if reg.clip_inputs:
            reg.lo = floats(obj["lo"], "lo", n)
            reg.hi = floats(obj["hi"], "hi", n)
            check(all(a <= b for a, b in zip(reg.lo, reg.hi)), "regressor field 'lo': expected lo <= hi for every input")
        reg.mean = floats(obj["mean"], "mean", n)
        reg.scale = floats(obj["scale"], "scale", n)
        check(all(s > 0 for s in reg.scale), "regressor field 'scale': expected positive values")
        reg.coef = floats(obj["coef"], "coef", n)
        reg.intercept = finite(obj["intercept"], "intercept")
        if reg.nonneg:  # a launch floor and costs per unit of work: negative ones predict negative joules
            non_negative(reg.coef, "coef")
            non_negative([reg.intercept], "intercept")
            check(all(m == 0.0 for m in reg.mean), "regressor field 'mean': expected zeros (a non-negative fit is uncentred)")
        return reg
