"""Plugin overhead per wrapped call, and the examples suite's wall time.

Targets (issue 3): for bert-base at batch 16, sequence 128, model-features
mode, one ``irene(model, inputs)`` call costs less than 0.25 of one real CPU
forward pass of the same model, and less than 1 s.

The overhead is measured where users pay it: inside a real pytest session,
around the ``irene`` fixture call (trace on the meta device, predict every
node, compare with the baseline, record). The first call of a session also
loads the energy model; it is reported separately.

Usage: ``python benchmarks/bench_plugin.py [--calls 5] [--write-results]``
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

from bench_examples import run_examples
from common import table, write_results_section

INNER = textwrap.dedent(
    '''
    import json, statistics, time
    import torch
    from transformers import AutoModel, BertConfig

    CALLS = {calls}


    def test_overhead(irene):
        torch.manual_seed(0)
        torch.set_num_threads({threads})
        model = AutoModel.from_config(BertConfig(), attn_implementation="eager").eval()
        ids = torch.randint(0, 30522, (16, 128))
        inputs = {{"input_ids": ids, "attention_mask": torch.ones_like(ids)}}
        with torch.no_grad():
            model(**inputs)  # warm-up
            forward_s = []
            for _ in range(3):
                t0 = time.perf_counter()
                model(**inputs)
                forward_s.append(time.perf_counter() - t0)
        call_s = []
        for i in range(CALLS + 1):
            t0 = time.perf_counter()
            tree = irene(model, inputs, label=f"call{{i}}")
            call_s.append(time.perf_counter() - t0)
        with open({out!r}, "w") as handle:
            json.dump({{"forward_s": forward_s, "first_call_s": call_s[0], "call_s": call_s[1:],
                       "nodes": len(tree), "total_j": tree.total_j}}, handle)
    '''
)


def measure_overhead(calls: int, threads: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "timings.json"
        test = Path(tmp) / "test_overhead.py"
        test.write_text(INNER.format(calls=calls, threads=threads, out=str(out)))
        cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--irene-features=model", str(test)]
        proc = subprocess.run(cmd, cwd=tmp, capture_output=True, text=True)
        if proc.returncode != 0:
            raise SystemExit(f"inner session failed:\n{proc.stdout}\n{proc.stderr}")
        return json.loads(out.read_text())


def measure_examples() -> tuple[float, str]:
    """The example suite's wall time on every core of this host (``bench_examples.py`` pins it to two)."""
    wall, last, _ = run_examples(os.cpu_count() or 1)
    return wall, last


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=5, help="wrapped calls to time after the first (default 5)")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="torch CPU threads")
    parser.add_argument("--write-results", action="store_true", help="replace this script's section of RESULTS.md")
    args = parser.parse_args()

    timings = measure_overhead(args.calls, args.threads)
    forward = statistics.median(timings["forward_s"])
    call = statistics.median(timings["call_s"])
    ratio = call / forward
    examples_wall, examples_result = measure_examples()

    rows = [
        ["CPU forward pass, bert-base b16 s128 (median of 3)", f"{forward:.3f} s", ""],
        [f"wrapped call overhead (median of {args.calls})", f"{call:.3f} s", "< 1 s: " + ("met" if call < 1 else "MISSED")],
        ["overhead / forward pass", f"{ratio:.3f}", "< 0.25: " + ("met" if ratio < 0.25 else "MISSED")],
        ["first call (loads the energy model)", f"{timings['first_call_s']:.3f} s", ""],
        ["nodes per tree", str(timings["nodes"]), ""],
        ["`pytest examples --irene-budget=12J` wall time", f"{examples_wall:.1f} s", examples_result],
    ]
    results = table(["measure", "value", "target"], rows, markdown=True)
    print(results)

    if args.write_results:
        write_results_section(
            "plugin",
            "## Plugin (`benchmarks/bench_plugin.py`)\n\n`python benchmarks/bench_plugin.py --write-results` on this host "
            f"({os.cpu_count()} CPUs, torch threads {args.threads}); model-features mode.\n\n{results}",
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
