"""Exercise the runtime's GPU paths with real NVML and a real device, and print what they did.

Checks (nothing is faked here; ``benchmarks/gpu_collect.py`` runs them first):

0. NVML's total-energy counter: its update period (polled every ~1 ms, the time
   between value changes), idle power from it, and the counter against power x time
   (NVML's power reading, integrated) over a steady busy window;
1. the host fingerprint lists the GPUs and the driver;
2. the resource sampler reads utilisation, memory, clocks, power and the energy
   counter of every GPU at the requested period;
3. ``run_call`` on CUDA synchronises once per timed window (not per call), and its
   event-timed median latency agrees with a plain event measurement;
4. ``measure_tree`` fills GPU resource features (``gpu``, ``gpu_mem``, ``gpu_clk``,
   ``gpu_mem_clk``, ``gpu_energy_j``) on every node of a BERT.

On a CPU device (the dry run against ``tests/fakes/fake_nvml.py``) the CUDA-only
checks say ``skip`` and the others run as on a GPU.

Run from the repository root: ``python benchmarks/gpu_check.py [--device cuda:0] [--small]``.
Exit status 0 when every check passed.
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import common  # noqa: F401  (puts the repository root on sys.path)


@dataclass
class Checks:
    """Results of the checks: printed as they run, kept for the summary file."""

    failures: list[str] = field(default_factory=list)
    results: dict[str, Any] = field(default_factory=dict)

    def check(self, ok: bool, what: str) -> None:
        print(f"  [{'ok' if ok else 'FAIL'}] {what}", flush=True)
        if not ok:
            self.failures.append(what)

    def skip(self, what: str, why: str) -> None:
        print(f"  [skip] {what}: {why}", flush=True)


@dataclass(frozen=True)
class CounterReport:
    """What NVML's total-energy counter did (check 0)."""

    update_period_s: float
    """Median time between changes of the counter's value, s."""
    updates: int
    """Changes seen while probing."""
    idle_power_w: float
    """Counter energy over the idle probe divided by its length, W."""
    busy_counter_j: float
    """Counter energy over the steady part of the busy probe, J."""
    busy_power_x_time_j: float
    """NVML power readings integrated over the same interval (trapezoids), J."""
    busy_power_w: float

    @property
    def ratio(self) -> float:
        """Counter / (power x time); 1 when both agree."""
        return self.busy_counter_j / self.busy_power_x_time_j if self.busy_power_x_time_j else float("nan")


def _poll(nvml: Any, gpu: Any, seconds: float, stop: threading.Event | None = None) -> list[tuple[float, float | None, float | None]]:
    """``(t_s, energy_j, power_w)`` every ~1 ms for ``seconds`` (or until ``stop``): only the two
    NVML calls needed, so the update times are resolved as finely as the driver allows."""
    module, handle = nvml.module, gpu.handle
    out = []
    end = time.monotonic() + seconds
    while time.monotonic() < end and not (stop is not None and stop.is_set()):
        t = time.monotonic()
        energy_mj = module.nvmlDeviceGetTotalEnergyConsumption(handle)
        power_mw = module.nvmlDeviceGetPowerUsage(handle)
        out.append(((t + time.monotonic()) / 2, energy_mj / 1000.0, power_mw / 1000.0))
        time.sleep(0.001)
    return out


def _changes(rows: list[tuple[float, float | None, float | None]]) -> list[tuple[float, float]]:
    """The first ``(t_s, energy_j)`` of every new counter value."""
    out: list[tuple[float, float]] = []
    for t, e, _ in rows:
        if e is not None and (not out or e != out[-1][1]):
            out.append((t, e))
    return out


