"""The node runner: every node of a traced tree, run alone on the real device.

IrEne measures each node (an ML primitive, a module, the whole model) in
isolation, repeated over a time window, so its resource use and energy can be
attributed to it. Here the inputs are the ones captured at trace time
(``trace(..., capture=True)`` fills ``tree.calls[scope] = NodeCall(fn, args,
kwargs)``), so a node replays exactly what it did inside the model.

Cost is kept down two ways: nodes with identical signatures (type, input
shapes/dtypes/device, module structure and hyper-parameters) run once and share
the result (a 12-layer BERT has ~25 distinct signatures among ~250 nodes), and
CUDA windows are timed with events and synchronised once per window, not per
call. The resource sampler's records are attributed to a node by the window's
monotonic timestamps (:meth:`ResourceSampler.window`).

:func:`run_call` and :func:`distinct_signatures` are public so calibration can
read a power meter over the very same windows.
"""

from __future__ import annotations

import math
import os
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pytest_irene.errors import UsageError
from pytest_irene.engine.tree import OPTIONAL_RESOURCE_FEATURES, RESOURCE_FEATURES, EnergyNode, EnergyTree
from pytest_irene.rig.runtime.capture import capture, mark_uncaptured, mark_unmeasured, unpack_call
from pytest_irene.rig.runtime.sampler import ResourceSampler
from pytest_irene.rig.runtime.signatures import distinct_signatures, signature

__all__ = [
    "DEFAULT_WINDOW_S", "RUNTIME_FEATURES", "RunWindow", "attribute", "distinct_signatures", "gpu_position",
    "measure_tree", "run_call", "signature",
]

#: Default length of the timed window per distinct node, s.
DEFAULT_WINDOW_S = 0.25
#: Node features the runner writes (the dataset's resource features plus RAPL).
RUNTIME_FEATURES: tuple[str, ...] = RESOURCE_FEATURES + OPTIONAL_RESOURCE_FEATURES
#: Up to this many CUDA event pairs per window; beyond it calls are timed in groups.
_MAX_EVENT_PAIRS = 1000


@dataclass(frozen=True)
class RunWindow:
    """One timed window of repeated executions of one node."""

    t_start_s: float
    """``time.monotonic()`` when the first timed execution started, s."""
    t_end_s: float
    """``time.monotonic()`` when the last timed execution had finished (after the CUDA sync), s."""
    executions: int
    """Timed executions inside the window (warm-up excluded)."""
    latency_s: float
    """Median wall time of one execution, s."""
    warmup: int = 0
    """Untimed warm-up executions before the window."""

    @property
    def duration_s(self) -> float:
        return self.t_end_s - self.t_start_s


# -- running ----------------------------------------------------------------------------


def _cuda_device(device: Any) -> Any:
    import torch

    dev = torch.device(device)
    return dev if dev.type == "cuda" else None


def run_call(
    call: Any,
    *,
    window_s: float = DEFAULT_WINDOW_S,
    device: Any = "cpu",
    warmup_s: float | None = None,
    min_executions: int = 1,
    max_executions: int = 1_000_000,
    mark: Callable[[], Any] | None = None,
    check: Callable[[], Any] | None = None,
) -> RunWindow:
    """Run ``call`` (``NodeCall(fn, args, kwargs)`` or a 3-tuple) repeatedly and time it.

    Warm-up runs untimed for ``warmup_s`` (default 20 % of the window, at
    least one execution); then the call repeats until ``window_s`` has passed
    (at least ``min_executions`` times). On CUDA each execution is timed with
    events and the device is synchronised once at the end of the window.
    ``mark`` is called right before the window starts and right after it ends
    (the sampler's ``sample_now``, or a power meter's marker), outside the
    timed region. ``check`` is called about every :data:`CHECK_EVERY_S` during the
    window, between executions: an exception it raises (a power meter gone
    silent) stops the window at once instead of after it. Runs under
    ``torch.inference_mode()``.
    """
    import torch

    if window_s <= 0:
        raise ValueError(f"window_s must be positive, got {window_s}")
    fn, args, kwargs = unpack_call(call)
    warmup_s = 0.2 * window_s if warmup_s is None else warmup_s
    min_executions = max(int(min_executions), 1)
    cuda = _cuda_device(device)
    with torch.inference_mode():
        if cuda is not None:
            return _run_cuda(fn, args, kwargs, cuda, window_s, warmup_s, min_executions, max_executions, mark, check)
        return _run_cpu(fn, args, kwargs, window_s, warmup_s, min_executions, max_executions, mark, check)


_Fn = Callable[..., Any]
_Mark = Callable[[], Any] | None
#: How often ``run_call``'s ``check`` runs during a window, s (a few times per emonPi report).
CHECK_EVERY_S = 0.5


