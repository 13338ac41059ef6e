"""Feature fidelity at real sizes: traced flops, parameters and sizes against analytic counts.

Today's architectures are built at their published sizes on the meta device (no weights, no
download: ``AutoConfig.for_model`` + ``AutoModel.from_config`` under ``torch.device("meta")``)
and traced once each. Each row compares the root's flops with a count written by hand from the
config, in the project's convention (``engine/features.py``): a multiply-add is 2 flops, every
matrix product is counted at its full size, and attention scores are ``S × S`` per head and
sample whether or not the model is causal (the reference dataset applied the mask, it never
skipped the masked half). A mixture of experts counts the routed experts only: ``top_k`` of
them per token (``engine/moe.py``), except Llama 4, whose transformers code runs every expert on
every token (scaled by the router's scores), so all of them count. The hand counts hold the matrix products (and the selective
scan of Mamba); the traced count also has the norms, activations, softmax, bias and residual
adds, so a ratio slightly above 1 is expected and one below 1 is missing work.

Also checked: the root's parameters against ``sum(p.numel())`` (tied tables once), the batch
and tokens per sample the tracer found against what the model processes, and that the bytes
moved hold every weight at least once at the model's dtype (``mem/weights`` ≥ 1; bf16 rows
move about half the bytes of their fp32 twins).

Run from the repository root::

    python benchmarks/bench_features.py                 # the table
    python benchmarks/bench_features.py --only llama-3.1-70b --only mixtral-8x7b
    python benchmarks/bench_features.py --write-results # also replace its section of RESULTS.md
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from common import table, timed, write_results_section

from pytest_irene.engine.architectures import example_inputs
from pytest_irene.engine.tracing import trace

Config = Any
#: (config, batch, tokens per sample) -> flops of the root, by hand.
Analytic = Callable[[Config, int, int], float]

#: Tokens the decoder of an encoder-decoder gets in these rows.
DECODER_TOKENS = 64


# -- hand counts: per token, per layer --------------------------------------------------------------


def _head_dim(cfg: Config) -> int:
    return int(getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads)


def _gqa_projection_params(cfg: Config) -> int:
    """q, k, v, o of grouped-query attention: ``d·H·hd`` twice and ``d·KV·hd`` twice."""
    d, hd = cfg.hidden_size, _head_dim(cfg)
    return 2 * d * cfg.num_attention_heads * hd + 2 * d * cfg.num_key_value_heads * hd


def _scores_flops(batch: int, queries: int, keys: int, heads: int, qk_dim: int, v_dim: int) -> float:
    """``Q·Kᵀ`` and ``P·V`` of one attention: 2 flops per multiply-add, every score counted."""
    return 2.0 * batch * queries * keys * heads * (qk_dim + v_dim)


def _gated_mlp_params(d: int, inner: int) -> int:
    return 3 * d * inner


def dense_decoder(cfg: Config, batch: int, seq: int) -> float:
    """Llama, Mistral, Qwen3, Phi-3, Gemma: GQA projections, a gated MLP, dense attention."""
    per_token = _gqa_projection_params(cfg) + _gated_mlp_params(cfg.hidden_size, cfg.intermediate_size)
    hd = _head_dim(cfg)
    attention = _scores_flops(batch, seq, seq, cfg.num_attention_heads, hd, hd)
    return cfg.num_hidden_layers * (2.0 * batch * seq * per_token + attention)


def _routed(cfg: Config, experts: int, top_k: int, inner: int) -> int:
    """Per-token weights of a routed layer: the router (``d·E``) and ``top_k`` gated experts."""
    return cfg.hidden_size * experts + top_k * _gated_mlp_params(cfg.hidden_size, inner)


def _routed_decoder(cfg: Config, batch: int, seq: int, experts: int, inner: int) -> float:
    """A GQA decoder whose every MLP is routed: ``top_k`` of ``experts`` gated experts of width ``inner``."""
    hd = _head_dim(cfg)
    per_token = _gqa_projection_params(cfg) + _routed(cfg, experts, cfg.num_experts_per_tok, inner)
    return cfg.num_hidden_layers * (2.0 * batch * seq * per_token
                                    + _scores_flops(batch, seq, seq, cfg.num_attention_heads, hd, hd))


def mixtral(cfg: Config, batch: int, seq: int) -> float:
    return _routed_decoder(cfg, batch, seq, cfg.num_local_experts, cfg.intermediate_size)


def qwen3_moe(cfg: Config, batch: int, seq: int) -> float:
    return _routed_decoder(cfg, batch, seq, cfg.num_experts, cfg.moe_intermediate_size)


def qwen2_moe(cfg: Config, batch: int, seq: int) -> float:
    """Routed experts plus the always-on shared expert and its 1-wide gate."""
    hd, d = _head_dim(cfg), cfg.hidden_size
    shared = _gated_mlp_params(d, cfg.shared_expert_intermediate_size) + d
    per_token = _gqa_projection_params(cfg) + shared + _routed(cfg, cfg.num_experts, cfg.num_experts_per_tok,
                                                               cfg.moe_intermediate_size)
    return cfg.num_hidden_layers * (2.0 * batch * seq * per_token
                                    + _scores_flops(batch, seq, seq, cfg.num_attention_heads, hd, hd))


def llama4(cfg: Config, batch: int, seq: int) -> float:
    """Llama 4 as transformers runs it: every token through every expert (scaled by its router
    score, dense: not top-k), a shared expert and the router, in every layer."""
    hd, d = _head_dim(cfg), cfg.hidden_size
    experts = cfg.num_local_experts * _gated_mlp_params(d, cfg.intermediate_size)
    per_token = _gqa_projection_params(cfg) + d * cfg.num_local_experts + experts \
        + _gated_mlp_params(d, cfg.intermediate_size)
    return cfg.num_hidden_layers * (2.0 * batch * seq * per_token
                                    + _scores_flops(batch, seq, seq, cfg.num_attention_heads, hd, hd))


def _mla_params(cfg: Config) -> int:
    """Multi-head latent attention's weights per token: low-rank q and kv, then the output."""
    d, h = cfg.hidden_size, cfg.num_attention_heads
    qk = cfg.qk_nope_head_dim + cfg.qk_rope_head_dim
    return (d * cfg.q_lora_rank + cfg.q_lora_rank * h * qk + d * (cfg.kv_lora_rank + cfg.qk_rope_head_dim)
            + cfg.kv_lora_rank * h * (cfg.qk_nope_head_dim + cfg.v_head_dim) + h * cfg.v_head_dim * d)


