"""Model coverage: what teams ship today, built tiny (meta device or a few CPU kilobytes).

Each test names the bug it guards against: sizes read from the wrong dims (unbatched inputs,
image models whose blocks reshape their batch, a classifier head's pooled rows, waveform
samples), stochastic depth and weight-norm parametrizations predicted as work, inputs of a
vision or speech model built as token ids, and an encoder-decoder's forward failing without
saying that its decoder had no tokens.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from models import assert_same_tree, hf_model

from pytest_irene.engine.architectures import example_inputs
from pytest_irene.engine.tracing import trace
from pytest_irene.errors import TraceError

E = 32


class _Recur(nn.Module):
    def __init__(self, cell: type[nn.RNNBase], batch_first: bool) -> None:
        super().__init__()
        self.rnn = cell(16, E, batch_first=batch_first)
        self.head = nn.Linear(E, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.rnn(x)[0])


def _encoder() -> nn.Module:
    layer = nn.TransformerEncoderLayer(E, 2, 64, batch_first=False)
    return nn.TransformerEncoder(layer, 1, enable_nested_tensor=False)


# -- unbatched inputs: dim 0 is the sequence (or the channels), not a batch -------------------------


@pytest.mark.parametrize(("make", "x", "expected"), [
    (lambda: nn.MultiheadAttention(E, 2), torch.randn(10, E), (1, 10)),
    (lambda: nn.MultiheadAttention(E, 2, batch_first=True), torch.randn(10, E), (1, 10)),
    (_encoder, torch.randn(10, E), (1, 10)),
    (lambda: _Recur(nn.LSTM, batch_first=False), torch.randn(10, 16), (1, 10)),
    (lambda: _Recur(nn.GRU, batch_first=True), torch.randn(10, 16), (1, 10)),
    (lambda: nn.Conv1d(4, 8, 3), torch.randn(4, 50), (1, 50)),
    (lambda: nn.Conv2d(3, 8, 3, padding=1), torch.randn(3, 16, 16), (1, 256)),
], ids=["mha", "mha-batch-first", "transformer-encoder", "lstm", "gru", "conv1d", "conv2d"])
def test_unbatched_inputs_are_one_sample_of_their_sequence(make, x, expected) -> None:  # type: ignore[no-untyped-def]
    """An unbatched (L, E) input was read as batch L of E tokens (a Conv's (C, L) as batch C)."""
    model = make()
    inputs = (x, x, x) if isinstance(model, nn.MultiheadAttention) else x
    on_meta = trace(model, inputs)
    assert (on_meta.batch_size, on_meta.seq_len) == expected
    assert_same_tree(on_meta, trace(model, inputs, device="cpu"))


def test_unbatched_attention_counts_the_work_of_one_sample() -> None:
    batched = trace(nn.MultiheadAttention(E, 2), (torch.randn(10, 1, E),) * 3)
    x = torch.randn(10, E)
    unbatched = trace(nn.MultiheadAttention(E, 2), (x, x, x))
    assert unbatched.root.features == batched.root.features


def test_a_features_input_to_an_mlp_is_still_one_token_per_sample() -> None:
    mlp = nn.Sequential(nn.Linear(300, 64), nn.ReLU(), nn.Linear(64, 2))
    assert (lambda t: (t.batch_size, t.seq_len))(trace(mlp, torch.randn(2, 300))) == (2, 1)


# -- image models: the batch is the images', the tokens not a classifier head's ---------------------


def test_a_cnn_with_a_linear_head_counts_positions_not_one_token() -> None:
    """The classifier's (B, C) rows made every CNN with a head one token per sample."""
    cnn = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                        nn.Linear(8, 10))
    tree = trace(cnn, torch.randn(2, 3, 16, 16))
    assert (tree.batch_size, tree.seq_len) == (2, 256)


def test_convnext_tokens_are_positions() -> None:
    model = hf_model("ConvNextModel", "ConvNextConfig", hidden_sizes=[8, 16], depths=[1, 1], num_stages=2)
    tree = trace(model, torch.randn(2, 3, 32, 32))
    assert (tree.batch_size, tree.seq_len) == (2, 1024)


