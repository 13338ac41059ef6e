"""A thin, fault-tolerant view of NVIDIA GPUs through NVML (``nvidia-ml-py``).

Why a wrapper: the sampler, the fingerprint and the calibration meters all need
the same few NVML calls, and each must survive what real hosts do (no driver,
no GPU, a counter the board does not support). Every reading here returns
``None`` for a quantity the GPU does not report instead of raising, so one
unsupported counter never hides the others. The pynvml module is injectable
(``load_nvml(module=fake)``), which is how the GPU code path is tested on
machines without a GPU.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


class NvmlUnavailable(Exception):
    """NVML cannot be used on this host; ``str(exc)`` says why (shown to the user once)."""


@dataclass(frozen=True, slots=True)
class GpuReading:
    """One reading of one GPU; ``None`` marks a quantity the GPU does not report."""

    util_pct: float | None
    """GPU (SM) utilisation over the driver's last sampling period, %."""
    mem_pct: float | None
    """GPU memory in use, % of the board's total."""
    sm_clock_mhz: float | None
    """Current SM clock, MHz."""
    mem_clock_mhz: float | None
    """Current memory clock, MHz."""
    power_w: float | None
    """Current board power draw, W."""
    energy_j: float | None
    """The driver's total-energy counter (Volta and newer), J since the driver loaded."""


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class Gpu:
    """One NVML device, by NVML index."""

    def __init__(self, nvml: Any, index: int) -> None:
        self._nvml = nvml
        self.index = index
        self.unsupported: set[str] = set()
        """Quantities this board answered ``NVMLError_NotSupported`` for; not asked again."""
        self.handle = nvml.nvmlDeviceGetHandleByIndex(index)
        self.name = self._try(lambda: _text(nvml.nvmlDeviceGetName(self.handle))) or f"GPU {index}"
        self.uuid = self._try(lambda: _text(nvml.nvmlDeviceGetUUID(self.handle)))
        """The GPU's UUID (``GPU-...``), used to match CUDA devices to NVML devices."""

    def _try(self, read: Any, key: str = "") -> Any:
        if key in self.unsupported:
            return None
        try:
            return read()
        except self._nvml.NVMLError as exc:
            not_supported = getattr(self._nvml, "NVMLError_NotSupported", None)
            if key and not_supported is not None and isinstance(exc, not_supported):
                self.unsupported.add(key)  # permanent for this board: stop asking (keeps sampling cheap)
            return None

    def read(self) -> GpuReading:
        """Read every quantity once; unsupported ones are ``None``."""
        nvml, h = self._nvml, self.handle
        util = self._try(lambda: nvml.nvmlDeviceGetUtilizationRates(h), "util")
        mem = self._try(lambda: nvml.nvmlDeviceGetMemoryInfo(h), "memory")
        sm = self._try(lambda: nvml.nvmlDeviceGetClockInfo(h, nvml.NVML_CLOCK_SM), "sm_clock")
        mclk = self._try(lambda: nvml.nvmlDeviceGetClockInfo(h, nvml.NVML_CLOCK_MEM), "mem_clock")
        power_mw = self._try(lambda: nvml.nvmlDeviceGetPowerUsage(h), "power")
        energy_mj = self._try(lambda: nvml.nvmlDeviceGetTotalEnergyConsumption(h), "energy")
        mem_pct = None
        if mem is not None and getattr(mem, "total", 0):
            mem_pct = 100.0 * float(mem.used) / float(mem.total)
        return GpuReading(
            util_pct=None if util is None else float(util.gpu),
            mem_pct=mem_pct,
            sm_clock_mhz=None if sm is None else float(sm),
            mem_clock_mhz=None if mclk is None else float(mclk),
            power_w=None if power_mw is None else float(power_mw) / 1000.0,
            energy_j=None if energy_mj is None else float(energy_mj) / 1000.0,
        )


class Nvml:
    """An initialised NVML session; :meth:`close` releases it (NVML init is reference counted)."""

    def __init__(self, module: Any) -> None:
        self.module = module
        self._open = True
        try:
            count = int(module.nvmlDeviceGetCount())
            self.gpus: list[Gpu] = [Gpu(module, i) for i in range(count)]
        except module.NVMLError:
            self.close()
            raise
        try:
            self.driver_version: str | None = _text(module.nvmlSystemGetDriverVersion())
        except module.NVMLError:
            self.driver_version = None

    def close(self) -> None:
        """Shut this session down; idempotent."""
        if self._open:
            self._open = False
            try:
                self.module.nvmlShutdown()
            except Exception:  # shutting down a driver that went away is not an error worth raising
                pass

    def __enter__(self) -> Nvml:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def load_nvml(module: Any = None) -> Nvml:
    """Initialise NVML and enumerate the GPUs.

    ``module`` replaces ``pynvml`` (tests pass a fake). Raises
    :class:`NvmlUnavailable` with a one-line reason when the package, the
    driver or any GPU is missing, so callers can report GPU features as absent.
    """
    if module is None:
        try:
            import pynvml as module  # type: ignore[no-redef]
        except ImportError:
            raise NvmlUnavailable("nvidia-ml-py is not installed (pip install nvidia-ml-py)") from None
    try:
        module.nvmlInit()
    except module.NVMLError as exc:
        raise NvmlUnavailable(f"NVML cannot start ({_text(exc) or type(exc).__name__}): no NVIDIA driver") from None
    try:
        session = Nvml(module)
    except module.NVMLError as exc:
        raise NvmlUnavailable(f"NVML cannot enumerate GPUs ({_text(exc) or type(exc).__name__})") from None
    if not session.gpus:
        session.close()
        raise NvmlUnavailable("NVML sees no NVIDIA GPU")
    return session