def longcat_flash(cfg: Config, batch: int, seq: int) -> float:
    """LongCat-Flash: per layer two MLA attentions and two dense MLPs, and one MoE (the shortcut) whose
    router picks ``top_k`` of ``E + zero`` experts: a pick of a zero-compute expert costs no product."""
    d, h = cfg.hidden_size, cfg.num_attention_heads
    qk = cfg.qk_nope_head_dim + cfg.qk_rope_head_dim
    total = cfg.n_routed_experts + cfg.zero_expert_num
    routed = cfg.num_experts_per_tok * cfg.n_routed_experts / total * _gated_mlp_params(d, cfg.expert_ffn_hidden_size)
    per_token = 2 * _mla_params(cfg) + 2 * _gated_mlp_params(d, cfg.ffn_hidden_size) + d * total + routed
    attention = 2 * _scores_flops(batch, seq, seq, h, qk, cfg.v_head_dim)
    return cfg.num_layers * (2.0 * batch * seq * per_token + attention)


def jetmoe(cfg: Config, batch: int, seq: int) -> float:
    """JetMoE: top-k of E experts in the attention (query and output projections per expert, keys and
    values shared; ``top_k × kv heads`` query heads) and in the MLP, each behind its own router."""
    d, k, experts = cfg.hidden_size, cfg.num_experts_per_tok, cfg.num_local_experts
    proj = cfg.kv_channels * cfg.num_key_value_heads
    attention = d * experts + k * 2 * d * proj + d * 2 * proj
    mlp = d * experts + k * 3 * d * cfg.intermediate_size  # gate and up (d → 2I), then down
    scores = _scores_flops(batch, seq, seq, k * cfg.num_key_value_heads, cfg.kv_channels, cfg.kv_channels)
    return cfg.num_hidden_layers * (2.0 * batch * seq * (attention + mlp) + scores)


