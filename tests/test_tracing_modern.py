"""Regression tests for tracing today's models (issue 10, section 2): each reproduced failure."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from models import assert_same_tree
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


class _ModuleForm(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.norm = nn.LayerNorm(8)
        self.act = nn.GELU(approximate="tanh")
        self.proj = nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(self.act(self.norm(self.conv(x).permute(0, 2, 3, 1))))


class _FunctionalForm(_ModuleForm):
    """The same layers, written functionally on the modules' own weights (a hand-written stem)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.conv2d(x, self.conv.weight, self.conv.bias, padding=1).permute(0, 2, 3, 1)
        y = F.gelu(F.layer_norm(y, (8,), self.norm.weight, self.norm.bias), approximate="tanh")
        return torch.addmm(self.proj.bias, y.reshape(-1, 8), self.proj.weight.t()).reshape(*y.shape[:-1], 4)


class _AddmmOfActivations(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.addmm(x[:, :1], x, x.t())


def test_a_convolution_norm_or_gemm_written_functionally_is_the_leaf_its_module_would_be() -> None:
    """``F.conv2d(x, self.weight)`` was glue: the glue model predicted it at 3.6x the ``nn.Conv2d`` form."""
    from pytest_irene.pipeline import predict

    x = torch.randn(2, 3, 16, 16)
    modules, functional = trace(_ModuleForm(), x), trace(_FunctionalForm(), x)
    leaves = {n.type: n for n in functional.walk() if n.level == "ml"}
    assert [n.scope for n in functional.walk()][1:] == ["conv2d#0", "layer_norm#0", "gelu#0", "linear#0"]
    for scope, kind in (("conv", "Conv2d"), ("norm", "LayerNorm"), ("act", "GELU")):
        assert leaves[kind].features == modules[scope].features, kind
    # addmm(bias, x, W.t()) is the Linear nn.Linear runs on 2-D rows (the bias fused; a 4-D Linear adds it)
    assert leaves["Linear"].features["flops"] == 2 * (2 * 256) * 8 * 4
    assert modules["proj"].features["flops"] == 2 * (2 * 256) * 8 * 4 + 2 * 256 * 4
    assert leaves["Linear"].features["params"] == modules["proj"].features["params"] == 8 * 4 + 4
    assert functional.root.features["flops"] == pytest.approx(modules.root.features["flops"], rel=0.01)
    assert predict(_FunctionalForm(), x).total_j == pytest.approx(predict(_ModuleForm(), x).total_j, rel=0.02)
    activations = trace(_AddmmOfActivations(), torch.randn(4, 8))  # no weight: a product of activations
    assert [n.type for n in activations.walk()] == ["_AddmmOfActivations", "MatMul"]
    assert_same_tree(functional, trace(_FunctionalForm(), x, device="cpu"))
    nested = trace(nn.Sequential(nn.Conv2d(3, 8, 3), nn.LayerNorm(14)), x)  # the modules call F.conv2d themselves
    assert [n.type for n in nested.walk()] == ["Sequential", "Conv2d", "LayerNorm"]


class _TokenModules(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(48, 64)
        self.norm = nn.LayerNorm(64)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.fc(x))


class _TokenFunctional(_TokenModules):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(F.linear(x, self.fc.weight, self.fc.bias), (64,), self.norm.weight, self.norm.bias)


def test_functional_token_layers_read_the_tokens_and_count_as_their_modules() -> None:
    """``F.linear(x, W)`` on ``(2, 16, 48)`` read 48 tokens per sample (the features), and counted
    fewer bytes than ``nn.Linear`` on the same 3-D input."""
    x = torch.randn(2, 16, 48)
    modules, functional = trace(_TokenModules(), x), trace(_TokenFunctional(), x)
    assert (functional.batch_size, functional.seq_len) == (modules.batch_size, modules.seq_len) == (2, 16)
    assert [n.features for n in functional.walk()] == [n.features for n in modules.walk()]


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


# -- token layouts, roots, wrappers, and inputs the model could never run ---------------------------


class _Attend(nn.Module):
    def __init__(self, batch_first: bool) -> None:
        super().__init__()
        self.mha = nn.MultiheadAttention(32, 4, batch_first=batch_first)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mha(x, x, x)[0]


class _Recur(nn.Module):
    def __init__(self, cls: type[nn.RNNBase], batch_first: bool) -> None:
        super().__init__()
        self.rnn = cls(16, 32, batch_first=batch_first)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.rnn(x)[0]


@pytest.mark.parametrize(("model", "shape"), [
    (lambda: _Attend(batch_first=True), (4, 12, 32)),
    (lambda: _Attend(batch_first=False), (12, 4, 32)),
    (lambda: _Recur(nn.LSTM, batch_first=True), (4, 12, 16)),
    (lambda: _Recur(nn.GRU, batch_first=False), (12, 4, 16)),
    (lambda: _Recur(nn.RNN, batch_first=True), (4, 12, 16)),
], ids=["mha-batch-first", "mha-seq-first", "lstm-batch-first", "gru-seq-first", "rnn-batch-first"])
def test_attention_and_recurrent_layers_give_the_batch_and_tokens_not_the_hidden_size(
        model, shape) -> None:  # type: ignore[no-untyped-def]
    """The tokens per sample were the hidden size (prod(shape[2:])) and a seq-first layer's batch its steps."""
    tree = trace(model(), torch.randn(*shape))
    assert (tree.batch_size, tree.seq_len) == (4, 12)
    assert trace(model(), torch.randn(*shape), seq_len=5, batch_size=3).root.features["batch_seq"] == 15


def test_multihead_attention_as_the_root_has_plain_scopes_and_its_parameters() -> None:
    x = torch.randn(6, 2, 16)
    packed = trace(nn.MultiheadAttention(16, 2), (x, x, x))
    assert [n.scope for n in packed.walk()] == ["", "in_proj", "matmul#0", "softmax#0", "matmul#1", "out_proj"]
    assert packed["in_proj"].features["params"] == 3 * 16 * 16 + 3 * 16
    assert packed["out_proj"].features["params"] == 16 * 16 + 16
    assert sum(c.features["params"] for c in packed.root.children) == packed.root.features["params"]
    _same_tree(trace(nn.MultiheadAttention(16, 2), (x, x, x), device="cpu"), packed)  # x passed thrice stays one
    separate = trace(nn.MultiheadAttention(16, 2, kdim=8, vdim=4), (x, torch.randn(5, 2, 8), torch.randn(5, 2, 4)))
    params = {n.scope: n.features["params"] for n in separate.root.children}
    assert params == {"q_proj": 16 * 16 + 16, "k_proj": 16 * 8 + 16, "v_proj": 16 * 4 + 16, "matmul#0": 0,
                      "softmax#0": 0, "matmul#1": 0, "out_proj": 16 * 16 + 16}
    assert sum(params.values()) == separate.root.features["params"]


def _same_tree(a, b) -> None:  # type: ignore[no-untyped-def]
    assert [(n.scope, n.type, n.features) for n in a.walk()] == [(n.scope, n.type, n.features) for n in b.walk()]


@pytest.mark.filterwarnings("ignore:`torch.jit.script_method` is deprecated:DeprecationWarning")  # torch._dynamo's import
def test_compiled_and_data_parallel_models_trace_as_the_model_itself() -> None:
    """A wrapper added its glue and prefixed every scope (``_orig_mod.``, ``module.``): baselines broke."""
    from pytest_irene import EnergyModel

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 32), nn.GELU(), nn.Linear(32, 4))
    x = torch.randn(2, 5, 16)
    plain = EnergyModel.load("irene-pc1").predict(trace(model, x))
    for wrapped, device in ((torch.compile(model), "meta"), (nn.DataParallel(model), "cpu"),
                            (torch.compile(nn.DataParallel(model)), "meta")):
        tree = EnergyModel.load("irene-pc1").predict(trace(wrapped, x, device=device))
        _same_tree(tree, plain)
        assert tree.total_j == pytest.approx(plain.total_j) and tree.model_name == "Sequential"


