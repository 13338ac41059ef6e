"""Wall energy from resource features: the GPU's own energy plus the rest of the machine.

With resource features (``all``) the default strategy applies one physical model
to every node at every level: ``E ≈ a·gpu_energy_j + b·latency_s +
c·latency_s·gpu/100 (+ d·cpu_energy_j)``, no intercept, fitted to minimise the
mean relative error over all training nodes.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from pytest_irene.engine.predict.regressors import MIN_ENERGY_J, weighted_lstsq
from pytest_irene.engine.predict.strategies.forest import Forest

#: Inputs of the wall-energy model, in order of preference (``latency_s*gpu`` is the
#: product ``latency_s·gpu/100``; ``cpu_energy_j`` only where RAPL was readable).
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


def fit_relative_l1(
    A: np.ndarray, y: np.ndarray, iterations: int = 30, weights: np.ndarray | None = None
) -> np.ndarray:
    """Minimise the mean *absolute relative* error ``Σ wᵢ·|A·c − y| / y`` (the reported
    metric) by iteratively reweighted least squares, started from the ``1/y²`` fit.
    ``weights`` (default 1) weigh the samples, e.g. so that each level counts alike."""
    w = (1.0 if weights is None else np.asarray(weights, dtype=np.float64)) / np.maximum(y, MIN_ENERGY_J) ** 2
    coef = weighted_lstsq(A, y, w, ridge=0.0)
    for _ in range(iterations):
        rel = np.abs(A @ coef - y) / np.maximum(y, MIN_ENERGY_J)
        coef = weighted_lstsq(A, y, w / np.maximum(rel, 1e-4), ridge=0.0)
    return coef
