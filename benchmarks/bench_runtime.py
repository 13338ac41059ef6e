"""Runtime benchmarks: sampler overhead, and resource features for every node of bert-base.

Targets (issue 4, paper figures):
* the resource sampler at 170 ms costs < 0.5 % of one core and < 15 MB of memory;
* collecting resource features for every node of bert-base at batch 8,
  sequence 128 on 2 CPU cores takes < 60 s (IrEne-viz: 15-25 minutes per model).

Run from the repository root::

    python benchmarks/bench_runtime.py                 # both parts
    python benchmarks/bench_runtime.py --only overhead --duration 20
    python benchmarks/bench_runtime.py --only bert --window 0.25

The overhead is measured in fresh subprocesses, one sampling for ``--duration``
seconds and one idle for the same time, so interpreter noise cancels out.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

from common import ROOT, write_results_section

_lines: list[str] = []


def say(text: str = "") -> None:
    """Print and keep the line for ``--write-results``."""
    print(text)
    _lines.append(text)

_PROBE = r"""
import json, os, resource, sys, time
sys.path.insert(0, {root!r})
from pytest_irene.rig.runtime.sampler import ResourceSampler

def rss_mb():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024.0
def cpu_s():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime

sample = {sample}
duration = {duration}
sampler = ResourceSampler(period_s={period})
rss0, cpu_start = rss_mb(), cpu_s()
if sample:
    sampler.start()  # one-time cost (NVML/RAPL discovery) reported apart from the steady state
cpu0, t0 = cpu_s(), time.monotonic()
start_cpu_s = cpu0 - cpu_start
time.sleep(duration)
if sample:
    sampler.stop()
cpu1, t1 = cpu_s(), time.monotonic()
print(json.dumps({{"cpu_s": cpu1 - cpu0, "start_cpu_s": start_cpu_s, "wall_s": t1 - t0, "rss0_mb": rss0, "rss1_mb": rss_mb(),
                  "samples": len(sampler.samples), "gpu_reason": sampler.reason,
                  "rapl_reason": sampler.rapl_reason}}))
