"""The meta fast paths give what torch's own meta kernels give (shapes and dtypes), or step aside."""

from __future__ import annotations

import pytest
import torch

from pytest_irene.engine.meta_fast import fast_elementwise

aten = torch.ops.aten


def _meta(*shape: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return torch.empty(shape, dtype=dtype, device="meta")


def _layout(value):  # type: ignore[no-untyped-def]
    items = value if isinstance(value, tuple) else (value,)
    return [(tuple(t.shape), t.dtype) for t in items]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize(
    "func, make",
    [
        (aten.addmm.default, lambda d: (_meta(7, dtype=d), _meta(10, 8, dtype=d), _meta(8, 7, dtype=d))),
        (aten.native_layer_norm.default, lambda d: (_meta(2, 5, 8, dtype=d), [8], _meta(8, dtype=d), _meta(8, dtype=d), 1e-5)),
        (aten.native_layer_norm.default, lambda d: (_meta(2, 5, 8, dtype=d), [5, 8], None, None, 1e-5)),
        (aten.add.Tensor, lambda d: (_meta(2, 1, 8, dtype=d), _meta(5, 1, dtype=d))),
        (aten.div.Tensor, lambda d: (_meta(3, 4, dtype=d), 2)),
        (aten.gelu.default, lambda d: (_meta(3, 4, dtype=d),)),
    ],
)
def test_fast_result_matches_torchs_meta_kernel(func, make, dtype) -> None:  # type: ignore[no-untyped-def]
    args = make(dtype)
    fast = fast_elementwise(func, args, {})
    assert fast is not None
    assert _layout(fast) == _layout(func(*args))


def test_unusual_calls_take_torchs_path() -> None:
    m1, m2 = _meta(10, 8), _meta(8, 7)
    assert fast_elementwise(aten.addmm.default, (_meta(7), m1, m2), {"beta": 0.5}) is None  # scaled
    assert fast_elementwise(aten.addmm.default, (_meta(3), m1, m2), {}) is None  # bias does not broadcast
    assert fast_elementwise(aten.addmm.default, (_meta(7), m1, _meta(8, 7, dtype=torch.float16)), {}) is None
    assert fast_elementwise(aten.native_layer_norm.default, (_meta(2, 5, 8), [4], None, None, 1e-5), {}) is None
    assert fast_elementwise(aten.add.Tensor, (torch.ones(2), torch.ones(2)), {}) is None  # not meta
