"""trace_generate: prefill + decode steps, derived exactly, predicted per token (issue 10, section 1)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from pytest_irene import EnergyModel, trace_generate
from pytest_irene.engine.architectures import example_inputs
from pytest_irene.compare.baselines import entry_from_tree
from pytest_irene.compare.gate import compare
from pytest_irene.engine import generation
from pytest_irene.errors import TraceError, UsageError
from tests.models import tiny_llama

transformers = pytest.importorskip("transformers")
pytest_plugins = ["pytester"]


def _prompt(batch: int = 2, length: int = 8) -> dict[str, torch.Tensor]:
    return {"input_ids": torch.randint(3, 250, (batch, length)), "attention_mask": torch.ones(batch, length, dtype=torch.long)}


def _every_step(monkeypatch: pytest.MonkeyPatch, model: torch.nn.Module, new_tokens: int) -> generation.GenerationTree:
    monkeypatch.setattr(generation, "_slope", lambda first, second: None)  # no derivation: trace each step
    tree = trace_generate(model, _prompt(), max_new_tokens=new_tokens)
    monkeypatch.undo()
    return tree


def _features(tree) -> list[tuple[str, float, float]]:  # type: ignore[no-untyped-def]
    return [(n.scope, n.features["flops"], n.features["mem_bytes"]) for n in tree.walk()]


def test_derived_decode_steps_equal_tracing_every_step(monkeypatch: pytest.MonkeyPatch) -> None:
    model = tiny_llama()
    derived = trace_generate(model, _prompt(), max_new_tokens=7)
    assert derived.meta["decode_derived"] is True and derived.meta["decode_steps"] == 6
    reference = _every_step(monkeypatch, model, 7)
    assert reference.meta["decode_derived"] is False
    for step in range(6):
        assert _features(derived.decode_step(step)) == _features(reference.decode_step(step))
    assert _features(derived) == _features(reference)
    # attention grows with the KV length, projections do not
    first, last = derived.decode_step(0), derived.decode_step(5)
    assert last["model.layers.0.self_attn"].features["flops"] > first["model.layers.0.self_attn"].features["flops"]
    assert last["model.layers.0.mlp"].features == first["model.layers.0.mlp"].features


def test_generation_tree_shape_and_per_token_energy() -> None:
    tree = trace_generate(tiny_llama(), _prompt(), max_new_tokens=5)
    assert tree.root.type == "Generation"
    assert [c.scope for c in tree.root.children] == ["prefill", "decode"]
    assert tree["prefill.model.layers.0.self_attn.q_proj"].type == "Linear"
    assert tree["decode.lm_head"].features["flops"] == 4 * tree.decode_step(0)["lm_head"].features["flops"]
    EnergyModel.load("irene-pc1").predict(tree)
    prefill, decode = tree.root.children
    assert tree.total_j == pytest.approx(prefill.predicted_energy_j + decode.predicted_energy_j)
    assert decode.predicted_energy_j == pytest.approx(sum(tree.step_energies_j))
    assert len(tree.step_energies_j) == 4
    assert tree.per_token_j == pytest.approx(tree.total_j / 5)
    single = EnergyModel.load("irene-pc1").predict(tree.decode_step(2))
    assert tree.step_energies_j[2] == pytest.approx(single.total_j)


def test_long_generations_predict_sampled_steps_and_interpolate(monkeypatch: pytest.MonkeyPatch) -> None:
    from pytest_irene.engine import generation_tree

    tree = trace_generate(tiny_llama(), _prompt(), max_new_tokens=13)
    em = EnergyModel.load("irene-pc1")
    exact = [em.predict(tree.decode_step(i)).total_j for i in range(12)]
    monkeypatch.setattr(generation_tree, "MAX_PREDICTED_STEPS", 4)
    em.predict(tree)
    assert sum(tree.step_energies_j) == pytest.approx(sum(exact), rel=1e-3)


def test_costlier_decoding_fails_the_gate_and_names_the_module() -> None:
    em = EnergyModel.load("irene-pc1")
    size = dict(hidden_size=512, intermediate_size=1024, num_attention_heads=8, vocab_size=1000)
    prompt = {"input_ids": torch.ones(4, 256, dtype=torch.long)}
    before = em.predict(trace_generate(tiny_llama(**size, num_key_value_heads=1), prompt, max_new_tokens=64))
    after = em.predict(trace_generate(tiny_llama(**size, num_key_value_heads=8), prompt, max_new_tokens=64))  # 8x KV cache
    baseline = entry_from_tree(before, profile="irene-pc1", features="model")
    result = compare(baseline, after, tolerance=0.05, min_delta=0.0, profile="irene-pc1", features="model")
    assert result.status == "fail"
    failed = [d.scope for d in result.deltas if d.failed]
    assert any(s.startswith("decode.") and "self_attn" in s for s in failed), failed


def test_real_device_follows_greedy_tokens() -> None:
    model = tiny_llama("cpu")
    tree = trace_generate(model, _prompt(), max_new_tokens=3, device="cpu")
    assert tree.meta["traced_on"] == "cpu" and tree.meta["decode_steps"] == 2
    assert tree.decode_step(1).meta["kv_len"] == 9


def _bart(**overrides: int) -> torch.nn.Module:
    kwargs = dict(d_model=64, encoder_ffn_dim=128, decoder_ffn_dim=128, encoder_layers=2, decoder_layers=2,
                  encoder_attention_heads=4, decoder_attention_heads=4, vocab_size=256)
    kwargs.update(overrides)
    torch.manual_seed(0)
    return transformers.BartForConditionalGeneration(transformers.BartConfig(**kwargs)).eval()


def test_encoder_decoder_generation_runs_the_encoder_once_and_derives_decoder_steps(monkeypatch: pytest.MonkeyPatch) -> None:
    model = _bart()
    derived = trace_generate(model, _prompt(length=10), max_new_tokens=6)
    assert derived.meta["decode_derived"] is True and derived.seq_len == 10
    assert derived["prefill.model.encoder"].type == "BartEncoder"
    decode = derived.root.children[1]
    assert not any(n.scope.startswith("decode.model.encoder") for n in decode.walk())  # encoder output reused
    # cross-attention projects the encoder's keys and values once, in the prefill
    assert "prefill.model.decoder.layers.0.encoder_attn.k_proj" in [n.scope for n in derived.walk()]
    assert "decode.model.decoder.layers.0.encoder_attn.k_proj" not in [n.scope for n in decode.walk()]
    first, last = derived.decode_step(0), derived.decode_step(4)
    assert (first.meta["kv_len"], last.meta["kv_len"]) == (1, 5)  # the start token, then each new one
    attn = "model.decoder.layers.0"
    assert last[f"{attn}.self_attn"].features["flops"] > first[f"{attn}.self_attn"].features["flops"]
    assert last[f"{attn}.encoder_attn"].features == first[f"{attn}.encoder_attn"].features
    monkeypatch.setattr(generation, "_slope", lambda first, second: None)
    reference = trace_generate(model, _prompt(length=10), max_new_tokens=6)
    assert _features(reference) == _features(derived)
    on_cpu = trace_generate(model, _prompt(length=10), max_new_tokens=3, device="cpu")
    assert on_cpu.decode_step(1).meta["kv_len"] == 2
    EnergyModel.load("irene-pc1").predict(derived)
    assert derived.per_token_j == pytest.approx(derived.total_j / 6)


def test_whisper_generation_counts_encoder_frames_as_the_prompt() -> None:
    config = transformers.WhisperConfig(
        d_model=64, encoder_ffn_dim=128, decoder_ffn_dim=128, encoder_layers=1, decoder_layers=1,
        encoder_attention_heads=4, decoder_attention_heads=4, vocab_size=100, num_mel_bins=16,
        max_source_positions=30, pad_token_id=0, bos_token_id=1, eos_token_id=2, decoder_start_token_id=1,
    )
    tree = trace_generate(transformers.WhisperForConditionalGeneration(config).eval(),
                          {"input_features": torch.randn(2, 16, 60)}, max_new_tokens=4)
    assert tree.seq_len == 30 and tree.meta["decode_steps"] == 3 and tree.decode_step(2).meta["kv_len"] == 3


def test_a_sparse_encoder_decoder_generates(monkeypatch: pytest.MonkeyPatch) -> None:
    """Switch Transformers hands use_cache to its encoder, which refuses it, and its decode steps read
    the encoder routers' logits: both as generate() runs it."""
    config = transformers.SwitchTransformersConfig(
        d_model=64, d_ff=128, num_layers=2, num_decoder_layers=2, num_heads=2, d_kv=32, num_experts=4,
        vocab_size=100, decoder_start_token_id=0,
    )
    torch.manual_seed(0)
    model = transformers.SwitchTransformersForConditionalGeneration(config).eval()
    derived = trace_generate(model, {"input_ids": torch.randint(0, 100, (2, 8))}, max_new_tokens=4)
    assert derived.meta["decode_derived"] is True and derived.seq_len == 8
    first, last = derived.decode_step(0), derived.decode_step(2)
    assert (first.meta["kv_len"], last.meta["kv_len"]) == (1, 3)  # the decoder's cache grows
    attn = "decoder.block.0.layer.0"
    assert last[attn].features["flops"] > first[attn].features["flops"]
    monkeypatch.setattr(generation, "_slope", lambda first, second: None)
    assert _features(trace_generate(model, {"input_ids": torch.randint(0, 100, (2, 8))}, max_new_tokens=4)) == \
        _features(derived)
    on_cpu = trace_generate(model, {"input_ids": torch.randint(0, 100, (2, 8))}, max_new_tokens=3, device="cpu")
    assert on_cpu.decode_step(1).meta["kv_len"] == 2