def test_mobilevit_batch_is_the_images_not_its_unfolded_patches() -> None:
    """MobileViT's transformer runs on (B * patch_area, patches, C): the batch was read as 8."""
    with torch.device("meta"):
        model = hf_model("MobileViTModel", "MobileViTConfig", image_size=32, hidden_sizes=[16, 24, 32],
                         neck_hidden_sizes=[8, 8, 16, 16, 24, 24, 32], num_attention_heads=2)
    tree = trace(model, torch.randn(2, 3, 32, 32))
    assert tree.batch_size == 2 and tree.seq_len == 1024


def test_swin_and_segformer_keep_their_patch_tokens() -> None:
    swin = hf_model("SwinModel", "SwinConfig", embed_dim=16, depths=[1, 1], num_heads=[2, 2], image_size=32,
                    patch_size=4, window_size=4)
    assert (lambda t: (t.batch_size, t.seq_len))(trace(swin, torch.randn(2, 3, 32, 32))) == (2, 64)


# -- modules that are no work at inference ------------------------------------------------------------


def test_stochastic_depth_is_no_node() -> None:
    """Swin's and SegFormer's DropPath is the identity in eval mode, but was a leaf predicted at its floor."""
    swin = hf_model("SwinModel", "SwinConfig", embed_dim=16, depths=[1, 1], num_heads=[2, 2], image_size=32,
                    patch_size=4, window_size=4, drop_path_rate=0.5)
    seg = hf_model("SegformerModel", "SegformerConfig", num_encoder_blocks=2, depths=[1, 1], sr_ratios=[2, 1],
                   hidden_sizes=[16, 32], patch_sizes=[7, 3], strides=[4, 2], num_attention_heads=[1, 2],
                   mlp_ratios=[2, 2], drop_path_rate=0.5)
    for model in (swin, seg):
        tree = trace(model, torch.randn(1, 3, 32, 32))
        assert not [n.scope for n in tree.walk() if "drop_path" in n.scope], type(model).__name__
        assert_same_tree(tree, trace(model, torch.randn(1, 3, 32, 32), device="cpu"))


class DropPath(nn.Module):  # timm's: the identity unless training
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


def test_a_user_drop_path_is_skipped_and_its_caller_keeps_its_work() -> None:
    model = nn.Sequential(nn.Linear(E, E), DropPath())
    tree = trace(model, torch.randn(2, 5, E))
    assert [n.scope for n in tree.walk()] == ["", "0"]
    with pytest.raises(TraceError, match="DropPath: it does nothing at inference"):
        trace(DropPath(), torch.randn(2, 5, E))


def test_a_weight_norm_parametrization_is_part_of_its_layer() -> None:
    """Reading a parametrized weight in the formula ran the parametrization's modules as siblings of
    the layer: wav2vec2's positional conv had two more leaves and counted its weight twice."""
    conv = nn.utils.parametrizations.weight_norm(nn.Conv1d(8, 8, 5, padding=2, groups=2), dim=2)
    model = nn.Sequential(conv, nn.GELU())
    tree = trace(model, torch.randn(2, 8, 20))
    assert [n.scope for n in tree.walk()] == ["", "0", "1"]
    assert tree.root.features["params"] == sum(p.numel() for p in model.parameters())
    assert tree["0"].features["flops"] > 0
    assert_same_tree(tree, trace(model, torch.randn(2, 8, 20), device="cpu"))


# -- speech: tokens are encoder frames ----------------------------------------------------------------

_W2V = dict(hidden_size=E, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, conv_dim=[16, 16],
            conv_kernel=[10, 3], conv_stride=[5, 2], num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2,
            vocab_size=32)


@pytest.mark.parametrize(("model_cls", "config_cls"), [
    ("Wav2Vec2Model", "Wav2Vec2Config"), ("HubertModel", "HubertConfig"), ("WavLMModel", "WavLMConfig"),
])
def test_waveform_models_count_frames_not_samples(model_cls: str, config_cls: str) -> None:
    """A (batch, samples) waveform was 400 tokens per sample; the encoder reads 39 frames."""
    model = hf_model(model_cls, config_cls, **_W2V)
    tree = trace(model, torch.randn(2, 400))
    assert (tree.batch_size, tree.seq_len) == (2, 39)
    assert not [n for n in tree.walk() if "parametrizations" in n.scope]
    assert tree.root.features["params"] == sum(p.numel() for p in model.parameters())