def nvml_index(dev: Any) -> int:
    """NVML's index of torch device ``dev`` (matched by UUID: CUDA and NVML may order boards
    differently); the CUDA index when no UUID matches, 0 for a CPU device (the dry run)."""
    import torch

    from pytest_irene.rig.runtime.nvml import load_nvml

    if dev.type != "cuda":
        return 0
    index = dev.index if dev.index is not None else torch.cuda.current_device()
    uuid = str(getattr(torch.cuda.get_device_properties(index), "uuid", "")).lower().removeprefix("gpu-")
    with load_nvml() as nvml:
        for gpu in nvml.gpus:
            if uuid and (gpu.uuid or "").lower().removeprefix("gpu-") == uuid:
                return gpu.index
    return index


def probe_counter(dev: Any, idle_s: float = 2.0, busy_s: float = 3.0) -> CounterReport:
    """Check 0: the counter's update period and idle power, then counter vs power x time under load.

    The busy load is a matrix-product loop on ``dev``; the comparison leaves out the first
    40 % of the busy probe (at most 1.2 s: NVML's power reading is a moving average over
    about a second on recent boards, so it lags the ramp) and the last 10 %.
    ``busy_s=0`` probes the idle counter only (the busy fields are NaN).
    """
    import torch

    from pytest_irene.rig.runtime.nvml import load_nvml

    position = nvml_index(dev)
    with load_nvml() as nvml:
        gpu = nvml.gpus[position]
        idle = _changes(_poll(nvml, gpu, idle_s))
        if busy_s <= 0:
            period, idle_w = _period_and_power(idle)
            return CounterReport(period, len(idle), idle_w, float("nan"), float("nan"), float("nan"))
        rows: list[tuple[float, float | None, float | None]] = []
        stop = threading.Event()
        poller = threading.Thread(target=lambda: rows.extend(_poll(nvml, gpu, busy_s + 5, stop)), daemon=True)
        dtype = torch.bfloat16 if dev.type == "cuda" else torch.float32
        x = torch.randn(4096 if dev.type == "cuda" else 256, 4096 if dev.type == "cuda" else 256, device=dev, dtype=dtype)
        poller.start()
        end = time.monotonic() + busy_s
        while time.monotonic() < end:
            for _ in range(20):
                y = x @ x
            if dev.type == "cuda":
                torch.cuda.synchronize(dev)
        del y
        stop.set()
        poller.join()
    period, idle_w = _period_and_power(idle)
    t0, t1 = rows[0][0] + min(0.4 * busy_s, 1.2), rows[0][0] + 0.9 * busy_s
    steady = [r for r in rows if t0 <= r[0] <= t1 and r[1] is not None]
    counter_j = steady[-1][1] - steady[0][1] if len(steady) > 1 else float("nan")
    powered = [(t, p) for t, _, p in steady if p is not None]
    integral = sum(0.5 * (pa + pb) * (tb - ta) for (ta, pa), (tb, pb) in zip(powered, powered[1:]))
    span = powered[-1][0] - powered[0][0] if len(powered) > 1 else float("nan")
    return CounterReport(period, len(idle) + len(_changes(rows)), idle_w, counter_j, integral, integral / span)


def _period_and_power(changes: list[tuple[float, float]]) -> tuple[float, float]:
    """(median time between counter updates, s; mean power between the first and last update, W)."""
    gaps = [b[0] - a[0] for a, b in zip(changes[1:], changes[2:])]  # the first change's time is only a bound
    period = statistics.median(gaps) if gaps else float("nan")
    power = (changes[-1][1] - changes[0][1]) / (changes[-1][0] - changes[0][0]) if len(changes) > 1 else float("nan")
    return period, power


def check_counter(checks: Checks, dev: Any, idle_s: float, busy_s: float) -> CounterReport:
    print(f"0. NVML total-energy counter: idle {idle_s:g} s, then busy {busy_s:g} s", flush=True)
    report = probe_counter(dev, idle_s, busy_s)
    checks.results["counter"] = {**asdict(report), "ratio": report.ratio}
    print(f"   update period {report.update_period_s * 1e3:.2f} ms ({report.updates} updates seen), "
          f"idle {report.idle_power_w:.1f} W; busy: counter {report.busy_counter_j:.2f} J vs power x time "
          f"{report.busy_power_x_time_j:.2f} J ({report.busy_power_w:.0f} W), ratio {report.ratio:.3f}", flush=True)
    checks.check(report.update_period_s == report.update_period_s and report.update_period_s > 0, "the counter advances")
    checks.check(0.9 < report.ratio < 1.1, "counter agrees with power x time within 10 %")
    return report


