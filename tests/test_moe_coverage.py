"""MoE layouts of transformers 5 beyond Mixtral's: traced on meta with the expected routing.

A sweep of transformers' architectures found MoE models that failed on the meta device. Each test
here builds one from a tiny config (``AutoConfig.for_model`` + ``AutoModel.from_config``, nothing
downloaded), traces it on meta, checks the experts' work against a hand count (every token goes to
``top_k`` experts, its rows spread evenly: each expert runs ``tokens·top_k/E`` rows, ``top_k/E`` of
the dense cost), then traces the same model on CPU with random weights: the real routing gives the
same tree and nearly the same flops. Where transformers itself cannot run the config (on any
device), the trace's error says what to change.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch

from pytest_irene.engine.architectures import example_inputs
from pytest_irene.engine.tracing import trace
from pytest_irene.errors import TraceError

transformers = pytest.importorskip("transformers")

B, S = 2, 12
T = B * S  # tokens of the meta traces
H, E = 32, 4  # hidden size and routed experts of every tiny config
_DECODER = dict(hidden_size=H, intermediate_size=48, num_hidden_layers=1, num_attention_heads=4,
                num_key_value_heads=2, vocab_size=100)


def _build(model_type: str, device: str = "meta", **config: Any) -> torch.nn.Module:
    """A tiny model from its config: on meta (no weights), or on CPU with seeded random weights."""
    cfg = transformers.AutoConfig.for_model(model_type, **config)
    if device == "meta":
        with torch.device("meta"):
            return transformers.AutoModel.from_config(cfg)
    torch.manual_seed(0)
    return transformers.AutoModel.from_config(cfg).eval()


def _trace(model: torch.nn.Module, batch: int, seq: int, device: str = "meta",  # type: ignore[no-untyped-def]
           **extra: Any):
    inputs = dict(example_inputs(model, batch, seq, **({} if device == "meta" else {"device": device})))
    return trace(model, {**inputs, **extra}, device=device)


def _flops(tree, scope: str) -> float:  # type: ignore[no-untyped-def]
    return tree[scope].features["flops"]


def _fused_per_row(inner: int) -> int:
    """Flops of one routed row through a gated expert (``engine/moe.py``): gate and up (``H → 2I``), down,
    SiLU (5 a value), gate × up, and the weighting and scatter-add (``2·H``)."""
    return 2 * H * 2 * inner + 2 * inner * H + 5 * inner + inner + 2 * H


def _same_tree_close_flops(meta, cpu, rel: float) -> None:  # type: ignore[no-untyped-def]
    """Same nodes in the same order, the root's flops within ``rel`` (real routing vs expected)."""
    assert [n.scope for n in cpu.walk()] == [n.scope for n in meta.walk()]
    assert cpu.root.features["flops"] == pytest.approx(meta.root.features["flops"], rel=rel)


# -- Switch Transformers: top-1 over a ModuleDict of experts, looped over the hit experts -----------------

_SWITCH = dict(d_model=H, d_ff=48, d_kv=8, num_heads=4, num_layers=1, num_decoder_layers=1, num_experts=E,
               vocab_size=100, num_sparse_encoder_layers=1, num_sparse_decoder_layers=1)  # every layer sparse
_SWITCH_MLP = "encoder.block.0.layer.1.mlp"


def _switch(device: str, batch: int, seq: int, dec: int):  # type: ignore[no-untyped-def]
    model = _build("switch_transformers", device, **_SWITCH)
    ids = torch.randint(1, _SWITCH["vocab_size"], (batch, dec), generator=torch.Generator().manual_seed(0))
    return _trace(model, batch, seq, device, decoder_input_ids=ids)  # distinct tokens: routed apart on CPU


