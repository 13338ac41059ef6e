"""ML-level regressors: one small linear model per primitive type, plus a generic one.

Why linear: the energy of an ML primitive (``Linear``, ``MatMul``, ``Softmax``)
is, to first order, proportional to the work it does (flops) and the bytes it
moves; a linear model on a handful of features extrapolates to input sizes and
widths the training data never had, where flexible learners memorise shapes.

Everything stored is a plain list of floats (no pickle): a regressor is
``to_json()``-able and re-created with :func:`regressor_from_json`, which
validates shapes and rejects NaN/inf weights. Prediction is numpy only.

Building blocks:

- :class:`LinearRegressor`: standardised features, ordinary or weighted least
  squares (optionally non-negative, ridge-shrunk, on ``log`` inputs and/or a ``log``
  target). With ``weighting="relative"`` each sample is weighted by ``1/y²`` so the
  fit minimises *relative* error, which is what every reported error measures.
- :class:`AnchoredRegressor` (model features): a non-negative, relative-error
  linear base in work (``E ≈ e0 + c1·flops + c2·bytes``: a launch floor plus
  costs per flop and per byte, which extrapolates sanely to longer inputs and
  other widths), times a ridge-shrunk log-space correction (the curvature: small
  inputs under-use the GPU), times two :class:`ResidualMemory` corrections for
  shapes that were measured (GPU kernels are not smooth in their shapes).
- :class:`ResidualMemory`: kernel-smoothed log-residuals at measured shapes; it
  vanishes away from them, so extrapolation is left to the base.

:class:`LeafRegressors` bundles one regressor per type and the generic
regressor used for types never seen in training (RMSNorm, SiLU, ...).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pytest_irene.errors import ModelFileError

#: Smallest energy used as a weight denominator / log argument, joules.
_MIN_ENERGY_J = 1e-9
#: Ridge penalty on standardised coefficients: keeps collinear features (flops vs
#: batch·seq at fixed width) from exploding without visibly biasing the fit.
_RIDGE = 1e-6


def _check(cond: bool, what: str) -> None:
    if not cond:
        raise ModelFileError(what)


def _floats(obj: Any, name: str, length: int | None = None) -> list[float]:
    """Validate a list of finite floats (optionally of a given length)."""
    _check(isinstance(obj, list), f"regressor field '{name}': expected a list of numbers, got {type(obj).__name__}")
    out: list[float] = []
    for v in obj:
        _check(
            isinstance(v, (int, float)) and not isinstance(v, bool),
            f"regressor field '{name}': expected numbers, got {v!r}",
        )
        _check(math.isfinite(float(v)), f"regressor field '{name}': weight is NaN or infinite ({v!r})")
        out.append(float(v))
    if length is not None:
        _check(len(out) == length, f"regressor field '{name}': expected {length} values, got {len(out)}")
    return out


def _finite(value: Any, name: str) -> float:
    _check(
        isinstance(value, (int, float)) and not isinstance(value, bool),
        f"regressor field '{name}': expected a number, got {value!r}",
    )
    _check(math.isfinite(float(value)), f"regressor field '{name}': weight is NaN or infinite ({value!r})")
    return float(value)


def _require(obj: Any, keys: Sequence[str], what: str) -> dict[str, Any]:
    _check(isinstance(obj, dict), f"{what}: expected an object, got {type(obj).__name__}")
    for key in keys:
        _check(key in obj, f"{what}: missing field '{key}'")
    return obj


def weighted_lstsq(
    X: np.ndarray, y: np.ndarray, w: np.ndarray | None, ridge: float | np.ndarray = _RIDGE
) -> np.ndarray:
    """Solve ``min Σ w·(X·b − y)² + Σ ridge·b²`` deterministically (normal equations).

    ``X`` already holds any intercept column; ``ridge`` is a scalar or one value per
    column, relative to the total weight. Normal equations with a small ridge are
    bit-reproducible and stable for the few, standardised columns used here.
    """
    if w is None:
        w = np.ones(len(y))
    Xw = X * w[:, None]
    penalty = np.broadcast_to(np.asarray(ridge, dtype=np.float64), (X.shape[1],))
    A = X.T @ Xw + np.diag(penalty) * max(float(np.sum(w)), 1.0)
    rhs = Xw.T @ y
    try:
        return np.linalg.solve(A, rhs)
    except np.linalg.LinAlgError:
        return np.linalg.lstsq(A, rhs, rcond=None)[0]


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
    ridge: float = _RIDGE
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

    def fit(self, X: np.ndarray, y: np.ndarray) -> LinearRegressor:
        self.lo, self.hi = [], []
        Z = self._transform(X)
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
        target = np.log(np.maximum(y, _MIN_ENERGY_J)) if self.log_target else y
        w = None
        if self.weighting == "relative" and not self.log_target:
            w = 1.0 / np.maximum(y, _MIN_ENERGY_J) ** 2
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
        w = np.ones(len(y)) if self.weighting != "relative" else 1.0 / np.maximum(y, _MIN_ENERGY_J) ** 2
        sw = np.sqrt(w)
        beta = nnls(A * sw[:, None], y * sw)[0] if len(y) else np.zeros(A.shape[1])
        self.mean, self.scale = [0.0] * Z.shape[1], scale.tolist()
        if self.intercept_:
            self.intercept, self.coef = float(beta[0]), beta[1:].tolist()
        else:
            self.intercept, self.coef = 0.0, beta.tolist()
        return self

    def predict(self, X: np.ndarray) -> np.ndarray:
        S = (self._transform(X) - np.asarray(self.mean)) / np.asarray(self.scale)
        out = S @ np.asarray(self.coef) + self.intercept
        return np.exp(np.clip(out, -50.0, 50.0)) if self.log_target else out

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
        obj = _require(
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
        feats = obj["features"]
        _check(
            isinstance(feats, list) and all(isinstance(f, str) for f in feats),
            "linear regressor field 'features': expected a list of names",
        )
        n = len(feats)
        reg = cls(
            features=list(feats),
            log_inputs=bool(obj["log_inputs"]),
            log_target=bool(obj["log_target"]),
            weighting=str(obj["weighting"]),
            intercept_=bool(obj["fit_intercept"]),
            nonneg=bool(obj["nonneg"]),
            clip_inputs=bool(obj["clip_inputs"]),
            # A fitting hyper-parameter only (prediction does not use it); older files lack it.
            ridge=_finite(obj.get("ridge", _RIDGE), "ridge"),
        )
        if reg.clip_inputs:
            reg.lo = _floats(obj["lo"], "lo", n)
            reg.hi = _floats(obj["hi"], "hi", n)
        reg.mean = _floats(obj["mean"], "mean", n)
        reg.scale = _floats(obj["scale"], "scale", n)
        _check(all(s > 0 for s in reg.scale), "regressor field 'scale': expected positive values")
        reg.coef = _floats(obj["coef"], "coef", n)
        reg.intercept = _finite(obj["intercept"], "intercept")
        return reg


#: Inputs of the anchored regressor's linear base: what the work physically is.
ANCHOR_BASE = ("flops", "mem_bytes")
#: Inputs of the anchored regressor's log-space correction.
ANCHOR_CORRECTION = ("flops", "mem_bytes", "batch_seq", "seq_len", "batch_size")
#: Ridge of the log-space correction (relative to the sample count, on standardised
#: log features): shrinks directions the data cannot separate (at one width, flops,
#: bytes and batch·seq move together) so they do not extrapolate.
CORRECTION_RIDGE = 0.03
#: Shape coordinates of the residual memory (log space).
ANCHOR_MEMORY = ("flops", "mem_bytes", "batch_size", "seq_len")
#: Kernel bandwidth of the memory in log units: 5 % apart is "another shape".
MEMORY_BANDWIDTH = 0.05
#: Bandwidth along log(batch): efficiency of a per-item shape changes slowly with the batch.
MEMORY_BATCH_BANDWIDTH = 0.3
_EXTENSIVE = frozenset({"flops", "mem_bytes", "batch_seq", "params"})


@dataclass
class AnchoredRegressor:
    """Relative-error linear base in work, times a log-space correction and memories.

    ``E = base(x) · exp(corr(log x) + Σ memory(x))`` where ``base`` is a non-negative
    ``1/E²``-weighted linear fit on :data:`ANCHOR_BASE`, ``corr`` a ridge-shrunk
    linear fit of ``log(E/base)`` on the logs of :data:`ANCHOR_CORRECTION`, clipped so
    it bends the base by at most ``exp(±clip)``, and the memories recall what is
    left at measured shapes (coarse across batch sizes, then exact).
    """

    base: LinearRegressor
    correction: LinearRegressor
    clip: float = 0.7
    memories: list[ResidualMemory] = field(default_factory=list)
    floor_j: float = _MIN_ENERGY_J
    """Smallest base value (5 % of the smallest training energy): keeps ``log(E/base)`` finite."""

    kind = "anchored"

    @property
    def features(self) -> list[str]:
        mem = {f for m in self.memories for f in m.features}
        return sorted(set(self.base.features) | set(self.correction.features) | mem)

    @classmethod
    def new(cls, available: Sequence[str], memory: bool = True) -> AnchoredRegressor:
        base = [f for f in ANCHOR_BASE if f in available]
        corr = [f for f in ANCHOR_CORRECTION if f in available]
        mem = [f for f in ANCHOR_MEMORY if f in available]
        return cls(
            base=LinearRegressor(base, weighting="relative", nonneg=True),
            correction=LinearRegressor(corr, log_inputs=True, ridge=CORRECTION_RIDGE),
            # Coarse then fine: the first memory shares a per-item shape's residual
            # across neighbouring batch sizes (reaches batch 32 from 24); the second,
            # fitted on what is left, pins shapes measured exactly.
            memories=[
                ResidualMemory(mem, [MEMORY_BATCH_BANDWIDTH if f == "batch_size" else MEMORY_BANDWIDTH for f in mem]),
                ResidualMemory(mem, [MEMORY_BANDWIDTH for _ in mem]),
            ]
            if memory
            else [],
        )

    def _cols(self, X: np.ndarray, names: Sequence[str], sub: Sequence[str]) -> np.ndarray:
        idx = [list(names).index(f) for f in sub]
        return np.asarray(X, dtype=np.float64)[:, idx]

    def fit_named(self, X: np.ndarray, names: Sequence[str], y: np.ndarray) -> AnchoredRegressor:
        y = np.asarray(y, dtype=np.float64)
        self.base.fit(self._cols(X, names, self.base.features), y)
        self.floor_j = max(float(np.min(y)) * 0.05, _MIN_ENERGY_J) if len(y) else _MIN_ENERGY_J
        b = self._base(self._cols(X, names, self.base.features))
        resid = np.log(np.maximum(y, _MIN_ENERGY_J)) - np.log(b)
        self.correction.fit(self._cols(X, names, self.correction.features), resid)
        resid = np.log(np.maximum(y, _MIN_ENERGY_J)) - np.log(self._smooth(X, names))
        for mem in self.memories:
            Xm = self._cols(X, names, mem.features)
            mem.fit(Xm, resid)
            resid = resid - mem.predict(Xm)
        return self

    def _base(self, Xb: np.ndarray) -> np.ndarray:
        return np.maximum(self.base.predict(Xb), self.floor_j)

    def _smooth(self, X: np.ndarray, names: Sequence[str]) -> np.ndarray:
        b = self._base(self._cols(X, names, self.base.features))
        c = np.clip(self.correction.predict(self._cols(X, names, self.correction.features)), -self.clip, self.clip)
        return b * np.exp(c)

    def predict_named(self, X: np.ndarray, names: Sequence[str]) -> np.ndarray:
        log_corr = np.zeros(len(X))
        for mem in self.memories:
            log_corr += mem.predict(self._cols(X, names, mem.features))
        return self._smooth(X, names) * np.exp(log_corr)

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "base": self.base.to_json(),
            "correction": self.correction.to_json(),
            "clip": self.clip,
            "floor_j": self.floor_j,
            "memories": [m.to_json() for m in self.memories],
        }

    @classmethod
    def from_json(cls, obj: Any) -> AnchoredRegressor:
        obj = _require(obj, ("base", "correction", "clip", "memories"), "anchored regressor")
        _check(isinstance(obj["memories"], list), "anchored regressor field 'memories': expected a list")
        return cls(
            base=LinearRegressor.from_json(obj["base"]),
            correction=LinearRegressor.from_json(obj["correction"]),
            clip=_finite(obj["clip"], "clip"),
            memories=[ResidualMemory.from_json(m) for m in obj["memories"]],
            # Files written before ``floor_j`` existed predicted with the minimal floor.
            floor_j=_finite(obj.get("floor_j", _MIN_ENERGY_J), "floor_j"),
        )


@dataclass
class ResidualMemory:
    """Kernel-smoothed memory of log-residuals at the input shapes seen in training.

    GPU kernels are not smooth in their shapes (a batched matmul at sequence 160
    costs more than at 192; tiny matrices pay a fixed launch cost), so a smooth
    model misses by 5-10 % on shapes it has *measured*. The memory stores, per
    distinct shape (log features), the mean ``log(E/smooth)`` and returns the
    Nadaraya-Watson average ``Σ kᵢ·nᵢ·rᵢ / (prior + Σ kᵢ·nᵢ)`` with a narrow Gaussian
    kernel (``bandwidth`` in log units). Far from every stored shape the weights
    vanish and the correction falls back to 0: new widths and longer inputs are
    left to the physics of the smooth base.
    """

    features: list[str]
    """Shape features (extensive ones are divided by ``batch_size`` when it is present)."""
    bandwidth: list[float] = field(default_factory=list)
    """Gaussian kernel width per coordinate, in log units."""
    prior: float = 0.25
    """Pseudo-count of the zero-correction prior: one exact match of weight 1 gets 80 %."""
    points: list[list[float]] = field(default_factory=list)
    """Distinct training shapes (log coordinates)."""
    residuals: list[float] = field(default_factory=list)
    """Mean log-residual at each point."""
    counts: list[float] = field(default_factory=list)
    """Number of distinct measurements merged into each point."""

    def __post_init__(self) -> None:
        if not self.bandwidth:
            self.bandwidth = [MEMORY_BATCH_BANDWIDTH if f == "batch_size" else MEMORY_BANDWIDTH for f in self.features]

    def _z(self, X: np.ndarray) -> np.ndarray:
        """Log coordinates; extensive features are taken *per batch item* so that a
        shape measured at batch 24 informs batch 32 (work scales with the batch,
        kernel efficiency with the per-item shape), through a wider batch bandwidth."""
        X = np.maximum(np.asarray(X, dtype=np.float64), 0.0)
        if "batch_size" in self.features:
            b = np.maximum(X[:, self.features.index("batch_size")], 1.0)
            X = X.copy()
            for i, f in enumerate(self.features):
                if f in _EXTENSIVE:
                    X[:, i] = X[:, i] / b
        return np.log1p(X)

    def fit(self, X: np.ndarray, resid: np.ndarray) -> ResidualMemory:
        Z = np.round(self._z(X), 9)
        if len(Z) == 0:
            self.points, self.residuals, self.counts = [], [], []
            return self
        # Identical layers of one run share one measurement: count distinct measurements,
        # not nodes, so twelve copies of a layer do not pose as twelve observations.
        rows = np.unique(np.hstack([Z, np.round(np.asarray(resid, dtype=np.float64), 12)[:, None]]), axis=0)
        Z, resid = rows[:, :-1], rows[:, -1]
        uniq, inverse, counts = np.unique(Z, axis=0, return_inverse=True, return_counts=True)
        inverse = inverse.reshape(-1)
        sums = np.zeros(len(uniq))
        np.add.at(sums, inverse, np.asarray(resid, dtype=np.float64))
        self.points = uniq.tolist()
        self.residuals = (sums / counts).tolist()
        self.counts = counts.astype(np.float64).tolist()
        return self

    def predict(self, X: np.ndarray) -> np.ndarray:
        if not self.points or len(X) == 0:
            return np.zeros(len(X))
        Zq = self._z(X)
        uq, inverse = np.unique(Zq, axis=0, return_inverse=True)
        P = np.asarray(self.points)
        r = np.asarray(self.residuals)
        n = np.asarray(self.counts)
        out = np.empty(len(uq))
        for s in range(0, len(uq), 256):  # bounded memory: 256 × M × k
            d2 = (((uq[s : s + 256, None, :] - P[None, :, :]) / np.asarray(self.bandwidth)) ** 2).sum(axis=2)
            k = np.exp(-0.5 * d2) * n
            out[s : s + 256] = (k @ r) / (self.prior + k.sum(axis=1))
        return out[inverse.reshape(-1)]

    def to_json(self) -> dict[str, Any]:
        return {
            "features": list(self.features),
            "bandwidth": self.bandwidth,
            "prior": self.prior,
            "points": self.points,
            "residuals": self.residuals,
            "counts": self.counts,
        }

    @classmethod
    def from_json(cls, obj: Any) -> ResidualMemory:
        obj = _require(obj, ("features", "bandwidth", "prior", "points", "residuals", "counts"), "residual memory")
        feats = obj["features"]
        _check(
            isinstance(feats, list) and all(isinstance(f, str) for f in feats),
            "residual memory field 'features': expected a list of names",
        )
        _check(isinstance(obj["points"], list), "residual memory field 'points': expected a list")
        points = [_floats(p, "points", len(feats)) for p in obj["points"]]
        m = len(points)
        mem = cls(list(feats), _floats(obj["bandwidth"], "bandwidth", len(feats)), _finite(obj["prior"], "prior"))
        _check(
            all(b > 0 for b in mem.bandwidth) and mem.prior > 0,
            "residual memory: bandwidth and prior must be positive",
        )
        mem.points = points
        mem.residuals = _floats(obj["residuals"], "residuals", m)
        mem.counts = _floats(obj["counts"], "counts", m)
        return mem


Regressor = LinearRegressor | AnchoredRegressor


def regressor_from_json(obj: Any) -> Regressor:
    """Re-create a regressor from :meth:`to_json` output; ``ModelFileError`` on bad content."""
    _check(isinstance(obj, dict), f"regressor: expected an object, got {type(obj).__name__}")
    kind = obj.get("kind")
    if kind == LinearRegressor.kind:
        return LinearRegressor.from_json(obj)
    if kind == AnchoredRegressor.kind:
        return AnchoredRegressor.from_json(obj)
    raise ModelFileError(f"regressor: unknown kind {kind!r} (expected 'linear' or 'anchored')")


def _fit(reg: Regressor, X: np.ndarray, names: Sequence[str], y: np.ndarray) -> Regressor:
    if isinstance(reg, AnchoredRegressor):
        return reg.fit_named(X, names, y)
    idx = [list(names).index(f) for f in reg.features]
    return reg.fit(X[:, idx], y)


def _predict(reg: Regressor, X: np.ndarray, names: Sequence[str]) -> np.ndarray:
    if isinstance(reg, AnchoredRegressor):
        return reg.predict_named(X, names)
    idx = [list(names).index(f) for f in reg.features]
    return reg.predict(X[:, idx])


#: Leaf regressor flavours: ``paper`` = ordinary least squares on standardised
#: features (IrEne); ``anchored`` = :class:`AnchoredRegressor`; ``relative`` =
#: ``1/E²``-weighted least squares; ``base`` = the anchored regressor's non-negative
#: base alone (the generic regressor of ``anchored``).
LEAF_KINDS = ("paper", "anchored", "relative", "base")


def new_regressor(kind: str, features: Sequence[str]) -> Regressor:
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
            self.per_type[t] = _fit(new_regressor(self.kind, self.features), X[mask], self.features, y[mask])
        # For unseen types only the physics survives: a launch floor plus costs per flop
        # and per byte, fitted over every primitive (leave-one-type-out on irene-pc1:
        # ~30 % mean error, against 40-60 % for richer fits that bend on one type's data).
        generic_kind = {"paper": "paper", "relative": "relative"}.get(self.kind, "base")
        self.generic = _fit(new_regressor(generic_kind, self.features), X, self.features, y)
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
                out[mask] = _predict(reg, X[mask], self.features)
                generic[mask] = False
        if generic.any():
            out[generic] = _predict(self.generic, X[generic], self.features)
        # Energy is positive; a linear fit can dip below zero far outside its range.
        return np.maximum(out, _MIN_ENERGY_J), generic

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
        obj = _require(obj, ("features", "kind", "min_samples", "per_type", "generic"), "leaf regressors")
        feats = obj["features"]
        _check(
            isinstance(feats, list) and all(isinstance(f, str) for f in feats),
            "leaf regressors field 'features': expected a list of names",
        )
        _check(obj["kind"] in LEAF_KINDS, f"leaf regressors field 'kind': expected one of {LEAF_KINDS}")
        _check(isinstance(obj["per_type"], dict), "leaf regressors field 'per_type': expected an object")
        out = cls(features=list(feats), kind=obj["kind"], min_samples=int(obj["min_samples"]))
        for t, r in obj["per_type"].items():
            try:
                reg = regressor_from_json(r)
            except ModelFileError as exc:
                raise ModelFileError(f"leaf regressor for type {t!r}: {exc}") from None
            _check(set(reg.features) <= set(feats), f"leaf regressor for {t!r} uses features not in {feats}")
            out.per_type[str(t)] = reg
        try:
            out.generic = regressor_from_json(obj["generic"])
        except ModelFileError as exc:
            raise ModelFileError(f"generic leaf regressor: {exc}") from None
        _check(set(out.generic.features) <= set(feats), "generic leaf regressor uses unknown features")
        return out
