"""Today's model families, built from tiny configs: traced on meta and predicted (issue 10).

For each: every node has a positive finite predicted energy, leaves of types the
profile never saw are flagged as generic (and only those), the matrix-product
flops agree with ``torch.utils.flop_counter.FlopCounterMode`` within 1 %, and the
root grows with the batch and the tokens.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from pytest_irene import EnergyModel
from pytest_irene.engine.tracing import trace

transformers = pytest.importorskip("transformers")

TRAINED = {"Conv1D", "Embedding", "LayerNorm", "Linear", "MatMul", "ReLU", "Softmax", "Tanh"}
#: Leaf types whose flops are matrix products (FlopCounterMode counts only those).
PRODUCTS = {"Linear", "MatMul", "Conv1d", "Conv2d", "Conv3d", "Conv1D", "ConvTranspose2d"}

DEC = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
           vocab_size=256)


def _ids(batch: int, seq: int, vocab: int = 250, **extra: str) -> dict[str, torch.Tensor]:
    ids = (torch.arange(batch * seq).reshape(batch, seq) % (vocab - 3)) + 3
    out = {"input_ids": ids, "attention_mask": torch.ones(batch, seq, dtype=torch.long)}
    for name in extra:
        out[name] = ids.clone()
    return out


def _seq2seq(batch: int, seq: int) -> dict[str, torch.Tensor]:
    return _ids(batch, seq, decoder_input_ids="")


def _pixels(size: int) -> Callable[[int, int], torch.Tensor]:
    return lambda batch, seq: torch.randn(batch, 3, size * seq // 8, size * seq // 8)


class SmallCNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 32, 3, padding=1, bias=False), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1, bias=False), nn.GroupNorm(8, 64), nn.SiLU(),
            nn.Upsample(scale_factor=2), nn.AdaptiveAvgPool2d(1),
        )
        self.head = nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).flatten(1))


def _hf(cls: str, config: str, **kwargs: Any) -> Callable[[], nn.Module] | None:
    if not hasattr(transformers, cls) or not hasattr(transformers, config):
        return None

    def build() -> nn.Module:
        cfg = getattr(transformers, config)(**kwargs)
        return getattr(transformers, cls)._from_config(cfg, attn_implementation="eager")

    return build


#: name -> (builder or None when transformers lacks it, inputs(batch, seq))
FAMILIES: dict[str, tuple[Callable[[], nn.Module] | None, Callable[[int, int], Any]]] = {
    "llama": (_hf("LlamaForCausalLM", "LlamaConfig", **DEC), _ids),
    "mistral": (_hf("MistralForCausalLM", "MistralConfig", **DEC), _ids),
    "qwen2": (_hf("Qwen2ForCausalLM", "Qwen2Config", **DEC), _ids),
    "mixtral": (_hf("MixtralForCausalLM", "MixtralConfig", **DEC, num_local_experts=4, num_experts_per_tok=2), _ids),
    "gemma": (_hf("GemmaForCausalLM", "GemmaConfig", **DEC, head_dim=16), _ids),
    "phi": (_hf("PhiForCausalLM", "PhiConfig", **DEC), _ids),
    "t5": (_hf("T5Model", "T5Config", d_model=64, d_ff=128, d_kv=16, num_layers=2, num_heads=4, vocab_size=256),
           _seq2seq),
    "bart": (_hf("BartModel", "BartConfig", d_model=64, encoder_layers=1, decoder_layers=1, encoder_attention_heads=4,
                 decoder_attention_heads=4, encoder_ffn_dim=128, decoder_ffn_dim=128, vocab_size=256,
                 max_position_embeddings=64), _seq2seq),
    "vit": (_hf("ViTModel", "ViTConfig", hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                intermediate_size=128, image_size=64, patch_size=8), lambda b, s: torch.randn(b, 3, 64, 64)),
    "whisper": (_hf("WhisperModel", "WhisperConfig", d_model=64, encoder_layers=1, decoder_layers=1,
                    encoder_attention_heads=4, decoder_attention_heads=4, encoder_ffn_dim=128, decoder_ffn_dim=128,
                    num_mel_bins=80, max_source_positions=32, max_target_positions=32),
                lambda b, s: {"input_features": torch.randn(b, 80, 64), "decoder_input_ids": _ids(b, s)["input_ids"]}),
    "resnet": (_hf("ResNetModel", "ResNetConfig", embedding_size=16, hidden_sizes=[32, 64], depths=[1, 1],
                   layer_type="basic"), _pixels(32)),
    "cnn": (SmallCNN, _pixels(32)),
}
#: Families whose tokens per sample can grow (ViT's patches and Whisper's frames are fixed by the config).
GROWS_WITH_TOKENS = {"llama", "mistral", "qwen2", "mixtral", "gemma", "phi", "t5", "bart", "resnet", "cnn"}


@pytest.fixture(scope="module")
def energy_model() -> EnergyModel:
    return EnergyModel.load("irene-pc1")


def _on(device: str, builder: Callable[[], nn.Module]) -> nn.Module:
    torch.manual_seed(0)
    with torch.device(device):
        return builder().eval()


def _meta_inputs(inputs: Any) -> Any:
    if isinstance(inputs, dict):
        return {k: v.to("meta") for k, v in inputs.items()}
    return inputs.to("meta")


def _call(model: nn.Module, inputs: Any) -> Any:
    return model(**inputs) if isinstance(inputs, dict) else model(inputs)


def _products(tree: Any) -> float:
    return sum(n.features["flops"] for n in tree.leaves() if n.type in PRODUCTS)


@pytest.mark.parametrize("name", list(FAMILIES))
def test_family_traces_and_predicts(name: str, energy_model: EnergyModel) -> None:
    builder, make_inputs = FAMILIES[name]
    if builder is None:
        pytest.skip(f"transformers {transformers.__version__} has no {name} architecture")
    model = _on("meta", builder)
    tree = trace(model, _meta_inputs(make_inputs(2, 8)))
    energy_model.predict(tree)
    for node in tree.walk():
        assert node.predicted_energy_j is not None and math.isfinite(node.predicted_energy_j) and node.predicted_energy_j > 0
    for leaf in tree.leaves():
        known = leaf.notes.get("regressor_type", leaf.type) in TRAINED
        assert bool(leaf.notes.get("generic_regressor")) is not known, (leaf.scope, leaf.type)

    bigger_batch = energy_model.predict(trace(model, _meta_inputs(make_inputs(4, 8))))
    assert bigger_batch.total_j > tree.total_j
    if name in GROWS_WITH_TOKENS:
        more_tokens = energy_model.predict(trace(model, _meta_inputs(make_inputs(2, 16))))
        assert more_tokens.total_j > tree.total_j


@pytest.mark.parametrize("name", [n for n in FAMILIES if n != "mixtral"])
def test_family_matrix_flops_match_flop_counter(name: str) -> None:
    builder, make_inputs = FAMILIES[name]
    if builder is None:
        pytest.skip(f"transformers {transformers.__version__} has no {name} architecture")
    inputs = make_inputs(2, 8)
    tree = trace(_on("meta", builder), _meta_inputs(inputs))
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        _call(_on("cpu", builder), inputs)
    assert _products(tree) == pytest.approx(counter.get_total_flops(), rel=0.01)
