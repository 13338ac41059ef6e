"""Wall time of the example suite, the README's first command, on two CPU cores.

Target (issue 10): ``pytest examples --irene-budget=12J`` gates production-size
models (bert-base at batch 32 x 256, a Llama-3-8B-shaped decoder and its 256-token generation, ViT-B/16, a
custom module) and still finishes in under 60 s on 2 cores. Each run is a cold
``python -m pytest`` process pinned to the first two cores (``sched_setaffinity``),
so it pays what CI pays: importing torch and transformers, building the models
on the meta device, loading the energy model, tracing and predicting every call.

Usage: ``python benchmarks/bench_examples.py [--runs 2] [--cores 2] [--write-results]``
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from common import ROOT, table, timed, write_results_section

#: The README's command, verbatim after ``pytest``.
COMMAND = ["examples", "--irene-budget=12J"]
TARGET_S = 60.0


def run_examples(cores: int, extra: list[str] | None = None) -> tuple[float, str, list[dict]]:
    """One cold run: ``(wall seconds, pytest's last line, [{nodeid, label, total_j}])``."""
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "run.json"
        cmd = [sys.executable, "-m", "pytest", *COMMAND, "-q", "-p", "no:cacheprovider", f"--irene-json={report}"]
        cmd += extra or []
        allowed = sorted(os.sched_getaffinity(0))[:cores]
        proc, wall = timed(
            lambda: subprocess.run(
                cmd, cwd=ROOT, capture_output=True, text=True, preexec_fn=lambda: os.sched_setaffinity(0, allowed)
            )
        )
        last = ([line for line in proc.stdout.splitlines() if line.strip()][-1:] or ["?"])[0].strip("= ")
        if proc.returncode != 0:
            raise SystemExit(f"the example suite failed ({last}):\n{proc.stdout[-4000:]}\n{proc.stderr[-2000:]}")
        doc = json.loads(report.read_text())
        calls = [{"nodeid": r["nodeid"], "label": r["label"], "total_j": r["total_j"]} for r in doc["records"]]
        return wall, last, calls


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=2, help="cold runs to time (default 2; the median is reported)")
    parser.add_argument("--cores", type=int, default=2, help="CPU cores the run is pinned to (default 2)")
    parser.add_argument("--write-results", action="store_true", help="replace this script's section of RESULTS.md")
    args = parser.parse_args()

    walls: list[float] = []
    for _ in range(args.runs):
        wall, last, calls = run_examples(args.cores)
        walls.append(wall)
    wall = statistics.median(walls)
    cores = min(args.cores, len(os.sched_getaffinity(0)))
    summary = table(
        ["measure", "value", "target"],
        [
            [f"`pytest {' '.join(COMMAND)}` wall time, {cores} cores (median of {args.runs} cold runs)",
             f"{wall:.1f} s", f"< {TARGET_S:.0f} s: " + ("met" if wall < TARGET_S else "MISSED")],
            ["every run", ", ".join(f"{w:.1f} s" for w in walls), ""],
            ["pytest's result", last, ""],
        ],
        markdown=True,
    )
    per_call = table(
        ["test", "label", "predicted per call"],
        [[c["nodeid"], c["label"], f"{c['total_j']:.4g} J"] for c in calls],
        markdown=True,
    )
    print(summary + "\n\n" + per_call)
    if args.write_results:
        write_results_section(
            "examples",
            "## Example suite (`benchmarks/bench_examples.py`)\n\n`python benchmarks/bench_examples.py --write-results` "
            f"on this host ({os.cpu_count()} CPUs, the run pinned to {cores}); cold processes, models built on the "
            f"meta device from configs. The host is shared with other jobs, so the times are upper bounds.\n\n{summary}\n\n{per_call}",
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
