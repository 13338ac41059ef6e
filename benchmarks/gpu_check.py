"""Exercise the runtime's CUDA path on a machine with an NVIDIA GPU, and print what it saw.

Checks, with real NVML and a real GPU (nothing is faked here):
1. the host fingerprint lists the GPUs and the driver;
2. the resource sampler reads utilisation, memory, clocks, power and the energy
   counter of every GPU at the requested period;
3. ``run_call`` on CUDA synchronises once per timed window (not per call), and its
   event-timed median latency agrees with a plain event measurement;
4. ``measure_tree`` on a BERT (bert-base by default) fills GPU resource features
   (``gpu``, ``gpu_mem``, ``gpu_clk``, ``gpu_mem_clk``, ``gpu_energy_j``) on every node,
   and the per-node GPU energy is consistent with power x latency.

Run from the repository root: ``python benchmarks/gpu_check.py [--device cuda:0] [--small]``.
Exit status 0 when every check passed; paste the output into benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import statistics
import time

import common  # noqa: F401  (puts the repository root on sys.path)

failures: list[str] = []


def check(ok: bool, what: str) -> None:
    print(f"  [{'ok' if ok else 'FAIL'}] {what}")
    if not ok:
        failures.append(what)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda:0")
    parser.add_argument("--small", action="store_true", help="a 2-layer BERT instead of bert-base")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--window", type=float, default=0.25)
    args = parser.parse_args(argv)

    import torch
    from transformers import AutoModel, BertConfig

    from pytest_irene.rig.runtime import ResourceSampler, describe, host_fingerprint, measure_tree, run_call

    if not torch.cuda.is_available():
        print("no CUDA device visible to torch: nothing to check")
        return 2
    dev = torch.device(args.device)

    print("1. host fingerprint")
    fp = host_fingerprint()
    print("  ", describe(fp))
    print("  ", fp)
    check(bool(fp["gpus"]) and bool(fp["driver_version"]), "NVML lists GPUs and the driver version")

    print("2. sampler, 1 s at 170 ms")
    with ResourceSampler() as sampler:
        t0 = sampler.sample_now().t_s
        x = torch.randn(4096, 4096, device=dev)
        end = time.monotonic() + 1.0
        while time.monotonic() < end:
            x = torch.tanh(x @ x)
        torch.cuda.synchronize(dev)
        t1 = sampler.sample_now().t_s
        samples = sampler.samples
        print("   GPUs:", sampler.gpu_names, "reason:", sampler.reason, "rapl:", sampler.rapl_reason or "read")
        for s in samples[-3:]:
            print("  ", s)
        busy = sampler.window(t0, t1)
        print("   busy window:", busy)
    periods = [b.t_s - a.t_s for a, b in zip(samples[1:-2], samples[2:-1])]
    check(len(samples) >= 5 and abs(statistics.median(periods) - 0.17) < 0.03, "sampling period ~170 ms")
    first = samples[-1].gpus[0] if samples[-1].gpus else None
    check(first is not None and first.util_pct is not None and first.sm_clock_mhz, "utilisation and clocks read")
    check(first is not None and first.power_w is not None and first.power_w > 0, "power read")
    check("gpu_energy_j" in busy, "total-energy counter read (Volta or newer)")
    if "gpu_energy_j" in busy and "gpu_power_w" in busy:
        expected = busy["gpu_power_w"] * (t1 - t0)
        print(f"   counter {busy['gpu_energy_j']:.1f} J vs mean power x time {expected:.1f} J")
        check(0.5 * expected < busy["gpu_energy_j"] < 1.5 * expected, "energy counter agrees with power x time")
    check(busy.get("gpu", 0) > 20, "GPU utilisation high while busy")

    print("3. run_call on CUDA: one synchronisation per window")
    lin = torch.nn.Linear(1024, 1024).to(dev)
    inp = torch.randn(64, 1024, device=dev)
    syncs = []
    real_sync = torch.cuda.synchronize

    def counting_sync(*a, **k):
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
    check(len(in_window) == 1, "synchronised once inside the timed window")
    check(window.executions > 100 and window.duration_s >= 0.25, "window repeated the call for ~0.3 s")
    a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    with torch.inference_mode():
        a.record()
        for _ in range(200):
            lin(inp)
        b.record()
        torch.cuda.synchronize(dev)
    plain_s = a.elapsed_time(b) / 1000 / 200
    print(f"   median latency {window.latency_s * 1e6:.1f} us vs plain event loop {plain_s * 1e6:.1f} us")
    check(0.5 * plain_s < window.latency_s < 2.0 * plain_s, "event latency agrees with a plain measurement")

    print("4. measure_tree on", "a 2-layer BERT" if args.small else "bert-base", f"b{args.batch} s{args.seq}")
    cfg = BertConfig(num_hidden_layers=2) if args.small else BertConfig()
    model = AutoModel.from_config(cfg, attn_implementation="eager")
    inputs = {"input_ids": torch.randint(0, cfg.vocab_size, (args.batch, args.seq))}
    t = time.monotonic()
    tree = measure_tree(model, inputs, device=dev, window_s=args.window, model_name="bert")
    print(f"   {time.monotonic() - t:.1f} s; meta: {tree.meta['runtime']}")
    nodes = list(tree.walk())
    gpu_keys = ("gpu", "gpu_mem", "gpu_clk", "gpu_mem_clk", "latency_s", "gpu_energy_j")
    full = [n for n in nodes if all(k in n.features for k in gpu_keys)]
    for n in sorted(nodes, key=lambda n: -n.features.get("latency_s", 0))[:8]:
        f = n.features
        print(f"   {n.scope or '<model>':42s} {n.type:20s} " + " ".join(f"{k}={f.get(k, float('nan')):.4g}" for k in gpu_keys))
    check(len(full) == len(nodes), f"GPU resource features on every node ({len(full)}/{len(nodes)})")
    root = tree.root.features
    check(root.get("gpu_energy_j", 0) > 0 and root.get("latency_s", 0) > 0, "whole-model GPU energy measured")
    layer_sum = sum(tree[n.scope].features.get("gpu_energy_j", 0) for n in tree.root.children)
    print(f"   root energy {root.get('gpu_energy_j', 0):.4f} J, sum over the root's children {layer_sum:.4f} J")
    print()
    print("PASS" if not failures else f"FAILED: {failures}")
    return 0 if not failures else 1


if __name__ == "__main__":
    raise SystemExit(main())