# -- example inputs by what the model reads -----------------------------------------------------------


def test_example_inputs_of_vision_and_speech_models_are_what_they_read() -> None:
    """They were token ids: a ViT failed with "'NoneType' object has no attribute 'dtype'"."""
    vit = hf_model("ViTModel", "ViTConfig", hidden_size=E, intermediate_size=64, num_hidden_layers=1,
                   num_attention_heads=2, image_size=32, patch_size=8)
    inputs = example_inputs(vit, 2, 8)
    assert list(inputs) == ["pixel_values"] and inputs["pixel_values"].shape == (2, 3, 32, 32)
    assert (lambda t: (t.batch_size, t.seq_len))(trace(vit, inputs)) == (2, 17)

    w2v = hf_model("Wav2Vec2Model", "Wav2Vec2Config", **_W2V)
    tree = trace(w2v, example_inputs(w2v, 2, 12))
    assert (tree.batch_size, tree.seq_len) == (2, 12)

    whisper = hf_model("WhisperForConditionalGeneration", "WhisperConfig", d_model=E, encoder_layers=1, decoder_layers=1,
                       encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=64, decoder_ffn_dim=64,
                       num_mel_bins=16, max_source_positions=20, vocab_size=100, pad_token_id=0, bos_token_id=1,
                       eos_token_id=2, decoder_start_token_id=1)
    assert example_inputs(whisper, 2, 8)["input_features"].shape == (2, 16, 40)
    from pytest_irene.engine.generation import trace_generate

    assert trace_generate(whisper, example_inputs(whisper, 2, 8), max_new_tokens=3).seq_len == 20


def test_example_inputs_of_a_dual_encoder_have_ids_and_pixels() -> None:
    clip = hf_model("CLIPModel", "CLIPConfig", projection_dim=16,
                    text_config=dict(hidden_size=E, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                                     vocab_size=100, max_position_embeddings=32, bos_token_id=1, eos_token_id=2),
                    vision_config=dict(hidden_size=E, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                                       image_size=32, patch_size=8))
    inputs = example_inputs(clip, 2, 8, device="cpu")
    assert set(inputs) == {"input_ids", "attention_mask", "pixel_values"}
    assert_same_tree(trace(clip, inputs), trace(clip, inputs, device="cpu"))


def test_an_encoder_decoder_forward_without_decoder_tokens_says_so() -> None:
    t5 = hf_model("T5ForConditionalGeneration", "T5Config", d_model=E, d_ff=64, num_layers=1, num_heads=2, d_kv=16,
                  vocab_size=100, decoder_start_token_id=0)
    with pytest.raises(TraceError, match="decoder_input_ids.*max_new_tokens"):
        trace(t5, example_inputs(t5, 2, 8))
    start = torch.zeros(2, 1, dtype=torch.long)
    assert trace(t5, {**example_inputs(t5, 2, 8), "decoder_input_ids": start}).seq_len == 8


# -- a coverage sweep: decoders and encoders of today, meta and CPU agree -----------------------------

_DEC = dict(hidden_size=E, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1,
            vocab_size=100, max_position_embeddings=64, head_dim=16)