def _sparse_layers(layers: int, step: int) -> int:
    """Switch Transformers' sparse layers: ``i % step == 1`` (every layer for a step of 1)."""
    return sum(1 for i in range(layers) if step == 1 or (step > 0 and i % step == 1))


def switch_transformers(cfg: Config, batch: int, seq: int) -> float:
    """Switch Transformers: a T5 (ReLU MLP) whose sparse layers send each token to one expert (top-1,
    an MLP's cost) behind a ``d·E`` router; encoder on ``seq`` tokens, decoder on :data:`DECODER_TOKENS`."""
    d, inner, dec = cfg.d_model, cfg.num_heads * cfg.d_kv, DECODER_TOKENS
    mlp = 2 * d * cfg.d_ff
    encoder = cfg.num_layers * (2.0 * batch * seq * (4 * d * inner + mlp)
                                + _scores_flops(batch, seq, seq, 1, inner, inner))
    encoder += _sparse_layers(cfg.num_layers, cfg.encoder_sparse_step) * 2.0 * batch * seq * d * cfg.num_experts
    decoder = cfg.num_decoder_layers * (
        2.0 * batch * dec * (6 * d * inner + mlp) + 2.0 * batch * seq * 2 * d * inner
        + _scores_flops(batch, dec, dec, 1, inner, inner) + _scores_flops(batch, dec, seq, 1, inner, inner))
    decoder += _sparse_layers(cfg.num_decoder_layers, cfg.decoder_sparse_step) * 2.0 * batch * dec * d * cfg.num_experts
    return encoder + decoder


def deepseek_v3(cfg: Config, batch: int, seq: int) -> float:
    """Multi-head latent attention (low-rank q and kv, 192-wide q·k, 128-wide v), then dense MLPs
    in the first ``first_k_dense_replace`` layers and routed + shared experts in the others."""
    d, h = cfg.hidden_size, cfg.num_attention_heads
    qk = cfg.qk_nope_head_dim + cfg.qk_rope_head_dim
    mla = _mla_params(cfg)
    dense = _gated_mlp_params(d, cfg.intermediate_size)
    moe = (_routed(cfg, cfg.n_routed_experts, cfg.num_experts_per_tok, cfg.moe_intermediate_size)
           + cfg.n_shared_experts * _gated_mlp_params(d, cfg.moe_intermediate_size))
    k = cfg.first_k_dense_replace
    per_token = cfg.num_hidden_layers * mla + k * dense + (cfg.num_hidden_layers - k) * moe
    attention = _scores_flops(batch, seq, seq, h, qk, cfg.v_head_dim)
    return 2.0 * batch * seq * per_token + cfg.num_hidden_layers * attention


def _encoder_layers(layers: int, d: int, inner: int, batch: int, seq: int, mlp_mats: int = 2) -> float:
    """``layers`` post-/pre-norm encoder layers: 4·d² projections, ``mlp_mats``·d·I MLP, dense attention."""
    per_token = 4 * d * d + mlp_mats * d * inner
    return layers * (2.0 * batch * seq * per_token + _scores_flops(batch, seq, seq, 1, d, d))


def modernbert(cfg: Config, batch: int, seq: int) -> float:
    """Fused Wqkv, a GLU MLP (``Wi``: d → 2I, ``Wo``: I → d); local layers still count every score
    (the sliding window is a mask)."""
    return _encoder_layers(cfg.num_hidden_layers, cfg.hidden_size, cfg.intermediate_size, batch, seq, mlp_mats=3)


