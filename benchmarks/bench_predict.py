"""Prediction speed: what a test pays per ``irene(...)`` call with model features.

Targets (issue 2, section 8, on 2 CPU cores): trace (meta) + predict of
bert-base at batch 32, sequence 256 under 1 s; predict alone under 50 ms.
Also reported: loading the bundled model file (cold, and the cached load the
plugin does for every test) and peak memory.

Run from the repository root::

    python benchmarks/bench_predict.py               # plain table
    python benchmarks/bench_predict.py --markdown    # as in RESULTS.md
"""

from __future__ import annotations

import argparse
import gc
import resource
import statistics
import subprocess
import sys
import tracemalloc
from collections.abc import Callable

import torch
from common import ROOT, table, timed

from pytest_irene.engine.architectures import build_model, example_inputs
from pytest_irene.engine.predict.energy_model import EnergyModel, clear_cache
from pytest_irene.engine.tracing import trace


def first_and_rest(fn: Callable[[], object], repeat: int) -> tuple[float, list[float]]:
    """(first call s, later calls s), garbage collected before each call."""
    times = []
    for _ in range(repeat + 1):
        gc.collect()
        times.append(timed(fn)[1])
    return times[0], times[1:]


def cold_process(args: argparse.Namespace) -> float:
    """Wall time of a fresh interpreter doing everything once (what the first test of a session pays)."""
    code = (
        "import pytest_irene as irene\n"
        "from pytest_irene.engine.architectures import example_inputs\n"
        f"m = irene.build_model({args.model!r})\n"
        f"t = irene.predict(m, example_inputs({args.model!r}, {args.batch_size}, {args.seq_len}), profile={args.profile!r})\n"
        "assert t.total_j > 0\n"
    )
    return timed(lambda: subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT))[1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="bert-base-uncased")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--profile", default="irene-pc1")
    parser.add_argument("--repeat", type=int, default=10)
    parser.add_argument("--markdown", action="store_true")
    args = parser.parse_args(argv)

    clear_cache()
    energy_model, load_cold = timed(lambda: EnergyModel.load(args.profile))
    _, cached = first_and_rest(lambda: EnergyModel.load(args.profile), args.repeat)

    model = build_model(args.model)
    inputs = example_inputs(args.model, args.batch_size, args.seq_len)

    def trace_predict():
        tree = trace(model, inputs)
        energy_model.predict(tree)
        return tree

    first_tp, rest_tp = first_and_rest(trace_predict, args.repeat)
    tree = trace(model, inputs)
    nodes = len(tree)
    first_p, rest_p = first_and_rest(lambda: energy_model.predict(tree), args.repeat)

    # peak Python allocations in separate runs: tracemalloc slows every allocation down
    gc.collect()
    tracemalloc.start()
    trace_predict()
    _, peak_tp = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    tracemalloc.start()
    energy_model.predict(tree)
    _, peak_p = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    rss_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    cold_s = cold_process(args)
    ms = lambda s: f"{s * 1e3:.1f}"  # noqa: E731
    rows = [
        ["trace (meta) + predict", ms(first_tp), ms(statistics.median(rest_tp)), ms(max(rest_tp)), "< 1000",
         "yes" if statistics.median(rest_tp) < 1.0 and first_tp < 1.0 else "NO", f"{peak_tp / 2**20:.1f}"],
        ["predict alone", ms(first_p), ms(statistics.median(rest_p)), ms(max(rest_p)), "< 50",
         "yes" if statistics.median(rest_p) < 0.05 else "NO", f"{peak_p / 2**20:.1f}"],
        ["EnergyModel.load (cold)", ms(load_cold), "", "", "", "", ""],
        ["EnergyModel.load (cached)", "", ms(statistics.median(cached)), ms(max(cached)), "", "", ""],
        ["new process: import + load + build + trace + predict", ms(cold_s), "", "", "", "", ""],
    ]
    print(
        f"{args.model}, batch {args.batch_size}, seq {args.seq_len}: {nodes} nodes, profile {args.profile}; "
        f"torch threads {torch.get_num_threads()}, {args.repeat} repeats after the first; "
        f"process peak RSS {rss_mib:.0f} MiB (includes torch + transformers)\n"
    )
    print(table(["step", "first ms", "median ms", "max ms", "target ms", "met", "peak py MiB"], rows, args.markdown))
    return 0


if __name__ == "__main__":
    sys.exit(main())
