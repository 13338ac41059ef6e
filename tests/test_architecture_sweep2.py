"""Model coverage, second sweep: architectures shipped in 2025-2026, built tiny (no weights, no network).

The first tests name the bug each guards against: example inputs of audio models whose
``input_values``/``input_features`` are no plain waveform or Whisper spectrogram (AST, Encodec, CLAP),
a detector's example inputs whose mask a real device skipped, a 0-dim buffer (a model's constant)
made a meta tensor so its forward was refused as data-dependent, and MusicGen's decoder started
with one row per sample instead of one per codebook. The sweep at the end traces today's decoders
(hybrid state-space, MoE, sliding window) and vision encoders alike on meta and on the CPU, with
their largest leaves counted by hand.
"""

from __future__ import annotations

import pytest
import torch
import transformers
from torch import nn

from models import assert_same_tree, hf_model

from pytest_irene.engine.architectures import example_inputs
from pytest_irene.engine.datadep import DataDependentError
from pytest_irene.engine.generation import trace_generate
from pytest_irene.engine.tracing import trace

E = 32


def _shapes(inputs: dict[str, torch.Tensor]) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in inputs.items()}


_ENCODEC = dict(hidden_size=16, num_filters=4, num_residual_layers=1, upsampling_ratios=[4, 2], codebook_size=32,
                codebook_dim=16, num_lstm_layers=1, audio_channels=1, sampling_rate=8000, target_bandwidths=[100.0])
_CLAP_AUDIO = dict(hidden_size=E, patch_embeds_hidden_size=16, depths=[1, 1], num_attention_heads=[2, 2], window_size=4,
                   spec_size=64, num_mel_bins=16, patch_stride=[4, 4], patch_size=4, enable_fusion=False,
                   projection_hidden_size=32)


# -- example inputs of audio models: what their forward reads ----------------------------------------


def test_example_inputs_of_siglip2_are_its_patches_mask_and_grid() -> None:
    """SigLIP 2 (NaFlex) reads flattened patches, their mask and the grid: given an image it failed
    with "missing 2 required positional arguments: 'pixel_attention_mask' and 'spatial_shapes'"."""
    from transformers import Siglip2VisionConfig, Siglip2VisionModel

    config = Siglip2VisionConfig(hidden_size=E, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                                 num_patches=16, patch_size=4)
    model = Siglip2VisionModel(config).eval()
    inputs = example_inputs(model, 2, 8)
    assert _shapes(inputs) == {"pixel_values": (2, 16, 3 * 4 * 4), "pixel_attention_mask": (2, 16),
                               "spatial_shapes": (2, 2)}
    assert inputs["spatial_shapes"].tolist() == [[4, 4], [4, 4]]
    on_meta, on_cpu = trace(model, inputs), trace(model, example_inputs(model, 2, 8, device="cpu"), device="cpu")
    assert (on_meta.batch_size, on_meta.seq_len) == (on_cpu.batch_size, on_cpu.seq_len) == (2, 16)
    # the all-ones patch mask: applied on meta, as the documented SDPA assumption, skipped by the CPU
    assert on_meta.root.features["flops"] == pytest.approx(on_cpu.root.features["flops"], rel=0.005)


def test_example_inputs_of_ast_are_its_spectrogram() -> None:
    """AST's ``input_values`` are ``(batch, frames, mel bins)``: given a (batch, samples) waveform it failed
    with "IndexError: Dimension out of range" in its patch embedding."""
    ast = hf_model("ASTModel", "ASTConfig", hidden_size=E, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                   num_mel_bins=16, max_length=32, frequency_stride=10, time_stride=10, patch_size=16)
    inputs = example_inputs(ast, 2, 8, device="cpu")
    assert _shapes(inputs) == {"input_values": (2, 32, 16)}
    on_meta = trace(ast, inputs)
    assert (on_meta.batch_size, on_meta.seq_len) == (2, 4)  # 1 x 2 patches + class and distillation tokens
    assert_same_tree(on_meta, trace(ast, inputs, device="cpu"))


def test_example_inputs_of_a_codec_are_channels_of_samples_for_its_frames() -> None:
    """Encodec reads ``(batch, channels, samples)``; it was given ``(batch, seq_len)`` samples."""
    codec = hf_model("EncodecModel", "EncodecConfig", **_ENCODEC)
    inputs = example_inputs(codec, 2, 8, device="cpu")
    assert _shapes(inputs) == {"input_values": (2, 1, 64)}  # 8 frames of 4 x 2 samples
    tree = trace(codec, inputs, device="cpu")
    assert (tree.batch_size, tree.seq_len) == (2, 8)


