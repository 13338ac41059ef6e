"""Regression tests for tracing today's models (issue 10, section 2): each reproduced failure."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from torch import nn

from pytest_irene.engine.architectures import example_inputs
from pytest_irene.engine.factories import build_from_factory
from pytest_irene.engine.tracing import trace
from pytest_irene.errors import TraceError, UsageError

transformers = pytest.importorskip("transformers")


class Branchy(nn.Module):
    """``if x.mean() > 0`` plus a ``while`` loop: the trace depends on the values."""

    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(64, 64)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.mean() > 0:
            x = self.proj(x)
        n = 0
        while x.abs().sum() > 0 and n < 3:
            x = self.proj(x)
            n += 1
        return x


def test_data_dependent_code_on_meta_is_refused_with_the_line_and_the_fix() -> None:
    with pytest.raises(TraceError) as info:
        trace(Branchy(), torch.ones(2, 64))
    text = str(info.value)
    assert "test_tracing_modern.py" in text and "if x.mean() > 0" in text
    assert "device='cpu'" in text


def test_data_dependent_code_traces_for_real_on_cpu() -> None:
    tree = trace(Branchy(), torch.ones(2, 64), device="cpu")
    assert [n.scope for n in tree.root.children] == ["proj", "proj#1", "proj#2", "proj#3"]


@pytest.mark.parametrize("what", ["item", "tolist", "nonzero"])
def test_values_and_value_dependent_shapes_are_refused_on_meta(what: str) -> None:
    class Ask(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if what == "item":
                return x * x.sum().item()
            if what == "tolist":
                return x[: len([v for v in x[0].tolist() if v])]
            return x[x > 0]

    with pytest.raises(TraceError, match="device='cpu'"):
        trace(Ask(), torch.ones(2, 8))


def test_transformers_padding_warning_check_is_answered_and_the_tree_matches_cpu() -> None:
    """DeBERTa without an attention mask asks "is a pad id at either end?" only to decide on a
    warning: on meta that is answered (no) and the tree is the one a real run traces."""
    config = transformers.DebertaV2Config(
        hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, vocab_size=50, pad_token_id=0
    )
    torch.manual_seed(0)
    model = transformers.DebertaV2Model(config).eval()
    inputs = {"input_ids": torch.randint(1, 50, (2, 8))}
    on_meta, on_cpu = trace(model, inputs), trace(model, inputs, device="cpu")
    assert [(n.scope, n.features["flops"]) for n in on_meta.walk()] == [
        (n.scope, n.features["flops"]) for n in on_cpu.walk()
    ]


def test_user_forward_hooks_do_not_fire_during_a_meta_trace() -> None:
    seen: list[str] = []
    model = nn.Sequential(nn.Linear(4, 4), nn.ReLU())
    model[0].register_forward_hook(lambda m, i, o: seen.append(str(o.device)))
    model.register_forward_pre_hook(lambda m, i: seen.append("pre"))
    trace(model, torch.randn(2, 4))
    assert seen == []
    model(torch.randn(2, 4))
    assert seen == ["pre", "cpu"]


def test_a_real_device_uses_the_users_weights_without_a_copy() -> None:
    model = nn.Linear(4, 4)
    seen: list[int] = []
    model.register_forward_hook(lambda m, i, o: seen.append(id(m)))
    trace(model, torch.randn(2, 4), device="cpu")
    assert seen == [id(model)]


class Encoder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(8, 8)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x) * 2


def test_a_bound_method_is_traced_with_the_method_as_root() -> None:
    tree = trace(Encoder().encode, torch.randn(2, 3, 8))
    assert tree.root.type == "Encoder.encode"
    assert [c.scope for c in tree.root.children] == ["proj"]
    assert tree.root.features["flops"] > tree["proj"].features["flops"]


def test_a_plain_function_is_refused_with_a_usage_message() -> None:
    with pytest.raises(UsageError, match="bound method"):
        trace(lambda x: x * 2, torch.randn(2, 3))


def test_generate_on_meta_stops_with_a_pointer_to_max_new_tokens() -> None:
    config = transformers.GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=128, bos_token_id=1, eos_token_id=2,
                                     pad_token_id=0)
    model = transformers.GPT2LMHeadModel(config).eval()

    class Wrapper(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lm = model

        def forward(self, ids: torch.Tensor) -> torch.Tensor:
            return self.lm.generate(ids, max_new_tokens=4, do_sample=False)

    with pytest.raises(TraceError, match="max_new_tokens"):
        trace(Wrapper(), torch.ones(1, 4, dtype=torch.long))


# -- MoE ----------------------------------------------------------------------------------


class Expert(nn.Module):
    def __init__(self, d: int) -> None:
        super().__init__()
        self.up = nn.Linear(d, 4 * d)
        self.act = nn.GELU()
        self.down = nn.Linear(4 * d, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(self.act(self.up(x)))


class TopKMoE(nn.Module):
    """The usual hand-written top-k MoE: a router, then ``torch.where`` per expert."""

    def __init__(self, d: int = 32, experts: int = 4, k: int = 2) -> None:
        super().__init__()
        self.gate = nn.Linear(d, experts)
        self.experts = nn.ModuleList(Expert(d) for _ in range(experts))
        self.k = k

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        x = x.reshape(-1, d)
        weights, chosen = torch.topk(self.gate(x).softmax(-1), self.k, dim=-1)
        out = torch.zeros_like(x)
        for i, expert in enumerate(self.experts):
            rows, kth = torch.where(chosen == i)
            out.index_add_(0, rows, expert(x[rows]) * weights[rows, kth, None])
        return out.reshape(b, t, d)


def _expert_flops(rows: int, d: int = 32) -> float:
    return rows * (2 * d * 4 * d + 6 * 4 * d + 2 * 4 * d * d)  # up, GELU, down (2-D inputs: addmm, bias free)


def test_hand_written_moe_counts_expected_routing_on_meta() -> None:
    tree = trace(TopKMoE(), torch.randn(2, 8, 32))  # 16 tokens x top-2 over 4 experts: 8 rows each
    assert tree["gate"].features["flops"] == 2 * 16 * 32 * 4
    for e in range(4):
        assert tree[f"experts.{e}"].features["flops"] == pytest.approx(_expert_flops(8))


def test_hand_written_moe_follows_real_routing_on_cpu() -> None:
    torch.manual_seed(0)
    model = TopKMoE()
    x = torch.randn(2, 8, 32)
    with torch.no_grad():
        _, chosen = torch.topk(model.gate(x.reshape(-1, 32)).softmax(-1), 2, dim=-1)
    tree = trace(model, x, device="cpu")
    for e in range(4):
        rows = int((chosen == e).sum())
        assert tree[f"experts.{e}"].features["flops"] == pytest.approx(_expert_flops(rows))
    assert sum(tree[f"experts.{e}"].features["flops"] for e in range(4)) == pytest.approx(_expert_flops(32))


def _moe_families() -> list[tuple[str, str, dict]]:
    common = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, vocab_size=256, num_experts_per_tok=2)
    out = [("MixtralForCausalLM", "MixtralConfig", dict(common, num_local_experts=4))]
    out.append(("Qwen2MoeForCausalLM", "Qwen2MoeConfig",
                dict(common, num_experts=4, moe_intermediate_size=32, shared_expert_intermediate_size=64)))
    out.append(("Qwen3MoeForCausalLM", "Qwen3MoeConfig", dict(common, num_experts=4, moe_intermediate_size=32)))
    return out


@pytest.mark.parametrize(("cls", "config_cls", "kwargs"), _moe_families(), ids=lambda v: v if isinstance(v, str) else "")
def test_transformers_moe_traces_on_meta_with_expected_routing(cls: str, config_cls: str, kwargs: dict) -> None:
    if not hasattr(transformers, cls):
        pytest.skip(f"transformers {transformers.__version__} has no {cls}")
    config = getattr(transformers, config_cls)(**kwargs)
    with torch.device("meta"):
        model = getattr(transformers, cls)(config)
    meta = trace(model, example_inputs(model, 2, 16))
    experts = [n for n in meta.walk() if n.scope.endswith("mlp.experts")]
    assert experts and all(n.level == "ml" and n.features["flops"] > 0 for n in experts)
    router = [n for n in meta.walk() if n.scope.endswith("mlp.gate")]
    assert router and all(n.features["flops"] > 0 for n in router)
    # on CPU every token still goes to top_k experts: the same rows, real per-expert spread
    torch.manual_seed(0)
    real = getattr(transformers, cls)(config).eval()
    cpu = trace(real, example_inputs(real, 2, 16, device="cpu"), device="cpu")
    for node in experts:
        assert cpu[node.scope].features["flops"] == pytest.approx(node.features["flops"])


# -- vision, audio, known types ------------------------------------------------------------


def test_vit_tokens_are_patches_plus_class_token() -> None:
    config = transformers.ViTConfig(hidden_size=64, num_hidden_layers=1, num_attention_heads=4, intermediate_size=128,
                                    image_size=32, patch_size=8)
    with torch.device("meta"):
        model = transformers.ViTModel(config)
    tree = trace(model, torch.randn(2, 3, 32, 32))
    assert (tree.batch_size, tree.seq_len) == (2, 17)
    assert trace(model, torch.randn(2, 3, 32, 32), seq_len=5).seq_len == 5


def test_whisper_tokens_are_encoder_frames_not_mel_bins() -> None:
    config = transformers.WhisperConfig(d_model=64, encoder_layers=1, decoder_layers=1, encoder_attention_heads=4,
                                        decoder_attention_heads=4, encoder_ffn_dim=128, decoder_ffn_dim=128,
                                        num_mel_bins=80, max_source_positions=50)
    with torch.device("meta"):
        model = transformers.WhisperModel(config)
    tree = trace(model.encoder, torch.randn(2, 80, 100))
    assert tree.seq_len == 50


def test_cnn_tokens_are_positions_and_vision_leaves_cost_something() -> None:
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
                          nn.AdaptiveAvgPool2d(1))
    small = trace(model, torch.randn(2, 3, 16, 16))
    big = trace(model, torch.randn(2, 3, 32, 32))
    assert small.seq_len == 256
    for scope in ("1", "3", "4"):  # BatchNorm2d, MaxPool2d, AdaptiveAvgPool2d
        assert small[scope].level == "ml" and small[scope].features["flops"] > 0
        assert big[scope].features["flops"] == 4 * small[scope].features["flops"]
        assert big[scope].features["mem_bytes"] > small[scope].features["mem_bytes"]


def test_known_types_under_other_names_use_their_dataset_regressor() -> None:
    from pytest_irene import EnergyModel

    class Scaled(nn.Embedding):
        def forward(self, ids: torch.Tensor) -> torch.Tensor:
            return super().forward(ids) * 2.0

    class Block(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embed = Scaled(100, 64)
            self.act = nn.GELU()
            self.mha = nn.MultiheadAttention(64, 4, batch_first=True)

        def forward(self, ids: torch.Tensor) -> torch.Tensor:
            x = self.act(self.embed(ids))
            return self.mha(x, x, x)[0]

    tree = trace(Block(), torch.ones(2, 16, dtype=torch.long))
    EnergyModel.load("irene-pc1").predict(tree)
    assert tree["embed"].notes["regressor_type"] == "Embedding"
    assert not tree["embed"].notes.get("generic_regressor")
    # no activation leaf was measured at these sizes: nn.GELU stays generic, and is flagged
    assert tree["act"].level == "ml" and tree["act"].notes.get("generic_regressor")
    mha = tree["mha"]
    assert [c.name for c in mha.children] == ["in_proj", "matmul#0", "softmax#0", "matmul#1", "out_proj"]
    assert tree["mha.in_proj"].features["flops"] == 2 * 32 * 64 * 192
    assert not any(c.notes.get("generic_regressor") for c in mha.children)


# -- factories and --json ---------------------------------------------------------------------


FACTORY = '''
import torch
from torch import nn

class GPTConfig:
    n_layer = 1

class GPT(nn.Module):
    def __init__(self):
        super().__init__()
        self.config = GPTConfig()
        self.lm = nn.Linear(16, 16)
        print("number of parameters: 0.00M")

    def forward(self, x):
        return self.lm(x)

def bare():
    return GPT()

def with_inputs(batch_size, seq_len):
    return GPT(), torch.randn(batch_size, seq_len, 16)
'''


def test_a_non_hf_config_gets_the_factory_convention(tmp_path) -> None:
    path = tmp_path / "nano.py"
    path.write_text(FACTORY)
    with pytest.raises(UsageError, match="not a transformers config.*irene_inputs"):
        build_from_factory(f"{path}:bare", 1, 8)


def test_predict_json_is_one_object_whatever_the_factory_prints(tmp_path) -> None:
    path = tmp_path / "nano.py"
    path.write_text(FACTORY)
    proc = subprocess.run(
        [sys.executable, "-m", "pytest_irene.cli", "predict", "--module", f"{path}:with_inputs",
         "--batch-size", "1", "--seq-len", "8", "--json"],
        capture_output=True, text=True, timeout=120, cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["total_j"] > 0
    assert "number of parameters" in proc.stderr
