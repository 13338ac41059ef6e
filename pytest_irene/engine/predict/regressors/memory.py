"""Residual memory: kernel-smoothed log-residuals at the shapes measured in training."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pytest_irene.validate import check, finite, floats, names, require

#: Gaussian kernel width of the memories, in log units of each shape coordinate:
#: shapes 5 % apart count as another shape.
MEMORY_LOG_WIDTH = 0.05
#: Kernel width along log(batch), log units: efficiency of a per-item shape changes slowly with the batch.
MEMORY_BATCH_LOG_WIDTH = 0.3
#: Most query × point × coordinate floats one prediction block holds (2**24: 128 MiB).
CHUNK_ELEMENTS = 2**24
EXTENSIVE_FEATURES = frozenset({"flops", "mem_bytes", "batch_seq", "params"})


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
            self.bandwidth = [MEMORY_BATCH_LOG_WIDTH if f == "batch_size" else MEMORY_LOG_WIDTH for f in self.features]

    def _z(self, X: np.ndarray) -> np.ndarray:
        """Log coordinates; extensive features are taken *per batch item* so that a
        shape measured at batch 24 informs batch 32 (work scales with the batch,
        kernel efficiency with the per-item shape), through a wider batch bandwidth."""
        X = np.maximum(np.asarray(X, dtype=np.float64), 0.0)
        if "batch_size" in self.features:
            b = np.maximum(X[:, self.features.index("batch_size")], 1.0)
            X = X.copy()
            for i, f in enumerate(self.features):
                if f in EXTENSIVE_FEATURES:
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
        # Bounded memory: rows × M × k floats per block; 256 rows at once unless a memory of
        # many points (a large calibration, an edited file) would make that gigabytes.
        rows = int(min(256, max(1, CHUNK_ELEMENTS // max(P.size, 1))))
        for s in range(0, len(uq), rows):
            d2 = (((uq[s : s + rows, None, :] - P[None, :, :]) / np.asarray(self.bandwidth)) ** 2).sum(axis=2)
            k = np.exp(-0.5 * d2) * n
            out[s : s + rows] = (k @ r) / (self.prior + k.sum(axis=1))
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
        obj = require(obj, ("features", "bandwidth", "prior", "points", "residuals", "counts"), "residual memory")
        feats = names(obj["features"], "residual memory field 'features'")
        owner = "residual memory"
        check(isinstance(obj["points"], list), "residual memory field 'points': expected a list")
        points = [floats(p, f"points[{i}]", len(feats), owner) for i, p in enumerate(obj["points"])]
        m = len(points)
        mem = cls(list(feats), floats(obj["bandwidth"], "bandwidth", len(feats), owner), finite(obj["prior"], "prior", owner))
        check(
            all(b > 0 for b in mem.bandwidth) and mem.prior > 0,
            "residual memory: bandwidth and prior must be positive",
        )
        mem.points = points
        mem.residuals = floats(obj["residuals"], "residuals", m, owner)
        mem.counts = floats(obj["counts"], "counts", m, owner)
        # Counts weigh the kernel: a negative one can cancel the prior and divide by zero.
        check(all(c > 0 for c in mem.counts), "residual memory field 'counts': expected positive counts of measurements")
        return mem