def test_example_inputs_of_clap_have_its_spectrogram_layout() -> None:
    """CLAP's audio tower reads ``(batch, 1, frames, mel bins)``: given Whisper's ``(batch, mel, frames)`` it
    failed ("Dimension out of range"), and ``ClapModel`` got ids alone (``'NoneType' object has no attribute
    'transpose'``)."""
    audio = hf_model("ClapAudioModel", "ClapAudioConfig", **_CLAP_AUDIO)
    inputs = example_inputs(audio, 2, 8, device="cpu")
    assert _shapes(inputs) == {"input_features": (2, 1, 256, 16)}
    on_meta = trace(audio, inputs)
    assert (on_meta.batch_size, on_meta.seq_len) == (2, 256)  # the 64 x 64 image's 4 x 4 patches
    assert_same_tree(on_meta, trace(audio, inputs, device="cpu"))

    clap = hf_model("ClapModel", "ClapConfig", projection_dim=16, audio_config=_CLAP_AUDIO, text_config=dict(
        hidden_size=E, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, vocab_size=100,
        max_position_embeddings=40, type_vocab_size=1, pad_token_id=1))
    inputs = example_inputs(clap, 2, 8, device="cpu")
    assert set(inputs) == {"input_ids", "attention_mask", "input_features"}
    assert_same_tree(trace(clap, inputs), trace(clap, inputs, device="cpu"))


# -- a detector: its pixel mask is applied on both devices -------------------------------------------


def test_example_inputs_of_detr_pad_its_pixel_mask_so_both_devices_apply_it() -> None:
    """Without a pixel mask DETR's encoder skipped its attention mask on the CPU (all ones) while the meta
    trace applies it: the two trees' attention differed."""
    backbone = transformers.ResNetConfig(embedding_size=8, hidden_sizes=[8, 16, 16, 32], depths=[1, 1, 1, 1],
                                         out_features=["stage4"])
    detr = hf_model("DetrForObjectDetection", "DetrConfig", use_timm_backbone=False, backbone_config=backbone,
                    use_pretrained_backbone=False, d_model=E, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2,
                    decoder_attention_heads=2, encoder_ffn_dim=64, decoder_ffn_dim=64, num_queries=10, num_labels=5)
    inputs = example_inputs(detr, 2, 8, device="cpu")
    assert _shapes(inputs) == {"pixel_values": (2, 3, 224, 224), "pixel_mask": (2, 224, 224)}
    assert inputs["pixel_mask"][0].all() and not inputs["pixel_mask"][1, -1].any()
    on_meta = trace(detr, inputs)
    assert (on_meta.batch_size, on_meta.seq_len) == (2, 49)  # the encoder's 7 x 7 positions
    assert_same_tree(on_meta, trace(detr, inputs, device="cpu"))
    assert set(example_inputs(detr, 2, 8)) == {"pixel_values", "pixel_mask"}  # on meta too


# -- 0-dim buffers are constants of the model ---------------------------------------------------------