def check_fingerprint(checks: Checks) -> None:
    from pytest_irene.rig.runtime import describe, host_fingerprint

    print("1. host fingerprint", flush=True)
    fp = host_fingerprint()
    print("  ", describe(fp))
    checks.results["fingerprint"] = fp
    checks.check(bool(fp["gpus"]) and bool(fp["driver_version"]), "NVML lists GPUs and the driver version")


def check_sampler(checks: Checks, dev: Any, busy_s: float = 1.0) -> None:
    import torch

    from pytest_irene.rig.runtime import ResourceSampler

    print(f"2. sampler, {busy_s:g} s at 170 ms", flush=True)
    with ResourceSampler() as sampler:
        t0 = sampler.sample_now().t_s
        x = torch.randn(4096 if dev.type == "cuda" else 256, 4096 if dev.type == "cuda" else 256, device=dev)
        end = time.monotonic() + busy_s
        while time.monotonic() < end:
            x = torch.tanh(x @ x)
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        t1 = sampler.sample_now().t_s
        samples = sampler.samples
        print("   GPUs:", sampler.gpu_names, "reason:", sampler.reason, "rapl:", sampler.rapl_reason or "read")
        busy = sampler.window(t0, t1)
        print("   busy window:", {k: round(v, 4) for k, v in busy.items()})
    periods = [b.t_s - a.t_s for a, b in zip(samples[1:-2], samples[2:-1])]
    checks.check(len(samples) >= 5 and abs(statistics.median(periods) - 0.17) < 0.03, "sampling period ~170 ms")
    first = samples[-1].gpus[0] if samples[-1].gpus else None
    checks.check(first is not None and first.util_pct is not None and bool(first.sm_clock_mhz), "utilisation and clocks read")
    checks.check(first is not None and first.power_w is not None and first.power_w > 0, "power read")
    checks.check("gpu_energy_j" in busy, "total-energy counter read (Volta or newer)")
    if dev.type == "cuda":
        checks.check(busy.get("gpu", 0) > 20, "GPU utilisation high while busy")


def check_run_call(checks: Checks, dev: Any) -> None:
    import torch

    from pytest_irene.rig.runtime import run_call

    print("3. run_call on CUDA: one synchronisation per window", flush=True)
    if dev.type != "cuda":
        checks.skip("run_call on CUDA", f"device is {dev}")
        return
    lin = torch.nn.Linear(1024, 1024).to(dev)
    inp = torch.randn(64, 1024, device=dev)
    syncs: list[float] = []
    real_sync = torch.cuda.synchronize

    def counting_sync(*a: Any, **k: Any) -> Any:
        syncs.append(time.monotonic())
        return real_sync(*a, **k)

    marks: list[float] = []
    torch.cuda.synchronize = counting_sync
    try:
        window = run_call((lin, (inp,), {}), window_s=0.3, device=dev, mark=lambda: marks.append(time.monotonic()))
    finally:
        torch.cuda.synchronize = real_sync
    in_window = [t for t in syncs if marks[0] <= t <= marks[1]]
    print("  ", window, f"syncs in window: {len(in_window)}, in all: {len(syncs)}")
    checks.check(len(in_window) == 1, "synchronised once inside the timed window")
    checks.check(window.executions > 100 and window.duration_s >= 0.25, "window repeated the call for ~0.3 s")
    a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    with torch.inference_mode():
        a.record()
        for _ in range(200):
            lin(inp)
        b.record()
        torch.cuda.synchronize(dev)
    plain_s = a.elapsed_time(b) / 1000 / 200
    print(f"   median latency {window.latency_s * 1e6:.1f} us vs plain event loop {plain_s * 1e6:.1f} us")
    checks.results["run_call"] = {"latency_s": window.latency_s, "plain_event_s": plain_s}
    checks.check(0.5 * plain_s < window.latency_s < 2.0 * plain_s, "event latency agrees with a plain measurement")