@pytest.mark.parametrize("x", [torch.randn(2, 3), torch.tensor(1.0), torch.randn(2, 3, dtype=torch.complex64)],
                         ids=["2-d", "0-d", "complex"])
@pytest.mark.parametrize("model", [nn.Identity, lambda: nn.Dropout(0.1)], ids=["identity", "dropout"])
def test_a_root_that_does_nothing_says_so_not_that_its_forward_never_ran(model, x) -> None:  # type: ignore[no-untyped-def]
    import pytest_irene

    for call in (lambda: trace(model(), x), lambda: pytest_irene.predict(model(), x)):
        with pytest.raises(TraceError, match="does nothing at inference .* no module or primitive to trace"):
            call()


@pytest.mark.filterwarnings("ignore:`torch.jit.script:DeprecationWarning")  # scripting on purpose
def test_a_torchscript_root_is_refused_naming_torchscript() -> None:
    scripted = torch.jit.script(nn.Sequential(nn.Linear(4, 4)))
    for device in ("meta", "cpu"):
        with pytest.raises(TraceError, match="TorchScript module .* trace the nn.Module"):
            trace(scripted, torch.randn(2, 4), device=device)


@pytest.mark.filterwarnings("ignore::FutureWarning")  # torch.export's own pytree deprecation
def test_an_exported_program_is_refused_naming_torch_export() -> None:
    """An ExportedProgram was refused as "a plain function", and its ``.module()`` traced as one
    node: export inlines every module into ATen calls, so no module could be gated."""
    import pytest_irene

    model, x = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4)).eval(), torch.randn(2, 3, 8)
    exported = torch.export.export(model, (x,))
    for lowered, kind in ((exported, "an ExportedProgram"), (exported.module(), "an exported graph module")):
        for device in ("meta", "cpu"):
            with pytest.raises(TraceError, match=f"cannot trace {kind}.* trace the nn.Module you exported"):
                trace(lowered, x, device=device)
    with pytest.raises(TraceError, match="an ExportedProgram"):
        pytest_irene.predict(exported, x)
    graph = torch.fx.symbolic_trace(model)  # an fx graph still calls its modules: traced as the model
    assert [(n.scope, n.type) for n in trace(graph, x).walk()][1:] == [(n.scope, n.type) for n in trace(model, x).walk()][1:]


