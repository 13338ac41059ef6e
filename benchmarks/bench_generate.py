"""Generation benchmark: trace_generate of a Llama-3-8B-shaped decoder (and a Whisper-large-v3-shaped
encoder-decoder) on the meta device.

Target (issue 10, section 1): hidden 4096, 32 layers, FFN 14336, 32 heads, 8 KV
heads, vocabulary 128256, batch 1, prompt 512, 1024 new tokens, traced on meta in
under 3 s on 2 CPU cores, model build excluded. Four forwards are traced (the
prefill, two decode steps, and the last step to check that features are affine
in the KV length); the 1021 others are derived. Prediction (64 of the 1023
decode steps predicted, the rest interpolated) is timed apart. The second row is an
encoder-decoder: Whisper-large-v3's shape (32 + 32 layers, d_model 1280), 30 s of audio
(3000 mel frames, 1500 encoder frames), 224 new tokens; its encoder runs once, in the prefill.

Run from the repository root::

    python benchmarks/bench_generate.py                # table
    python benchmarks/bench_generate.py --markdown --write   # and replace its RESULTS.md section
"""

from __future__ import annotations

import argparse
import os
import time

import torch
from common import table, timed, write_results_section

from pytest_irene.engine.generation import trace_generate
from pytest_irene.engine.predict.energy_model import EnergyModel

LLAMA3_8B = dict(hidden_size=4096, num_hidden_layers=32, intermediate_size=14336, num_attention_heads=32,
                 num_key_value_heads=8, vocab_size=128256)


WHISPER_LARGE_V3 = dict(d_model=1280, encoder_layers=32, decoder_layers=32, encoder_attention_heads=20,
                        decoder_attention_heads=20, encoder_ffn_dim=5120, decoder_ffn_dim=5120, vocab_size=51866,
                        num_mel_bins=128, max_source_positions=1500, max_target_positions=448,
                        decoder_start_token_id=50258, pad_token_id=50256, bos_token_id=50257, eos_token_id=50257)
WHISPER_NEW_TOKENS = 224


def build() -> torch.nn.Module:
    from transformers import LlamaConfig, LlamaForCausalLM

    with torch.device("meta"):
        return LlamaForCausalLM(LlamaConfig(**LLAMA3_8B)).eval()


def build_whisper() -> torch.nn.Module:
    from transformers import WhisperConfig, WhisperForConditionalGeneration

    with torch.device("meta"):
        return WhisperForConditionalGeneration(WhisperConfig(**WHISPER_LARGE_V3)).eval()


def run(prompt: int, new_tokens: int, repeat: int, markdown: bool) -> str:
    ids = {"input_ids": torch.ones(1, prompt, dtype=torch.long), "attention_mask": torch.ones(1, prompt, dtype=torch.long)}
    audio = {"input_features": torch.zeros(1, WHISPER_LARGE_V3["num_mel_bins"], 3000)}
    rows = [
        measure("Llama-3-8B shape", build, ids, f"1 x {prompt}", new_tokens, repeat),
        measure("Whisper-large-v3 shape", build_whisper, audio, "1 x 30 s audio", WHISPER_NEW_TOKENS, repeat),
    ]
    headers = ["model", "batch x prompt", "new tokens", "build s", "trace s (wall)", "trace s (CPU)", "predict s",
               "nodes", "derived", "total J", "J/token"]
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    note = (f"best of {repeat}; torch {torch.__version__}; {os.cpu_count()} CPU(s) visible, load average {load:.1f} "
            "while measuring (wall time includes waiting for the CPU, CPU time does not)")
    return table(headers, rows, markdown) + "\n\n" + note


def measure(label: str, make, inputs, shape: str, new_tokens: int, repeat: int) -> list[str]:  # type: ignore[no-untyped-def]
    """One row: build on meta, warm up, then the best of ``repeat`` traces and one prediction."""
    model, build_s = timed(make)
    trace_generate(model, inputs, max_new_tokens=4)  # warm-up: first-call imports and kernel registrations
    walls, cpus = [], []
    tree = None
    for _ in range(repeat):
        cpu0 = time.process_time()
        tree, wall = timed(lambda: trace_generate(model, inputs, max_new_tokens=new_tokens))
        walls.append(wall)
        cpus.append(time.process_time() - cpu0)
    assert tree is not None
    energy_model = EnergyModel.load("irene-pc1")
    _, predict_s = timed(lambda: energy_model.predict(tree))
    return [
        label, shape, str(new_tokens), f"{build_s:.2f}", f"{min(walls):.2f}",
        f"{min(cpus):.2f}", f"{predict_s:.2f}", str(len(tree)), "yes" if tree.meta["decode_derived"] else "no",
        f"{tree.total_j:.1f}", f"{tree.per_token_j:.3f}",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompt", type=int, default=512)
    parser.add_argument("--new-tokens", type=int, default=1024)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--markdown", action="store_true")
    parser.add_argument("--write", action="store_true", help="replace the bench_generate section of RESULTS.md")
    args = parser.parse_args()
    body = run(args.prompt, args.new_tokens, args.repeat, args.markdown)
    print(body)
    if args.write:
        write_results_section("generate", "## Generation (trace_generate, meta device)\n\n" + TEXT + "\n" + body + "\n")


TEXT = """\
`python benchmarks/bench_generate.py --markdown --write`. Target: under 3 s on 2 cores for the trace
(model build excluded). Four forwards are traced (prefill, decode steps 1 and 2, and the last decode
step, which checks that every node's features are affine in the KV length); the other steps are
derived exactly (`tests/test_generation.py` compares them with tracing every step). **The energies
extrapolate:** the reference dataset has no decode-step measurements (its trees are whole forwards of
2021 encoders at 8-256 tokens), so a decode step (1 token per sample against a long KV cache) and an
8B-parameter layer are both outside what the regressors were fitted on. The Whisper row's prefill is
its encoder over 1500 frames plus the decoder's start token; its decode steps are the decoder alone.
"""


if __name__ == "__main__":
    main()