def t5(cfg: Config, batch: int, seq: int) -> float:
    """Gated-GELU T5: the encoder on ``seq`` tokens, the decoder on :data:`DECODER_TOKENS`, its
    cross-attention keys and values projected from the encoder's ``seq`` tokens."""
    d, inner, dec = cfg.d_model, cfg.num_heads * cfg.d_kv, DECODER_TOKENS
    mlp = _gated_mlp_params(d, cfg.d_ff)
    encoder = cfg.num_layers * (2.0 * batch * seq * (4 * d * inner + mlp)
                                + _scores_flops(batch, seq, seq, 1, inner, inner))
    decoder = cfg.num_decoder_layers * (
        2.0 * batch * dec * (6 * d * inner + mlp) + 2.0 * batch * seq * 2 * d * inner
        + _scores_flops(batch, dec, dec, 1, inner, inner) + _scores_flops(batch, dec, seq, 1, inner, inner))
    return encoder + decoder


def _patches(cfg: Config) -> int:
    return (cfg.image_size // cfg.patch_size) ** 2


def _patch_embedding(cfg: Config, batch: int) -> float:
    return 2.0 * batch * _patches(cfg) * cfg.num_channels * cfg.patch_size**2 * cfg.hidden_size


def vit(cfg: Config, batch: int, seq: int) -> float:
    """ViT: patch conv, encoder over patches + class token, tanh pooler on the class token."""
    d = cfg.hidden_size
    tokens = _patches(cfg) + 1
    return (_patch_embedding(cfg, batch) + _encoder_layers(cfg.num_hidden_layers, d, cfg.intermediate_size, batch, tokens)
            + 2.0 * batch * d * d)


def siglip_vision(cfg: Config, batch: int, seq: int) -> float:
    """SigLIP's tower: patch conv, encoder over the patches (no class token), then the attention-pooling
    head: one probe query against every patch (``nn.MultiheadAttention``) and an MLP on it."""
    d, n = cfg.hidden_size, _patches(cfg)
    head = 2.0 * batch * (d * d + n * 2 * d * d + d * d + 2 * d * cfg.intermediate_size)
    head += _scores_flops(batch, 1, n, 1, d, d)
    return _patch_embedding(cfg, batch) + _encoder_layers(cfg.num_hidden_layers, d, cfg.intermediate_size, batch, n) + head


def whisper(cfg: Config, batch: int, seq: int) -> float:
    """Whisper: two convolutions over the mel frames (the second halves them), the encoder over
    ``max_source_positions`` frames, the decoder on :data:`DECODER_TOKENS` with cross-attention."""
    d, frames, dec = cfg.d_model, cfg.max_source_positions, DECODER_TOKENS
    convs = 2.0 * batch * (2 * frames * cfg.num_mel_bins * 3 * d + frames * d * 3 * d)
    encoder = _encoder_layers(cfg.encoder_layers, d, cfg.encoder_ffn_dim, batch, frames)
    decoder = cfg.decoder_layers * (
        2.0 * batch * dec * (6 * d * d + 2 * d * cfg.decoder_ffn_dim) + 2.0 * batch * frames * 2 * d * d
        + _scores_flops(batch, dec, dec, 1, d, d) + _scores_flops(batch, dec, frames, 1, d, d))
    return convs + encoder + decoder


def _conv_lengths(cfg: Config, frames: int) -> list[int]:
    """Output length of each feature-extractor convolution, last = ``frames``."""
    lengths = [frames]
    for kernel, stride in reversed(list(zip(cfg.conv_kernel[1:], cfg.conv_stride[1:]))):
        lengths.insert(0, (lengths[0] - 1) * stride + kernel)
    return lengths


def wav2vec2(cfg: Config, batch: int, seq: int) -> float:
    """wav2vec2: 7 strided convolutions over the waveform, a projection, a grouped positional
    convolution (kernel 128, one extra output trimmed), then the encoder over ``seq`` frames."""
    d = cfg.hidden_size
    lengths = _conv_lengths(cfg, seq)
    channels_in = [1] + list(cfg.conv_dim[:-1])
    convs = sum(2.0 * batch * n * c_in * k * c_out
                for n, c_in, k, c_out in zip(lengths, channels_in, cfg.conv_kernel, cfg.conv_dim))
    projection = 2.0 * batch * seq * cfg.conv_dim[-1] * d
    positional = 2.0 * batch * (seq + 1) * (d // cfg.num_conv_pos_embedding_groups) * cfg.num_conv_pos_embeddings * d
    return convs + projection + positional + _encoder_layers(cfg.num_hidden_layers, d, cfg.intermediate_size, batch, seq)


#: Flops per state element and token of a selective scan: the discretisation ``Δ·A`` and its exp,
#: ``Δ·B·x``, the recurrence ``h = Ā·h + B̄x`` and the read-out ``C·h`` (one multiply-add each).
SCAN_FLOPS_PER_STATE = 8


def mamba(cfg: Config, batch: int, seq: int) -> float:
    """Mamba: in/x/dt/out projections, the depthwise causal conv and the selective scan."""
    d, di, n, r = cfg.hidden_size, cfg.intermediate_size, cfg.state_size, cfg.time_step_rank
    per_token = d * 2 * di + di * (r + 2 * n) + r * di + di * d + cfg.conv_kernel * di
    scan = SCAN_FLOPS_PER_STATE * di * n
    return cfg.num_hidden_layers * batch * seq * (2.0 * per_token + scan)


def mamba2(cfg: Config, batch: int, seq: int) -> float:
    """Mamba-2 in its quadratic (one chunk) form, as the grouped algorithm needs it: ``C·Bᵀ`` per
    group, then the decayed scores times ``x`` per head; projections and the depthwise conv."""
    d, n, g, h = cfg.hidden_size, cfg.state_size, cfg.n_groups, cfg.num_heads
    di = h * cfg.head_dim
    in_proj = d * (2 * di + 2 * g * n + h)
    per_token = in_proj + di * d + cfg.conv_kernel * (di + 2 * g * n)
    ssd = 2.0 * batch * seq * seq * (g * n + di)
    return cfg.num_hidden_layers * (2.0 * batch * seq * per_token + ssd)


def published(macs_per_image: float) -> Analytic:
    """A CNN's published multiply-adds per 224² image (fvcore / the papers), as flops."""
    def count(cfg: Config, batch: int, seq: int) -> float:
        return 2.0 * macs_per_image * batch
    count.__doc__ = f"{macs_per_image / 1e9:.2f} GMACs per image (published)"
    return count


# -- the cases ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    """One architecture at its real size: its config, its hand count and the sizes it processes."""

    name: str
    model_type: str
    config: dict[str, Any]
    analytic: Analytic
    batch: int = 2
    seq: int = 2048  # ids per sample (text), frames (wav2vec2); ignored where the input is fixed
    expected_tokens: int | None = None  # tokens per sample the tracer should find; ``seq`` if None
    dtype: torch.dtype = torch.float32
    note: str = ""
    decoder: bool = field(default=False)  # an encoder-decoder: gets DECODER_TOKENS decoder ids


_LLAMA_70B = dict(hidden_size=8192, intermediate_size=28672, num_hidden_layers=80, num_attention_heads=64,
                  num_key_value_heads=8, vocab_size=128256)
_MIXTRAL = dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
                num_key_value_heads=8, vocab_size=32000, num_local_experts=8, num_experts_per_tok=2)

CASES: tuple[Case, ...] = (
    Case("llama-3.1-70b", "llama", _LLAMA_70B, dense_decoder, note="GQA 64/8"),
    Case("llama-3.1-70b bf16", "llama", _LLAMA_70B, dense_decoder, dtype=torch.bfloat16),
    Case("mistral-7b", "mistral", dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
                                       num_attention_heads=32, num_key_value_heads=8, vocab_size=32000), dense_decoder),
    Case("qwen3-8b", "qwen3", dict(hidden_size=4096, intermediate_size=12288, num_hidden_layers=36,
                                   num_attention_heads=32, num_key_value_heads=8, head_dim=128, vocab_size=151936),
         dense_decoder, note="q/k norms"),
    Case("phi-3-mini", "phi3", dict(hidden_size=3072, intermediate_size=8192, num_hidden_layers=32,
                                    num_attention_heads=32, num_key_value_heads=32, vocab_size=32064),
         dense_decoder, note="fused qkv, gate_up"),
    Case("gemma-2-9b", "gemma2", dict(hidden_size=3584, intermediate_size=14336, num_hidden_layers=42,
                                      num_attention_heads=16, num_key_value_heads=8, head_dim=256, vocab_size=256000),
         dense_decoder, note="eager: soft-capping, sliding window as a mask"),
    Case("gemma-3-4b text", "gemma3_text", dict(hidden_size=2560, intermediate_size=10240, num_hidden_layers=34,
                                               num_attention_heads=8, num_key_value_heads=4, head_dim=256,
                                               vocab_size=262208), dense_decoder, note="5 local : 1 global"),
    Case("mixtral-8x7b", "mixtral", _MIXTRAL, mixtral, note="MoE top-2 of 8"),
    Case("mixtral-8x7b bf16", "mixtral", _MIXTRAL, mixtral, dtype=torch.bfloat16),
    Case("qwen3-30b-a3b", "qwen3_moe", dict(hidden_size=2048, intermediate_size=6144, moe_intermediate_size=768,
                                            num_hidden_layers=48, num_attention_heads=32, num_key_value_heads=4,
                                            head_dim=128, vocab_size=151936, num_experts=128, num_experts_per_tok=8,
                                            decoder_sparse_step=1, mlp_only_layers=[]), qwen3_moe,
         note="MoE top-8 of 128"),
    Case("qwen2-57b-a14b", "qwen2_moe", dict(hidden_size=3584, intermediate_size=18944, moe_intermediate_size=2560,
                                             shared_expert_intermediate_size=20480, num_hidden_layers=28,
                                             num_attention_heads=28, num_key_value_heads=4, vocab_size=151936,
                                             num_experts=64, num_experts_per_tok=8), qwen2_moe,
         note="MoE top-8 of 64 + shared"),
    Case("deepseek-v3", "deepseek_v3", {}, deepseek_v3, note="MLA, top-8 of 256 + shared"),
    Case("longcat-flash", "longcat_flash", {}, longcat_flash, note="MLA ×2, top-12 of 512 + 256 zero experts"),
    Case("jetmoe-8b", "jetmoe", dict(num_hidden_layers=24), jetmoe, note="MoA + MoE, top-2 of 8"),
    Case("switch-base-8", "switch_transformers", dict(d_ff=3072, num_sparse_encoder_layers=6,
                                                      num_sparse_decoder_layers=6), switch_transformers, seq=512,
         decoder=True, note=f"top-1 of 8, capacity 64; decoder {DECODER_TOKENS} tokens"),
    Case("llama-4-scout text", "llama4_text", dict(hidden_size=5120, intermediate_size=8192,
                                                   intermediate_size_mlp=16384, num_hidden_layers=48,
                                                   num_attention_heads=40, num_key_value_heads=8, head_dim=128,
                                                   num_local_experts=16, num_experts_per_tok=1, vocab_size=202048,
                                                   interleave_moe_layer_step=1), llama4,
         note="16 experts, all run (transformers: dense)"),
    Case("modernbert-large", "modernbert", dict(hidden_size=1024, intermediate_size=2624, num_hidden_layers=28,
                                                num_attention_heads=16, vocab_size=50368), modernbert, seq=1024),
    Case("flan-t5-xl", "t5", dict(d_model=2048, d_ff=5120, d_kv=64, num_layers=24, num_decoder_layers=24,
                                  num_heads=32, vocab_size=32128, feed_forward_proj="gated-gelu",
                                  tie_word_embeddings=False), t5, seq=512, decoder=True,
         note=f"decoder {DECODER_TOKENS} tokens"),
    Case("vit-l/16", "vit", dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24,
                                 num_attention_heads=16, image_size=224, patch_size=16), vit, expected_tokens=197),
    Case("siglip-so400m vision", "siglip_vision_model", dict(hidden_size=1152, intermediate_size=4304,
                                                             num_hidden_layers=27, num_attention_heads=16,
                                                             image_size=384, patch_size=14), siglip_vision,
         expected_tokens=729),
    Case("whisper-large-v3", "whisper", dict(d_model=1280, encoder_layers=32, decoder_layers=32,
                                             encoder_attention_heads=20, decoder_attention_heads=20,
                                             encoder_ffn_dim=5120, decoder_ffn_dim=5120, num_mel_bins=128,
                                             vocab_size=51866), whisper, expected_tokens=1500, decoder=True,
         note=f"decoder {DECODER_TOKENS} tokens"),
    Case("wav2vec2-large-lv60", "wav2vec2", dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24,
                                                 num_attention_heads=16, feat_extract_norm="layer",
                                                 do_stable_layer_norm=True, conv_bias=True), wav2vec2, seq=500,
         note="frames"),
    Case("mamba-2.8b", "mamba", dict(hidden_size=2560, num_hidden_layers=64, vocab_size=50280, state_size=16,
                                     expand=2, conv_kernel=4), mamba, seq=256, note="reference scan, 1 step a node"),
    Case("mamba2-2.7b", "mamba2", dict(hidden_size=2560, num_hidden_layers=64, vocab_size=50280, state_size=128,
                                       expand=2, head_dim=64, num_heads=80, n_groups=1), mamba2, seq=256,
         note="torch SSD: C·Bᵀ per head, chunk states"),
    Case("convnext-tiny", "convnext", {}, published(4.47e9), expected_tokens=224 * 224, note="positions"),
    Case("resnet-50", "resnet", {}, published(4.11e9), expected_tokens=224 * 224, note="positions"),
)