class _Strided(nn.Module):
    """Keeps its stride as a 0-dim buffer and slices by it, as Encodec pads by its convolutions'."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("stride", torch.tensor(2), persistent=False)
        self.proj = nn.Linear(E, E)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x[:, :: int(self.stride)])


def test_a_scalar_buffer_keeps_its_value_on_meta() -> None:
    """A 0-dim buffer was made a meta tensor: reading it was refused as data-dependent code."""
    model = _Strided()
    x = torch.randn(2, 10, E)
    on_meta = trace(model, x)
    assert on_meta["proj"].features["flops"] == 2 * 5 * (2 * E * E + E)  # 5 of the 10 tokens
    assert_same_tree(on_meta, trace(model, x, device="cpu"))
    with torch.device("meta"):
        built_on_meta = _Strided()  # its stride has no value: refused as data-dependent, as before
    with pytest.raises(DataDependentError, match="int\\(self.stride\\)"):
        trace(built_on_meta, x)


def test_encodec_traces_on_meta_as_on_cpu() -> None:
    codec = hf_model("EncodecModel", "EncodecConfig", **_ENCODEC)
    x = torch.randn(2, 1, 400)
    on_meta = trace(codec, x)
    assert (on_meta.batch_size, on_meta.seq_len) == (2, 50)  # 400 samples / hop 8
    assert_same_tree(on_meta, trace(codec, x, device="cpu"))


# -- MusicGen: every codebook is a decoder row ---------------------------------------------------------


def _musicgen():  # type: ignore[no-untyped-def]
    config = transformers.MusicgenConfig(
        text_encoder=dict(model_type="t5", d_model=E, d_ff=64, num_layers=1, num_heads=2, d_kv=16, vocab_size=100),
        audio_encoder=dict(model_type="encodec", **_ENCODEC),
        decoder=dict(model_type="musicgen_decoder", vocab_size=32, hidden_size=E, num_hidden_layers=1,
                     num_attention_heads=2, ffn_dim=64, num_codebooks=2, max_position_embeddings=64, pad_token_id=32,
                     bos_token_id=32),
        decoder_start_token_id=32, pad_token_id=32)
    torch.manual_seed(0)
    return transformers.MusicgenForConditionalGeneration(config).eval()


def test_musicgen_generation_starts_one_decoder_row_per_codebook() -> None:
    """The decoder's ids are ``(batch x codebooks, length)``: started with one row per sample, its decoder
    read half the batch, the CPU failed against the encoder's output and meta counted half the work."""
    model = _musicgen()
    inputs = example_inputs(model, 2, 8, device="cpu")
    on_meta = trace_generate(model, inputs, max_new_tokens=3)
    q = on_meta["decode.decoder.model.decoder.layers.0.self_attn.q_proj"]
    assert q.features["flops"] == 2 * 2 * 2 * E * E  # 2 steps x 2 samples, one embedding summed over codebooks
    assert on_meta["decode"].features["batch_size"] == 2
    assert_same_tree(on_meta, trace_generate(model, inputs, max_new_tokens=3, device="cpu"))


# -- the sweep: today's decoders and encoders, meta and CPU agree --------------------------------------

_DEC = dict(hidden_size=E, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1,
            vocab_size=100, max_position_embeddings=64)
_MAMBA = dict(mamba_n_heads=4, mamba_d_head=16, mamba_d_state=8, mamba_n_groups=1, mamba_chunk_size=8)
_DECODERS = {
    "gpt-oss": ("GptOssForCausalLM", "GptOssConfig", {**_DEC, "num_hidden_layers": 1, "head_dim": 16,
                                                      "num_local_experts": 4, "num_experts_per_tok": 2,
                                                      "sliding_window": 4, "layer_types": ["sliding_attention"]}),
    "granite-moe": ("GraniteMoeForCausalLM", "GraniteMoeConfig", {**_DEC, "num_hidden_layers": 1,
                                                                   "num_local_experts": 4, "num_experts_per_tok": 2}),
    "olmoe": ("OlmoeForCausalLM", "OlmoeConfig", {**_DEC, "num_hidden_layers": 1, "num_experts": 4,
                                                  "num_experts_per_tok": 2}),
    "cohere2": ("Cohere2ForCausalLM", "Cohere2Config", {**_DEC, "num_hidden_layers": 1, "head_dim": 16,
                                                        "sliding_window": 4, "layer_types": ["sliding_attention"]}),
    "smollm3": ("SmolLM3ForCausalLM", "SmolLM3Config", {**_DEC, "num_hidden_layers": 1, "pad_token_id": 0}),
    "mamba2": ("Mamba2ForCausalLM", "Mamba2Config", dict(hidden_size=E, num_hidden_layers=1, vocab_size=100,
                                                         state_size=8, expand=2, head_dim=16, num_heads=4, n_groups=1,
                                                         chunk_size=8)),
    "jamba": ("JambaForCausalLM", "JambaConfig", {**_DEC, "num_experts": 4, "num_experts_per_tok": 2,
                                                  "attn_layer_period": 2, "attn_layer_offset": 1,
                                                  "expert_layer_period": 2, "expert_layer_offset": 1,
                                                  "mamba_d_state": 8, "mamba_expand": 2, "mamba_dt_rank": 4}),
    "falcon-h1": ("FalconH1ForCausalLM", "FalconH1Config", {**_DEC, **_MAMBA, "head_dim": 16, "mamba_d_ssm": 64}),
    "bamba": ("BambaForCausalLM", "BambaConfig", {**_DEC, **_MAMBA, "attn_layer_indices": [1], "mamba_expand": 2}),
    "zamba2": ("Zamba2ForCausalLM", "Zamba2Config", {**_DEC, "num_key_value_heads": 2, "mamba_d_state": 8,
                                                     "mamba_headdim": 16, "n_mamba_heads": 4, "mamba_ngroups": 1,
                                                     "chunk_size": 8, "layers_block_type": ["mamba", "hybrid"],
                                                     "hybrid_layer_ids": [1], "num_mem_blocks": 1}),
    # linear attention with its own cache (no DynamicCache): generate() lets it build it in the prefill
    "minimax": ("MiniMaxForCausalLM", "MiniMaxConfig", {**_DEC, "head_dim": 16, "num_local_experts": 4,
                                                        "num_experts_per_tok": 2,
                                                        "layer_types": ["linear_attention", "full_attention"]}),
}

