"""An NVIDIA GPU's own energy reading as a meter (``nvml[:INDEX]``).

Volta and newer GPUs keep a total-energy counter in millijoules
(``nvmlDeviceGetTotalEnergyConsumption``); older ones only report the current
power draw, which is then integrated over time (trapezoids between polls).
This is the GPU's energy only: wall energy adds the rest of the machine.

The driver updates the counter every few tens of milliseconds and reads the
same value in between, so a reading equal to the previous one is not recorded:
each recorded reading then marks an update (stamped within one poll of it),
linear interpolation between updates is exact for steady power, and
:attr:`period_s` is the counter's own update period, which calibration uses to
size windows (at least ``min_reports`` updates each). Poll faster than the
counter updates (``poll_s``) to stamp updates precisely.
NVML access is the runtime's wrapper (:mod:`pytest_irene.rig.runtime.nvml`),
shared with the resource sampler and the fingerprint.
"""

from __future__ import annotations

from typing import Any

from pytest_irene.rig.runtime.nvml import Gpu, Nvml, NvmlUnavailable, load_nvml
from pytest_irene.rig.meters.base import MeterError
from pytest_irene.rig.meters.polled import PolledMeter


class NvmlMeter(PolledMeter):
    """GPU ``index``'s energy: the total-energy counter, or integrated power as a fallback.

    ``nvml_module`` replaces ``pynvml`` (tests pass a fake).
    """

    energy_scope = "gpu-board"

    def __init__(
        self, index: int = 0, *, poll_s: float = 0.1, timeout_s: float | None = None, nvml_module: Any = None
    ) -> None:
        super().__init__(poll_s=poll_s, timeout_s=timeout_s)
        self.index = index
        self.name = f"nvml:{index}"
        self.source: str = ""
        """``"counter"`` (total-energy counter) or ``"power"`` (integrated power fallback)."""
        self._module = nvml_module
        self._session: Nvml | None = None
        self._gpu: Gpu | None = None
        self._start_j = 0.0
        self._last_power: tuple[float, float] | None = None
        self._integrated_j = 0.0

    def _open(self) -> None:
        try:
            self._session = load_nvml(self._module)
        except NvmlUnavailable as exc:
            raise MeterError(f"nvml: {exc}") from None
        gpus = self._session.gpus
        if not 0 <= self.index < len(gpus):
            self._close_device()
            raise MeterError(f"nvml: no GPU with index {self.index} ({len(gpus)} visible)")
        self._gpu = gpus[self.index]
        self.name = f"nvml:{self.index} ({self._gpu.name})"
        reading = self._gpu.read()
        if reading.energy_j is not None:
            self.source, self._start_j = "counter", reading.energy_j
            self.changes_only = True
        elif reading.power_w is not None:
            self.source = "power"
            self.stamp_midpoint = False  # the integral is computed at the time passed in
        else:
            self._close_device()
            raise MeterError(f"nvml: {self.name} reports neither a total-energy counter nor power")

    def _read_energy_j(self, t_s: float) -> float:
        assert self._gpu is not None
        reading = self._gpu.read()
        value = reading.energy_j if self.source == "counter" else reading.power_w
        if value is None:
            raise MeterError(f"{self.name}: reading failed: GPU lost or driver reset?")
        if self.source == "counter":
            return value - self._start_j
        if self._last_power is not None:
            t_prev, p_prev = self._last_power
            self._integrated_j += 0.5 * (p_prev + value) * (t_s - t_prev)
        self._last_power = (t_s, value)
        return self._integrated_j

    def _silence_message(self, waited_s: float, *, first: bool) -> str:
        """Only counter *changes* are readings: silence here is a counter that stopped advancing."""
        message = super()._silence_message(waited_s, first=first)
        if self.source != "counter":
            return message
        return (f"{message}: the GPU's total-energy counter did not change (a driver that froze it, or a "
                "virtual GPU that does not update it); check nvidia-smi -q -d POWER")

    def _close_device(self) -> None:
        if self._session is not None:
            self._session.close()
            self._session = None
