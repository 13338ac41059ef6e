"""Background resource sampler: what the machine was doing, timestamped.

IrEne's most accurate energy models use *resource features* measured while a
node runs (paper Table 8): CPU and memory use, GPU utilisation, memory and
clocks, and the GPU's own energy counter. The sampler logs them every
``period_s`` (170 ms, the paper's rate) on a daemon thread, with a
``time.monotonic()`` timestamp per sample, so the node runner can attribute
samples to its run windows afterwards by time (:meth:`ResourceSampler.window`).

Interval semantics: a sample at ``t_i`` describes ``(t_{i-1}, t_i]``. CPU
utilisation is exactly the ``/proc/stat`` delta over that interval; gauges
(memory, clocks, GPU utilisation) are held backwards over it. Energy counters
(NVML total energy, RAPL) are cumulative and interpolated linearly at window
bounds. :meth:`ResourceSampler.sample_now` takes an extra sample on demand,
which the runner uses at window bounds so the attribution is exact.

Where NVML or a GPU is absent the GPU features are *absent* (not zero) and
:attr:`ResourceSampler.reason` says why; it is warned once per process.
"""

from __future__ import annotations

import bisect
import threading
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pytest_irene.rig.runtime.nvml import Gpu, GpuReading, Nvml, NvmlUnavailable, load_nvml
from pytest_irene.rig.runtime.rapl import POWERCAP_DIR, RaplCounter, RaplUnavailable

DEFAULT_PERIOD_S = 0.17
PROC_STAT = Path("/proc/stat")
PROC_MEMINFO = Path("/proc/meminfo")
_AUTO: Any = "auto"
_warned: set[str] = set()


class SamplerWarning(UserWarning):
    """A resource the sampler cannot read (GPU, RAPL); the run goes on without those features."""


def _warn_once(message: str) -> None:
    if message not in _warned:
        _warned.add(message)
        warnings.warn(message, SamplerWarning, stacklevel=3)


@dataclass(frozen=True, slots=True)
class Sample:
    """One sample of the host's resources."""

    t_s: float
    """``time.monotonic()`` when the sample was taken, s."""
    cpu_pct: float | None
    """CPU utilisation over all cores since the previous sample, % (``None`` for the first)."""
    mem_pct: float | None
    """Host memory in use (total minus available), %."""
    gpus: tuple[GpuReading, ...] = ()
    """One reading per sampled GPU, in :attr:`ResourceSampler.gpu_names` order."""
    cpu_energy_j: float | None = None
    """RAPL package energy since the sampler started, J; ``None`` where RAPL is unreadable."""


def read_cpu_times(path: Path = PROC_STAT) -> tuple[int, int]:
    """``(busy, total)`` jiffies over all CPUs from the first line of ``/proc/stat``.

    Idle and iowait count as idle; guest time is already inside user time.
    """
    with open(path, "rb") as f:
        fields = f.readline().split()
    values = [int(v) for v in fields[1:9]]  # user nice system idle iowait irq softirq steal
    total = sum(values)
    idle = values[3] + (values[4] if len(values) > 4 else 0)
    return total - idle, total


def read_mem_pct(path: Path = PROC_MEMINFO) -> float | None:
    """Host memory in use (``MemTotal - MemAvailable``), %."""
    total = avail = None
    with open(path, "rb") as f:
        for line in f:
            if line.startswith(b"MemTotal:"):
                total = int(line.split()[1])
            elif line.startswith(b"MemAvailable:"):
                avail = int(line.split()[1])
            if total is not None and avail is not None:
                break
    if not total or avail is None:
        return None
    return 100.0 * (total - avail) / total


def _mean(values: list[tuple[float, float]]) -> float | None:
    """Weighted mean of ``(value, weight)`` pairs; ``None`` if nothing has weight."""
    w = sum(weight for _, weight in values)
    if w <= 0:
        return None
    return sum(v * weight for v, weight in values) / w


