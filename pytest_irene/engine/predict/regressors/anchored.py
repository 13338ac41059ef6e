"""Anchored regressor: a physical linear base in work, bent by a small log-space correction.

Model features only. ``E ≈ e0 + c1·flops + c2·bytes`` (a launch floor plus costs
per flop and per byte, non-negative, fitted for relative error) extrapolates sanely
to longer inputs and other widths; a ridge-shrunk log-space correction adds the
curvature (small inputs under-use the GPU) and two :class:`ResidualMemory`
corrections recall shapes that were measured (GPU kernels are not smooth in their
shapes).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pytest_irene.engine.predict.regressors.linear import LinearRegressor
from pytest_irene.engine.predict.regressors.lstsq import MIN_ENERGY_J, columns
from pytest_irene.engine.predict.regressors.memory import (
    MEMORY_BATCH_LOG_WIDTH,
    MEMORY_LOG_WIDTH,
    ResidualMemory,
)
from pytest_irene.validate import check, finite, require


#: Inputs of the anchored regressor's linear base: what the work physically is.
ANCHOR_BASE = ("flops", "mem_bytes")
#: Inputs of the anchored regressor's log-space correction.
ANCHOR_CORRECTION = ("flops", "mem_bytes", "batch_seq", "seq_len", "batch_size", "bytes_per_element")
#: Ridge of the log-space correction (relative to the sample count, on standardised
#: log features): shrinks directions the data cannot separate (at one width, flops,
#: bytes and batch·seq move together) so they do not extrapolate.
CORRECTION_RIDGE = 0.03
#: Shape coordinates of the residual memory (log space).
ANCHOR_MEMORY = ("flops", "mem_bytes", "batch_size", "seq_len")


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
    floor_j: float = MIN_ENERGY_J
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
                ResidualMemory(mem, [MEMORY_BATCH_LOG_WIDTH if f == "batch_size" else MEMORY_LOG_WIDTH for f in mem]),
                ResidualMemory(mem, [MEMORY_LOG_WIDTH for _ in mem]),
            ]
            if memory
            else [],
        )

    def _cols(self, X: np.ndarray, names: Sequence[str], sub: Sequence[str]) -> np.ndarray:
        return columns(X, names, list(sub))

    def fit(self, X: np.ndarray, y: np.ndarray, names: Sequence[str] | None = None) -> AnchoredRegressor:
        """Fit on ``X`` (columns ``names``; ``None``: exactly :attr:`features`) and energies ``y`` (J)."""
        names = list(self.features) if names is None else list(names)
        y = np.asarray(y, dtype=np.float64)
        self.base.fit(self._cols(X, names, self.base.features), y)
        self.floor_j = max(float(np.min(y)) * 0.05, MIN_ENERGY_J) if len(y) else MIN_ENERGY_J
        b = self._base(self._cols(X, names, self.base.features))
        resid = np.log(np.maximum(y, MIN_ENERGY_J)) - np.log(b)
        self.correction.fit(self._cols(X, names, self.correction.features), resid)
        resid = np.log(np.maximum(y, MIN_ENERGY_J)) - np.log(self._smooth(X, names))
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

    def predict(self, X: np.ndarray, names: Sequence[str] | None = None) -> np.ndarray:
        """Predicted energies (J) for ``X`` (columns ``names``; ``None``: exactly :attr:`features`)."""
        names = list(self.features) if names is None else list(names)
        log_corr = np.zeros(len(X))
        for mem in self.memories:
            log_corr += mem.predict(self._cols(X, names, mem.features))
        return self._smooth(X, names) * np.exp(log_corr)

    def base_terms(self, X: np.ndarray, names: Sequence[str] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The physical parts of a prediction: per row the base's floor and per-input cost
        terms (J, columns ``[floor] + base.features``) and the multiplier (correction and
        memories) that bends their sum into :meth:`predict`."""
        names = list(self.features) if names is None else list(names)
        terms = self.base.terms(self._cols(X, names, self.base.features))
        c = np.clip(self.correction.predict(self._cols(X, names, self.correction.features)), -self.clip, self.clip)
        for mem in self.memories:
            c = c + mem.predict(self._cols(X, names, mem.features))
        return terms, np.exp(c)

    def scaled(self, floor_factor: float, cost_factors: Sequence[float]) -> AnchoredRegressor:
        """A copy for another machine: the base's floor and its per-input costs multiplied,
        the shape knowledge (correction and memories) kept."""
        return AnchoredRegressor(
            base=self.base.scaled(floor_factor, cost_factors),
            correction=self.correction,
            clip=self.clip,
            memories=list(self.memories),
            floor_j=self.floor_j * float(floor_factor),
        )

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
        obj = require(obj, ("base", "correction", "clip", "memories"), "anchored regressor")
        check(isinstance(obj["memories"], list), "anchored regressor field 'memories': expected a list")
        base = LinearRegressor.from_json(obj["base"])
        # The base is the physics (floor + costs per unit of work) the rest multiplies: a base
        # free to go negative would turn every bend of the correction into negative joules.
        check(base.nonneg, "anchored regressor field 'base.nonneg': expected true (a non-negative base)")
        clip = finite(obj["clip"], "clip", "anchored regressor")
        check(clip >= 0, f"anchored regressor field 'clip': expected a bound >= 0 on the log correction, got {clip!r}")
        # Files written before ``floor_j`` existed predicted with the minimal floor.
        floor_j = finite(obj.get("floor_j", MIN_ENERGY_J), "floor_j", "anchored regressor")
        check(floor_j > 0, f"anchored regressor field 'floor_j': expected a positive energy (J), got {floor_j!r}")
        return cls(
            base=base,
            correction=LinearRegressor.from_json(obj["correction"]),
            clip=clip,
            memories=[ResidualMemory.from_json(m) for m in obj["memories"]],
            floor_j=floor_j,
        )
