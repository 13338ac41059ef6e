"""A fake ``pynvml`` module: the subset of NVML pytest-irene calls, with pynvml's semantics.

Why faithful matters: the runtime code handles NVML's real failure modes
(``NVMLError_NotSupported`` for a counter an old board lacks, init failing
without a driver), so the fake raises the same exception hierarchy (every
error a subclass of ``NVMLError``), returns the same units (power in mW, energy
in mJ, memory in bytes, clocks in MHz) and lets the total-energy counter
advance with real (monotonic) time at the configured power draw.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from types import SimpleNamespace

NVML_CLOCK_GRAPHICS = 0
NVML_CLOCK_SM = 1
NVML_CLOCK_MEM = 2
NVML_ERROR_UNINITIALIZED = 1
NVML_ERROR_NOT_SUPPORTED = 3
NVML_ERROR_DRIVER_NOT_LOADED = 9


class NVMLError(Exception):
    """Base of every NVML error, like ``pynvml.NVMLError``."""

    def __init__(self, value: int) -> None:
        super().__init__(value)
        self.value = value

    def __str__(self) -> str:
        return {1: "Uninitialized", 3: "Not Supported", 9: "Driver Not Loaded"}.get(self.value, f"error {self.value}")


class NVMLError_Uninitialized(NVMLError):
    def __init__(self) -> None:
        super().__init__(NVML_ERROR_UNINITIALIZED)


class NVMLError_NotSupported(NVMLError):
    def __init__(self) -> None:
        super().__init__(NVML_ERROR_NOT_SUPPORTED)


class NVMLError_DriverNotLoaded(NVMLError):
    def __init__(self) -> None:
        super().__init__(NVML_ERROR_DRIVER_NOT_LOADED)


@dataclass
class FakeGpu:
    """One fake board. Quantities named in ``unsupported`` raise ``NVMLError_NotSupported``:
    any of ``util``, ``memory``, ``sm_clock``, ``mem_clock``, ``power``, ``energy``."""

    name: str = "NVIDIA H100 80GB HBM3"
    uuid: str = "GPU-00000000-0000-0000-0000-000000000000"
    util_pct: int = 37
    mem_total_b: int = 80 * 2**30
    mem_used_b: int = 20 * 2**30
    sm_clock_mhz: int = 1755
    mem_clock_mhz: int = 2619
    power_w: float = 250.0
    energy_start_mj: int = 123_456_789
    energy_period_s: float = 0.0
    """The driver updates the total-energy counter this often (real boards: tens of ms);
    between updates it reads the same value. 0: it advances continuously."""
    unsupported: set[str] = field(default_factory=set)
    t0: float = field(default_factory=time.monotonic)


class FakeNvml:
    """An object usable in place of the ``pynvml`` module.

    ``init_error``: an ``NVMLError`` subclass that ``nvmlInit`` raises (no driver).
    """

    NVMLError = NVMLError
    NVMLError_NotSupported = NVMLError_NotSupported
    NVMLError_Uninitialized = NVMLError_Uninitialized
    NVMLError_DriverNotLoaded = NVMLError_DriverNotLoaded
    NVML_CLOCK_GRAPHICS = NVML_CLOCK_GRAPHICS
    NVML_CLOCK_SM = NVML_CLOCK_SM
    NVML_CLOCK_MEM = NVML_CLOCK_MEM

    def __init__(self, gpus: list[FakeGpu] | None = None, *, driver: str = "550.54.15",
                 init_error: type[NVMLError] | None = None) -> None:
        self.gpus = [FakeGpu()] if gpus is None else gpus
        self.driver = driver
        self.init_error = init_error
        self.init_count = 0
        self.calls = 0
        self._lock = threading.Lock()

    # -- lifecycle (reference counted, like libnvidia-ml) --
    def nvmlInit(self) -> None:
        if self.init_error is not None:
            raise self.init_error()
        with self._lock:
            self.init_count += 1

    def nvmlShutdown(self) -> None:
        with self._lock:
            if self.init_count == 0:
                raise NVMLError_Uninitialized()
            self.init_count -= 1

    def _check(self) -> None:
        self.calls += 1
        if self.init_count <= 0:
            raise NVMLError_Uninitialized()

    def _gpu(self, handle: FakeGpu, what: str) -> FakeGpu:
        self._check()
        if what in handle.unsupported:
            raise NVMLError_NotSupported()
        return handle

    # -- queries --
    def nvmlSystemGetDriverVersion(self) -> str:
        self._check()
        return self.driver

    def nvmlDeviceGetCount(self) -> int:
        self._check()
        return len(self.gpus)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> FakeGpu:
        self._check()
        return self.gpus[index]

    def nvmlDeviceGetName(self, handle: FakeGpu) -> str:
        return self._gpu(handle, "name").name

    def nvmlDeviceGetUUID(self, handle: FakeGpu) -> str:
        return self._gpu(handle, "uuid").uuid

    def nvmlDeviceGetUtilizationRates(self, handle: FakeGpu) -> SimpleNamespace:
        g = self._gpu(handle, "util")
        return SimpleNamespace(gpu=g.util_pct, memory=max(g.util_pct // 2, 0))

    def nvmlDeviceGetMemoryInfo(self, handle: FakeGpu, version: int | None = None) -> SimpleNamespace:
        g = self._gpu(handle, "memory")
        return SimpleNamespace(total=g.mem_total_b, used=g.mem_used_b, free=g.mem_total_b - g.mem_used_b)

    def nvmlDeviceGetClockInfo(self, handle: FakeGpu, clock: int) -> int:
        if clock == NVML_CLOCK_MEM:
            return self._gpu(handle, "mem_clock").mem_clock_mhz
        return self._gpu(handle, "sm_clock").sm_clock_mhz

    def nvmlDeviceGetPowerUsage(self, handle: FakeGpu) -> int:
        return int(self._gpu(handle, "power").power_w * 1000)

    def nvmlDeviceGetTotalEnergyConsumption(self, handle: FakeGpu) -> int:
        g = self._gpu(handle, "energy")
        elapsed = time.monotonic() - g.t0
        if g.energy_period_s > 0:
            elapsed = (elapsed // g.energy_period_s) * g.energy_period_s
        return g.energy_start_mj + int(elapsed * g.power_w * 1000)
