"""The paper's child weighting ``α = 1 + tanh(W·φ(f) + b)/τ`` (End2End and StepWise)."""

from __future__ import annotations

from dataclasses import dataclass
from itertools import combinations_with_replacement
from typing import Any

import numpy as np

from pytest_irene.validate import check, finite, floats, require


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
        obj = require(obj, ("degree", "tau", "mean", "scale", "poly_mean", "poly_scale", "W", "b"), "alpha weighting")
        degree = obj["degree"]
        check(
            isinstance(degree, int) and not isinstance(degree, bool) and 1 <= degree <= 3,
            "alpha weighting field 'degree': expected 1, 2 or 3",
        )
        n_poly = len(_poly_index(n_features, degree))
        tau = finite(obj["tau"], "tau", OWNER)
        check(tau > 0, "alpha weighting field 'tau': expected > 0")
        scale = floats(obj["scale"], "scale", n_features, OWNER)
        poly_scale = floats(obj["poly_scale"], "poly_scale", n_poly, OWNER)
        check(all(s > 0 for s in scale + poly_scale), "alpha weighting: scales must be positive")
        return cls(
            degree=degree,
            tau=tau,
            mean=floats(obj["mean"], "mean", n_features, OWNER),
            scale=scale,
            poly_mean=floats(obj["poly_mean"], "poly_mean", n_poly, OWNER),
            poly_scale=poly_scale,
            W=floats(obj["W"], "W", n_poly, OWNER),
            b=finite(obj["b"], "b", OWNER),
        )


#: What the alpha weighting's field errors call it.
OWNER = "alpha weighting"


def _poly(S: np.ndarray, degree: int) -> np.ndarray:
    cols = [np.prod(S[:, list(c)], axis=1) for c in _poly_index(S.shape[1], degree)]
    return np.stack(cols, axis=1) if cols else np.zeros((len(S), 0))


