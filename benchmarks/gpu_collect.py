"""Collect a GPU-board energy dataset (``irene-tree/1``) on an NVIDIA GPU in a few minutes.

What it does, in order (the plan is printed before anything is measured):

1. **Checks** (``gpu_check.py``): NVML's total-energy counter (its update period, idle
   power, counter vs power x time), the fingerprint, the sampler, ``run_call`` and
   ``measure_tree`` on CUDA. A failed check is reported and collection goes on.
2. **Idle power first**, with the NVML meter, recorded in every tree's meta.
3. **Every distinct node signature** of bert-base-uncased, gpt2 and llama-1b-style
   (bundled configs, random weights, no downloads), in bf16 and fp32, at batch x
   sequence sizes from launch-bound to large kernels, through the calibration
   procedure (:class:`~pytest_irene.rig.calibration.Calibrator`) with an
   :class:`~pytest_irene.rig.meters.nvml.NvmlMeter`: ``energy_j`` is the **GPU board
   energy** of one execution (``meta.energy_scope = "gpu-board"``), windows last at
   least ``--min-updates`` counter updates, ``--rounds`` rounds with a short cool-down.
4. **Partial results survive**: each finished tree is appended to
   ``OUT/nvml-h200/<model>.jsonl.gz`` at once; ``summary.json`` is rewritten after
   every tree. Targets that do not fit ``--budget-s`` are left out by the plan, in
   priority order (medium sizes first, then small, then large).

Output (at most 5 files, all well under 16 MiB): three dataset files, ``summary.json``
(checks, idle power, per-target timing noise over rounds) and ``log.txt``.

GPU: ``python benchmarks/gpu_collect.py --out "$OUT"``. Dry run on a CPU against the
fake NVML: ``tests/test_gpu_collect.py``. Then, anywhere: ``irene train
OUT/nvml-h200/*.jsonl.gz --profile nvml-h200 -o models/nvml-h200.json``.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import os
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import common  # noqa: F401  (puts the repository root on sys.path)
import gpu_check

MODELS = ("bert-base-uncased", "gpt2", "llama-1b-style")
DTYPES = {"bf16": "bfloat16", "fp32": "float32"}
#: (batch, sequence) in priority order: medium, launch-bound small, large, then more.
SIZES = ((8, 128), (1, 32), (16, 512), (4, 256), (32, 128), (1, 512))  # BERT stops at 512 positions
#: Tiny shapes for the CPU dry run (``--tiny``).
TINY_CONFIG = {"num_hidden_layers": 1, "hidden_size": 32, "num_attention_heads": 2, "intermediate_size": 64,
               "n_embd": 32, "n_head": 2, "n_layer": 1, "num_key_value_heads": 1, "head_dim": 16}
TINY_SIZES = ((1, 8), (2, 16))
#: Seconds a target costs besides its windows (build, trace with capture, writing), for the plan.
TARGET_OVERHEAD_S = 4.0
#: Seconds the checks take on a GPU besides the counter's busy probe (mostly measure_tree of a BERT).
CHECKS_S = 20.0
#: Throughput assumed for the slowest windows (whole model, encoder), FLOP/s: conservative for an
#: H200 (fp32 without TF32); they run at least 3 times per round (first call, warm-up, window).
ASSUMED_FLOPS = {"bf16": 200e12, "fp32": 40e12}


@dataclass
class Planned:
    model: str
    dtype: str
    batch: int
    seq: int
    distinct: int
    """Distinct node signatures estimated from a meta trace."""
    estimate_s: float

    @property
    def label(self) -> str:
        return f"{self.model}/{self.dtype}/b{self.batch}s{self.seq}"


class Tee:
    """``sys.stdout`` that also appends to ``log.txt`` (flushed at once: a timeout keeps the log)."""

    def __init__(self, stream: Any, path: Path) -> None:
        self.stream, self.file = stream, path.open("a", encoding="utf-8")

    def write(self, text: str) -> int:
        self.file.write(text)
        self.file.flush()
        return self.stream.write(text)

    def flush(self) -> None:
        self.stream.flush()


def say(line: str) -> None:
    print(line, flush=True)


def _build(name: str, dtype: str, device: Any, tiny: bool) -> Any:
    import torch

    from pytest_irene.engine.architectures import build_model, config_dict

    overrides = {k: v for k, v in TINY_CONFIG.items() if k in config_dict(name)} if tiny else {}
    return build_model(name, device=device, **overrides).to(getattr(torch, DTYPES[dtype]))


@functools.lru_cache(maxsize=None)
def distinct_estimate(name: str, dtype: str, batch: int, seq: int, tiny: bool) -> tuple[int, float]:
    """(distinct node signatures, the whole model's flops), from a meta trace (no GPU time or memory)."""
    from pytest_irene.engine.architectures import example_inputs
    from pytest_irene.engine.tracing import trace

    model = _build(name, dtype, "meta", tiny)
    tree = trace(model, example_inputs(model, batch, seq))
    keys = {(n.type, n.features["flops"], n.features["mem_bytes"], n.features.get("params", 0.0)) for n in tree.walk()}
    return len(keys), tree.root.features["flops"]


def make_plan(args: argparse.Namespace, window_s: float, period_s: float, left_s: float) -> tuple[list[Planned], list[Planned]]:
    """(planned, left out): targets in priority order while their estimated time fits ``left_s``."""
    sizes = (TINY_SIZES if args.tiny else SIZES)[: args.sizes]
    per_window = window_s * 1.2 + period_s  # warm-up, and the wait for the counter past the window
    planned: list[Planned] = []
    dropped: list[Planned] = []
    used = 0.0
    for batch, seq in sizes:
        for model in args.models:
            for dtype in args.dtypes:
                distinct, flops = distinct_estimate(model, "fp32", batch, seq, args.tiny)  # the same in every dtype
                slow_s = 2 * 3 * flops / ASSUMED_FLOPS[dtype]  # the model and its largest module
                cost = args.rounds * (distinct * per_window + slow_s) + (args.rounds - 1) * args.cooldown_s + TARGET_OVERHEAD_S
                target = Planned(model, dtype, batch, seq, distinct, cost)
                if used + cost <= left_s:
                    planned.append(target)
                    used += cost
                else:
                    dropped.append(target)
    return planned, dropped


def window_power(windows: list[Any]) -> dict[str, float]:
    """Board power while each window ran (its energy over its duration), W: median, min, max."""
    powers = sorted(w.energy_j / w.duration_s for w in windows if w.duration_s > 0)
    if not powers:
        return {}
    return {"median": statistics.median(powers), "min": powers[0], "max": powers[-1]}


def round_noise(windows: list[Any]) -> dict[str, float]:
    """Spread over rounds of each node's energy and time per execution (relative std), median and max."""
    by_scope: dict[str, list[Any]] = {}
    for w in windows:
        by_scope.setdefault(w.scope, []).append(w)
    energy, timing = [], []
    for ws in by_scope.values():
        if len(ws) < 2:
            continue
        e = [w.energy_j / w.executions for w in ws]
        t = [w.duration_s / w.executions for w in ws]
        energy.append(statistics.pstdev(e) / statistics.fmean(e) if statistics.fmean(e) > 0 else 0.0)
        timing.append(statistics.pstdev(t) / statistics.fmean(t))
    if not energy:
        return {}
    return {"energy_median": statistics.median(energy), "energy_max": max(energy),
            "time_median": statistics.median(timing), "time_max": max(timing), "nodes": len(energy)}


def _save(path: Path, summary: dict[str, Any]) -> None:
    from pytest_irene.atomic import atomic_write_text

    atomic_write_text(path, json.dumps(summary, indent=1, default=str, allow_nan=True) + "\n")


def main(argv: list[str] | None = None) -> int:
    started = time.monotonic()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=os.environ.get("OUT", "gpu-out"), help="output folder (default $OUT)")
    parser.add_argument("--device", default="cuda:0")
    parser.add_argument("--budget-s", type=float, default=480.0, help="wall time for the whole run, s (default 8 min)")
    parser.add_argument("--models", type=lambda s: s.split(","), default=list(MODELS))
    parser.add_argument("--dtypes", type=lambda s: s.split(","), default=list(DTYPES))
    parser.add_argument("--sizes", type=int, default=3, help=f"how many of {list(SIZES)} to plan, in that order")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--cooldown-s", type=float, default=3.0)
    parser.add_argument("--min-updates", type=int, default=10, help="counter updates per window (at least)")
    parser.add_argument("--min-window-s", type=float, default=0.2)
    parser.add_argument("--idle-s", type=float, default=3.0)
    parser.add_argument("--check-s", type=float, default=4.0, help="busy time of the counter check, s")
    parser.add_argument("--profile", default="nvml-h200", help="profile name: the dataset folder and lines' device")
    parser.add_argument("--tiny", action="store_true", help="1-layer, 32-wide models at tiny sizes (the dry run)")
    parser.add_argument("--skip-checks", action="store_true")
    args = parser.parse_args(argv)
    bad = [d for d in args.dtypes if d not in DTYPES] + [m for m in args.models if m not in MODELS]
    if bad:
        parser.error(f"unknown --models/--dtypes {bad}; expected models from {list(MODELS)}, dtypes from {list(DTYPES)}")

    import torch

    from pytest_irene.rig.calibration import CalibrationError, CalibrationSettings, Calibrator, Target
    from pytest_irene.rig.meters.nvml import NvmlMeter
    from pytest_irene.engine.architectures import config_dict, example_inputs

    dev = torch.device(args.device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        print(f"--device {args.device}: no CUDA device visible to torch")
        return 2
    out = Path(args.out) / args.profile
    out.mkdir(parents=True, exist_ok=True)
    sys.stdout = Tee(sys.stdout, out / "log.txt")  # type: ignore[assignment]
    summary: dict[str, Any] = {"device": str(dev), "argv": sys.argv[1:] if argv is None else argv, "targets": []}
    deadline = started + args.budget_s
    say(f"gpu_collect: {args.profile} on {dev}, budget {args.budget_s:.0f} s, output {out}")

    # 1. idle first: the counter's update period and idle power, before anything has run
    probe = gpu_check.probe_counter(dev, idle_s=min(2.0, args.idle_s), busy_s=0)
    summary["idle_probe"] = {"update_period_s": probe.update_period_s, "idle_power_w": probe.idle_power_w,
                             "updates": probe.updates}
    period = probe.update_period_s
    if not period == period or period <= 0:
        say("the counter's update period could not be measured; assuming 0.1 s")
        period = 0.1
    window_s = max(args.min_window_s, args.min_updates * period)
    say(f"counter: an update every {period * 1e3:.2f} ms, idle {probe.idle_power_w:.1f} W")
    settings = CalibrationSettings(window_s=window_s, rounds=args.rounds, min_reports=args.min_updates,
                                   cooldown_s=args.cooldown_s, idle_window_s=args.idle_s, idle_tolerance=0.25,
                                   device=str(dev), profile=args.profile)
    summary.update(counter_update_period_s=period, window_s=window_s)
    _save(out / "summary.json", summary)

    # 2. the time plan, before anything is measured
    checks_s = 0.0 if args.skip_checks else args.check_s + (5.0 if args.tiny else CHECKS_S)
    left = deadline - time.monotonic() - args.idle_s - checks_s - 5.0
    planned, dropped = make_plan(args, window_s, period, left)
    say(f"plan: idle {args.idle_s:g} s, checks ~{checks_s:.0f} s, then windows of {window_s:.3f} s "
        f"(>= {args.min_updates} counter updates), {args.rounds} rounds, cool-down {args.cooldown_s:g} s:")
    for p in planned:
        say(f"  {p.label:42s} ~{p.distinct:3d} distinct nodes  ~{p.estimate_s:5.1f} s")
    say(f"planned: {len(planned)} targets, ~{sum(p.estimate_s for p in planned):.0f} s; left out for the budget: "
        + (", ".join(p.label for p in dropped) or "none"))
    summary["left_out"] = [p.label for p in dropped]

    meter = NvmlMeter(gpu_check.nvml_index(dev), poll_s=max(period / 4, 0.001))
    with Calibrator(meter, settings, out / "unused.jsonl.gz", say=say, progress=False) as cal:
        # 3. the calibration's idle measurement (recorded in every tree), still before any load
        try:
            idle = cal.check_idle()
        except CalibrationError as exc:
            say(f"WARNING: {exc} -- measuring anyway, the idle power is recorded as measured")
            summary["idle_refused"] = str(exc)
            cal.settings = dataclasses.replace(settings, idle_tolerance=1e9, idle_cpu_pct=100.0)
            idle = cal.check_idle()
        summary["idle_power_w"] = idle.power_w
        _save(out / "summary.json", summary)
        # 4. the checks of every GPU path (a failure is reported, collection goes on)
        checks = None
        if not args.skip_checks:
            tiny_bert = {k: v for k, v in TINY_CONFIG.items() if k in config_dict("bert-base-uncased")}
            checks = gpu_check.run_checks(dev, small=True, window_s=0.02 if args.tiny else 0.25, idle_s=0.5,
                                          busy_s=args.check_s, batch=2 if args.tiny else 8,
                                          seq=8 if args.tiny else 128, config=tiny_bert if args.tiny else None)
            summary["checks"] = {"failures": checks.failures, **checks.results}
            _save(out / "summary.json", summary)
        # 5. every planned target; each tree is appended to its model's file as soon as it is done
        for p in planned:
            if time.monotonic() + p.estimate_s > deadline:
                say(f"skipping {p.label}: ~{p.estimate_s:.0f} s left no longer fits the budget")
                summary["left_out"].append(p.label)
                continue
            cal.dataset = out / f"{p.model}.jsonl.gz"
            before = len(cal.windows)
            t0 = time.monotonic()
            try:
                model = _build(p.model, p.dtype, dev, args.tiny)
                inputs = example_inputs(model, p.batch, p.seq, device=dev)
                tree = cal.measure(cal.prepare(Target(model, inputs, p.label, p.model, p.batch, p.seq)))
            except Exception as exc:  # noqa: BLE001 - one target failing (memory, a replay) must not stop the rest
                say(f"FAILED {p.label}: {type(exc).__name__}: {exc}")
                summary["targets"].append({"label": p.label, "error": f"{type(exc).__name__}: {exc}"})
                continue
            finally:
                model = inputs = None
                if dev.type == "cuda":
                    torch.cuda.empty_cache()
            took = time.monotonic() - t0
            noise, power = round_noise(cal.windows[before:]), window_power(cal.windows[before:])
            say(f"{p.label}: {len(tree)} nodes, root {tree.root.energy_j:.4g} J, {took:.1f} s "
                f"(planned {p.estimate_s:.1f}); round spread energy {noise.get('energy_median', 0):.2%} median, "
                f"time {noise.get('time_median', 0):.2%} median; board {power.get('median', 0):.0f} W median")
            summary["targets"].append({"label": p.label, "nodes": len(tree), "root_energy_j": tree.root.energy_j,
                                       "measure_s": took, "planned_s": p.estimate_s, "round_noise": noise,
                                       "window_power_w": power,
                                       "calibration": tree.meta.get("calibration")})
            _save(out / "summary.json", summary)
    summary["wall_s"] = time.monotonic() - started
    summary["warnings"] = cal.warnings[:50]
    _save(out / "summary.json", summary)
    failed = (checks.failures if checks else []) + [t["label"] for t in summary["targets"] if "error" in t]
    say(f"done in {summary['wall_s']:.0f} s: {sum('error' not in t for t in summary['targets'])} trees; "
        + (f"problems: {failed}" if failed else "no problems"))
    return 0 if not failed else 1


if __name__ == "__main__":
    raise SystemExit(main())
