"""Meters read by polling a cumulative energy counter (RAPL, NVML) from a background thread."""

from __future__ import annotations

import threading
import time
from abc import abstractmethod

from pytest_irene.rig.meters.base import MeterError, PowerMeter, PowerSample, SampleKind


class PolledMeter(PowerMeter):
    """A meter read by polling a cumulative counter from a background thread."""

    kind: SampleKind = "counter"

    def __init__(self, *, poll_s: float = 0.1, timeout_s: float | None = None) -> None:
        super().__init__(period_s=poll_s, timeout_s=timeout_s)
        self.poll_s = poll_s
        self.stamp_midpoint = True
        """Stamp readings at the middle of the device read (True) or at its start."""
        self.changes_only = False
        """Record a reading only when the counter's value changed (a counter the device updates
        more slowly than it is polled: a repeated value is stale, not zero power)."""
        self._last_energy_j: float | None = None
        self._stop_event = threading.Event()
        self._thread: threading.Thread | None = None

    @abstractmethod
    def _open(self) -> None:
        """Open the device; raise :class:`MeterError` with a clear message on failure."""

    @abstractmethod
    def _read_energy_j(self, t_s: float) -> float:
        """The cumulative energy since :meth:`_open` at monotonic time ``t_s`` (now), J, wrap-around removed."""

    def _close_device(self) -> None:
        """Release the device (default: nothing to do)."""

    def _start(self) -> None:
        self._open()
        self._poll_once()
        self._thread = threading.Thread(target=self._loop, name=f"irene-{self.name}", daemon=True)
        self._thread.start()

    def _poll_once(self) -> None:
        before = time.monotonic()
        energy = self._read_energy_j(before)
        # a counter read takes microseconds to milliseconds: stamp it at its middle; a meter
        # integrating power itself has already stamped its value at ``before``
        t = (before + time.monotonic()) / 2 if self.stamp_midpoint else before
        if self.changes_only and energy == self._last_energy_j:
            return
        self._last_energy_j = energy
        self._record(PowerSample(t_s=t, energy_j=energy))

    def _loop(self) -> None:
        while not self._stop_event.wait(self.poll_s):
            try:
                self._poll_once()
            except MeterError as exc:
                self._fail(exc)
                return
            except Exception as exc:  # a device error must not kill silently
                self._fail(MeterError(f"{self.name}: reading failed: {exc}"))
                return

    def _stop(self) -> None:
        self._stop_event.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._close_device()