def test_switch_transformers_sends_each_expert_its_share_of_the_tokens_on_meta() -> None:
    """Its experts loop over ``nonzero()`` of the hit experts and name each ``f"expert_{idx[0]}"``:
    refused as data-dependent code before, now every expert runs on ``T/E`` rows (top-1)."""
    tree = _switch("meta", B, S, dec=4)
    d, ff = _SWITCH["d_model"], _SWITCH["d_ff"]
    for e in range(E):
        expert = f"{_SWITCH_MLP}.experts.expert_{e}"
        assert _flops(tree, f"{expert}.wi") == _flops(tree, f"{expert}.wo") == 2 * (T // E) * d * ff
    linears = sum(n.features["flops"] for n in tree[f"{_SWITCH_MLP}.experts"].walk() if n.type == "Linear")
    assert linears == 2 * T * 2 * d * ff  # top-1: each token through one expert, the dense cost once
    decoder_expert = tree["decoder.block.0.layer.2.mlp.experts.expert_3.wi"]
    assert decoder_expert.features["flops"] == 2 * (B * 4 // E) * d * ff  # the decoder's tokens


def test_switch_transformers_on_cpu_routes_for_real_with_the_same_tree() -> None:
    meta, cpu = _switch("meta", B, 32, dec=8), _switch("cpu", B, 32, dec=8)
    _same_tree_close_flops(meta, cpu, rel=1e-9)  # top-1 and no token over capacity: the same rows in all
    spread = [_flops(cpu, f"{_SWITCH_MLP}.experts.expert_{e}.wi") for e in range(E)]
    assert len(set(spread)) > 1 and sum(spread) == E * _flops(meta, f"{_SWITCH_MLP}.experts.expert_0.wi")


class HitLoopMoE(torch.nn.Module):
    """The loop of transformers 4.4x's Mixtral block: over the hit experts, indexing the list with each."""

    def __init__(self, d: int = 16, experts: int = E, k: int = 2) -> None:
        super().__init__()
        self.k = k
        self.gate = torch.nn.Linear(d, experts, bias=False)
        self.experts = torch.nn.ModuleList(torch.nn.Linear(d, d, bias=False) for _ in range(experts))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weights, chosen = torch.topk(self.gate(x).softmax(-1), self.k, dim=-1)
        mask = torch.nn.functional.one_hot(chosen, len(self.experts)).permute(2, 1, 0)  # (E, k, tokens)
        out = torch.zeros_like(x)
        for expert_idx in torch.greater(mask.sum(dim=(-1, -2)), 0).nonzero():
            kth, rows = torch.where(mask[expert_idx].squeeze(0))
            out.index_add_(0, rows, self.experts[expert_idx](x[rows]) * weights[rows, kth, None])
        return out


def test_a_loop_over_the_hit_experts_indexes_each_expert_in_turn_on_meta() -> None:
    """``self.experts[expert_idx]`` reads the index of a hit expert (``__index__``): experts 0, 1, 2...
    each on ``tokens·k/E`` rows; on CPU the real routing runs the same rows in all."""
    torch.manual_seed(0)
    model, tokens, d = HitLoopMoE(), 32, 16
    meta = trace(model, torch.randn(tokens, d))
    assert [_flops(meta, f"experts.{e}") for e in range(E)] == [2 * (tokens * 2 // E) * d * d] * E
    cpu = trace(model, torch.randn(tokens, d), device="cpu")
    ran = [n.features["flops"] for n in cpu.walk() if n.type == "Linear" and n.scope.startswith("experts.")]
    assert sum(ran) == 2 * tokens * 2 * d * d and len(set(ran)) > 1


# -- JetMoE: a router hands its grouped experts the rows per expert as a Python list --------------------

_JETMOE = dict(hidden_size=H, intermediate_size=48, num_hidden_layers=1, num_key_value_heads=2, kv_channels=8,
               num_local_experts=E, num_experts_per_tok=2, vocab_size=100)


def test_jetmoe_experts_run_their_expected_rows_on_meta() -> None:
    """``expert_size.tolist()`` in its router failed ("Cannot copy out of meta tensor"): it now gets
    ``T·top_k/E`` rows per expert, and each expert's ``F.linear`` runs on them."""
    tree = _trace(_build("jetmoe", **_JETMOE), B, S)
    k, inner = _JETMOE["num_experts_per_tok"], _JETMOE["intermediate_size"]
    rows = T * k // E
    heads = _JETMOE["kv_channels"] * _JETMOE["num_key_value_heads"]
    for e in range(E):
        assert _flops(tree, f"layers.0.mlp.input_linear.linear#{e}") == 2 * rows * H * 2 * inner  # gate and up
        assert _flops(tree, f"layers.0.mlp.output_linear.linear#{e}") == 2 * rows * inner * H
        assert _flops(tree, f"layers.0.self_attention.experts.input_linear.linear#{e}") == 2 * rows * H * heads
    assert _flops(tree, "layers.0.mlp.input_linear") == 2 * T * k * H * 2 * inner  # top_k experts per token


def test_jetmoe_on_cpu_routes_for_real_with_the_same_tree() -> None:
    meta, cpu = _trace(_build("jetmoe", **_JETMOE), B, 32), _trace(_build("jetmoe", "cpu", **_JETMOE), B, 32, "cpu")
    _same_tree_close_flops(meta, cpu, rel=0.01)
    spread = [_flops(cpu, f"layers.0.mlp.input_linear.linear#{e}") for e in range(E)]
    assert len(set(spread)) > 1 and sum(spread) == pytest.approx(_flops(meta, "layers.0.mlp.input_linear"))


def test_a_rows_per_expert_list_outside_a_router_is_still_refused_on_meta() -> None:
    """Only a router's per-expert counts are answered: any other ``.tolist()`` of a meta tensor fails."""

    class Lister(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x[: int(sum(x.long().sum(0).tolist()))]

    with pytest.raises(TraceError, match="device='cpu'"):
        trace(Lister(), torch.ones(4, 3))


# -- LongCat-Flash: fused experts with zero-compute (identity) experts ------------------------------------

_LONGCAT = dict(hidden_size=H, num_layers=1, num_attention_heads=4, num_key_value_heads=4, vocab_size=100,
                ffn_hidden_size=48, q_lora_rank=16, kv_lora_rank=16, qk_nope_head_dim=8, qk_rope_head_dim=8,
                head_dim=8, v_head_dim=8, qk_head_dim=16, n_routed_experts=E, zero_expert_num=2, moe_topk=2,
                expert_ffn_hidden_size=24)


def test_longcat_flash_counts_its_weighted_experts_rows_only() -> None:
    """Its experts hold 3-D weights but name their count ``num_routed_experts`` (not recognised, so its
    loop was refused): tokens pick among ``E + zero`` experts, and rows sent to a zero expert cost
    only their weighting."""
    model = _build("longcat_flash", **_LONGCAT)
    tree = _trace(model, B, S)
    k, inner, total = _LONGCAT["moe_topk"], _LONGCAT["expert_ffn_hidden_size"], E + _LONGCAT["zero_expert_num"]
    experts = tree["layers.0.mlp.experts"]
    assert experts.level == "ml"
    if hasattr(model.layers[0].mlp.experts, "total_experts"):  # transformers before 5.25
        per_expert = T * k // total  # 8 rows for each of the 6 experts the router picks from
        assert experts.features["flops"] == E * per_expert * _fused_per_row(inner) + (total - E) * per_expert * 2 * H
    else:  # 5.25 sends a zero expert's rows to a real one with weight 0 (and adds the identity outside): all compute
        assert experts.features["flops"] == T * k * _fused_per_row(inner)


def test_longcat_flash_on_cpu_routes_for_real_with_the_same_tree() -> None:
    meta = _trace(_build("longcat_flash", **_LONGCAT), B, 64)
    cpu = _trace(_build("longcat_flash", "cpu", **_LONGCAT), B, 64, "cpu")
    _same_tree_close_flops(meta, cpu, rel=0.03)
    assert _flops(cpu, "layers.0.mlp.experts") == pytest.approx(_flops(meta, "layers.0.mlp.experts"), rel=0.1)


# -- fused experts that already traced once their config is complete: DeepSeek-V2, dots.llm1 ---------------

#: Multi-head latent attention: keys and values per query head (``num_key_value_heads`` = heads).
_MLA = dict(q_lora_rank=16, kv_lora_rank=16, qk_rope_head_dim=8, qk_nope_head_dim=8, v_head_dim=8,
            num_key_value_heads=4)
_ROUTED = dict(n_routed_experts=E, moe_intermediate_size=24, n_shared_experts=1, first_k_dense_replace=0, n_group=1,
               topk_group=1)


@pytest.mark.parametrize(("model_type", "config"), [
    ("deepseek_v2", {**_DECODER, **_ROUTED, **_MLA}),
    ("dots1", {**_DECODER, **_ROUTED}),
], ids=["deepseek_v2", "dots1"])
def test_fused_experts_count_top_k_rows_once_the_config_sets_them(model_type: str, config: dict[str, Any]) -> None:
    """Their default configs leave ``num_experts_per_tok`` (dots1: also ``n_routed_experts``) unset;
    with them set they trace as fused experts with ``T·top_k`` rows."""
    tree = _trace(_build(model_type, num_experts_per_tok=2, **config), B, S)
    assert _flops(tree, "layers.0.mlp.experts") == T * 2 * _fused_per_row(config["moe_intermediate_size"])


def test_an_unset_experts_per_token_is_named_with_the_config_field_to_set() -> None:
    """DeepSeek-V2's default config has ``num_experts_per_tok=None``: its router's ``topk(k=None)``
    fails on every device, so the error names the field instead of suggesting a device."""
    model = _build("deepseek_v2", **{**_DECODER, **_ROUTED, **_MLA})
    with pytest.raises(TraceError, match=r"top_k is None.*every device.*unset there: num_experts_per_tok") as meta:
        _trace(model, B, S)
    assert "device='cpu'" not in str(meta.value)
    with pytest.raises(TraceError, match="unset there: num_experts_per_tok"):
        _trace(_build("deepseek_v2", "cpu", **{**_DECODER, **_ROUTED, **_MLA}), B, S, "cpu")


# -- Bamba, Granite-MoE-hybrid: every layer Mamba, and transformers' cache needs an attention layer ---------

_MAMBA = dict(mamba_n_heads=4, mamba_d_head=16, mamba_d_state=8, mamba_n_groups=1, mamba_expand=2)
_HYBRIDS = [("bamba", {**_DECODER, **_MAMBA}),
            ("granitemoehybrid", {**_DECODER, **_MAMBA, "num_local_experts": E, "num_experts_per_tok": 2})]


@pytest.mark.parametrize(("model_type", "config"), _HYBRIDS, ids=["bamba", "granitemoehybrid"])
def test_an_all_mamba_hybrid_says_to_drop_the_cache_and_traces_without_it(model_type: str,
                                                                          config: dict[str, Any]) -> None:
    """Their default layer types are all Mamba: transformers' hybrid cache then has no attention layer to
    ask its length, and the forward fails on every device. The error says so; without a cache it traces."""
    model = _build(model_type, **config)
    with pytest.raises(TraceError, match="use_cache=False.*attention layer"):
        _trace(model, B, S)
    tree = _trace(model, B, S, use_cache=False)
    assert tree.root.features["flops"] > 0 and (tree.batch_size, tree.seq_len) == (B, S)


def test_granite_moe_hybrid_with_an_attention_layer_counts_top_k_rows() -> None:
    config = {**_HYBRIDS[1][1], "num_hidden_layers": 2, "layer_types": ["mamba", "attention"]}
    tree = _trace(_build("granitemoehybrid", **config), B, S)
    rows_flops = T * 2 * _fused_per_row(config["intermediate_size"])  # top-2 of every token
    experts = [n for n in tree.walk() if n.scope.endswith("experts")]
    assert len(experts) == 2 and all(n.features["flops"] == rows_flops for n in experts)


# -- GPT-OSS: fused experts with a bias per expert on each projection ----------------------------------------

def test_experts_biases_are_added_to_every_routed_row_and_read_once_per_expert_hit() -> None:
    """GPT-OSS's experts add ``gate_up_proj_bias`` (``2I`` a row) and ``down_proj_bias`` (``H`` a row)."""
    inner = 48
    config = {**_DECODER, "head_dim": 8, "num_local_experts": E, "num_experts_per_tok": 2, "intermediate_size": inner}
    tree = _trace(_build("gpt_oss", **config), B, S)
    experts = tree["layers.0.mlp.experts"]
    assert experts.features["flops"] == T * 2 * (_fused_per_row(inner) + 2 * inner + H)
    es = 4  # float32
    rows = T * 2
    weights = E * ((H * 2 * inner + inner * H) + (2 * inner + H)) * es  # every expert is hit
    assert experts.features["mem_bytes"] == rows * H * es * 2 + rows * (2 * inner + inner) * es + weights