"""


def _probe(sample: bool, duration: float, period: float) -> dict:
    code = _PROBE.format(root=str(ROOT), sample=sample, duration=duration, period=period)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def bench_overhead(duration: float, period: float) -> list[tuple[str, str, str, bool]]:
    idle = _probe(False, duration, period)
    busy = _probe(True, duration, period)
    cpu_pct = 100.0 * (busy["cpu_s"] - idle["cpu_s"]) / busy["wall_s"]
    mem_mb = busy["rss1_mb"] - busy["rss0_mb"]
    expected = int(busy["wall_s"] / period)
    say(f"sampler: {busy['samples']} samples in {busy['wall_s']:.1f} s (period {period} s, ~{expected} expected); "
          f"GPU: {busy['gpu_reason'] or 'sampled'}; RAPL: {busy['rapl_reason'] or 'read'}")
    return [
        ("sampler start-up, one-time (CPU ms)", f"{busy['start_cpu_s'] * 1000:.1f}", "-", True),
        (f"sampler CPU at {period * 1000:.0f} ms (% of one core)", f"{cpu_pct:.3f}", "< 0.5", cpu_pct < 0.5),
        (f"sampler memory at {period * 1000:.0f} ms (MB, RSS growth)", f"{mem_mb:.2f}", "< 15", mem_mb < 15),
    ]


def bench_bert(window_s: float, threads: int, batch: int, seq: int) -> list[tuple[str, str, str, bool]]:
    import torch
    from transformers import AutoModel, BertConfig

    from pytest_irene.rig.runtime import measure_tree

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = AutoModel.from_config(BertConfig(), attn_implementation="eager").eval()  # bert-base shape
    inputs = {
        "input_ids": torch.randint(0, 30522, (batch, seq)),
        "attention_mask": torch.ones(batch, seq, dtype=torch.long),
    }
    import resource

    load0 = os.getloadavg()[0]
    cpu0 = resource.getrusage(resource.RUSAGE_SELF)
    t0 = time.monotonic()
    tree = measure_tree(model, inputs, device="cpu", window_s=window_s, model_name="bert-base-uncased")
    elapsed = time.monotonic() - t0
    cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    cpu_s = (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime)
    say(f"process CPU time {cpu_s:.1f} s over {elapsed:.1f} s wall ({cpu_s / elapsed:.2f} cores busy); "
          f"1-min load average {load0:.2f} before, {os.getloadavg()[0]:.2f} after (other processes slow this down)")
    info = tree.meta["runtime"]
    measured = sum(1 for n in tree.walk() if "latency_s" in n.features)
    say(f"bert-base b{batch} s{seq}, {threads} threads, window {window_s} s: {info['nodes']} nodes, "
          f"{info['distinct_nodes']} distinct, {measured} measured, {elapsed:.1f} s in all "
          f"({info['measure_s']:.1f} s running nodes)")
    rows = sorted(tree.walk(), key=lambda n: -n.features.get("latency_s", 0.0))[:6]
    for node in rows:
        f = node.features
        say(f"    {node.scope or '<model>':45s} {node.type:22s} latency {f.get('latency_s', 0) * 1000:9.2f} ms "
              f"cpu {f.get('cpu', float('nan')):5.1f} %  mem {f.get('mem', float('nan')):4.1f} %")
    return [
        (f"resource features, every node of bert-base b{batch} s{seq}, {threads} cores (s)", f"{elapsed:.1f}",
         "< 60", elapsed < 60),
        ("nodes measured / nodes", f"{measured}/{info['nodes']}", "all", measured == info["nodes"]),
    ]


def write_results(args: argparse.Namespace) -> None:
    from pytest_irene.rig.runtime import describe, host_fingerprint

    stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    # Indented lines (the per-node listing) become a code block so Markdown keeps them aligned.
    text, in_code = [], False
    for line in _lines:
        code = line.startswith("    ")
        if code != in_code:
            text.append("```")
            in_code = code
        text.append(line[4:] if code else line)
    if in_code:
        text.append("```")
    write_results_section(
        "runtime",
        "## Runtime: sampler overhead and node runner (`benchmarks/bench_runtime.py`)\n\n"
        f"`python benchmarks/bench_runtime.py --write-results` ({stamp}, {describe(host_fingerprint())}).\n\n"
        + "\n".join(text),
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=("overhead", "bert"), help="run one part only")
    parser.add_argument("--duration", type=float, default=20.0, help="sampler overhead run, s (default 20)")
    parser.add_argument("--period", type=float, default=0.17, help="sampling period, s (default 0.17)")
    parser.add_argument("--window", type=float, default=0.25, help="timed window per distinct node, s")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--write-results", action="store_true", help="replace this script's section of RESULTS.md")
    args = parser.parse_args(argv)
    rows = []
    if args.only in (None, "overhead"):
        rows += bench_overhead(args.duration, args.period)
    if args.only in (None, "bert"):
        rows += bench_bert(args.window, args.threads, args.batch, args.seq)
    say()
    say("| metric | value | target | ok |")
    say("|---|---|---|---|")
    for name, value, target, ok in rows:
        say(f"| {name} | {value} | {target} | {'yes' if ok else 'NO'} |")
    say()
    say(f"host: {os.cpu_count()} CPUs; python {sys.version.split()[0]}")
    say()
    say("How measured: sampler overhead = CPU time of a process sampling for the whole run minus an idle twin "
        "process, as % of one core; memory = RSS growth from before `start()` to after `stop()` (includes "
        "importing pynvml). bert-base = wall time of `measure_tree` (trace with captured inputs, then every "
        "distinct node alone: warm-up, then >= 0.25 s and >= 3 executions, median latency) on the shared team "
        "box; the load average shows how much other jobs took. No GPU here: `benchmarks/gpu_check.py` "
        "exercises sampler + runner + fingerprint on CUDA with real NVML.")
    if args.write_results:
        write_results(args)
    return 0 if all(r[3] for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
