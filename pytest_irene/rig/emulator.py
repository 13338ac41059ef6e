"""An emonPi emulator on a pseudo-terminal, for testing calibration without a rig.

It opens a pty (raw mode), and a background thread writes emonPi reports to
it exactly as the firmware prints them on its serial port: JeeLib packet
lines, key:value lines or JSON, ending in ``\\r\\n``, after a start-up banner.
The reported power follows the host's *real* CPU utilisation
(``idle_watts + watts_per_util * utilisation``, utilisation 0-1 averaged over
each report period, from ``/proc/stat``), so running a model visibly raises
the measured energy, as on a rig.

Faults reproduce what goes wrong with real serial meters:

``garbage``     random bytes (line noise) between and before reports
``truncated``   every other report cut short (a reset or a full buffer)
``wrong-baud``  every byte as a reader clocked at the other firmware's baud rate sees it
``silence``     reports stop, the port stays open (a hung microcontroller)
``drop``        every third report never arrives (a gap in ``MSG``)
``vanish``      the pty is closed (a USB adapter pulled out)

Faults start after ``fault_after`` good reports. :attr:`EmonPiEmulator.log`
records what was really reported, so tests can compare the reader's energy
with the truth.
"""

from __future__ import annotations

import json
import os
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pytest_irene.rig.calibration_plan import SettingError
from pytest_irene.rig.meters.emonpi_lines import BAUD, PERIOD_S, encode_jeelib
from pytest_irene.rig.runtime.sampler import PROC_STAT, read_cpu_times
from pytest_irene.validate import is_finite_number

FORMATS: tuple[str, ...] = ("kv", "jeelib", "json")
FAULTS: tuple[str, ...] = ("garbage", "truncated", "wrong-baud", "silence", "drop", "vanish")

BANNERS: dict[str, tuple[str, ...]] = {
    "jeelib": ("", "emonPi V1.9.0", "OpenEnergyMonitor.org", "RFM69CW only", "Band: 433Mhz", "Group: 210", "Node: 5", "startup..."),
    "kv": ("", "|emonPi V2.1.2", "|OpenEnergyMonitor.org", "|Settings", "|Band: 433.92 MHz, Group: 210, Node: 5", "|Format: key:value"),
    "json": ("", "|emonPi V2.1.2", "|OpenEnergyMonitor.org", "|Settings", "|Band: 433.92 MHz, Group: 210, Node: 5", "|Format: JSON"),
}


class CpuUtilisation:
    """Host CPU utilisation (0-1, all cores) between successive calls, from ``/proc/stat``."""

    def __init__(self, stat_path: str | Path = PROC_STAT) -> None:
        self.stat_path = Path(stat_path)
        self._last = read_cpu_times(self.stat_path)

    def __call__(self) -> float:
        busy, total = read_cpu_times(self.stat_path)
        d_busy, d_total = busy - self._last[0], total - self._last[1]
        self._last = (busy, total)
        if d_total <= 0:
            return 0.0
        return min(1.0, max(0.0, d_busy / d_total))


def misclock(data: bytes, sent_baud: int, read_baud: int) -> bytes:
    """The bytes a UART reading at ``read_baud`` receives from a sender at ``sent_baud``.

    Simulates 8N1 framing: the receiver waits for a falling edge (start bit),
    samples the 8 data bits and the stop bit at the middle of *its* bit times,
    and, like Linux without ``IGNPAR``/``PARMRK``, delivers a NUL for a frame
    whose stop bit is not high (a framing error).
    """
    bits: list[int] = []
    for byte in data:
        bits.append(0)
        bits.extend((byte >> i) & 1 for i in range(8))
        bits.append(1)
    n = len(bits)

    def level(t: float) -> int:
        i = int(t * sent_baud)
        return bits[i] if i < n else 1

    def next_low(t: float) -> float | None:
        i = int(t * sent_baud)
        while i < n and bits[i] == 1:
            i += 1
        return None if i >= n else max(t, i / sent_baud)

    out = bytearray()
    bit_s = 1.0 / read_baud
    t = 0.0
    while True:
        start = next_low(t)
        if start is None:
            break
        centre = start + bit_s / 2
        if level(centre) != 0:  # a glitch shorter than half a bit: not a start bit
            t = start + 1.0 / sent_baud
            continue
        value = sum(level(centre + (i + 1) * bit_s) << i for i in range(8))
        stop_ok = level(centre + 9 * bit_s) == 1
        out.append(value if stop_ok else 0)
        t = centre + 9 * bit_s
        if not stop_ok:  # wait for the line to go high again before hunting a start bit
            i = int(t * sent_baud)
            while i < n and bits[i] == 0:
                i += 1
            t = max(t, i / sent_baud)
    return bytes(out)


