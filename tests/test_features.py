"""Flops and bytes formulas: the reference dataset's conventions, glue ops, user formulas."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from pytest_irene.engine import features
from pytest_irene.engine.glue_ops import glue_op_features
from pytest_irene.errors import TraceError
from pytest_irene.engine.tracing import trace


def meta(*shape: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return torch.empty(*shape, dtype=dtype, device="meta")


def run_formula(module: nn.Module, *inputs: torch.Tensor) -> dict[str, float]:
    module = module.to("meta")
    with torch.no_grad():
        out = module(*inputs)
    formula = features.formula_for(module)
    assert formula is not None
    return features.leaf_features(module, inputs, out, formula, type(module).__name__)


# numbers straight from irene-pc1 (bert-base-uncased / gpt2 at batch 8, seq 32)
def test_linear_on_3d_input_is_matmul_plus_bias_add() -> None:
    got = run_formula(nn.Linear(768, 768), meta(8, 32, 768))
    assert got == {"flops": 302_186_496, "mem_bytes": 22_020_096}
    got = run_formula(nn.Linear(768, 3072), meta(8, 32, 768))
    assert got == {"flops": 1_208_745_984, "mem_bytes": 85_721_088}


def test_linear_on_2d_input_is_addmm() -> None:
    assert run_formula(nn.Linear(768, 768), meta(8, 768)) == {"flops": 9_437_184, "mem_bytes": 2_408_448}


def test_linear_without_bias_has_no_add() -> None:
    got = run_formula(nn.Linear(4, 6, bias=False), meta(2, 3, 4))
    assert got == {"flops": 2 * 6 * 4 * 6, "mem_bytes": 4 * (2 * 3 * 4 + 2 * 4 * 6 + 2 * 3 * 6)}


def test_transformers_conv1d() -> None:
    from transformers.pytorch_utils import Conv1D

    assert run_formula(Conv1D(2304, 768), meta(8, 32, 768)) == {"flops": 905_969_664, "mem_bytes": 10_223_616}


def test_embedding_reads_indices_and_writes_rows() -> None:
    ids = meta(8, 32, dtype=torch.long)
    assert run_formula(nn.Embedding(30522, 768), ids) == {"flops": 0, "mem_bytes": 788_480}


@pytest.mark.parametrize(
    ("module", "shape", "flops", "mem"),
    [
        (nn.LayerNorm(768), (8, 32, 768), 1_572_864, 3_145_728),
        (nn.Softmax(dim=-1), (8, 12, 32, 32), 491_520, 1_179_648),
        (nn.Tanh(), (8, 768), 24_576, 24_576),
        (nn.GELU(), (8, 32, 3072), 4_718_592, 6_291_456),  # BertIntermediate's glue
        (nn.ReLU(), (8, 32, 2), 512, 4096),  # tiny-ctrl's ffn.1
    ],
)
def test_elementwise_primitives(module: nn.Module, shape: tuple[int, ...], flops: int, mem: int) -> None:
    assert run_formula(module, meta(*shape)) == {"flops": flops, "mem_bytes": mem}


def test_activations_newer_than_the_dataset() -> None:
    from transformers.activations import GELUActivation, NewGELUActivation

    # GPT-2's MLP glue in the dataset: gelu_new as 8 aten ops = 11 flops and 19 transfers per element
    assert run_formula(NewGELUActivation(), meta(8, 32, 3072)) == {"flops": 8_650_752, "mem_bytes": 59_768_832}
    assert run_formula(GELUActivation(), meta(8, 32, 3072)) == {"flops": 4_718_592, "mem_bytes": 6_291_456}


def test_subclasses_and_name_families() -> None:
    class MyLinear(nn.Linear):
        pass

    class LlamaRMSNorm(nn.Module):
        def __init__(self):
            super().__init__()
            self.weight = nn.Parameter(torch.ones(4))

        def forward(self, x):
            return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6) * self.weight

    assert features.formula_for(MyLinear(2, 2)) is features.formula_for(nn.Linear(2, 2))
    assert run_formula(LlamaRMSNorm(), meta(2, 3, 4)) == {"flops": 6 * 24, "mem_bytes": 4 * 24 * 4}
    assert features.formula_for(nn.Sequential()) is None


def test_matmul_counts_operands_at_the_broadcast_batch() -> None:
    q, k = meta(8, 12, 32, 64), meta(8, 12, 64, 32)
    got = features.matmul_features(q, k, meta(8, 12, 32, 32))
    assert got == {"flops": 12_582_912, "mem_bytes": 1_966_080}
    # x @ W: the weight is read once per batch item
    got = features.matmul_features(meta(8, 32, 768), meta(768, 768), meta(8, 32, 768))
    assert got["mem_bytes"] == 4 * (8 * 32 * 768 * 2 + 8 * 768 * 768)


def test_glue_ops() -> None:
    x = meta(8, 12, 32, 32)
    mask = meta(8, 1, 1, 32)
    assert glue_op_features("add", (x, mask), x) == (98_304, 786_432)  # mask not counted
    assert glue_op_features("div", (x, 8.0), x) == (98_304, 786_432)
    assert glue_op_features("tanh", (x,), x) == (4 * 98_304, 393_216)
    for free in ("where", "masked_fill", "view", "clone", "eq", "_to_copy", "expand", "cat"):
        assert glue_op_features(free, (x,), x) is None
    assert glue_op_features("mm", (meta(4, 5), meta(5, 6)), meta(4, 6)) == (240, 4 * (20 + 30 + 24))
    assert glue_op_features("sum", (x,), meta(8)) == (98_304, 2 * 393_216)


def test_einsum_formula() -> None:
    a, b = meta(2, 3, 4), meta(2, 4, 5)
    got = features.formula_by_name("Einsum")(torch.einsum, ("bij,bjk->bik", a, b), meta(2, 3, 5))
    assert got == {"flops": 2 * 2 * 3 * 5 * 4, "mem_bytes": 4 * (24 + 40 + 30)}
    got = features.formula_by_name("Einsum")(torch.einsum, ("...ij,...jk", a, b), meta(2, 3, 5))
    assert got["flops"] == 2 * 2 * 3 * 5 * 4


class SquarePlus(nn.Module):
    def forward(self, x):
        return 0.5 * (x + torch.sqrt(x * x + 4.0))


class WithSquarePlus(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)
        self.act = SquarePlus()

    def forward(self, x):
        return self.act(self.fc(x))


@pytest.fixture
def squareplus_formula():
    def formula(module, inputs, output):
        (x,) = inputs
        return {"flops": 3.0 * x.numel(), "mem_bytes": 2.0 * x.numel() * x.element_size()}

    features.register_formula("SquarePlus", formula)
    yield formula
    features.unregister_formula("SquarePlus")


def test_without_a_formula_a_module_is_counted_from_its_ops() -> None:
    tree = trace(WithSquarePlus(), torch.randn(2, 4))
    node = tree["act"]
    assert node.level == "ml" and node.type == "SquarePlus"  # no primitive inside: a leaf anyway
    assert node.features["flops"] == 5 * 8  # mul, add, sqrt, add, mul


def test_registered_formula_makes_a_leaf(squareplus_formula) -> None:
    assert "SquarePlus" in features.registered_types()
    tree = trace(WithSquarePlus(), torch.randn(2, 4))
    node = tree["act"]
    assert node.level == "ml" and not node.children
    assert node.features == {**node.features, "flops": 24.0, "mem_bytes": 64.0}


def test_user_formula_mistakes_are_named() -> None:
    features.register_formula("SquarePlus", lambda m, i, o: {"flops": 1.0})
    try:
        with pytest.raises(TraceError, match="formula for 'SquarePlus' must return"):
            trace(WithSquarePlus(), torch.randn(2, 4))
    finally:
        features.unregister_formula("SquarePlus")
    with pytest.raises(TypeError):
        features.register_formula("", lambda m, i, o: {})
    with pytest.raises(TypeError):
        features.register_formula("X", "not callable")  # type: ignore[arg-type]


@pytest.mark.parametrize(("equation", "shapes", "outer_flops"), [
    ("btd,bsd,bse->bte", [(2, 16, 32)] * 3, 0),  # linear attention's (x xᵀ) x
    ("ij,jk,kl->il", [(3, 4), (4, 5), (5, 6)], 0),
    # an outer product first (b..i times b..j: a broadcast multiply, which FlopCounterMode does not count)
    ("b...i,b...j,ij->b...", [(2, 3, 4), (2, 3, 5), (4, 5)], 2 * 3 * 4 * 5),
])
def test_an_einsum_of_three_operands_counts_the_contractions_torch_runs(equation: str, shapes: list,
                                                                         outer_flops: int) -> None:
    """It was counted as one loop over every index: 16x FlopCounterMode for linear attention."""
    from torch.utils.flop_counter import FlopCounterMode

    class Contract(torch.nn.Module):
        def forward(self, *xs):
            return torch.einsum(equation, *xs)

    xs = [torch.randn(s) for s in shapes]
    with FlopCounterMode(display=False) as counter:
        Contract()(*xs)
    tree = trace(Contract(), tuple(xs))
    assert tree.root.features["flops"] == pytest.approx(counter.get_total_flops() + outer_flops, rel=0.01)


def test_a_module_named_like_a_function_only_formula_is_no_leaf() -> None:
    """``class Einsum(nn.Module)`` became an einsum leaf without an equation: 0 flops, its einsum unseen."""

    class Einsum(torch.nn.Module):
        def forward(self, a, b):
            return torch.einsum("ij,jk->ik", a, b)

    tree = trace(Einsum(), (torch.randn(3, 4), torch.randn(4, 5)))
    assert [(n.type, n.level) for n in tree.walk()] == [("Einsum", "model"), ("MatMul", "ml")]
    assert tree.root.features["flops"] == 2 * 3 * 4 * 5


@pytest.mark.parametrize(("module", "flops_per_element"), [
    (nn.Softplus(), 4), (nn.Hardswish(), 4), (nn.Hardsigmoid(), 4), (nn.ELU(), 5), (nn.SELU(), 5),
    (nn.PReLU(), 1), (nn.Hardtanh(), 1), (nn.LogSoftmax(dim=-1), 5),
], ids=lambda v: type(v).__name__ if isinstance(v, nn.Module) else str(v))
def test_fused_activations_count_their_work(module: nn.Module, flops_per_element: int) -> None:
    """They were free: 0 flops and 0 bytes for an nn.ELU, or for the softplus of a Mamba time step."""
    tree = trace(nn.Sequential(module), torch.randn(2, 16, 32))
    assert tree.root.features["flops"] == flops_per_element * 2 * 16 * 32
    assert tree.root.features["mem_bytes"] >= 2 * 2 * 16 * 32 * 4
