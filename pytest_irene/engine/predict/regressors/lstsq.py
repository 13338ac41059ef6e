"""Deterministic weighted least squares, the one solver every regressor and the glue model use."""

from __future__ import annotations

import numpy as np

#: Smallest energy used as a weight denominator / log argument, joules.
MIN_ENERGY_J = 1e-9
#: Ridge penalty on standardised coefficients: keeps collinear features (flops vs
#: batch·seq at fixed width) from exploding without visibly biasing the fit.
DEFAULT_RIDGE = 1e-6


def weighted_lstsq(
    X: np.ndarray, y: np.ndarray, w: np.ndarray | None, ridge: float | np.ndarray = DEFAULT_RIDGE
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


def columns(X: np.ndarray, names: list[str] | tuple[str, ...] | None, wanted: list[str]) -> np.ndarray:
    """The ``wanted`` columns of ``X``, whose columns are ``names`` (``None``: already ``wanted``)."""
    X = np.asarray(X, dtype=np.float64)
    if names is None:
        return X
    order = list(names)
    return X[:, [order.index(f) for f in wanted]]