def _run_cpu(
    fn: _Fn,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    window_s: float,
    warmup_s: float,
    min_executions: int,
    max_executions: int,
    mark: _Mark,
    check: _Mark = None,
) -> RunWindow:
    clock = time.perf_counter
    t0 = checked = clock()
    warmup = 0
    while True:
        fn(*args, **kwargs)
        warmup += 1
        now = clock()
        if now - t0 >= warmup_s:
            break
        if check is not None and now - checked >= CHECK_EVERY_S:
            check()
            checked = clock()
    if mark is not None:
        mark()
    durations: list[float] = []
    t_start = time.monotonic()
    begin = checked = clock()
    while True:
        a = clock()
        fn(*args, **kwargs)
        b = clock()
        durations.append(b - a)
        n = len(durations)
        if (b - begin >= window_s and n >= min_executions) or n >= max_executions:
            break
        if check is not None and b - checked >= CHECK_EVERY_S:
            check()  # outside the timed execution
            checked = clock()
    t_end = time.monotonic()
    if mark is not None:
        mark()
    return RunWindow(t_start, t_end, len(durations), statistics.median(durations), warmup)


def _run_cuda(
    fn: _Fn,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    dev: Any,
    window_s: float,
    warmup_s: float,
    min_executions: int,
    max_executions: int,
    mark: _Mark,
    check: _Mark = None,
) -> RunWindow:
    import torch

    with torch.cuda.device(dev):
        torch.cuda.synchronize()
        # First call alone: lazy init, kernel selection, allocator growth.
        t0 = time.perf_counter()
        fn(*args, **kwargs)
        torch.cuda.synchronize()
        first_s = time.perf_counter() - t0
        # Then an event-timed warm-up that also estimates the latency for sizing the window.
        n_warm = max(1, min(10_000, int(warmup_s / max(first_s, 1e-6))))
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        checked = time.monotonic()
        for _ in range(n_warm):
            fn(*args, **kwargs)
            if check is not None and time.monotonic() - checked >= CHECK_EVERY_S:
                check()
                checked = time.monotonic()
        end.record()
        torch.cuda.synchronize()
        estimate_s = max(start.elapsed_time(end) / 1000.0 / n_warm, 1e-7)
        n = max(min_executions, min(max_executions, math.ceil(window_s / estimate_s)))
        group = max(1, math.ceil(n / _MAX_EVENT_PAIRS))
        sizes = [min(group, n - i) for i in range(0, n, group)]
        events = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in sizes]
        if mark is not None:
            mark()
        t_start = checked = time.monotonic()
        for (ev_a, ev_b), k in zip(events, sizes):
            ev_a.record()
            for _ in range(k):
                fn(*args, **kwargs)
            ev_b.record()
            if check is not None and time.monotonic() - checked >= CHECK_EVERY_S:
                check()  # host side, between event pairs: no synchronisation
                checked = time.monotonic()
        torch.cuda.synchronize()  # once per window
        t_end = time.monotonic()
        if mark is not None:
            mark()
        per_call = [a.elapsed_time(b) / 1000.0 / k for (a, b), k in zip(events, sizes)]
    return RunWindow(t_start, t_end, n, statistics.median(per_call), 1 + n_warm)


# -- whole trees ------------------------------------------------------------------------


def gpu_position(sampler: ResourceSampler, dev: Any) -> int | None:
    """Position of CUDA device ``dev`` among the sampler's GPUs (NVML order may differ).

    Matched by UUID; by index when ``CUDA_VISIBLE_DEVICES`` does not renumber
    devices; ``None`` when the device is not among the sampled GPUs.
    """
    import torch

    if not sampler.gpu_names:
        return None
    index = dev.index if dev.index is not None else torch.cuda.current_device()
    try:
        uuid = str(torch.cuda.get_device_properties(index).uuid).lower().removeprefix("gpu-")
    except (AttributeError, RuntimeError):
        uuid = ""
    for pos, nvml_uuid in enumerate(sampler.gpu_uuids):
        if uuid and nvml_uuid and nvml_uuid.lower().removeprefix("gpu-") == uuid:
            return pos
    if "CUDA_VISIBLE_DEVICES" not in os.environ and index < len(sampler.gpu_names):
        return index
    return None