@pytest.mark.filterwarnings("ignore::UserWarning", "ignore::DeprecationWarning")  # torch's and transformers' own
def test_flex_attention_is_refused_with_the_attention_to_trace_instead() -> None:
    """FlexAttention failed with torch's own words only ("only supported on CUDA, CPU" on meta, "no rule
    registered for HigherOrderOperator" on the CPU, with a hint to use the CPU on meta)."""
    transformers = pytest.importorskip("transformers")
    config = transformers.LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                                      num_key_value_heads=1, vocab_size=64)
    config._attn_implementation = "flex_attention"
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(config).eval()
    for device in ("meta", "cpu"):
        with pytest.raises(TraceError, match="FlexAttention .* cannot be traced on any device.*attn_implementation='sdpa'") as caught:
            trace(model, {"input_ids": torch.randint(0, 64, (2, 8))}, device=device)
        assert "pass device='cpu'" not in str(caught.value)


class _Attention(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.q = nn.Linear(16, 16)

    def forward(self, x: torch.Tensor, kv: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.scaled_dot_product_attention(self.q(x), kv, kv)


@pytest.mark.parametrize(("model", "inputs", "message"), [
    (lambda: nn.Linear(16, 4), lambda: torch.randint(0, 5, (2, 8, 16)), "mat1 and mat2 must have the same dtype"),
    (lambda: nn.Linear(16, 4), lambda: torch.randn(2, 8, 16, dtype=torch.bfloat16), "mat1 and mat2"),
    (lambda: nn.Linear(16, 4, bias=False), lambda: torch.randn(2, 16, dtype=torch.float16), "m1 and m2"),
    (lambda: nn.Linear(16, 4).to(torch.bfloat16), lambda: torch.randn(2, 8, 16), "mat1 and mat2"),
    (lambda: nn.LayerNorm(16).to(torch.bfloat16), lambda: torch.randn(2, 8, 16), "LayerNorm|parameter"),
    (lambda: nn.Conv2d(3, 4, 3, bias=False), lambda: torch.randn(1, 3, 8, 8, dtype=torch.bfloat16),
         "weight type|expected scalar type"),  # the CPU's message depends on its conv kernel (oneDNN or not)
    (lambda: _Attend(batch_first=True), lambda: torch.randint(0, 5, (2, 8, 32)), "m1 and m2"),
    (lambda: _Attention(), lambda: (torch.randn(1, 2, 8, 16), torch.randn(1, 2, 8, 16, dtype=torch.bfloat16)),
     "query, key, and value to have the same dtype"),
], ids=["int-linear", "bf16-linear", "fp16-mm", "fp32-into-bf16", "fp32-into-bf16-layernorm", "bf16-conv", "int-mha",
        "sdpa"])
def test_meta_refuses_the_dtypes_a_real_device_refuses(model, inputs, message) -> None:  # type: ignore[no-untyped-def]
    """torch's meta kernels (and the shape-only fast paths) skipped these dtype checks: meta predicted, CPU failed."""
    for device in ("meta", "cpu"):
        with pytest.raises(TraceError, match=rf"cannot trace .* failed: RuntimeError: .*({message})"):
            trace(model(), inputs(), device=device)


def _tiny(cls: str, config: str, **kwargs: int) -> nn.Module:
    with torch.device("meta"):
        return getattr(transformers, cls)(getattr(transformers, config)(**kwargs))


_SMALL = dict(num_hidden_layers=1, hidden_size=32, num_attention_heads=2, intermediate_size=64, vocab_size=64)


def test_absolute_position_tables_bound_the_length_and_rotary_or_relative_ones_do_not() -> None:
    """On meta a position lookup past the table has no index to fail on: gpt2 at 5000 tokens was predicted."""
    from pytest_irene.engine.architectures import build_model

    gpt2 = build_model("gpt2", n_layer=1)
    assert trace(gpt2, example_inputs(gpt2, 1, 1024)).seq_len == 1024
    for device in ("meta", "cpu"):
        refused = r"gpt2: 5000 positions needed .* holds 1024 \(config.max_position_embeddings\)"
        with pytest.raises(UsageError, match=refused):
            trace(gpt2, {"input_ids": torch.ones(1, 5000, dtype=torch.long)}, device=device)  # refused before it runs
    bert = _tiny("BertModel", "BertConfig", **_SMALL, max_position_embeddings=16)
    with pytest.raises(UsageError, match="17 positions needed .* holds 16"):
        trace(bert, example_inputs(bert, 1, 17))
    roberta = _tiny("RobertaModel", "RobertaConfig", **_SMALL, max_position_embeddings=18)  # positions start at pad + 1
    trace(roberta, example_inputs(roberta, 1, 16))
    with pytest.raises(UsageError, match="17 positions needed .* holds 16"):
        trace(roberta, example_inputs(roberta, 1, 17))
    whisper = _tiny("WhisperModel", "WhisperConfig", d_model=32, encoder_layers=1, decoder_layers=1,
                    encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=64, decoder_ffn_dim=64,
                    num_mel_bins=8, max_source_positions=25, max_target_positions=16, vocab_size=64, pad_token_id=0)
    frames = torch.randn(1, 8, 50)  # the encoder's input is frames, bounded by Whisper itself
    trace(whisper, {"input_features": frames, "decoder_input_ids": torch.ones(1, 16, dtype=torch.long)})
    with pytest.raises(UsageError, match=r"holds 16 \(config.max_target_positions\)"):
        trace(whisper, {"input_features": frames, "decoder_input_ids": torch.ones(1, 17, dtype=torch.long)})
    # rotary (Llama: its vocabulary as large as its max_position_embeddings here) and relative (T5): no table
    llama = _tiny("LlamaForCausalLM", "LlamaConfig", **{**_SMALL, "vocab_size": 16}, max_position_embeddings=16)
    assert trace(llama, example_inputs(llama, 1, 40)).seq_len == 40
    t5 = _tiny("T5Model", "T5Config", num_layers=1, d_model=32, num_heads=2, d_ff=64, d_kv=16, vocab_size=64)
    long_ids = torch.ones(1, 600, dtype=torch.long)
    assert trace(t5, {"input_ids": long_ids, "decoder_input_ids": long_ids}).seq_len == 600


def test_features_of_an_mlp_are_one_token_per_sample() -> None:
    """A (batch, features) input to a Linear is batch samples of one token, not a sequence as long as
    the feature dim: a change of the input width must be compared, not skipped as another input size."""
    from pytest_irene import trace

    mlp = nn.Sequential(nn.Linear(300, 64), nn.ReLU(), nn.Linear(64, 2))
    tree = trace(mlp, torch.randn(2, 300))
    assert (tree.batch_size, tree.seq_len) == (2, 1)
    wider = trace(nn.Sequential(nn.Linear(400, 64), nn.ReLU(), nn.Linear(64, 2)), torch.randn(2, 400))
    assert (wider.batch_size, wider.seq_len) == (2, 1)


@pytest.mark.parametrize("cell", [nn.LSTM, nn.GRU, nn.RNN])
def test_recurrent_layers_count_the_same_work_on_meta_and_on_cpu(cell) -> None:
    """CPU's fused aten.lstm hides its products from the op counter; the recurrent formula
    counts every weight once per step and sample on every device."""
    from pytest_irene.engine.formulas_nn import RNN_GATE_FLOPS

    class Tagger(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.rnn = cell(16, 32, num_layers=2, batch_first=True)
            self.head = nn.Linear(32, 5)

        def forward(self, x):
            return self.head(self.rnn(x)[0])

    model, x = Tagger(), torch.randn(2, 8, 16)
    on_meta, on_cpu = trace(model, x), trace(model, x, device="cpu")
    leaf = on_meta["rnn"]
    assert leaf.level == "ml" and on_cpu["rnn"].features == leaf.features
    weights = sum(p.numel() for n, p in model.rnn.named_parameters() if n.startswith("weight_"))
    gates = sum(p.shape[0] for n, p in model.rnn.named_parameters() if n.startswith("weight_hh"))
    assert leaf.features["flops"] == 2 * 16 * weights + RNN_GATE_FLOPS * 16 * gates
    assert (on_meta.batch_size, on_meta.seq_len) == (2, 8)
