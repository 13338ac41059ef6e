"""Quantized and low-precision models: what teams ship for inference, traced and flagged.

torch's ``quantize_dynamic`` (int8 and fp16 weights), hand-written int8 weight-only layers,
fp8 weights through ``torch._scaled_mm``, whole fp16/bf16 models and hand-written LoRA. Each
must trace on meta as on the CPU, count its GEMMs as Linear work with the weights' own element
size, and say that ``irene-pc1`` (fp32 only) never saw such weights.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from pytest_irene.engine.predict.energy_model import EnergyModel
from pytest_irene.engine.tracing import trace
from pytest_irene.errors import TraceError

from inner import run

B, S, D_IN, D_HID = 2, 16, 64, 128


def _mlp() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(D_IN, D_HID), nn.ReLU(), nn.Linear(D_HID, D_IN))


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """torch.ao.quantization and its quantized tensors warn that they are deprecated (for torchao)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.filterwarnings("ignore", message=".*quantize_per_(tensor|channel).*deprecated", category=UserWarning)
        warnings.filterwarnings("ignore", message="Please use quant_min and quant_max", category=UserWarning)
        yield


def _quantize_dynamic(model: nn.Module, dtype: torch.dtype = torch.qint8) -> nn.Module:
    with _quiet():
        return torch.ao.quantization.quantize_dynamic(model, {nn.Linear}, dtype=dtype)


class Int8Linear(nn.Module):
    """int8 weight-only, as people write it: int8 weights and per-row scales, dequantized in forward."""

    def __init__(self, base: nn.Linear) -> None:
        super().__init__()
        w = base.weight.detach()
        scale = w.abs().amax(dim=1, keepdim=True) / 127
        self.register_buffer("weight_int8", torch.round(w / scale).to(torch.int8))
        self.register_buffer("scale", scale)
        self.bias = nn.Parameter(base.bias.detach().clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight_int8.to(x.dtype) * self.scale, self.bias)


