"""Feature fidelity: traced flops, parameters, sizes and bytes against counts written by hand.

The convention is the project's (``engine/features.py``): a multiply-add is 2 flops, a 3-D
``Linear`` adds its bias (1 flop per output), attention counts every score (the mask is applied,
never skipped) and a mixture of experts counts the ``top_k`` routed experts per token. Real sizes
are in ``benchmarks/bench_features.py``; these are the same checks on configs small enough for a
unit test, plus one test per bug the real-size sweep found.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from pytest_irene.engine.architectures import example_inputs
from pytest_irene.engine.tracing import trace

transformers = pytest.importorskip("transformers")

B, S = 2, 12


def _meta(model_cls: str, config_cls: str, dtype: torch.dtype = torch.float32, **kwargs):  # type: ignore[no-untyped-def]
    config = getattr(transformers, config_cls)(**kwargs)
    with torch.device("meta"):
        return getattr(transformers, model_cls)(config).to(dtype), config


def _leaf_flops(tree, type_name: str) -> float:  # type: ignore[no-untyped-def]
    return sum(n.features["flops"] for n in tree.walk() if n.type == type_name and n.level == "ml")


# -- a GQA decoder: every block against its formula ------------------------------------------------

_LLAMA = dict(hidden_size=64, intermediate_size=160, num_hidden_layers=2, num_attention_heads=8, num_key_value_heads=2,
              head_dim=8, vocab_size=300, max_position_embeddings=64, tie_word_embeddings=True)


def test_gqa_decoder_blocks_match_their_hand_counts() -> None:
    model, cfg = _meta("LlamaForCausalLM", "LlamaConfig", **_LLAMA)
    tree = trace(model, example_inputs(model, B, S))
    d, h, kv, hd, inner, t = cfg.hidden_size, cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim, \
        cfg.intermediate_size, B * S
    attn = tree["model.layers.0.self_attn"]
    linears = {c.scope.rsplit(".", 1)[1]: c.features["flops"] for c in attn.children if c.type == "Linear"}
    assert linears == {"q_proj": 2 * t * d * h * hd, "k_proj": 2 * t * d * kv * hd,
                       "v_proj": 2 * t * d * kv * hd, "o_proj": 2 * t * h * hd * d}
    scores = B * h * S * S  # GQA: the scores are the query heads', keys shared across groups
    sdpa = next(c for c in attn.children if c.type == "ScaledDotProductAttention")
    assert 2 * scores * 2 * hd + 6 * scores <= sdpa.features["flops"] <= 2 * scores * 2 * hd + 7 * scores
    mlp = tree["model.layers.0.mlp"]
    assert mlp.features["flops"] == 3 * 2 * t * d * inner + 5 * t * inner + t * inner  # 3 products, SiLU, gate × up
    matmul_params = cfg.num_hidden_layers * (2 * d * h * hd + 2 * d * kv * hd + 3 * d * inner) + d * cfg.vocab_size
    assert _leaf_flops(tree, "Linear") == 2 * t * matmul_params  # the LM head reads the tied table
    assert tree.root.features["params"] == sum(p.numel() for p in model.parameters())  # the tied table once
    assert (tree.batch_size, tree.seq_len) == (B, S)


def test_bf16_moves_half_the_bytes_for_the_same_flops_and_reads_every_weight() -> None:
    fp32, _ = _meta("LlamaModel", "LlamaConfig", **_LLAMA)
    bf16, _ = _meta("LlamaModel", "LlamaConfig", dtype=torch.bfloat16, **_LLAMA)
    a, b = (trace(m, example_inputs(m, B, S)) for m in (fp32, bf16))
    assert b.root.features["flops"] == a.root.features["flops"]
    assert b.root.features["bytes_per_element"] == 2 and b.meta["dtype"] == "bfloat16"
    linears = [(n.features["mem_bytes"], b[n.scope].features["mem_bytes"]) for n in a.walk() if n.type == "Linear"]
    assert linears and all(half == full / 2 for full, half in linears)
    # about half in all: the ids stay int64 and the rotary table is computed in fp32
    assert b.root.features["mem_bytes"] == pytest.approx(a.root.features["mem_bytes"] / 2, rel=0.01)
    for tree, model in ((a, fp32), (b, bf16)):
        assert tree.root.features["mem_bytes"] >= sum(p.numel() * p.element_size() for p in model.parameters())


# -- mixture of experts: the routed experts' work, not every expert's ----------------------------------


def _mixtral_experts_flops(experts: int) -> tuple[float, float]:
    model, cfg = _meta("MixtralModel", "MixtralConfig", hidden_size=64, intermediate_size=96, num_hidden_layers=1,
                       num_attention_heads=4, num_key_value_heads=2, vocab_size=100, num_local_experts=experts,
                       num_experts_per_tok=2)
    tree = trace(model, example_inputs(model, B, S))
    node = next(n for n in tree.walk() if n.scope.endswith("mlp.experts"))
    return node.features["flops"], node.features["params"]


def test_moe_counts_top_k_experts_per_token_whatever_the_number_of_experts() -> None:
    d, inner, rows = 64, 96, B * S * 2  # every token goes to its top-2
    per_row = 2 * d * 2 * inner + 2 * inner * d + 5 * inner + inner + 2 * d  # gate_up, down, SiLU, gate × up, weighting
    four, params4 = _mixtral_experts_flops(4)
    eight, params8 = _mixtral_experts_flops(8)
    assert four == eight == per_row * rows
    assert params8 == 2 * params4 == 8 * 3 * d * inner  # the parameters are every expert's


def test_llama4_experts_count_every_row_they_run_on_meta_and_on_cpu() -> None:
    """Llama 4 sends every token to every expert (scaled by its router score) and its experts are
    called with the rows alone: they counted 0 flops. transformers runs them all, so all count."""
    kwargs = dict(hidden_size=32, intermediate_size=48, intermediate_size_mlp=64, num_hidden_layers=1,
                  num_attention_heads=4, num_key_value_heads=2, head_dim=8, num_local_experts=4,
                  num_experts_per_tok=1, vocab_size=100)
    model, cfg = _meta("Llama4TextModel", "Llama4TextConfig", **kwargs)
    meta = trace(model, example_inputs(model, B, S))
    d, inner = cfg.hidden_size, cfg.intermediate_size
    rows = B * S * cfg.num_local_experts
    experts = meta["layers.0.feed_forward.experts"]
    assert experts.features["flops"] == rows * (2 * d * 2 * inner + 2 * inner * d + 5 * inner + inner)
    torch.manual_seed(0)
    real = transformers.Llama4TextModel(cfg).eval()
    cpu = trace(real, example_inputs(real, B, S, device="cpu"), device="cpu")
    assert cpu[experts.scope].features == experts.features


# -- an encoder-decoder: cross-attention projects the encoder's tokens ---------------------------------


def test_t5_products_follow_encoder_and_decoder_tokens() -> None:
    model, cfg = _meta("T5Model", "T5Config", d_model=32, d_ff=48, d_kv=8, num_heads=4, num_layers=2,
                       num_decoder_layers=1, vocab_size=100, feed_forward_proj="gated-gelu")
    dec = 5
    tree = trace(model, {**example_inputs(model, B, S), "decoder_input_ids": torch.zeros(B, dec, dtype=torch.long)})
    d, inner, ff = cfg.d_model, cfg.num_heads * cfg.d_kv, cfg.d_ff
    encoder = cfg.num_layers * B * S * (4 * d * inner + 3 * d * ff)
    decoder = cfg.num_decoder_layers * (B * dec * (6 * d * inner + 3 * d * ff) + B * S * 2 * d * inner)
    assert _leaf_flops(tree, "Linear") == 2 * (encoder + decoder)
    assert (tree.batch_size, tree.seq_len) == (B, S)  # the encoder's tokens


# -- bugs found at real sizes ----------------------------------------------------------------------------

_W2V_LARGE = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, conv_dim=[16, 16],
                  conv_kernel=[10, 3], conv_stride=[5, 2], num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2,
                  vocab_size=32, feat_extract_norm="layer", do_stable_layer_norm=True)


@pytest.mark.parametrize(("model_cls", "config_cls"), [
    ("Wav2Vec2Model", "Wav2Vec2Config"), ("HubertModel", "HubertConfig"), ("WavLMModel", "WavLMConfig"),
])
def test_stable_layer_norm_waveform_models_trace_their_encoder_and_count_frames(model_cls: str, config_cls: str) -> None:
    """wav2vec2-large (and HuBERT/WavLM-large): the encoder, ``...EncoderStableLayerNorm``, was taken for a
    LayerNorm leaf (8 flops per output element, no layers), and the feature extractor's LayerNorms gave the
    conv positions (79 per sample here, 16,399 at real size) as the tokens instead of the 39 frames."""
    model, cfg = _meta(model_cls, config_cls, **_W2V_LARGE)
    tree = trace(model, torch.randn(B, 400))
    assert (tree.batch_size, tree.seq_len) == (B, 39)
    encoder = tree["encoder"]
    assert encoder.level == "module" and encoder.type.endswith("EncoderStableLayerNorm")
    d, frames = cfg.hidden_size, B * 39
    layers = [n for n in encoder.children if n.scope.startswith("encoder.layers.")]
    assert len(layers) == cfg.num_hidden_layers and all(n.level == "module" for n in layers)
    assert encoder.features["flops"] > cfg.num_hidden_layers * 2 * frames * (4 * d * d + 2 * d * cfg.intermediate_size)


class _NormedBlock(nn.Module):
    """A block named after its norm (as the stable-layer-norm encoders are)."""

    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(8, 8)
        self.norm = nn.LayerNorm(8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.proj(x))


class PreLayerNorm(_NormedBlock):
    pass


class ScaledLayerNorm(nn.Module):
    """A real norm under a family name: its own weight, no layers."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(8))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x, (8,)) * self.weight