def test_encoder_decoder_inputs_are_checked() -> None:
    with pytest.raises(UsageError, match="encoder's inputs"):
        trace_generate(_bart(), {**_prompt(), "decoder_input_ids": torch.ones(2, 1, dtype=torch.long)}, max_new_tokens=2)
    model = _bart()
    for name in ("decoder_start_token_id", "pad_token_id", "bos_token_id"):
        setattr(model.config, name, None)
        setattr(model.generation_config, name, None)
    with pytest.raises(UsageError, match="decoder_start_token_id"):
        trace_generate(model, _prompt(), max_new_tokens=2)


def test_bad_arguments_are_usage_errors() -> None:
    with pytest.raises(UsageError, match="max_new_tokens"):
        trace_generate(tiny_llama(), _prompt(), max_new_tokens=0)
    with pytest.raises(UsageError, match="input_ids"):
        trace_generate(tiny_llama(), {"x": torch.ones(2)}, max_new_tokens=2)


def test_a_1d_prompt_is_a_batch_of_one_as_in_trace() -> None:
    """1-D ids raised a raw IndexError; trace() takes them as one sequence, so generation does too."""
    model = tiny_llama()
    ids, mask = torch.randint(3, 250, (8,)), torch.ones(8, dtype=torch.long)
    for one, batched in ((ids, ids[None]), ({"input_ids": ids, "attention_mask": mask},
                                            {"input_ids": ids[None], "attention_mask": mask[None]})):
        tree = trace_generate(model, one, max_new_tokens=4)
        assert (tree.batch_size, tree.seq_len) == (1, 8)
        assert _features(tree) == _features(trace_generate(model, batched, max_new_tokens=4))
    for bad in (torch.ones(2, 3, 4, dtype=torch.long), torch.ones(2, 8), torch.ones(2, 0, dtype=torch.long)):
        with pytest.raises(UsageError, match=r"inputs: expected integer token ids of shape \(batch, prompt_len\)"):
            trace_generate(model, bad, max_new_tokens=2)
    with pytest.raises(UsageError, match=r"inputs\['attention_mask'\]: expected .*\(batch, prompt_len\)"):
        trace_generate(model, {"input_ids": ids, "attention_mask": torch.ones(1, 1, 8, dtype=torch.long)}, max_new_tokens=2)