# -- measuring -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Row:
    case: Case
    batch: int
    tokens: int
    flops: float
    analytic: float
    params_traced: float
    params_actual: int
    mem_bytes: float
    weight_bytes: float
    trace_s: float

    @property
    def ratio(self) -> float:
        return self.flops / self.analytic

    @property
    def sizes_ok(self) -> bool:
        expected = self.case.expected_tokens or self.case.seq
        return (self.batch, self.tokens) == (self.case.batch, expected)


def build(case: Case) -> tuple[torch.nn.Module, Config]:
    """The model at its real size on meta (``from_config``: nothing downloaded, no weights)."""
    from transformers import AutoConfig, AutoModel

    cfg = AutoConfig.for_model(case.model_type, **case.config)
    with torch.device("meta"):
        model = AutoModel.from_config(cfg, dtype=case.dtype)
    return model, cfg


def inputs_for(case: Case, model: torch.nn.Module) -> dict[str, Any]:
    inputs = dict(example_inputs(model, case.batch, case.seq))
    if case.decoder:
        inputs["decoder_input_ids"] = torch.zeros(case.batch, DECODER_TOKENS, dtype=torch.long)
    return {k: (v.to(case.dtype) if torch.is_tensor(v) and v.is_floating_point() else v) for k, v in inputs.items()}