def test_a_class_named_like_a_norm_is_a_leaf_only_without_layers() -> None:
    x = torch.randn(B, S, 8)
    block = trace(PreLayerNorm(), x)
    assert block.root.level == "model" and [c.scope for c in block.root.children] == ["proj", "norm"]
    assert block.root.features["flops"] == 2 * B * S * 8 * 8 + B * S * 8 + 8 * B * S * 8
    norm = trace(nn.Sequential(ScaledLayerNorm()), x)["0"]
    assert norm.level == "ml" and norm.type == "ScaledLayerNorm" and norm.features["flops"] == 8 * B * S * 8


class _Functional(nn.Module):
    """A layer's weights applied with ``F.conv*``, as Mamba's causal conv fallback does."""

    def __init__(self, conv: nn.Module, fn) -> None:  # type: ignore[no-untyped-def]
        super().__init__()
        self.conv, self.fn = conv, fn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = self.conv
        return self.fn(x, c.weight, c.bias, stride=c.stride, padding=c.padding, groups=c.groups)


@pytest.mark.parametrize(("conv", "fn"), [
    (nn.Conv1d(8, 8, 4, padding=3, groups=8), F.conv1d),  # Mamba's depthwise causal conv
    (nn.Conv2d(3, 6, 3, stride=2), F.conv2d),
    (nn.ConvTranspose1d(8, 4, 3, stride=2), F.conv_transpose1d),
], ids=["depthwise", "conv2d", "transposed"])
def test_a_functional_convolution_costs_what_its_module_costs(conv: nn.Module, fn) -> None:  # type: ignore[no-untyped-def]
    """It was free glue: Mamba's conv over every layer's ``d_inner`` channels counted 0 flops."""
    x = torch.randn(B, *([conv.in_channels, 16] if isinstance(conv, (nn.Conv1d, nn.ConvTranspose1d))
                         else [conv.in_channels, 16, 16]))
    as_module = trace(nn.Sequential(conv), x).root.features
    as_function = trace(_Functional(conv, fn), x).root.features
    assert as_function["flops"] == as_module["flops"] > 0
    assert as_function["mem_bytes"] == as_module["mem_bytes"]
    assert trace(_Functional(conv, fn), x, device="cpu").root.features == as_function  # one count on every device