@pytest.mark.parametrize("predicted_steps", [64, 3])
def test_a_decode_step_after_prediction_carries_the_energies_the_totals_were_built_from(
        monkeypatch: pytest.MonkeyPatch, predicted_steps: int) -> None:
    """decode_step(i).total_j was None while step_energies_j[i] had a value: the step's tree is rebuilt from the
    template, and the energy model had predicted throwaway copies of it."""
    from pytest_irene.engine import generation_tree

    monkeypatch.setattr(generation_tree, "MAX_PREDICTED_STEPS", predicted_steps)  # 3: steps between are interpolated
    tree = EnergyModel.load("irene-pc1").predict(trace_generate(tiny_llama(), _prompt(), max_new_tokens=7))
    steps = [tree.decode_step(i) for i in range(6)]
    assert [s.total_j for s in steps] == pytest.approx(tree.step_energies_j)
    decode = tree.root.children[1]
    for node in decode.walk():
        scope = node.scope.removeprefix("decode").removeprefix(".")
        assert sum(s[scope].predicted_energy_j for s in steps) == pytest.approx(node.predicted_energy_j)
    assert trace_generate(tiny_llama(), _prompt(), max_new_tokens=3).decode_step(0).total_j is None  # not predicted


def test_generation_past_an_absolute_position_table_is_refused_and_rotary_models_go_on() -> None:
    """gpt2 decodes up to n_positions: the prompt and every new token but the last (never fed back) need a row."""
    with torch.device("meta"):
        gpt2 = transformers.GPT2LMHeadModel(transformers.GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=64))
    prompt = {"input_ids": torch.ones(1, 1000, dtype=torch.long)}
    assert trace_generate(gpt2, prompt, max_new_tokens=25).meta["new_tokens"] == 25  # 1024 positions
    with pytest.raises(UsageError, match=r"GPT2LMHeadModel: 1025 positions needed \(a prompt of 1000 token\(s\) \+ 26 new .* holds 1024"):
        trace_generate(gpt2, prompt, max_new_tokens=26)
    llama = tiny_llama(max_position_embeddings=16)
    assert trace_generate(llama, _prompt(length=12), max_new_tokens=20).meta["decode_steps"] == 19


