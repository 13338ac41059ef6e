"""One small interface for every power meter (emonPi at the wall, NVML, RAPL).

Modelled on Zeus: measuring is a *window*. ``begin_window(key)`` marks a start
time, ``end_window(key)`` returns a :class:`Measurement` of the energy drawn in
between. Calibration needs more than that: the node runner decides its own
windows, and only afterwards are meter readings matched to them by timestamp.
So every meter keeps a timestamped history of its readings (taken on the
monotonic clock, like the runtime's resource sampler) and answers
:meth:`PowerMeter.energy_between` for any past interval.

Two kinds of readings exist, and they integrate differently:

* ``power`` readings (emonPi): each report is the *average* power since the
  previous report, so the power is piecewise constant, held backwards from
  each report to the one before it;
* ``counter`` readings (RAPL, NVML): a cumulative energy counter, linearly
  interpolated between readings; the energy of a window is the difference.

A meter that fails (port gone, counter unreadable) stores the failure; every
later call raises it as :class:`MeterError`, while measurements completed
earlier stay valid: nothing already measured is thrown away.
"""

from __future__ import annotations

import bisect
import threading
import time
import warnings
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Literal

from pytest_irene.errors import IreneError, UsageError

SampleKind = Literal["power", "counter"]


class MeterError(IreneError):
    """A power meter cannot deliver readings (bad spec, missing device, port gone, silence)."""


class MeterWarning(UserWarning):
    """Something is off with the meter's data (gaps, noise) but the measurement is still usable."""


@dataclass(frozen=True)
class PowerSample:
    """One reading of a meter."""

    t_s: float
    """Monotonic time (``time.monotonic()``) at which the reading was taken or received, s."""
    power_w: float | None = None
    """Average power since the previous report, W (``power`` meters)."""
    energy_j: float | None = None
    """Cumulative energy since the meter started, J (``counter`` meters), wrap-around removed."""
    seq: int | None = None
    """The device's message counter (emonPi ``MSG``) when it has one."""
    raw: dict[str, float] = field(default_factory=dict)
    """Every decoded value of the report (``Vrms``, ``P2``, ``E1``...), for diagnostics."""


@dataclass(frozen=True)
class MeterEvent:
    """A noteworthy thing the meter saw (a message gap, garbage on the line)."""

    t_s: float
    """Monotonic time of the event, s."""
    message: str
    """What happened, for humans."""


@dataclass(frozen=True)
class Measurement:
    """The energy drawn during one window."""

    energy_j: float
    """Energy over the window, J."""
    duration_s: float
    """Length of the window, s."""
    samples: int
    """Number of meter readings that fell inside the window."""
    start_s: float
    """Window start, monotonic s."""
    end_s: float
    """Window end, monotonic s."""
    warnings: tuple[str, ...] = ()
    """Problems seen by the meter during the window (gaps, noise); the energy is still usable."""

    @property
    def power_w(self) -> float:
        """Mean power over the window, W."""
        return self.energy_j / self.duration_s if self.duration_s > 0 else 0.0


def integrate_power(samples: list[PowerSample], t0: float, t1: float, first_period_s: float) -> float:
    """Energy (J) over ``[t0, t1]`` from average-power reports.

    Report ``i`` covers ``(t_{i-1}, t_i]``; the first report covers one nominal
    period before it. A missing report (gap) makes the next report's power hold
    over the gap, which is the best estimate without data (the gap is reported
    separately as a warning).
    """
    energy = 0.0
    prev = None
    for s in samples:
        start = s.t_s - first_period_s if prev is None else prev
        prev = s.t_s
        if s.power_w is None:
            continue
        lo, hi = max(start, t0), min(s.t_s, t1)
        if hi > lo:
            energy += s.power_w * (hi - lo)
        if start >= t1:
            break
    return energy


def interpolate_counter(samples: list[PowerSample], t: float) -> float:
    """Cumulative energy (J) at time ``t``, linear between the bracketing readings."""
    times = [s.t_s for s in samples]
    i = bisect.bisect_left(times, t)
    if i < len(samples) and samples[i].t_s == t:
        return float(samples[i].energy_j or 0.0)
    if i == 0 or i == len(samples):
        raise ValueError("time outside the readings")
    a, b = samples[i - 1], samples[i]
    ea, eb = float(a.energy_j or 0.0), float(b.energy_j or 0.0)
    return ea + (eb - ea) * (t - a.t_s) / (b.t_s - a.t_s)