def measure(case: Case) -> Row:
    model, cfg = build(case)
    tree, seconds = timed(lambda: trace(model, inputs_for(case, model)))
    root = tree.root.features
    params = sum(p.numel() for p in model.parameters())  # parameters() yields a tied table once
    weight_bytes = float(sum(p.numel() * p.element_size() for p in model.parameters()))
    return Row(case, tree.batch_size, tree.seq_len, root["flops"], case.analytic(cfg, case.batch, case.seq),
               root["params"], params, root["mem_bytes"], weight_bytes, seconds)


def _si(x: float) -> str:
    exp = int(math.floor(math.log10(abs(x)) / 3)) if x else 0
    exp = max(0, min(exp, 5))
    return f"{x / 10 ** (3 * exp):.3f}{' kMGTP'[exp].strip()}"


def render(rows: list[Row], markdown: bool) -> str:
    headers = ["model", "dtype", "batch×tokens", "traced flops", "analytic flops", "ratio", "params traced",
               "params actual", "mem bytes", "mem/weights", "trace s", "note"]
    body = [[
        r.case.name, str(r.case.dtype).removeprefix("torch."),
        f"{r.batch}×{r.tokens}" + ("" if r.sizes_ok else f" (want {r.case.batch}×{r.case.expected_tokens or r.case.seq})"),
        _si(r.flops), _si(r.analytic), f"{r.ratio:.4f}", _si(r.params_traced), _si(float(r.params_actual)),
        _si(r.mem_bytes), f"{r.mem_bytes / r.weight_bytes:.2f}", f"{r.trace_s:.2f}", r.case.note,
    ] for r in rows]
    return table(headers, body, markdown)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", action="append", help="a case name (repeatable)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--markdown", action="store_true")
    parser.add_argument("--write-results", action="store_true", help="replace this section of benchmarks/RESULTS.md")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cases = [c for c in CASES if not args.only or c.name in args.only]
    rows = [measure(c) for c in cases]
    print(render(rows, args.markdown))
    bad = [r.case.name for r in rows if not r.sizes_ok or r.params_traced != r.params_actual or r.mem_bytes < r.weight_bytes]
    if bad:
        print("\nsizes, parameters or bytes wrong for: " + ", ".join(bad))
    if args.write_results:
        write_results_section("features", _section(rows))
    return 1 if bad else 0