_SWEEP = {
    "qwen3": ("Qwen3ForCausalLM", "Qwen3Config", _DEC),
    "gemma3": ("Gemma3ForCausalLM", "Gemma3TextConfig", {**_DEC, "sliding_window": 4}),
    "phi3": ("Phi3ForCausalLM", "Phi3Config", {**_DEC, "pad_token_id": 0}),
    "olmo2": ("Olmo2ForCausalLM", "Olmo2Config", _DEC),
    "falcon": ("FalconForCausalLM", "FalconConfig", dict(hidden_size=E, num_hidden_layers=1, num_attention_heads=2,
                                                         vocab_size=100)),
    "bloom": ("BloomForCausalLM", "BloomConfig", dict(hidden_size=E, n_layer=1, n_head=2, vocab_size=100)),
    "qwen3-moe": ("Qwen3MoeForCausalLM", "Qwen3MoeConfig", {**_DEC, "num_experts": 4, "num_experts_per_tok": 2,
                                                             "moe_intermediate_size": 32}),
    "deepseek-v3": ("DeepseekV3ForCausalLM", "DeepseekV3Config", {
        **_DEC, "num_key_value_heads": 2, "head_dim": 8, "n_routed_experts": 4, "num_experts_per_tok": 2,
        "moe_intermediate_size": 32, "n_group": 1, "topk_group": 1, "first_k_dense_replace": 0, "q_lora_rank": 16,
        "kv_lora_rank": 16, "qk_rope_head_dim": 8, "qk_nope_head_dim": 8, "v_head_dim": 16, "n_shared_experts": 1}),
    "modernbert": ("ModernBertModel", "ModernBertConfig", dict(
        hidden_size=E, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, vocab_size=100,
        global_attn_every_n_layers=1, pad_token_id=0, bos_token_id=1, eos_token_id=2, cls_token_id=1,
        sep_token_id=2)),
    "deberta-v2": ("DebertaV2Model", "DebertaV2Config", dict(
        hidden_size=E, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, vocab_size=100,
        relative_attention=True, pos_att_type=["p2c", "c2p"], position_buckets=8)),
}


@pytest.mark.parametrize("family", list(_SWEEP))
def test_modern_families_trace_alike_on_meta_and_cpu(family: str) -> None:
    model_cls, config_cls, kwargs = _SWEEP[family]
    model = hf_model(model_cls, config_cls, **kwargs)
    inputs = example_inputs(model, 2, 8, device="cpu")  # one padded position: the mask is applied on both
    on_meta = trace(model, inputs)
    assert (on_meta.batch_size, on_meta.seq_len) == (2, 8)
    leaves = {n.type for n in on_meta.walk() if not n.children}
    assert ({"MatMul", "Softmax"} <= leaves or "ScaledDotProductAttention" in leaves) and "Linear" in leaves
    assert_same_tree(on_meta, trace(model, inputs, device="cpu"))


# -- a vision-language model: LLaVA -----------------------------------------------------------------


def _llava():  # type: ignore[no-untyped-def]
    text = dict(model_type="llama", hidden_size=E, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                num_key_value_heads=1, vocab_size=200)
    vision = dict(model_type="clip_vision_model", hidden_size=E, intermediate_size=64, num_hidden_layers=1,
                  num_attention_heads=2, image_size=32, patch_size=8)
    model = hf_model("LlavaForConditionalGeneration", "LlavaConfig", text_config=text, vision_config=vision,
                     image_token_index=150)
    ids = torch.randint(1, 100, (1, 20))
    ids[0, 1:17] = 150  # one image: 16 patches
    return model, {"input_ids": ids, "pixel_values": torch.randn(1, 3, 32, 32)}


def test_llava_with_an_image_traces_on_meta_as_on_cpu() -> None:
    """Its "as many image tokens as image features?" assertion (torch._check_tensor_all) was refused
    on meta as data-dependent code; an assertion never changes what runs."""
    model, inputs = _llava()
    on_meta = trace(model, inputs)
    assert (on_meta.batch_size, on_meta.seq_len) == (1, 20)
    assert_same_tree(on_meta, trace(model, inputs, device="cpu"))
    assert list(example_inputs(model, 2, 8)) == ["input_ids", "attention_mask"]  # text alone: no image tokens


def test_a_model_run_before_its_meta_trace_still_records_hidden_states() -> None:
    """transformers installs its output-capturing hooks at a model's first call and flags it; the meta
    copy kept the flag but not the hooks, so LLaVA found no vision hidden states (IndexError)."""
    model, inputs = _llava()
    with torch.no_grad():
        model(**inputs)
    from pytest_irene.engine.generation import trace_generate

    assert trace(model, inputs).root.features == trace(model, inputs, device="cpu").root.features
    on_meta = trace_generate(model, inputs, max_new_tokens=3)
    assert on_meta.root.features == trace_generate(model, inputs, max_new_tokens=3, device="cpu").root.features