class FP8Linear(nn.Module):
    """fp8 weights and activations through ``torch._scaled_mm`` (per-tensor scales)."""

    def __init__(self, base: nn.Linear) -> None:
        super().__init__()
        w = base.weight.detach()
        self.register_buffer("w_scale", w.abs().max() / 448)
        self.weight = nn.Parameter((w / self.w_scale).to(torch.float8_e4m3fn), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.reshape(-1, x.shape[-1])
        x_scale = rows.abs().max() / 448
        out = torch._scaled_mm((rows / x_scale).to(torch.float8_e4m3fn), self.weight.t(),
                               scale_a=x_scale, scale_b=self.w_scale, out_dtype=torch.float32)
        return out.reshape(*x.shape[:-1], -1)


class LoRALinear(nn.Module):
    """A LoRA-wrapped Linear as peft writes it: base layer + lora_A/lora_B per adapter + scaling."""

    def __init__(self, base: nn.Linear, r: int = 4, alpha: float = 8.0) -> None:
        super().__init__()
        self.base_layer = base
        self.lora_A = nn.ModuleDict({"default": nn.Linear(base.in_features, r, bias=False)})
        self.lora_B = nn.ModuleDict({"default": nn.Linear(r, base.out_features, bias=False)})
        self.lora_dropout = nn.ModuleDict({"default": nn.Dropout(0.1)})
        self.scaling = {"default": alpha / r}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b, drop = self.lora_A["default"], self.lora_B["default"], self.lora_dropout["default"]
        return self.base_layer(x) + b(a(drop(x))) * self.scaling["default"]


def _swap(model: nn.Module, layer: type[nn.Module]) -> nn.Module:
    for name, child in list(model.named_children()):
        if type(child) is nn.Linear:
            setattr(model, name, layer(child))
        else:
            _swap(child, layer)
    return model


def _features(tree) -> dict[str, tuple[str, float, float, float, float]]:
    return {n.scope: (n.type, n.features["flops"], n.features["mem_bytes"], n.features["params"],
                      n.features["bytes_per_element"]) for n in tree.walk()}


def _reasons(model: nn.Module, inputs, device: str = "meta") -> list[str]:
    return EnergyModel.load("irene-pc1").predict(trace(model, inputs, device=device)).meta.get("extrapolation") or []


# -- torch's quantize_dynamic ------------------------------------------------------------------


def test_quantize_dynamic_linear_is_a_linear_with_one_byte_weights_on_meta_and_cpu():
    x = torch.randn(B, S, D_IN)
    model = _quantize_dynamic(_mlp())
    meta, cpu = trace(model, x), trace(model, x, device="cpu")
    assert _features(meta) == _features(cpu)
    first = meta["0"]
    assert (first.type, first.level) == ("Linear", "ml")
    rows = B * S
    assert first.features["flops"] == 2.0 * rows * D_IN * D_HID  # one fused GEMM, bias in it
    # fp32 x and out, 1-byte weights, one scale + zero point (per-tensor)
    assert first.features["mem_bytes"] == rows * D_IN * 4 + D_HID * D_IN * 1 + 8 + rows * D_HID * 4
    assert first.notes["weight_dtype"] == "qint8" and first.features["bytes_per_element"] == 4.0
    # the weights count as parameters although quantize_dynamic left none
    assert meta.root.features["params"] == sum(p.numel() for p in _mlp().parameters())
    assert (meta.batch_size, meta.seq_len) == (B, S)  # a quantized Linear is token-wise too


def test_a_fused_linear_relu_is_a_linear_with_its_relu():
    fused = torch.ao.quantization.fuse_modules(_mlp().eval(), [["0", "1"]])
    with _quiet():
        model = torch.ao.quantization.quantize_dynamic(fused, {nn.Linear, torch.ao.nn.intrinsic.LinearReLU})
    x = torch.randn(B, S, D_IN)
    leaf = trace(model, x)["0"]
    assert (leaf.type, leaf.notes["regressor_type"]) == ("LinearReLU", "Linear")
    assert leaf.features["flops"] == 2.0 * B * S * D_IN * D_HID + B * S * D_HID
    assert _features(trace(model, x)) == _features(trace(model, x, device="cpu"))


def test_per_channel_scales_are_counted():
    from torch.ao.quantization import per_channel_dynamic_qconfig

    with _quiet():
        model = torch.ao.quantization.quantize_dynamic(_mlp(), {nn.Linear: per_channel_dynamic_qconfig}, dtype=torch.qint8)
    x = torch.randn(8, D_IN)
    leaf = trace(model, x)["0"]
    assert leaf.features["mem_bytes"] == 8 * D_IN * 4 + D_HID * D_IN + 8 * D_HID + 8 * D_HID * 4


def test_fp16_dynamic_weights_are_two_bytes_and_named():
    model = _quantize_dynamic(_mlp(), torch.float16)
    x = torch.randn(8, D_IN)
    tree = trace(model, x)
    assert _features(tree) == _features(trace(model, x, device="cpu"))
    assert tree["0"].features["mem_bytes"] == 8 * D_IN * 4 + D_HID * D_IN * 2 + 8 * D_HID * 4
    assert any("16-bit (bf16/fp16) weight elements (float16) never trained" in r for r in _reasons(model, x))


def test_eight_bit_weights_are_flagged_and_fp32_ones_are_not():
    x = torch.randn(B, S, D_IN)
    quantized = _reasons(_quantize_dynamic(_mlp()), x)
    assert "8-bit weight elements (qint8) never trained (trained: 32-bit (fp32)); predicted from the bytes alone" in quantized
    assert not any("weight elements" in r for r in _reasons(_mlp(), x))


def _tiny_bert() -> nn.Module:
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    config = BertConfig(num_hidden_layers=1, hidden_size=32, num_attention_heads=2, intermediate_size=64, vocab_size=128)
    return BertModel(config).eval()


def _tiny_llama() -> nn.Module:
    from transformers import LlamaConfig, LlamaModel

    torch.manual_seed(0)
    config = LlamaConfig(num_hidden_layers=1, hidden_size=32, intermediate_size=64, num_attention_heads=2,
                         num_key_value_heads=1, head_dim=16, vocab_size=128)
    return LlamaModel(config).eval()


@pytest.mark.parametrize("build", [_tiny_bert, _tiny_llama], ids=["bert", "llama"])
def test_quantized_transformers_trace_on_meta_as_on_cpu(build):
    pytest.importorskip("transformers")
    model = _quantize_dynamic(build())
    inputs = {"input_ids": torch.randint(0, 128, (B, S))}
    meta, cpu = trace(model, inputs), trace(model, inputs, device="cpu")
    assert _features(meta) == _features(cpu)
    linears = [n for n in meta.walk() if n.type == "Linear"]
    assert len(linears) == 7  # q, k, v, o + BERT's 2 MLP Linears and pooler, Llama's 3 MLP Linears
    assert all(n.features["flops"] > 0 and n.notes["weight_dtype"] == "qint8" for n in linears)
    assert (meta.batch_size, meta.seq_len) == (B, S)


class StaticInt8(nn.Module):
    """Static (post-training) quantization: QuantStub -> Linear -> DeQuantStub, converted."""

    def __init__(self) -> None:
        super().__init__()
        self.quant = torch.ao.quantization.QuantStub()
        self.fc = nn.Linear(D_IN, D_HID)
        self.dequant = torch.ao.quantization.DeQuantStub()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dequant(self.fc(self.quant(x)))


def _static_int8() -> nn.Module:
    torch.manual_seed(0)
    model = StaticInt8().eval()
    model.qconfig = torch.ao.quantization.get_default_qconfig("fbgemm")
    with _quiet():
        torch.ao.quantization.prepare(model, inplace=True)
        model(torch.randn(8, D_IN))  # calibration
        torch.ao.quantization.convert(model, inplace=True)
    return model


def test_static_quantization_counts_its_casts_and_int8_gemm_on_cpu_and_asks_for_it_on_meta():
    model, x = _static_int8(), torch.randn(8, D_IN)
    tree = trace(model, x, device="cpu")
    assert [(c.type, c.level) for c in tree.root.children] == [("Quantize", "ml"), ("Linear", "ml"), ("DeQuantize", "ml")]
    quant, fc, dequant = tree.root.children
    assert quant.features == {**quant.features, "flops": 8.0 * D_IN, "mem_bytes": 8 * D_IN * 4 + 8 * D_IN * 1}
    # quint8 in and out, qint8 weight, per-channel scales (fbgemm's default)
    assert fc.features["mem_bytes"] == 8 * D_IN + D_HID * D_IN + 8 * D_HID + 8 * D_HID
    assert dequant.features["mem_bytes"] == 8 * D_HID * 1 + 8 * D_HID * 4
    with pytest.raises(TraceError, match=r"module 'quant'.*depends on tensor values.*device='cpu'"):
        trace(model, x)


# -- hand-written int8 weight-only and fp8 -----------------------------------------------------


def test_int8_weight_only_counts_the_dequantize_as_glue_and_the_gemm_as_a_linear():
    x = torch.randn(B, S, D_IN)
    model = _swap(_mlp(), Int8Linear)
    meta = trace(model, x)
    assert _features(meta) == _features(trace(model, x, device="cpu"))
    layer = meta["0"]
    assert layer.type == "Int8Linear" and [c.type for c in layer.children] == ["Linear"]
    gemm = layer.children[0]
    assert gemm.features["flops"] == 2.0 * B * S * D_IN * D_HID + B * S * D_HID
    # the dequantize (w.to(x.dtype) * scale): one mul per weight element, two fp32 transfers
    assert layer.features["flops"] - gemm.features["flops"] == D_HID * D_IN
    assert layer.features["params"] == D_HID * D_IN + D_HID  # int8 weights + bias
    assert layer.notes["weight_dtype"] == "int8" and (meta.batch_size, meta.seq_len) == (B, S)
    assert any("8-bit weight elements (int8) never trained" in r for r in _reasons(model, x))


def _fp8_on_cpu() -> bool:
    a = torch.ones(16, 16).to(torch.float8_e4m3fn)
    try:
        torch._scaled_mm(a, a.t(), scale_a=torch.tensor(1.0), scale_b=torch.tensor(1.0), out_dtype=torch.float32)
    except (RuntimeError, NotImplementedError):
        return False
    return True


@pytest.mark.skipif(not hasattr(torch, "float8_e4m3fn") or not hasattr(torch, "_scaled_mm"), reason="no fp8 in this torch")
def test_scaled_mm_is_a_linear_leaf_with_one_byte_operands():
    x = torch.randn(B, S, D_IN)
    model = _swap(_mlp(), FP8Linear)
    meta = trace(model, x)
    if _fp8_on_cpu():
        assert _features(meta) == _features(trace(model, x, device="cpu"))
    (gemm,) = meta["0"].children
    assert (gemm.type, gemm.scope) == ("Linear", "0.scaled_mm#0")
    rows = B * S
    assert gemm.features["flops"] == 2.0 * rows * D_IN * D_HID
    # fp8 activations and weight (1 byte each), two fp32 scalar scales, fp32 result
    assert gemm.features["mem_bytes"] == rows * D_IN + D_HID * D_IN + 2 * 4 + rows * D_HID * 4
    assert gemm.notes["weight_dtype"] == "float8_e4m3fn"
    assert any("8-bit weight elements (float8_e4m3fn) never trained" in r for r in _reasons(model, x))


@pytest.mark.skipif(not hasattr(torch, "float8_e4m3fn"), reason="no fp8 in this torch")
def test_a_model_cast_whole_to_fp8_is_refused_on_meta_as_on_cpu():
    model = _mlp().to(torch.float8_e4m3fn)
    x = torch.randn(8, D_IN).to(torch.float8_e4m3fn)
    with pytest.raises(TraceError, match=r"module '1' \(ReLU\) failed: NotImplementedError: 'relu' is not implemented "
                                         r"for float8_e4m3fn.*store fp8 weights only"):
        trace(model, x)
    with pytest.raises(TraceError, match="module '1' \\(ReLU\\) failed: NotImplementedError"):
        trace(model, x, device="cpu")
    # an fp8 GEMM alone runs on the CPU: flagged once, as 8-bit elements
    reasons = _reasons(nn.Linear(D_IN, D_HID).to(torch.float8_e4m3fn), x)
    assert [r for r in reasons if "8-bit" in r] == [
        "8-bit elements never trained (trained: 32-bit (fp32)); predicted from the bytes alone"]


# -- fp16 / bf16 and LoRA --------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_models_are_flagged_on_meta_and_cpu(dtype):
    model, x = _mlp().to(dtype), torch.randn(B, S, D_IN).to(dtype)
    for device in ("meta", "cpu"):
        reasons = _reasons(model, x, device)
        assert "16-bit (bf16/fp16) elements never trained (trained: 32-bit (fp32)); predicted from the bytes alone" in reasons
        assert not any("weight elements" in r for r in reasons)  # the weights compute in the model's dtype


def test_lora_adds_its_two_products_and_the_scaled_add_as_glue():
    x = torch.randn(B, S, D_IN)
    lora = trace(_swap(_mlp(), LoRALinear), x)
    layer = lora["0"]
    assert [c.scope for c in layer.children] == ["0.base_layer", "0.lora_A.default", "0.lora_B.default"]
    assert all(c.type == "Linear" for c in layer.children)
    children = sum(c.features["flops"] for c in layer.children)
    assert layer.features["flops"] - children == 2 * B * S * D_HID  # * scaling, then + result
    merged = trace(_mlp(), x)  # merge_and_unload(): the base Linear alone
    assert layer.children[0].features == merged["0"].features
    assert (lora.batch_size, lora.seq_len) == (B, S)


class _LoraLayer:
    """peft's ``LoraLayer`` mixin, in short: ``weight`` is the base layer's."""

    @property
    def weight(self) -> torch.Tensor:
        return self.base_layer.weight


class Linear(LoRALinear, _LoraLayer):
    """peft's LoRA layer class is named ``Linear`` too (``peft.tuners.lora.layer.Linear``), no ``nn.Linear``."""


def test_a_peft_style_lora_linear_is_a_block_not_a_linear_leaf():
    x = torch.randn(B, S, D_IN)
    layer = trace(_swap(_mlp(), Linear), x)["0"]
    assert (layer.type, layer.level) == ("Linear", "module")
    assert [c.scope for c in layer.children] == ["0.base_layer", "0.lora_A.default", "0.lora_B.default"]
    adapter = 2 * B * S * D_IN * 4 + 2 * B * S * 4 * D_HID
    assert layer.features["flops"] == trace(_mlp(), x)["0"].features["flops"] + adapter + 2 * B * S * D_HID


def test_transformers_int8_and_packed_int4_linears_are_flagged():
    gemma_quant = pytest.importorskip("transformers.integrations.gemma_quant")
    x = torch.randn(B, S, D_IN)
    for bits, dtype in ((8, "int8"), (4, "uint8")):
        layer = gemma_quant.QuantizedLinear(D_IN, D_HID, num_bits=bits)  # an nn.Linear with int weights
        with torch.no_grad():
            layer.weight.zero_()
        tree = trace(nn.Sequential(layer, nn.ReLU()), x)
        assert _features(tree) == _features(trace(nn.Sequential(layer, nn.ReLU()), x, device="cpu"))
        leaf = tree["0"]
        assert leaf.features["flops"] == 2.0 * B * S * D_IN * D_HID and leaf.notes["weight_dtype"] == dtype
        assert any(f"8-bit weight elements ({dtype}) never trained" in r for r in _reasons(nn.Sequential(layer), x))


# -- the pytest fixture ------------------------------------------------------------------------


def test_the_fixture_reports_quantized_weights_as_extrapolating(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_q='''
import warnings
import torch
from torch import nn


def test_quantized(irene):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 64))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        model = torch.ao.quantization.quantize_dynamic(model, {nn.Linear}, dtype=torch.qint8)
    tree = irene(model, torch.randn(8, 32, 64))
    assert tree["0"].type == "Linear" and tree["0"].features["flops"] > 0
''')
    result = run(pytester)
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["*extrapolates: test_q.py::test_quantized*8-bit weight elements (qint8) never trained*"])