_ROUTED = {"gpt-oss", "granite-moe", "olmoe", "jamba", "minimax"}
#: Families whose decode steps' attention mask costs a few flops more on meta (MiniMax: 2·kv_len a step,
#: of 1.5 MFLOP), which assumes the mask applied; the CPU's own-cache steps skip part of it.
_STEP_MASK_APPROX = {"minimax"}


@pytest.mark.parametrize("family", list(_DECODERS))
def test_todays_decoders_trace_and_generate_alike_on_meta_and_cpu(family: str) -> None:
    model_cls, config_cls, kwargs = _DECODERS[family]
    model = hf_model(model_cls, config_cls, **kwargs)
    inputs = example_inputs(model, 2, 8, device="cpu")
    on_meta = trace(model, inputs)
    assert (on_meta.batch_size, on_meta.seq_len) == (2, 8)
    assert on_meta["lm_head"].features["flops"] == 2 * E * 100 * 16  # 2 x 8 tokens
    assert_same_tree(on_meta, trace(model, inputs, device="cpu"))
    generated = trace_generate(model, inputs, max_new_tokens=3)
    assert (generated.batch_size, generated.seq_len) == (2, 8)
    assert generated["decode.lm_head"].features["flops"] == 2 * E * 100 * 2 * 2  # 2 steps x 2 samples
    on_cpu = trace_generate(model, inputs, max_new_tokens=3, device="cpu")
    if family in _ROUTED:  # a decode step's few tokens hit fewer experts for real than expected: fewer weights read
        drop = lambda t: [(n.scope, n.type, {k: v for k, v in n.features.items()  # noqa: E731
                                             if k != "mem_bytes" and (k != "flops" or family not in _STEP_MASK_APPROX)})
                          for n in t.walk()]
        assert drop(generated) == drop(on_cpu)
        for a, b in zip(generated.walk(), on_cpu.walk()):
            assert a.features["flops"] == pytest.approx(b.features["flops"], rel=0.02), a.scope
    else:
        assert_same_tree(generated, on_cpu)


_ENCODERS = {
    "dinov2": (("Dinov2Model", "Dinov2Config", dict(hidden_size=E, intermediate_size=64, num_hidden_layers=1,
                                                    num_attention_heads=2, image_size=32, patch_size=8)),
               (2, 17), "encoder.layer.0.mlp.fc1", 2 * 17 * (2 * E * 4 * E + 4 * E)),
    "convnextv2": (("ConvNextV2Model", "ConvNextV2Config", dict(hidden_sizes=[8, 16], depths=[1, 1], num_stages=2,
                                                                image_size=32)),
                   (2, 1024), "encoder.stages.0.layers.0.pwconv1", 2 * 64 * (2 * 8 * 32 + 32)),
    "hiera": (("HieraModel", "HieraConfig", dict(embed_dim=8, image_size=[64, 64], patch_size=[7, 7],
                                                 patch_stride=[4, 4], patch_padding=[3, 3], depths=[1, 1],
                                                 num_heads=[1, 2], num_query_pool=1, query_stride=[2, 2],
                                                 masked_unit_size=[4, 4], mlp_ratio=2.0)),
              (2, 256), "encoder.stages.0.layers.0.attn.qkv", 2 * 256 * (2 * 8 * 24 + 24)),
}


@pytest.mark.parametrize("family", list(_ENCODERS))
def test_todays_vision_encoders_trace_alike_on_meta_and_cpu(family: str) -> None:
    (model_cls, config_cls, kwargs), sizes, leaf, flops = _ENCODERS[family]
    model = hf_model(model_cls, config_cls, **kwargs)
    inputs = example_inputs(model, 2, 8, device="cpu")
    on_meta = trace(model, inputs)
    assert (on_meta.batch_size, on_meta.seq_len) == sizes
    assert on_meta[leaf].features["flops"] == flops
    assert_same_tree(on_meta, trace(model, inputs, device="cpu"))