@dataclass(frozen=True)
class Emitted:
    """One report the emulator produced (whether or not it reached the line intact)."""

    t_s: float
    """Monotonic time its period ended (it is written right after), s: the next report's
    :attr:`start_s`, so the periods of the log tile time without overlap. Stamping the time
    after the write made them overlap by the write's duration, which on a loaded host added
    up to percents of "true" energy the emulator never reported."""
    msg: int
    """Its MSG counter."""
    power_w: float
    """Machine power it reported (P1), W: the average since the previous report."""
    delivered: bool
    """False when a fault dropped, truncated or garbled it."""
    start_s: float = 0.0
    """Start of the period it averages (the previous report's time), monotonic s."""


def _check_settings(
    *, period_s: float | None, idle_watts: float, watts_per_util: float, voltage_v: float, fault_after: int
) -> None:
    """Refuse values a real emonPi cannot report: a :class:`SettingError` naming the keyword.

    A NaN or zero period would have the serving thread write reports as fast as it
    can (the wait is never positive), a negative or infinite power is no reading a
    meter gives, and the calibration reading them would fail far from the cause."""
    numbers = (("period_s", period_s, True), ("idle_watts", idle_watts, False),
               ("watts_per_util", watts_per_util, False), ("voltage_v", voltage_v, True))
    for name, value, positive in numbers:
        if name == "period_s" and value is None:
            continue  # the firmware's own period
        ok = is_finite_number(value)
        if not ok or (value <= 0 if positive else value < 0):
            bound = "a positive finite number" if positive else "a finite number >= 0"
            raise SettingError(name, f"must be {bound}, got {value!r}", owner="emulator")
    if isinstance(fault_after, bool) or not isinstance(fault_after, int) or fault_after < 0:
        raise SettingError("fault_after", f"must be an integer >= 0, got {fault_after!r}", owner="emulator")