class ResourceSampler:
    """Samples CPU, memory, GPUs (NVML) and RAPL every ``period_s`` on a daemon thread.

    ``gpus``: ``"auto"`` (every GPU NVML sees), a list of NVML indices, or
    ``None``/``[]`` (no GPU sampling). ``nvml_module`` replaces ``pynvml``
    (tests inject a fake). ``rapl_root`` is the powercap directory, ``None``
    to skip RAPL. Use as a context manager or call :meth:`start`/:meth:`stop`.
    """

    def __init__(
        self,
        period_s: float = DEFAULT_PERIOD_S,
        gpus: Sequence[int] | str | None = _AUTO,
        *,
        nvml_module: Any = None,
        rapl_root: str | Path | None = POWERCAP_DIR,
        max_samples: int = 200_000,
        proc_stat: Path = PROC_STAT,
        proc_meminfo: Path = PROC_MEMINFO,
    ) -> None:
        if period_s <= 0:
            raise ValueError(f"period_s must be positive, got {period_s}")
        self.period_s = float(period_s)
        self._gpu_request = gpus
        self._nvml_module = nvml_module
        self._rapl_root = rapl_root
        self._max_samples = max(int(max_samples), 16)
        self._proc_stat = Path(proc_stat)
        self._proc_meminfo = Path(proc_meminfo)
        self._lock = threading.Lock()
        self._samples: list[Sample] = []
        self._times: list[float] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._nvml: Nvml | None = None
        self._gpus: list[Gpu] = []
        self._rapl: RaplCounter | None = None
        self._last_cpu: tuple[int, int] | None = None
        self.reason: str | None = None
        """Why GPU features are absent (no NVML, no GPU, not requested); ``None`` when GPUs are sampled."""
        self.error: str | None = None
        """Why the background thread stopped sampling early, ``None`` while it works."""
        self.rapl_reason: str | None = None
        """Why ``cpu_energy_j`` is absent; ``None`` when RAPL is read."""
        self.gpu_names: list[str] = []
        """Names of the sampled GPUs, in the order of :attr:`Sample.gpus`."""
        self.gpu_indices: list[int] = []
        """NVML indices of the sampled GPUs."""
        self.gpu_uuids: list[str | None] = []
        """UUIDs of the sampled GPUs (match ``torch.cuda.get_device_properties(i).uuid``)."""

    @classmethod
    def from_samples(
        cls, samples: Sequence[Sample], *, period_s: float = DEFAULT_PERIOD_S, gpu_names: Sequence[str] = ()
    ) -> ResourceSampler:
        """A stopped sampler holding recorded ``samples`` (oldest first), for offline attribution."""
        sampler = cls(period_s, gpus=None, rapl_root=None)
        ordered = sorted(samples, key=lambda s: s.t_s)
        sampler._samples = list(ordered)
        sampler._times = [s.t_s for s in ordered]
        sampler.gpu_names = list(gpu_names)
        sampler.reason = None if gpu_names else "recorded without GPUs"
        return sampler

    # -- lifecycle -------------------------------------------------------------------------

    def _open_devices(self) -> None:
        request = self._gpu_request
        if request is None or (not isinstance(request, str) and len(request) == 0):
            self.reason = "GPU sampling not requested"
        else:
            try:
                self._nvml = load_nvml(self._nvml_module)
            except NvmlUnavailable as exc:
                self.reason = str(exc)
            else:
                every = self._nvml.gpus
                if isinstance(request, str):
                    chosen = every
                else:
                    bad = [i for i in request if not 0 <= i < len(every)]
                    if bad:
                        self._nvml.close()
                        self._nvml = None
                        raise ValueError(f"no GPU with NVML index {bad} ({len(every)} visible)")
                    chosen = [every[i] for i in request]
                self._gpus = list(chosen)
                self.gpu_names = [g.name for g in chosen]
                self.gpu_indices = [g.index for g in chosen]
                self.gpu_uuids = [g.uuid for g in chosen]
        if self.reason and request is not None and not (not isinstance(request, str) and len(request) == 0):
            _warn_once(f"pytest-irene: GPU resource features absent: {self.reason}")
        if self._rapl_root is None:
            self.rapl_reason = "RAPL not requested"
        elif self._rapl is None:  # kept across restarts: its cumulative energy must not restart at zero
            try:
                self._rapl = RaplCounter(self._rapl_root)
            except RaplUnavailable as exc:
                self.rapl_reason = str(exc)

    def start(self) -> ResourceSampler:
        """Open NVML/RAPL, take the first sample and start the thread; idempotent."""
        if self._thread is not None:
            return self
        self._open_devices()
        self._stop.clear()
        self.sample_now()
        self._thread = threading.Thread(target=self._run, name="irene-resource-sampler", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Take a last sample, stop the thread and release NVML; samples stay readable."""
        thread = self._thread
        if thread is None:
            return
        self._stop.set()
        thread.join()
        self._thread = None
        if self.error is None:
            self.sample_now()
        if self._nvml is not None:
            self._nvml.close()
            self._nvml = None
            self._gpus = []

    @property
    def running(self) -> bool:
        return self._thread is not None

    def __enter__(self) -> ResourceSampler:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _run(self) -> None:
        # A fixed schedule (t0 + k * period): a slow read delays one sample, not all later ones.
        t0 = time.monotonic()
        k = 1
        while True:
            delay = t0 + k * self.period_s - time.monotonic()
            if delay < 0:  # overran one or more periods: skip the missed ticks
                k += int(-delay // self.period_s) + 1
                continue
            if self._stop.wait(delay):
                return
            try:
                self.sample_now()
            except Exception as exc:  # keep the reason; a dead thread must not go unnoticed
                self.error = f"sampling stopped: {type(exc).__name__}: {exc}"
                _warn_once(f"pytest-irene: resource {self.error}")
                return
            k += 1

    # -- sampling --------------------------------------------------------------------------

    def sample_now(self) -> Sample:
        """Take one sample immediately (thread-safe) and return it."""
        with self._lock:
            busy, total = read_cpu_times(self._proc_stat)
            cpu = None
            if self._last_cpu is not None:
                d_total = total - self._last_cpu[1]
                if d_total > 0:
                    cpu = 100.0 * (busy - self._last_cpu[0]) / d_total
                elif self._samples:
                    cpu = self._samples[-1].cpu_pct  # no jiffy elapsed: same as before
            self._last_cpu = (busy, total)
            gpus = tuple(g.read() for g in self._gpus)
            energy = None
            if self._rapl is not None:
                try:
                    energy = self._rapl.read_j()
                except (OSError, ValueError) as exc:
                    self.rapl_reason = f"RAPL counter stopped being readable: {exc}"
                    self._rapl = None
            t = time.monotonic()
            if self._times and t <= self._times[-1]:
                t = self._times[-1] + 1e-9
            sample = Sample(t, cpu, read_mem_pct(self._proc_meminfo), gpus, energy)
            self._samples.append(sample)
            self._times.append(t)
            if len(self._samples) > self._max_samples:  # keep memory bounded on long sessions
                drop = len(self._samples) // 2
                del self._samples[:drop]
                del self._times[:drop]
            return sample

    @property
    def samples(self) -> list[Sample]:
        """A copy of the samples so far, oldest first."""
        with self._lock:
            return list(self._samples)

    # -- attribution -----------------------------------------------------------------------

    def samples_between(self, t0_s: float, t1_s: float) -> list[Sample]:
        """Samples whose interval ``(t_{i-1}, t_i]`` overlaps ``[t0_s, t1_s]``."""
        with self._lock:
            lo = bisect.bisect_left(self._times, t0_s)
            hi = bisect.bisect_left(self._times, t1_s)
            return self._samples[max(lo, 0) : hi + 1]

    def window(self, t0_s: float, t1_s: float, gpu: int | None = 0) -> dict[str, float]:
        """Resource features over ``[t0_s, t1_s]`` (monotonic seconds).

        Returns dataset feature names: ``cpu``, ``mem`` (%), and for sampled GPU
        position ``gpu`` (``None``: no GPU features): ``gpu``, ``gpu_mem`` (%), ``gpu_clk``, ``gpu_mem_clk``
        (MHz), ``gpu_power_w``; plus energy over the whole window:
        ``gpu_energy_j`` (NVML counter; the sampled power times the window where the board has no
        counter) and ``cpu_energy_j`` (RAPL). Averages
        are weighted by how much of each sample's interval lies in the window.
        A feature nobody measured is absent, never zero.
        """
        if t1_s < t0_s:
            raise ValueError(f"window ends before it starts ({t0_s} > {t1_s})")
        with self._lock:
            samples, times = list(self._samples), list(self._times)
        out: dict[str, float] = {}
        if not samples:
            return out
        lo = bisect.bisect_left(times, t0_s)
        hi = min(bisect.bisect_left(times, t1_s), len(samples) - 1)
        gauges: dict[str, list[tuple[float, float]]] = {}
        span = max(t1_s - t0_s, 0.0)
        for i in range(max(lo, 1), hi + 1):
            start, end = times[i - 1], times[i]
            if span > 0:
                weight = max(0.0, min(end, t1_s) - max(start, t0_s))
            else:  # a zero-length window takes the sample covering it
                weight = 1.0 if start < t0_s <= end else 0.0
            if weight <= 0:
                continue
            s = samples[i]
            pairs = [("cpu", s.cpu_pct), ("mem", s.mem_pct)]
            if gpu is not None and gpu < len(s.gpus):
                g = s.gpus[gpu]
                pairs += [
                    ("gpu", g.util_pct),
                    ("gpu_mem", g.mem_pct),
                    ("gpu_clk", g.sm_clock_mhz),
                    ("gpu_mem_clk", g.mem_clock_mhz),
                    ("gpu_power_w", g.power_w),
                ]
            for key, value in pairs:
                if value is not None:
                    gauges.setdefault(key, []).append((value, weight))
        for key, values in gauges.items():
            mean = _mean(values)
            if mean is not None:
                out[key] = mean
        # Counters are interpolated at the bounds; outside the sampled span they are absent.
        gpu_counter = [s.gpus[gpu].energy_j if gpu is not None and gpu < len(s.gpus) else None for s in samples]
        gpu_e = self._counter_delta(times, gpu_counter, t0_s, t1_s)
        if gpu_e is None and "gpu_power_w" in out and times[0] <= t0_s and t1_s <= times[-1]:
            # boards before Volta (the paper's GTX 1080 Ti) have no total-energy counter: integrate
            # the sampled power instead, or a rig with such a GPU could never train the 'all' features
            gpu_e = out["gpu_power_w"] * span
        if gpu_e is not None:
            out["gpu_energy_j"] = gpu_e
        cpu_e = self._counter_delta(times, [s.cpu_energy_j for s in samples], t0_s, t1_s)
        if cpu_e is not None:
            out["cpu_energy_j"] = cpu_e
        return out

    @staticmethod
    def _counter_delta(times: list[float], values: list[float | None], t0: float, t1: float) -> float | None:
        def at(t: float) -> float | None:
            i = bisect.bisect_left(times, t)
            if i < len(times) and times[i] == t:
                return values[i]
            if i == 0 or i >= len(times):
                return None
            a, b = values[i - 1], values[i]
            if a is None or b is None:
                return None
            return a + (b - a) * (t - times[i - 1]) / (times[i] - times[i - 1])

        v0, v1 = at(t0), at(t1)
        if v0 is None or v1 is None:
            return None
        return max(v1 - v0, 0.0)
