"""The emonPi wall-power monitor (OpenEnergyMonitor) over a serial port.

A clip-on CT sensor on the machine's supply measures what the machine really
draws at the wall: GPU, CPU, memory, fans and power-supply losses, which is
the ground truth IrEne is trained on. The line formats (JeeLib packets,
key:value and JSON) are parsed in :mod:`pytest_irene.rig.meters.emonpi_lines`;
this module reads the port in a background thread, turns reports into power
samples, and reports gaps in ``MSG``, silences and damaged lines as meter events.
"""

from __future__ import annotations

import threading
import time

from pytest_irene.rig.meters.base import MeterError, PowerMeter, PowerSample
from pytest_irene.rig.meters.emonpi_lines import (
    EMONPI_NODE,
    PERIOD_S,
    EmonPiReport,
    Firmware,
    MalformedLine,
    MissingChannel,
    parse_line,
)
from pytest_irene.rig.meters.emonpi_spec import DEFAULT_BAUD, reader_options


class EmonPiReader(PowerMeter):
    """An emonPi on a serial port, read by a background thread.

    ``channels`` are summed to the machine's power (``("P1",)`` when one CT
    clamps the machine's supply). The firmware family is recognised from the
    lines themselves; ``baud`` must match it (38400 for JeeLib, 115200 for the
    newer firmware) and a mismatch is diagnosed from the undecodable bytes.
    """

    kind = "power"

    def __init__(
        self,
        port: str,
        baud: int = DEFAULT_BAUD,
        *,
        channels: tuple[str, ...] = ("P1",),
        node: int = EMONPI_NODE,
        period_s: float | None = None,
        timeout_s: float | None = None,
    ) -> None:
        nominal = period_s if period_s is not None else (PERIOD_S["jeelib"] if baud == 38400 else PERIOD_S["kv"])
        super().__init__(period_s=nominal, timeout_s=timeout_s)
        self.port = port
        self.baud = int(baud)
        self.channels = tuple(channels)
        self.node = node
        self.name = f"emonPi on {port}"
        self.firmware: Firmware | None = None
        self.bytes_received = 0
        self.unprintable_bytes = 0
        self._bytes_at_report = (0, 0)  # (received, unprintable) when the last report was decoded
        self.last_text_line = ""
        self.lines = 0
        self.reports = 0
        self.skipped = 0
        self.rejected = 0
        self.missing_messages = 0
        self._last_msg: int | None = None
        self._last_t: float | None = None
        self._keys: frozenset[str] = frozenset()
        self._serial = None
        self._thread: threading.Thread | None = None
        self._stop_event = threading.Event()

    # -- device --------------------------------------------------------------------------


    @classmethod
    def from_spec(cls, options: str, spec: str, expected: str) -> EmonPiReader:
        """The reader of ``PORT[,BAUD][,channels=P1+P2][,node=5][,period=S]`` (the part after ``emonpi:``)."""
        port, kwargs = reader_options(options, spec, expected)
        return cls(port, **kwargs)

    def _start(self) -> None:
        try:
            import serial  # pyserial
        except ImportError as exc:  # pragma: no cover - pyserial is a dependency
            raise MeterError("the emonPi meter needs pyserial (pip install pyserial)") from exc
        try:
            self._serial = serial.Serial(self.port, self.baud, timeout=0.05)
            self._serial.reset_input_buffer()  # stale bytes carry no usable timestamps
        except (serial.SerialException, OSError) as exc:
            hint = ""
            if "ermission" in str(exc):
                hint = " (add your user to the 'dialout' group: sudo usermod -aG dialout $USER, then log in again)"
            raise MeterError(f"cannot open emonPi serial port {self.port}: {exc}{hint}") from None
        self._thread = threading.Thread(target=self._loop, name="irene-emonpi", daemon=True)
        self._thread.start()

    def _stop(self) -> None:
        self._stop_event.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self._serial is not None:
            try:
                self._serial.close()
            except Exception:  # the port may already be gone
                pass

    def _loop(self) -> None:
        import serial

        buffer = b""
        while not self._stop_event.is_set():
            try:
                chunk = self._serial.read(max(1, self._serial.in_waiting))
            except (serial.SerialException, OSError, TypeError) as exc:
                if self._stop_event.is_set():
                    return
                self._fail(
                    MeterError(
                        f"{self.name}: the serial port vanished ({exc}); measurements finished before "
                        "are kept. Check the USB/GPIO connection and restart."
                    )
                )
                return
            if not chunk:
                continue
            now = time.monotonic()
            self.bytes_received += len(chunk)
            self.unprintable_bytes += sum(1 for b in chunk if not (32 <= b < 127 or b in (9, 10, 13)))
            buffer += chunk
            while b"\n" in buffer:
                line, buffer = buffer.split(b"\n", 1)
                self.feed_line(line, now)
            if len(buffer) > 4096:
                self._noise(f"{len(buffer)} bytes without a line end discarded", now)
                buffer = b""

    # -- decoding ------------------------------------------------------------------------

    def feed_line(self, line: bytes | str, t_s: float) -> None:
        """Decode one received line (its time of arrival ``t_s``) into a reading or an event.

        Public so that recorded serial logs can be replayed through the same logic.
        """
        self.lines += 1
        text = (line.decode("ascii", "replace") if isinstance(line, bytes) else line).strip("\r\n\x00 ")
        try:
            report = parse_line(text, node=self.node)
            if report is None:
                self.skipped += 1
                if text.isprintable():
                    if text:
                        self.last_text_line = text[:60]  # a banner or status line: normal
                elif self.reports:
                    self._noise(f"skipped a line of noise ({len(text)} undecodable characters)", t_s)
                return
            if not text.startswith(("MSG:", "{", "OK ")):
                start = max(text.rfind("MSG:"), text.rfind('{"MSG"'), text.rfind("OK "))
                self._noise(f"dropped {start} garbage character(s) in front of a report", t_s)
            if report.firmware != "jeelib":
                keys = frozenset(report.values)
                if self._keys and not self._keys <= keys:
                    lost = ", ".join(sorted(self._keys - keys))
                    raise MalformedLine(f"truncated report (fields {lost} missing)")
                self._keys = self._keys | keys
            power = report.power_w(self.channels)
        except MissingChannel as exc:
            # not noise: every report will lack it, so say so now, not "is the emonPi still starting"
            self.rejected += 1
            self._noise(f"rejected a report ({exc})", t_s)
            self._fail(MeterError(f"{self.name}: channels={'+'.join(self.channels)}: {exc}; pick channels it reports"))
            return
        except MalformedLine as exc:
            self.rejected += 1
            self._noise(f"rejected a damaged line ({exc})", t_s)
            return
        self._check_continuity(report, t_s)
        self.firmware = report.firmware
        self.reports += 1
        self._record(PowerSample(t_s=t_s, power_w=power, seq=report.msg, raw=dict(report.values)))

    def _check_continuity(self, report: EmonPiReport, t_s: float) -> None:
        if report.msg is not None and self._last_msg is not None:
            missing = report.msg - self._last_msg - 1
            if missing > 0:
                self.missing_messages += missing
                self._event(
                    f"{missing} report(s) missing (MSG {self._last_msg} -> {report.msg}); the power of "
                    f"MSG {report.msg} is held over the gap",
                    t_s,
                )
            elif report.msg <= self._last_msg:
                self._event(f"MSG counter restarted ({self._last_msg} -> {report.msg}): did the emonPi reset?", t_s)
        elif self._last_t is not None and self.reports >= 3 and t_s - self._last_t > 1.8 * self.period_s:
            self._event(
                f"no report for {t_s - self._last_t:.2f} s (period ~{self.period_s:.2f} s); the power of the "
                "next report is held over the gap",
                t_s,
            )
        self._last_msg = report.msg
        self._last_t = t_s
        self._bytes_at_report = (self.bytes_received, self.unprintable_bytes)

    def _noise(self, message: str, t_s: float) -> None:
        self._event(message, t_s)

    def _silence_message(self, waited_s: float, *, first: bool) -> str:
        if first and self.bytes_received > 0 and self.unprintable_bytes > 0.2 * self.bytes_received:
            other = 115200 if self.baud == 38400 else 38400
            return (
                f"{self.name}: no valid report in {waited_s:.1f} s at {self.baud} baud, but "
                f"{self.bytes_received} undecodable byte(s) in {self.lines} line(s): the baud rate is "
                f"probably wrong; JeeLib firmware speaks 38400, newer key:value/JSON firmware 115200 "
                f"(try emonpi:{self.port},{other})"
            )
        if first and self.lines > 0:
            example = f" such as {self.last_text_line!r}" if self.last_text_line else ""
            return (
                f"{self.name}: no report in {waited_s:.1f} s, only {self.lines} other line(s){example}: "
                "is the emonPi still starting, or its firmware set to print no data?"
            )
        if first:
            return (
                f"{self.name}: no data at all in {waited_s:.1f} s at {self.baud} baud: is the emonPi "
                "powered, the port right and no other program (emonhub) reading it?"
            )
        since = self.bytes_received - self._bytes_at_report[0]
        garbled = self.unprintable_bytes - self._bytes_at_report[1]
        if since > 0 and garbled > 0.2 * since:  # bytes keep arriving, none of them a report: not silence
            return (
                f"{self.name}: no valid report for {waited_s:.1f} s, but {since} byte(s) arrived since the last "
                "one, most of them undecodable (line noise, a loose cable or a changed baud rate); "
                "measurements finished before are kept"
            )
        return (
            f"{self.name}: silent for {waited_s:.1f} s (reports expected every ~{self.period_s:.2f} s); "
            "measurements finished before are kept"
        )


__all__ = ["EmonPiReader"]