class PowerMeter(ABC):
    """A power meter: timestamped readings, energy over windows.

    Subclasses feed readings with :meth:`_record`, report oddities with
    :meth:`_event` and fatal problems with :meth:`_fail`; they implement
    :meth:`_start` (open the device, start reading) and :meth:`_stop`.
    """

    kind: SampleKind = "power"
    name: str = "meter"
    energy_scope: str = "wall"
    """What the meter's energy covers (:data:`~pytest_irene.engine.tree.ENERGY_SCOPES`); calibration
    writes it into every dataset line, so a profile trained on it says what its joules are."""

    def __init__(self, *, period_s: float, timeout_s: float | None = None) -> None:
        self._nominal_period_s = float(period_s)
        self._timeout_s = timeout_s
        self._cond = threading.Condition()
        self._samples: list[PowerSample] = []
        self._events: list[MeterEvent] = []
        self._read_pos = 0
        self._windows: dict[str, float] = {}
        self._failure: MeterError | None = None
        self._started = False
        self._closed = False

    # -- subclass API --------------------------------------------------------------------

    @abstractmethod
    def _start(self) -> None:
        """Open the device and begin producing readings (usually a thread)."""

    @abstractmethod
    def _stop(self) -> None:
        """Stop reading and release the device."""

    def _record(self, sample: PowerSample) -> None:
        with self._cond:
            if self._samples and sample.t_s <= self._samples[-1].t_s:
                sample = PowerSample(
                    self._samples[-1].t_s + 1e-6, sample.power_w, sample.energy_j, sample.seq, sample.raw
                )
            self._samples.append(sample)
            self._cond.notify_all()

    def _event(self, message: str, t_s: float | None = None) -> None:
        with self._cond:
            self._events.append(MeterEvent(time.monotonic() if t_s is None else t_s, message))

    def _fail(self, error: MeterError) -> None:
        with self._cond:
            if self._failure is None:
                self._failure = error
            self._cond.notify_all()

    # -- public API ----------------------------------------------------------------------

    @property
    def period_s(self) -> float:
        """Typical time between readings, s: the median of the observed intervals once
        a few readings arrived, the nominal period before."""
        with self._cond:
            times = [s.t_s for s in self._samples[-21:]]
        if len(times) < 3:
            return self._nominal_period_s
        gaps = sorted(b - a for a, b in zip(times, times[1:]))
        return gaps[len(gaps) // 2]

    @property
    def timeout_s(self) -> float:
        """How long to wait for the next reading before declaring the meter silent, s."""
        if self._timeout_s is not None:
            return self._timeout_s
        return max(3.0 * self.period_s, 0.5)

    def start(self) -> PowerMeter:
        """Open the device and start reading; idempotent."""
        if not self._started:
            self._started = True
            self._start()
        return self

    def close(self) -> None:
        """Stop reading and release the device; idempotent."""
        if self._started and not self._closed:
            self._closed = True
            self._stop()
        self._closed = True

    def __enter__(self) -> PowerMeter:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def failure(self) -> MeterError | None:
        """The fatal problem the meter hit, if any."""
        return self._failure

    def check_alive(self) -> None:
        """Raise :class:`MeterError` when the meter failed or has been silent longer than
        :attr:`timeout_s` (a few report periods).

        Calibration calls this while a window runs, so a meter that stops
        reporting ends the run within a few periods instead of a whole round of
        wasted rig time later.
        """
        with self._cond:
            self._raise_failure()
            last = self._samples[-1].t_s if self._samples else None
        if last is None:
            return  # before the first reading wait_for_samples applies its own timeout
        waited = time.monotonic() - last
        if waited > self.timeout_s:
            raise MeterError(self._silence_message(waited, first=False))

    def events(self, t0: float = float("-inf"), t1: float = float("inf")) -> list[MeterEvent]:
        """Events (gaps, noise) seen between ``t0`` and ``t1``."""
        with self._cond:
            return [e for e in self._events if t0 <= e.t_s <= t1]

    def read_samples(self) -> list[PowerSample]:
        """Readings received since the previous call (all of them on the first call)."""
        with self._cond:
            new = self._samples[self._read_pos :]
            self._read_pos = len(self._samples)
        return new

    def samples(self) -> list[PowerSample]:
        """Every reading so far."""
        with self._cond:
            return list(self._samples)

    def wait_for_samples(self, count: int = 1, timeout_s: float | None = None) -> None:
        """Block until at least ``count`` readings arrived; :class:`MeterError` on silence."""
        self.start()
        limit = self._first_report_timeout() if timeout_s is None else timeout_s
        deadline = time.monotonic() + limit
        with self._cond:
            while len(self._samples) < count:
                self._raise_failure()
                left = deadline - time.monotonic()
                if left <= 0:
                    raise MeterError(self._silence_message(limit, first=not self._samples))
                self._cond.wait(min(left, 0.1))

    def wait_until(self, t_s: float, timeout_s: float | None = None) -> None:
        """Block until a reading at or after monotonic time ``t_s`` exists.

        A window is only complete once the meter has reported past its end (an
        emonPi report covers the time *before* it). Raises :class:`MeterError`
        when the meter failed or stayed silent longer than its timeout.
        """
        self.start()
        with self._cond:
            while not self._samples or self._samples[-1].t_s < t_s:
                self._raise_failure()
                last = self._samples[-1].t_s if self._samples else None
                limit = self.timeout_s if timeout_s is None else timeout_s
                now = time.monotonic()
                if now - max(t_s, last if last is not None else t_s) > limit:
                    raise MeterError(self._silence_message(now - (last if last is not None else t_s), first=last is None))
                self._cond.wait(0.05)

    def energy_between(self, t0: float, t1: float, *, wait: bool = True) -> Measurement:
        """The energy drawn between monotonic times ``t0`` and ``t1``.

        With ``wait`` (default) blocks until the meter has reported past ``t1``.
        Raises :class:`MeterError` when the readings do not cover the window.
        """
        if t1 < t0:
            raise ValueError(f"window ends before it starts ({t0} > {t1})")
        if wait:
            self.wait_until(t1)
        with self._cond:
            samples = list(self._samples)
        if not samples or samples[-1].t_s < t1:
            self._raise_failure()
            raise MeterError(f"{self.name}: no reading after the end of the window yet")
        inside = sum(1 for s in samples if t0 < s.t_s <= t1)
        if self.kind == "power":
            first_start = samples[0].t_s - self._nominal_period_s
            if first_start > t0 + 1e-9:
                raise MeterError(
                    f"{self.name}: the window starts {first_start - t0:.2f} s before the meter's first "
                    "report; start the meter and wait for a report before measuring"
                )
            energy = integrate_power(samples, t0, t1, self._nominal_period_s)
        else:
            if samples[0].t_s > t0:
                raise MeterError(f"{self.name}: the window starts before the meter's first reading")
            energy = interpolate_counter(samples, t1) - interpolate_counter(samples, t0)
        notes = tuple(e.message for e in self.events(t0, t1 + self.period_s))
        return Measurement(
            energy_j=energy, duration_s=t1 - t0, samples=inside, start_s=t0, end_s=t1, warnings=notes
        )

    def begin_window(self, key: str) -> None:
        """Start a named measurement window now."""
        self.start()
        self._raise_failure()
        if key in self._windows:
            raise ValueError(f"measurement window {key!r} is already open")
        self._windows[key] = time.monotonic()

    def end_window(self, key: str, *, warn: bool = True) -> Measurement:
        """Close the named window and return its measurement.

        Waits for the meter to report past the end of the window. Problems seen
        during the window are returned in ``Measurement.warnings`` and, with
        ``warn``, also emitted as :class:`MeterWarning`.
        """
        t0 = self._windows.pop(key, None)
        if t0 is None:
            raise ValueError(f"no measurement window {key!r} is open")
        measurement = self.energy_between(t0, time.monotonic())
        if warn:
            for message in measurement.warnings:
                warnings.warn(MeterWarning(f"{self.name}: {message}"), stacklevel=2)
        return measurement

    # -- helpers -------------------------------------------------------------------------

    def _raise_failure(self) -> None:
        if self._failure is not None:
            raise self._failure

    def _first_report_timeout(self) -> float:
        return self._timeout_s if self._timeout_s is not None else max(3.0 * self._nominal_period_s, 2.0)

    def _silence_message(self, waited_s: float, *, first: bool) -> str:
        what = "no reading at all" if first else "no new reading"
        return f"{self.name}: {what} for {waited_s:.1f} s (expected one every ~{self.period_s:.2f} s)"


def spec_error(spec: str, problem: str, expected: str) -> UsageError:
    """The usage error of a bad meter spec string: names the spec, the problem and the expected form."""
    return UsageError(f"meter spec {spec!r}: {problem} (expected {expected})")