class EmonPiEmulator:
    """Speaks the emonPi serial protocol on a pty until stopped; context manager.

    ``power_fn`` (W, called once per report) replaces the CPU-derived power,
    for tests that need a known power curve.
    """

    def __init__(
        self,
        fmt: str = "kv",
        *,
        period_s: float | None = None,
        idle_watts: float = 60.0,
        watts_per_util: float = 140.0,
        fault: str | None = None,
        fault_after: int = 3,
        voltage_v: float = 240.0,
        power_fn: Callable[[], float] | None = None,
        seed: int = 0,
    ) -> None:
        if fmt not in FORMATS:
            raise ValueError(f"unknown emonPi format {fmt!r}; expected one of {', '.join(FORMATS)}")
        if fault is not None and fault not in FAULTS:
            raise ValueError(f"unknown fault {fault!r}; expected one of {', '.join(FAULTS)}")
        _check_settings(period_s=period_s, idle_watts=idle_watts, watts_per_util=watts_per_util,
                        voltage_v=voltage_v, fault_after=fault_after)
        self.fmt = fmt
        self.period_s = PERIOD_S[fmt] if period_s is None else float(period_s)
        self.idle_watts = idle_watts
        self.watts_per_util = watts_per_util
        self.fault = fault
        self.fault_after = fault_after
        self.voltage_v = voltage_v
        self.baud = BAUD[fmt]
        self.reader_baud = 115200 if self.baud == 38400 else 38400
        self._power_fn = power_fn
        self._rng = random.Random(seed)
        self.log: list[Emitted] = []
        self.path = ""
        self._master = -1
        self._slave = -1
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._energy_wh = 0.0
        self.vanished = False

    # -- lifecycle -----------------------------------------------------------------------

    def start(self) -> str:
        """Open the pty, start serving, return the device path (``/dev/pts/N``)."""
        import pty  # POSIX only: imported here so that `irene` (which registers this command) loads on Windows
        import tty

        self._master, self._slave = pty.openpty()
        tty.setraw(self._slave)
        tty.setraw(self._master)
        os.set_blocking(self._master, False)
        self.path = os.ttyname(self._slave)
        self._cpu = CpuUtilisation() if self._power_fn is None else None
        self._thread = threading.Thread(target=self._serve, name="irene-emonpi-emulator", daemon=True)
        self._thread.start()
        return self.path

    def stop(self) -> None:
        """Stop serving and close the pty."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._close()

    def request_stop(self) -> None:
        """Ask the serving thread to end (safe from a signal handler)."""
        self._stop.set()

    def __enter__(self) -> EmonPiEmulator:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def wait(self) -> None:
        """Serve until the thread ends (stop() from elsewhere, or the port vanished)."""
        while self._thread is not None and self._thread.is_alive():
            self._thread.join(0.5)

    def _close(self) -> None:
        for fd in (self._master, self._slave):
            if fd >= 0:
                try:
                    os.close(fd)
                except OSError:
                    pass
        self._master = self._slave = -1

    # -- reports -------------------------------------------------------------------------

    def power_w(self) -> float:
        """The machine power for the period just ended, W."""
        if self._power_fn is not None:
            return float(self._power_fn())
        return self.idle_watts + self.watts_per_util * self._cpu()

    def format_report(self, msg: int, power_w: float) -> str:
        """One report line (without ``\\r\\n``) in the emulator's format."""
        vrms = round(self.voltage_v + self._rng.uniform(-0.5, 0.5), 2)
        p1 = round(power_w)
        values = {"MSG": msg, "Vrms": vrms, "P1": p1, "P2": 0, "P3": 0, "P4": 0}
        values.update({"E1": int(self._energy_wh), "E2": 0, "E3": 0, "E4": 0, "pulse": 0})
        if self.fmt == "kv":
            return ",".join(f"{k}:{v}" for k, v in values.items())
        if self.fmt == "json":
            return json.dumps(values, separators=(",", ":"))
        return encode_jeelib({"P1": p1, "P2": 0, "P1_2": p1, "Vrms": vrms, "T1": 300, "T2": 300, "pulse": 0})

    def _write(self, data: bytes, *, misclocked: bool = False) -> None:
        if misclocked:
            data = misclock(data, self.baud, self.reader_baud)
        try:
            os.write(self._master, data)
        except BlockingIOError:
            pass  # nobody reads the port and its buffer is full: bytes are lost, as on a real line
        except OSError:
            pass

    def _serve(self) -> None:
        # like the microcontroller: one report a period after the previous one; a late thread
        # (a loaded host) makes that period longer, never sends a burst to catch up
        last = time.monotonic()
        msg = 0
        while not self._stop.wait(max(0.0, last + self.period_s - time.monotonic())):
            msg += 1
            now = time.monotonic()
            power = self.power_w()
            self._energy_wh += power * (now - last) / 3600.0
            begun, last = last, now
            line = self.format_report(msg, power)
            faulty = self.fault is not None and msg > self.fault_after
            # like every other fault, a wrong baud rate starts after fault_after good reports
            misclocked = faulty and self.fault == "wrong-baud"
            if msg == 1:  # the microcontroller boots during the first period and prints its banner
                self._write(("\r\n".join(BANNERS[self.fmt]) + "\r\n").encode(), misclocked=misclocked)
            delivered = not misclocked
            if faulty and self.fault == "vanish":
                self.vanished = True
                self._close()
                return
            if faulty and self.fault == "silence":
                self.log.append(Emitted(now, msg, power, False, begun))
                continue
            if faulty and self.fault == "drop" and msg % 3 == 0:
                delivered = False
            elif faulty and self.fault == "truncated" and msg % 2 == 0:
                line = line[: self._rng.randint(4, len(line) - 3)]
                delivered = False
            data = (line + "\r\n").encode() if delivered or self.fault in ("truncated", "wrong-baud") else b""
            if faulty and self.fault == "garbage":
                noise = bytes(self._rng.randrange(256) for _ in range(self._rng.randint(3, 24)))
                noise = noise.replace(b"\n", b"")
                data = noise + (b"\r\n" if msg % 2 else b"") + data
            if self.fmt == "jeelib" and msg % 4 == 0:
                # the emonPi relays packets of other RF nodes (an emonTx on node 10)
                other = encode_jeelib({"P1": 42, "Vrms": 240}, node=10, rssi=67)
                data += (other + "\r\n").encode()
            self._write(data, misclocked=misclocked)
            self.log.append(Emitted(now, msg, power, delivered, begun))

    def true_energy_j(self, t0: float, t1: float) -> float:
        """The energy the emulator really reported between monotonic times ``t0`` and ``t1``, J.

        Every report, delivered or not, holds its power over the period it averages.
        """
        energy = 0.0
        for e in self.log:
            lo, hi = max(e.start_s, t0), min(e.t_s, t1)
            if hi > lo:
                energy += e.power_w * (hi - lo)
        return energy
