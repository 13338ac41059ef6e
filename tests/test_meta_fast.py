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


def _cpu(*shape: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return torch.zeros(shape, dtype=dtype)


_BF, _LONG = torch.bfloat16, torch.int64

#: (op, arguments built on a device) whose dtypes torch's CPU kernel refuses but its meta kernel accepted.
_MIXED = [
    (aten.addmm.default, lambda t: (t(4), t(3, 5, dtype=_LONG), t(5, 4))),
    (aten.addmm.default, lambda t: (t(4), t(3, 5, dtype=_BF), t(5, 4, dtype=_BF))),
    (aten.mm.default, lambda t: (t(3, 5, dtype=_BF), t(5, 4))),
    (aten.mv.default, lambda t: (t(3, 5, dtype=_BF), t(5))),
    (aten.convolution.default, lambda t: (t(1, 3, 8, 8, dtype=_BF), t(4, 3, 3, 3), None, [1, 1], [0, 0], [1, 1],
                                          False, [0, 0], 1)),
    (aten.native_layer_norm.default, lambda t: (t(2, 8), [8], t(8, dtype=_BF), t(8, dtype=_BF), 1e-5)),
    (aten.native_layer_norm.default, lambda t: (t(2, 8, dtype=torch.float64), [8], t(8), t(8), 1e-5)),
    (aten.gelu.default, lambda t: (t(3, dtype=_LONG),)),
    (aten.silu.default, lambda t: (t(3, dtype=_LONG),)),
]


@pytest.mark.parametrize(("func", "make"), _MIXED, ids=["addmm-int", "addmm-bias", "mm", "mv", "conv", "layer-norm-params",
                                                        "layer-norm-fp64", "gelu-int", "silu-int"])
def test_dtypes_the_real_kernel_refuses_are_refused_on_meta(func, make) -> None:  # type: ignore[no-untyped-def]
    from pytest_irene.engine.meta_fast import check_dtypes

    with pytest.raises(RuntimeError):
        func(*make(_cpu))  # the real kernel refuses...
    func(*make(_meta))  # ...torch's meta kernel does not...
    with pytest.raises(RuntimeError):
        check_dtypes(func, make(_meta))  # ...this check does, as the CPU does


@pytest.mark.parametrize(("func", "make"), [
    (aten.addmm.default, lambda t: (t(4), t(3, 5), t(5, 4))),
    (aten.native_layer_norm.default, lambda t: (t(2, 8, dtype=_BF), [8], t(8), t(8), 1e-5)),  # CPU's mixed mode
    (aten.native_layer_norm.default, lambda t: (t(2, 8, dtype=torch.float16), [8], t(8), None, 1e-5)),
    (aten.convolution.default, lambda t: (t(1, 3, 8, 8), t(4, 3, 3, 3), t(4, dtype=_BF), [1, 1], [0, 0], [1, 1],
                                          False, [0, 0], 1)),  # a bias of another dtype runs on CPU
    (aten.gelu.default, lambda t: (t(3, dtype=_BF),)),
], ids=["addmm", "layer-norm-mixed", "layer-norm-no-bias", "conv-bias", "gelu-bf16"])
def test_dtypes_the_real_kernel_runs_pass(func, make) -> None:  # type: ignore[no-untyped-def]
    from pytest_irene.engine.meta_fast import check_dtypes

    func(*make(_cpu))
    check_dtypes(func, make(_meta))


@pytest.mark.parametrize(("func", "make"), [
    (aten.neg.default, lambda t: (t(3, dtype=torch.bool),)),
    (aten.sub.Tensor, lambda t: (t(3, dtype=torch.bool), t(3, dtype=torch.bool))),
    (aten.add_.Tensor, lambda t: (t(3, dtype=_LONG), t(3))),
    (aten.mul_.Scalar, lambda t: (t(3, dtype=_LONG), 1.5)),  # torch's meta kernel lets this one through; CPU does not
], ids=["neg-bool", "sub-bools", "int-add_-float", "int-mul_-float"])
def test_a_fast_path_is_never_laxer_than_the_real_kernel(func, make) -> None:  # type: ignore[no-untyped-def]
    """Each returned a result where torch refuses the op (the fast path had skipped the check)."""
    with pytest.raises(RuntimeError):
        func(*make(_cpu))
    try:
        assert fast_elementwise(func, make(_meta), {}) is None  # torch's own path decides...
    except RuntimeError:
        pass  # ...or the fast path refuses it itself


@pytest.mark.parametrize(
    "q, kv, gqa",
    [
        ((2, 4, 5, 8), (2, 8, 5, 8), False),  # more key heads than query heads
        ((2, 4, 5, 8), (2, 8, 5, 8), True),  # grouped, but 8 does not divide 4
        ((2, 8, 5, 8), (2, 2, 5, 8), False),  # grouped-query heads without enable_gqa
        ((2, 8, 5, 8), (2, 2, 5, 6), True),  # a key of another head size
        ((2, 8, 5, 8), (2, 8, 5, 8), False),
        ((2, 8, 5, 8), (2, 2, 5, 8), True),
        ((2, 8, 5, 8), (1, 8, 5, 8), False),  # a broadcast batch
    ],
)
@pytest.mark.skipif(tuple(int(n) for n in torch.__version__.split(".")[:2]) < (2, 5),
                    reason="the CPU reference call passes enable_gqa, a torch 2.5 argument")
def test_sdpa_on_meta_refuses_exactly_the_heads_the_cpu_refuses(q, kv, gqa) -> None:
    """The fast meta SDPA took any key heads, so a config with mismatched ``num_key_value_heads``
    traced on meta and failed on the CPU (DeepSeek-V2 with its heads unset)."""
    from pytest_irene.engine.meta_fast import fast_sdpa

    v_shape = (*kv[:-1], 8)
    try:
        expected = torch.nn.functional.scaled_dot_product_attention(
            torch.randn(q), torch.randn(kv), torch.randn(v_shape), enable_gqa=gqa).shape
    except RuntimeError:
        expected = None
    meta = [torch.empty(s, device="meta") for s in (q, kv, v_shape)]
    if expected is None:
        # the hint fits the mismatch: enable_gqa only helps a key with fewer heads
        hint = {(4, 8, False): "more heads than the query", (8, 2, False): "needs enable_gqa=True"}.get((q[1], kv[1], gqa), "")
        with pytest.raises(RuntimeError, match=hint or None):
            fast_sdpa(tuple(meta), {"enable_gqa": gqa})
    else:
        assert fast_sdpa(tuple(meta), {"enable_gqa": gqa}).shape == expected