def attribute(
    sampler: ResourceSampler, window: RunWindow, *, gpu: int | None = 0
) -> dict[str, float]:
    """Resource features of ONE execution of the node timed in ``window``.

    Averages (``cpu``, ``mem``, ``gpu``...) over the window; energies of the
    window divided by its executions; ``latency_s`` from the window. GPU
    features only when ``gpu`` (a position among the sampler's GPUs) is given.
    """
    raw = sampler.window(window.t_start_s, window.t_end_s, gpu=gpu)
    out = {k: v for k, v in raw.items() if k in RUNTIME_FEATURES}
    for key in ("gpu_energy_j", "cpu_energy_j"):
        if key in out:
            out[key] = out[key] / window.executions
    out["latency_s"] = window.latency_s
    return out


def measure_tree(
    model: Any,
    inputs: Any,
    *,
    device: Any = "cpu",
    window_s: float = DEFAULT_WINDOW_S,
    sampler: ResourceSampler | None = None,
    model_name: str | None = None,
    batch_size: int | None = None,
    seq_len: int | None = None,
    min_executions: int = 3,
    progress: Callable[[int, int, str], None] | None = None,
) -> EnergyTree:
    """Trace ``model`` on ``device`` with captured inputs and measure every node.

    Moves ``model`` (put in eval mode) and ``inputs`` to ``device``; dict
    inputs get ``use_cache=False`` when the model takes it (a cache would grow
    with every replay). Each distinct signature runs once (:func:`run_call`)
    and its resource features (:data:`RUNTIME_FEATURES`, for one execution) go
    to every node sharing it; the whole model is measured too. Each window runs
    at least ``min_executions`` times, so one disturbed execution of a slow
    node (the whole model) cannot set its median. A node whose replay fails
    keeps its model features and gets ``notes["unmeasured"]`` with the error.

    ``sampler``: a :class:`ResourceSampler` to use; a running one is left
    running, otherwise it is started and stopped here (a new one samples the
    GPU only on CUDA). ``progress(i, n, scope)`` is called before each
    distinct node. Run information goes to ``tree.meta["runtime"]``, the host
    fingerprint to ``tree.meta["host"]``; ``tree.calls`` keeps the captured
    calls (for a power meter over the same windows).
    """
    import torch

    from pytest_irene.rig.runtime.fingerprint import host_fingerprint

    from pytest_irene.engine.devices import check_device, unavailable_reason

    dev = torch.device(check_device(device, "measure_tree: device"))
    if dev.type == "meta":
        raise UsageError("measure_tree: device='meta' runs nothing; measure on 'cpu' or 'cuda'")
    reason = unavailable_reason(str(dev))
    if reason is not None:  # torch's bare AssertionError on a CPU-only build, or a missing GPU
        raise UsageError(f"measure_tree: device={str(dev)!r} cannot be used here: {reason}")
    if any(p.is_meta for p in model.parameters()):
        raise UsageError(
            "measure_tree: the model's weights are on the meta device (no values to run with); "
            "build it on a real device, e.g. build_model(name, device='cpu')"
        )
    cuda = dev.type == "cuda"
    tree = capture(model, inputs, dev, model_name=model_name, batch_size=batch_size, seq_len=seq_len)

    if sampler is None:
        sampler = ResourceSampler(gpus="auto" if cuda else None)
    own = not sampler.running  # started here, so stopped here
    if own:
        sampler.start()
    started = time.monotonic()
    try:
        gpu_pos = gpu_position(sampler, dev) if cuda else None
        by_scope: dict[str, EnergyNode] = {n.scope: n for n in tree.walk()}
        groups = distinct_signatures(tree)
        for i, scopes in enumerate(groups.values()):
            if progress is not None:
                progress(i, len(groups), scopes[0])
            try:
                window = run_call(
                    tree.calls[scopes[0]],
                    window_s=window_s,
                    device=dev,
                    min_executions=min_executions,
                    mark=sampler.sample_now,
                )
            except Exception as exc:  # a node that cannot replay alone must not lose the others
                mark_unmeasured([by_scope[scope] for scope in scopes], f"{type(exc).__name__}: {exc}")
                continue
            features = attribute(sampler, window, gpu=gpu_pos)
            for scope in scopes:
                by_scope[scope].features.update(features)
        mark_uncaptured(tree)
    finally:
        if own:
            sampler.stop()
    tree.meta["runtime"] = {
        "device": str(dev),
        "window_s": window_s,
        "min_executions": min_executions,
        "sampler_period_s": sampler.period_s,
        "distinct_nodes": len(groups),
        "nodes": len(tree),
        "measure_s": round(time.monotonic() - started, 3),
        "gpu": sampler.gpu_names[gpu_pos] if gpu_pos is not None else None,
        "gpu_reason": (
            None
            if gpu_pos is not None
            else (sampler.reason or "the CUDA device is not among the sampled GPUs")
            if cuda
            else "not a CUDA device"
        ),
        "rapl_reason": sampler.rapl_reason,
    }
    tree.meta["host"] = host_fingerprint()
    return tree