def _section(rows: list[Row]) -> str:
    return ("## Feature fidelity at real sizes (`bench_features.py`)\n\n"
            "Published configs built on the meta device (nothing downloaded) and traced once each, batch 2; "
            "analytic flops by hand from each config (2 flops per multiply-add, every attention score counted: "
            "the project's convention, see the script's docstring; MoE: the routed top-k experts only, "
            "Llama 4: every expert, as transformers runs it). "
            "A ratio above 1 is the norms, activations, softmax and adds the hand count leaves out.\n\n"
            + render(rows, markdown=True) + "\n\n" + _NOTES)


_NOTES = """\
- **mamba2** is 10 % above the grouped algorithm because the trace counts what transformers' torch
  path runs: it repeats ``B`` and ``C`` over the 80 heads before ``C·Bᵀ`` (one group would do) and
  also builds the chunk states; the CUDA kernels (``mamba_ssm``) are not installed here.
- **mem/weights** is above 1 everywhere (every weight read at least once, bf16 rows half the bytes);
  a 3-D ``Linear`` reads its weight once per batch item (the reference dataset's PyTorch 1.7
  convention, ``engine/features.py``), so at batch 2 the weights count twice.
- Found by this sweep and fixed: wav2vec2-large (``do_stable_layer_norm``; HuBERT/WavLM-large alike)
  traced its whole encoder, ``Wav2Vec2EncoderStableLayerNorm``, as one LayerNorm leaf (100.2 G flops
  instead of 772.6 G here) and took the feature extractor's conv positions for its tokens (32,015
  per sample instead of 500 frames); a functional convolution (``F.conv1d``: Mamba's causal conv
  without its kernel) counted 0 flops; Llama 4's experts (called with the rows alone) counted 0
  flops, on meta and on CPU; a functional ``F.linear`` leaf (MoE routers) had 0 parameters.
"""


if __name__ == "__main__":
    raise SystemExit(main())