def check_measure_tree(checks: Checks, dev: Any, small: bool, batch: int, seq: int, window_s: float,
                       config: dict[str, Any] | None = None) -> None:
    """Check 4; ``config`` overrides BERT's config fields (the dry run shrinks it)."""
    import torch
    from transformers import AutoModel, BertConfig

    from pytest_irene.rig.runtime import measure_tree

    overrides = dict(config or ({"num_hidden_layers": 2} if small else {}))
    print(f"4. measure_tree on BERT {overrides or '(base)'} b{batch} s{seq} on {dev}", flush=True)
    cfg = BertConfig(**overrides)
    model = AutoModel.from_config(cfg, attn_implementation="eager")
    inputs = {"input_ids": torch.randint(0, cfg.vocab_size, (batch, seq))}
    t = time.monotonic()
    tree = measure_tree(model, inputs, device=dev, window_s=window_s, model_name="bert")
    print(f"   {time.monotonic() - t:.1f} s; meta: {tree.meta['runtime']}")
    nodes = list(tree.walk())
    keys = ("gpu", "gpu_mem", "gpu_clk", "gpu_mem_clk", "latency_s", "gpu_energy_j") if dev.type == "cuda" else ("latency_s",)
    full = [n for n in nodes if all(k in n.features for k in keys)]
    for n in sorted(nodes, key=lambda n: -n.features.get("latency_s", 0))[:6]:
        f = n.features
        print(f"   {n.scope or '<model>':42s} {n.type:20s} " + " ".join(f"{k}={f.get(k, float('nan')):.4g}" for k in keys))
    checks.results["measure_tree"] = tree.meta["runtime"]
    checks.check(len(full) == len(nodes), f"resource features {list(keys)} on every node ({len(full)}/{len(nodes)})")
    root = tree.root.features
    if dev.type == "cuda":
        checks.check(root.get("gpu_energy_j", 0) > 0 and root.get("latency_s", 0) > 0, "whole-model GPU energy measured")
    del model, tree


def run_checks(dev: Any, *, small: bool = False, batch: int = 8, seq: int = 128, window_s: float = 0.25,
               idle_s: float = 2.0, busy_s: float = 3.0, config: dict[str, Any] | None = None) -> Checks:
    """Every check in order; a check that raises is a failure, the others still run."""
    checks = Checks()
    steps = (
        lambda: check_counter(checks, dev, idle_s, busy_s),
        lambda: check_fingerprint(checks),
        lambda: check_sampler(checks, dev, min(busy_s, 1.0)),
        lambda: check_run_call(checks, dev),
        lambda: check_measure_tree(checks, dev, small, batch, seq, window_s, config),
    )
    for i, step in enumerate(steps):
        try:
            step()
        except Exception as exc:  # noqa: BLE001 - report and go on: one broken path must not hide the others
            checks.check(False, f"check {i} raised {type(exc).__name__}: {exc}")
    return checks


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda:0")
    parser.add_argument("--small", action="store_true", help="a 2-layer BERT instead of bert-base")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--window", type=float, default=0.25)
    args = parser.parse_args(argv)

    import torch

    dev = torch.device(args.device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        print("no CUDA device visible to torch: nothing to check")
        return 2
    checks = run_checks(dev, small=args.small, batch=args.batch, seq=args.seq, window_s=args.window)
    print()
    print("PASS" if not checks.failures else f"FAILED: {checks.failures}")
    return 0 if not checks.failures else 1


if __name__ == "__main__":
    raise SystemExit(main())