def _mamba_flops(conv_kernel: int) -> tuple[float, int]:
    model, cfg = _meta("MambaModel", "MambaConfig", hidden_size=16, num_hidden_layers=1, vocab_size=50, state_size=4,
                       expand=2, conv_kernel=conv_kernel)
    return trace(model, example_inputs(model, B, S)).root.features["flops"], cfg.intermediate_size


def test_mamba_counts_its_functional_causal_conv() -> None:
    """Only the conv depends on its kernel: a longer kernel costs its depthwise products (over
    ``S + kernel - 1`` padded outputs, then trimmed) and bias adds, which counted 0 before."""
    (short, d_inner), (long, _) = _mamba_flops(2), _mamba_flops(4)

    def conv(kernel: int) -> int:
        outputs = B * (S + kernel - 1) * d_inner
        return 2 * outputs * kernel + outputs

    assert long - short == conv(4) - conv(2)


class _Router(nn.Module):
    """A router whose weight is applied with ``F.linear`` (transformers' MoE routers)."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(4, 8))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight).softmax(-1)


class _Mixer(nn.Module):
    """``F.linear`` of two activations: a product, not a layer with weights."""

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.linear(x, y)


def test_a_functional_linear_leaf_has_its_weights_parameters() -> None:
    tree = trace(_Router(), torch.randn(B, S, 8))
    linear = tree["linear#0"]
    assert linear.type == "Linear" and linear.features["params"] == 4 * 8
    assert linear.features["flops"] == 2 * B * S * 8 * 4
    assert tree["softmax#0"].features["params"] == 0
    product = trace(_Mixer(), (torch.randn(B, S, 8), torch.randn(4, 8)))["linear#0"]
    assert product.features["params"] == 0 and product.features["flops"] == 2 * B * S * 8 * 4