def _qwen2_vl_with_an_image() -> tuple[torch.nn.Module, dict[str, torch.Tensor]]:
    """A tiny Qwen2-VL (M-RoPE: 3-D positions over the image's patches) and a prompt holding one 4x4-patch image."""
    config = transformers.Qwen2VLConfig(
        text_config=dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                         num_key_value_heads=2, vocab_size=300, bos_token_id=None, eos_token_id=None,
                         rope_scaling={"type": "mrope", "mrope_section": [2, 3, 3]}),
        vision_config=dict(depth=1, embed_dim=32, hidden_size=64, num_heads=2, patch_size=14, spatial_merge_size=2,
                           temporal_patch_size=2, in_channels=3),
        image_token_id=250, video_token_id=251, vision_start_token_id=252)
    torch.manual_seed(0)
    model = transformers.Qwen2VLForConditionalGeneration(config).eval()
    ids = torch.tensor([[5, 6, 252, 250, 250, 250, 250, 7, 8]])
    return model, dict(input_ids=ids, attention_mask=torch.ones_like(ids), pixel_values=torch.randn(16, 3 * 2 * 14 * 14),
                       image_grid_thw=torch.tensor([[1, 4, 4]]), mm_token_type_ids=(ids == 250).long())


def test_a_multimodal_rope_model_decodes_with_the_positions_generate_feeds() -> None:
    """Qwen2-VL's decode step needs the position after the prompt's M-RoPE positions (not one per mask
    column): the ids and position ids fed at every step equal ``generate()``'s; on meta, where the image
    grid's values are unknown, the refusal says to pass device='cpu'."""
    model, prompt = _qwen2_vl_with_an_image()
    fed: list[tuple[torch.Tensor, torch.Tensor]] = []
    hook = model.model.register_forward_pre_hook(
        lambda _m, _a, kw: fed.append((kw["input_ids"].clone(), kw["position_ids"].clone())), with_kwargs=True)
    with torch.no_grad():
        model.generate(**prompt, max_new_tokens=4, do_sample=False)
    reference = fed[:]
    fed.clear()
    tree = trace_generate(model, prompt, max_new_tokens=4, device="cpu")
    hook.remove()
    assert tree.meta["decode_steps"] == 3 and len(fed) == len(reference) == 4
    for (ids, positions), (want_ids, want_positions) in zip(fed, reference):
        assert torch.equal(ids, want_ids) and torch.equal(positions, want_positions)
    with pytest.raises(TraceError, match=r"Qwen2VLForConditionalGeneration's position ids .*device='cpu'"):
        trace_generate(model, prompt, max_new_tokens=4)


