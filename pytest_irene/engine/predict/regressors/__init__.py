"""ML-level regressors: one small model per primitive type, plus a generic one.

Everything stored is a plain list of floats (no pickle): a regressor is
``to_json()``-able and re-created with :func:`regressor_from_json`, which
validates shapes and rejects NaN/inf weights. Prediction is numpy only.

One module per building block:

- :mod:`.linear`: :class:`LinearRegressor`, standardised (weighted, optionally
  non-negative, log) least squares: the paper's ML-level model.
- :mod:`.anchored`: :class:`AnchoredRegressor` (model features), a non-negative,
  relative-error linear base in work (a launch floor plus costs per flop and per
  byte) times a clipped log-space correction and residual memories.
- :mod:`.memory`: :class:`ResidualMemory`, kernel-smoothed log-residuals at
  measured shapes; it vanishes away from them, so extrapolation is left to the base.
- :mod:`.leaves`: :class:`LeafRegressors`, one regressor per type and the generic
  regressor used for types never seen in training (RMSNorm, SiLU, ...).
- :mod:`.lstsq`: the deterministic weighted least-squares solver they share.
"""

from pytest_irene.engine.predict.regressors.anchored import (
    ANCHOR_BASE,
    ANCHOR_CORRECTION,
    ANCHOR_MEMORY,
    AnchoredRegressor,
)
from pytest_irene.engine.predict.regressors.leaves import (
    LEAF_KINDS,
    LeafRegressors,
    Regressor,
    new_regressor,
    regressor_from_json,
)
from pytest_irene.engine.predict.regressors.linear import LinearRegressor
from pytest_irene.engine.predict.regressors.lstsq import MIN_ENERGY_J, weighted_lstsq
from pytest_irene.engine.predict.regressors.memory import MEMORY_BATCH_LOG_WIDTH, MEMORY_LOG_WIDTH, ResidualMemory

__all__ = [
    "ANCHOR_BASE",
    "ANCHOR_CORRECTION",
    "ANCHOR_MEMORY",
    "LEAF_KINDS",
    "MEMORY_BATCH_LOG_WIDTH",
    "MEMORY_LOG_WIDTH",
    "MIN_ENERGY_J",
    "AnchoredRegressor",
    "LeafRegressors",
    "LinearRegressor",
    "Regressor",
    "ResidualMemory",
    "new_regressor",
    "regressor_from_json",
    "weighted_lstsq",
]
