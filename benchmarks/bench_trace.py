"""Tracer benchmarks: speed of a meta trace, and fidelity of the features to the reference dataset.

Targets (issue 2, section 8): trace (meta) + predict of bert-base at batch 32,
sequence 256 under 1 s on 2 CPU cores, so the trace alone must stay well
below that. Fidelity: every node present in both the traced and the dataset
tree within 1 % (flops) and 5 % (bytes) — this script reports it over ALL the
dataset's input sizes, the test only checks two.

Run from the repository root::

    python benchmarks/bench_trace.py                  # speed + fidelity
    python benchmarks/bench_trace.py --only speed --repeat 5
    python benchmarks/bench_trace.py --markdown       # tables as in RESULTS.md
"""

from __future__ import annotations

import argparse
import gc
import resource
import statistics
import tracemalloc
from collections import defaultdict
from functools import partial

import torch
from common import DATASET, table, timed

from pytest_irene.engine.architectures import ARCHITECTURES, build_model, example_inputs
from pytest_irene.engine.dataset import load_dataset
from pytest_irene.engine.tracing import trace

PAPER_MODELS = ARCHITECTURES[:6]
_GPT2_TYPES = {"Block": "GPT2Block", "Attention": "GPT2Attention", "MLP": "GPT2MLP"}
#: transformers 4.2.2 class names of the dataset -> today's, per model.
OLD_TYPES = {"gpt2": _GPT2_TYPES, "distilgpt2": _GPT2_TYPES,
             "distilbert-base-uncased": {"MultiHeadSelfAttention": "DistilBertSelfAttention"}}


def bench_speed(batch: int, seq: int, repeat: int, markdown: bool) -> str:
    rows = []
    for name in PAPER_MODELS:
        model = build_model(name)
        inputs = example_inputs(name, batch, seq)
        gc.collect()
        run = partial(trace, model, inputs)
        tree, first = timed(run)
        times = [timed(run)[1] for _ in range(repeat)]
        tracemalloc.start()
        trace(model, inputs)
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        rows.append([
            name, str(len(tree)), f"{first * 1000:.0f}", f"{statistics.median(times) * 1000:.0f}",
            f"{max(times) * 1000:.0f}", f"{peak / 2**20:.1f}",
        ])
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    head = (f"Trace on the meta device, batch {batch}, seq {seq}, torch threads {torch.get_num_threads()}, "
            f"{repeat} repeats; process peak RSS {rss:.0f} MiB (includes torch + transformers)")
    headers = ["model", "nodes", "first ms", "median ms", "max ms", "peak py MiB"]
    return head + "\n\n" + table(headers, rows, markdown)


def bench_fidelity(markdown: bool) -> str:
    refs = [t for t in load_dataset(DATASET) if t.model_name in PAPER_MODELS]
    rows = []
    worst_types: dict[tuple[str, str], float] = defaultdict(float)
    for name in PAPER_MODELS:
        model = build_model(name)
        n_nodes = n_flops_ok = n_mem_ok = 0
        max_f = max_m = 0.0
        for ref in (t for t in refs if t.model_name == name):
            tree = trace(model, example_inputs(name, ref.batch_size, ref.seq_len))
            mine = {n.scope: n for n in tree.walk()}
            for node in ref.walk():
                live = mine.get(node.scope)
                if live is None:
                    continue
                n_nodes += 1
                f0, m0 = node.features["flops"], node.features["mem_bytes"]
                ef = abs(live.features["flops"] / f0 - 1) if f0 else float(live.features["flops"] > 0)
                em = abs(live.features["mem_bytes"] / m0 - 1) if m0 else float(live.features["mem_bytes"] > 0)
                n_flops_ok += ef <= 0.01
                n_mem_ok += em <= 0.05
                max_f, max_m = max(max_f, ef), max(max_m, em)
                if em > 0.05:
                    key = (name, OLD_TYPES.get(name, {}).get(node.type, node.type) + ("" if node.level != "ml" else " (leaf)"))
                    worst_types[key] = max(worst_types[key], em)
        rows.append([name, str(n_nodes), f"{100 * n_flops_ok / n_nodes:.1f}", f"{100 * max_f:.2f}",
                     f"{100 * n_mem_ok / n_nodes:.1f}", f"{100 * max_m:.1f}"])
    headers = ["model", "node pairs", "flops ≤1 % (%)", "max flops err %", "bytes ≤5 % (%)", "max bytes err %"]
    out = "Fidelity over every input size of irene-pc1 (nodes matched by scope)\n\n" + table(headers, rows, markdown)
    if worst_types:
        rows2 = [[m, t, f"{100 * e:.1f}"] for (m, t), e in sorted(worst_types.items())]
        out += "\n\nNode types with a bytes error above 5 % somewhere\n\n" + table(["model", "type", "max err %"], rows2, markdown, left=2)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=("speed", "fidelity"))
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--markdown", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.only in (None, "speed"):
        print(bench_speed(args.batch_size, args.seq_len, args.repeat, args.markdown))
        print()
    if args.only in (None, "fidelity"):
        print(bench_fidelity(args.markdown))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