def test_fixture_max_new_tokens_and_device(pytester: pytest.Pytester) -> None:
    from tests.inner import run

    pytester.makepyfile(
        """
        import pytest, torch, transformers

        def llama():
            cfg = transformers.LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                           num_attention_heads=2, num_key_value_heads=1, vocab_size=64)
            return transformers.LlamaForCausalLM(cfg).eval()

        def test_generate(irene):
            tree = irene(llama(), {"input_ids": torch.ones(1, 4, dtype=torch.long)}, max_new_tokens=3)
            assert tree.per_token_j > 0 and tree.root.children[1].scope == "decode"

        class Branchy(torch.nn.Module):
            def forward(self, x):
                return x * 2 if x.sum() > 0 else x

        def test_needs_cpu(irene):
            irene(Branchy(), torch.ones(2, 4))

        @pytest.mark.irene(device="cpu")
        def test_marker_cpu(irene):
            assert irene(Branchy(), torch.ones(2, 4)).meta["traced_on"] == "cpu"

        def test_call_cpu(irene):
            assert irene(Branchy(), torch.ones(2, 4), device="cpu").meta["traced_on"] == "cpu"
        """
    )
    result = run(pytester, "--irene-features=model", "-q")
    result.assert_outcomes(passed=3, failed=1)
    result.stdout.fnmatch_lines(["DataDependentError: *x.sum() > 0*device='cpu'*"])
    result = run(pytester, "--irene-features=model", "--irene-device=cpu", "-q", "-k", "needs_cpu")
    result.assert_outcomes(passed=1)


def test_cli_new_tokens_json(tmp_path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "pytest_irene.cli", "predict", "--model", "distilgpt2", "--batch-size", "1",
         "--seq-len", "16", "--new-tokens", "8", "--json"],
        capture_output=True, text=True, timeout=300, cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["tree"]["meta"]["new_tokens"] == 8
    assert doc["per_token_j"] == pytest.approx(doc["total_j"] / 8)
    assert not any("width" in reason for reason in doc["tree"]["meta"].get("extrapolation", []))  # 768 was trained


def test_the_header_of_a_generation_says_what_its_joules_cover() -> None:
    from models import tiny_llama

    from pytest_irene.report.tree_report import header

    tree = EnergyModel.load("irene-pc1").predict(trace_generate(tiny_llama(), torch.ones(1, 8, dtype=torch.long), max_new_tokens=5))
    assert "predicted per generation of 5 new tokens" in header(tree).plain


def test_an_encoder_only_model_does_not_generate() -> None:
    """BertLMHeadModel returns logits, but without is_decoder it attends both ways: no decode loop."""
    from transformers import BertConfig, BertLMHeadModel

    config = BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64, vocab_size=100)
    with torch.device("meta"):
        model = BertLMHeadModel(config)
    with pytest.raises(UsageError, match="trace_generate: .*encoder-only model \\(bert\\).*does not generate"):
        trace_generate(model, torch.ones(1, 4, dtype=torch.long), max_new_tokens=2)


@pytest.mark.parametrize("device", ["meta", "cpu"])
def test_a_state_space_decode_step_reads_one_token_as_generate_feeds_it(device: str) -> None:
    """Mamba's generate() drops the mask on decode; given the whole mask, its forward broadcast the
    new token over the prefix, so each step ran the whole prefix again (growing by one token)."""
    import transformers

    config = transformers.MambaConfig(hidden_size=32, num_hidden_layers=1, vocab_size=100, state_size=4)
    with torch.device(device):
        model = transformers.MambaForCausalLM(config).eval()
    generation = trace_generate(model, example_inputs(model, 2, 6, device=device), max_new_tokens=5, device=device)
    steps = [generation.decode_step(i).root.features["flops"] for i in range(4)]
    assert len(set(steps)) == 1, steps
    in_proj = generation.decode_step(0)["backbone.layers.0.mixer.in_proj"].features["flops"]
    assert in_proj == 2 * (2 * 1) * 32 * (2 * 2 * 32)  # one token per sample: 2·rows·K·N
