"""ML-level regressors: fitting, generic fallback, JSON round trip, validation."""

from __future__ import annotations

import json

import numpy as np
import pytest

from pytest_irene.errors import ModelFileError
from pytest_irene.engine.predict.regressors import (
    AnchoredRegressor,
    LeafRegressors,
    LinearRegressor,
    regressor_from_json,
)

NAMES = ["batch_size", "seq_len", "batch_seq", "flops", "mem_bytes"]


def synthetic(n: int = 40, seed: int = 0, per_flop: float = 2e-11, per_byte: float = 1e-10):
    rng = np.random.default_rng(seed)
    b = rng.choice([8.0, 16.0, 24.0, 32.0], n)
    s = rng.choice([32.0, 64.0, 128.0, 256.0], n)
    flops = b * s * 768 * 768 * 2
    mem = b * s * 768 * 4 * 3
    X = np.stack([b, s, b * s, flops, mem], axis=1)
    y = 1e-3 + per_flop * flops + per_byte * mem
    return X, y


def test_linear_regressor_recovers_linear_energy():
    X, y = synthetic()
    reg = LinearRegressor(NAMES).fit(X, y)
    np.testing.assert_allclose(reg.predict(X), y, rtol=1e-4)


def test_relative_weighting_minimises_relative_error_on_small_nodes():
    X, y = synthetic()
    noisy = y * (1 + 0.3 * (X[:, 3] == X[:, 3].max()))  # one outlier group of large nodes
    plain = LinearRegressor(NAMES).fit(X, noisy)
    rel = LinearRegressor(NAMES, weighting="relative").fit(X, noisy)
    small = X[:, 3] == X[:, 3].min()
    err = lambda p: np.mean(np.abs(p[small] - y[small]) / y[small])
    assert err(rel.predict(X)) <= err(plain.predict(X)) + 1e-12


def test_anchored_regressor_extrapolates_along_its_linear_base():
    X, y = synthetic(80)
    train = X[:, 1] <= 128
    reg = AnchoredRegressor.new(NAMES).fit(X[train], y[train], NAMES)
    pred = reg.predict(X[~train], NAMES)
    assert np.max(np.abs(pred - y[~train]) / y[~train]) < 0.05


def test_leaf_regressors_use_generic_for_unseen_types():
    X, y = synthetic(60)
    types = ["Linear"] * 30 + ["MatMul"] * 30
    leaves = LeafRegressors(NAMES).fit(types, X, y)
    pred, generic = leaves.predict(["Linear", "RMSNorm", "SiLU"], X[:3])
    assert generic.tolist() == [False, True, True]
    assert np.all(pred > 0)


def test_json_round_trip_is_exact_and_plain():
    X, y = synthetic(60)
    types = ["Linear"] * 30 + ["MatMul"] * 30
    for kind in ("paper", "anchored", "relative"):
        leaves = LeafRegressors(NAMES, kind=kind).fit(types, X, y)
        obj = json.loads(json.dumps(leaves.to_json()))
        again = LeafRegressors.from_json(obj)
        p1, g1 = leaves.predict(types, X)
        p2, g2 = again.predict(types, X)
        assert np.array_equal(p1, p2) and np.array_equal(g1, g2)


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda o: o.__setitem__("coef", [float("nan")] * 5), "NaN or infinite"),
        (lambda o: o.__setitem__("coef", [1.0, 2.0]), "expected 5 values"),
        (lambda o: o.pop("scale"), "missing field 'scale'"),
        (lambda o: o.__setitem__("kind", "forest"), "unknown kind"),
        (lambda o: o.__setitem__("intercept", float("inf")), "NaN or infinite"),
    ],
)
def test_bad_regressor_content_raises_model_file_error(mutate, message):
    X, y = synthetic()
    obj = LinearRegressor(NAMES).fit(X, y).to_json()
    mutate(obj)
    with pytest.raises(ModelFileError, match=message):
        regressor_from_json(obj)


def test_nonneg_regressor_keeps_costs_positive():
    X, y = synthetic(60)
    reg = LinearRegressor(["flops", "mem_bytes"], weighting="relative", nonneg=True).fit(X[:, 3:], y)
    assert reg.intercept >= 0 and all(c >= 0 for c in reg.coef)
    np.testing.assert_allclose(reg.predict(X[:, 3:]), y, rtol=1e-3)


def test_residual_memory_recalls_measured_shapes_and_forgets_far_ones():
    from pytest_irene.engine.predict.regressors import ResidualMemory

    names = ["flops", "mem_bytes", "batch_size", "seq_len"]
    X = np.array([[1e9, 1e7, 8, 128], [1e9, 1e7, 8, 128], [4e9, 3e7, 8, 256]])
    mem = ResidualMemory(names, [0.05, 0.05, 0.3, 0.05], prior=0.25).fit(X, np.array([0.1, 0.2, -0.3]))
    near, far, other_width = mem.predict(np.array([[1e9, 1e7, 8, 128], [4e9, 3e7, 8, 256], [1e6, 1e5, 8, 128]]))
    assert near == pytest.approx(0.15 * 2 / 2.25, rel=1e-3)  # two distinct measurements, mean 0.15
    assert far == pytest.approx(-0.3 / 1.25, rel=1e-3)
    assert other_width == pytest.approx(0.0, abs=1e-9)
    # Same per-item shape at batch 16: the wide batch coordinate carries the residual over.
    batch16 = mem.predict(np.array([[2e9, 2e7, 16, 128]]))[0]
    assert 0.0 < batch16 < near
    again = ResidualMemory.from_json(json.loads(json.dumps(mem.to_json())))
    assert np.array_equal(again.predict(X), mem.predict(X))


@pytest.mark.parametrize(
    "field_name, value, message",
    [
        ("bandwidth", [0.05], "expected 4 values"),
        ("residuals", [float("nan")], "NaN"),
        ("prior", 0.0, "must be positive"),
    ],
)
def test_residual_memory_validation(field_name, value, message):
    from pytest_irene.engine.predict.regressors import ResidualMemory

    names = ["flops", "mem_bytes", "batch_size", "seq_len"]
    mem = ResidualMemory(names).fit(np.array([[1e9, 1e7, 8, 128]]), np.array([0.1]))
    obj = mem.to_json()
    obj[field_name] = value
    with pytest.raises(ModelFileError, match=message):
        ResidualMemory.from_json(obj)
