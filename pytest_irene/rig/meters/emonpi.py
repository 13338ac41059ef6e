"""The emonPi wall-power monitor (OpenEnergyMonitor) over a serial port.

A clip-on CT sensor on the machine's supply measures what the machine really
draws at the wall: GPU, CPU, memory, fans and power-supply losses, which is
the ground truth IrEne is trained on. The emonPi's microcontroller prints one
report per period on its serial port. Two firmware families exist:

* JeeLib packet lines (classic firmware, 38400 baud, about every 5 s)::

      OK 5 253 0 0 0 253 0 190 93 ... (-0)

  node id, then the payload bytes, then the RSSI in parentheses. The emonPi's
  own payload (node 5) is little-endian: ``power1, power2, power1+2`` (int16,
  W), ``Vrms x 100`` (int16), six temperatures (int16, 0.1 degC), ``pulseCount``
  (uint32). Packets of other RF nodes are ignored.
* key:value lines of newer firmware (115200 baud, about every 9.8 s)::

      MSG:1,Vrms:240.12,P1:253,P2:0,E1:0,E2:0,pulse:0

  (three-phase builds print ``V1:`` instead of ``Vrms:``) and the same content
  as JSON: ``{"MSG":1,"Vrms":240.12,"P1":253,...}``.

Each report's power is the *average* over the period since the previous one,
so energy over a window is the integral of reported power over time; the
``E`` counters only have 1 Wh resolution (3600 J, far more than one node run).
Lines end in ``\\r\\n``; start-up banners and noise are skipped; lines that
look like a report but are damaged (garbage, truncation) are rejected, never
guessed at; gaps in ``MSG`` and silences are reported as meter events.
"""

from __future__ import annotations

import json
import math
import re
import struct
import threading
import time
from dataclasses import dataclass, field
from typing import Literal

from pytest_irene.rig.meters.base import MeterError, PowerMeter, PowerSample
from pytest_irene.rig.meters.emonpi_spec import DEFAULT_BAUD, reader_options

Firmware = Literal["jeelib", "kv", "json"]

#: Nominal report periods, s (the meter learns the real one from the intervals it sees).
PERIOD_S: dict[str, float] = {"jeelib": 5.0, "kv": 9.8, "json": 9.8}
#: Baud rates of the two firmware families.
BAUD: dict[str, int] = {"jeelib": 38400, "kv": 115200, "json": 115200}

#: Names of the fields of the emonPi's own JeeLib payload, with struct codes and scales.
JEELIB_FIELDS: tuple[tuple[str, str, float], ...] = (
    ("P1", "h", 1.0),
    ("P2", "h", 1.0),
    ("P1_2", "h", 1.0),
    ("Vrms", "h", 0.01),
    ("T1", "h", 0.1),
    ("T2", "h", 0.1),
    ("T3", "h", 0.1),
    ("T4", "h", 0.1),
    ("T5", "h", 0.1),
    ("T6", "h", 0.1),
    ("pulse", "L", 1.0),
)
JEELIB_STRUCT = "<" + "".join(code for _, code, _ in JEELIB_FIELDS)
JEELIB_PAYLOAD_BYTES = struct.calcsize(JEELIB_STRUCT)
EMONPI_NODE = 5

_NUMBER = r"-?\d+(?:\.\d+)?"
_KV_START = re.compile(r"MSG:")
_KV_PAIR = re.compile(rf"^([A-Za-z][A-Za-z0-9_]*):({_NUMBER})$")
_JEELIB = re.compile(r"OK(?: \d{1,3})+ \(-?\d+\)$")


class MalformedLine(ValueError):
    """A line that looks like a report but is damaged (garbage, truncation, bad bytes)."""


class MissingChannel(MalformedLine):
    """A sound report without a channel the reader was told to sum (``channels=P9``)."""


@dataclass(frozen=True)
class EmonPiReport:
    """One decoded emonPi report."""

    firmware: Firmware
    """Which format the line was in: ``jeelib``, ``kv`` or ``json``."""
    values: dict[str, float] = field(default_factory=dict)
    """Decoded values: ``P1``, ``P2``... in W, ``Vrms`` in V, ``E1``... in Wh, ``T1``... in degC, ``pulse``."""
    msg: int | None = None
    """The firmware's message counter (``MSG``), ``None`` for JeeLib packets."""
    node: int | None = None
    """The RF node id of a JeeLib packet."""

    def power_w(self, channels: tuple[str, ...]) -> float:
        """Sum of the power of ``channels`` (``("P1", "P2")``), W."""
        missing = [c for c in channels if c not in self.values]
        if missing:
            have = sorted(k for k in self.values if k.startswith("P"))
            raise MissingChannel(f"report has no channel {', '.join(missing)} (channels present: {', '.join(have)})")
        return float(sum(self.values[c] for c in channels))


def parse_line(line: str | bytes, *, node: int = EMONPI_NODE) -> EmonPiReport | None:
    """Decode one serial line.

    Returns the report, ``None`` for lines that are not reports (banners, blank
    lines, packets of other RF nodes) and raises :class:`MalformedLine` for
    lines that look like a report but are damaged. Garbage *before* a report on
    the same line (a truncated previous line, line noise) is dropped: the last
    report start on the line is decoded.
    """
    if isinstance(line, bytes):
        line = line.decode("ascii", errors="replace")
    text = line.strip("\r\n\x00 ")
    if not text:
        return None
    json_at = text.rfind('{"MSG"')
    kv_at = max((m.start() for m in _KV_START.finditer(text)), default=-1)
    ok_at = text.rfind("OK ")
    start = max(json_at, kv_at, ok_at)
    if start < 0:
        return None
    if start == json_at:
        return _parse_json(text[start:])
    if start == kv_at:
        if json_at >= 0 and text.endswith("}"):
            return _parse_json(text[json_at:])
        return _parse_kv(text[start:])
    return _parse_jeelib(text[start:], node)


def _finite(key: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise MalformedLine(f"field {key} is not a number: {value!r}")
    return float(value)


def _with_counter(values: dict[str, float], firmware: Firmware) -> EmonPiReport:
    if "Vrms" not in values and "V1" in values:
        values["Vrms"] = values["V1"]
    msg = values.get("MSG")
    if msg is None or msg != int(msg) or msg < 0:
        raise MalformedLine(f"MSG counter missing or invalid: {msg!r}")
    return EmonPiReport(firmware=firmware, values=values, msg=int(msg))


def _parse_kv(text: str) -> EmonPiReport:
    values: dict[str, float] = {}
    for part in text.split(","):
        match = _KV_PAIR.match(part)
        if match is None:
            raise MalformedLine(f"undecodable field {part[:30]!r}")
        key, value = match.groups()
        if key in values:
            raise MalformedLine(f"field {key} appears twice (two lines run together?)")
        values[key] = float(value)
    return _with_counter(values, "kv")


def _parse_json(text: str) -> EmonPiReport:
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        raise MalformedLine(f"invalid JSON ({exc.msg})") from None
    if not isinstance(obj, dict):
        raise MalformedLine("JSON report is not an object")
    # non-numeric fields (a status string, null for an absent sensor) carry no power: skip them;
    # a non-finite number is damage
    values = {
        str(k): _finite(str(k), v) for k, v in obj.items() if isinstance(v, (int, float)) and not isinstance(v, bool)
    }
    return _with_counter(values, "json")


def _parse_jeelib(text: str, node: int) -> EmonPiReport | None:
    if _JEELIB.match(text) is None:
        raise MalformedLine(f"damaged JeeLib packet {text[:40]!r}")
    fields = text[3 : text.rindex(" (")].split()
    packet_node = int(fields[0])
    if packet_node != node:
        return None  # another RF node's packet, relayed by the emonPi: not ours
    data = [int(b) for b in fields[1:]]
    if any(b > 255 for b in data):
        raise MalformedLine("JeeLib packet byte out of range")
    if len(data) != JEELIB_PAYLOAD_BYTES:
        raise MalformedLine(f"JeeLib packet of node {node} has {len(data)} bytes, expected {JEELIB_PAYLOAD_BYTES}")
    decoded = struct.unpack(JEELIB_STRUCT, bytes(data))
    values = {name: raw * scale for (name, _, scale), raw in zip(JEELIB_FIELDS, decoded)}
    return EmonPiReport(firmware="jeelib", values=values, node=packet_node)


def encode_jeelib(values: dict[str, float], node: int = EMONPI_NODE, rssi: int = 0) -> str:
    """The JeeLib packet line (without line end) for a report; the inverse of :func:`parse_line`."""
    raw = []
    for name, code, scale in JEELIB_FIELDS:
        value = round(values.get(name, 0.0) / scale)
        raw.append(max(-32768, min(32767, value)) if code == "h" else max(0, min(2**32 - 1, value)))
    payload = struct.pack(JEELIB_STRUCT, *raw)
    return f"OK {node} " + " ".join(str(b) for b in payload) + f" ({-abs(rssi)})"


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
        return (
            f"{self.name}: silent for {waited_s:.1f} s (reports expected every ~{self.period_s:.2f} s); "
            "measurements finished before are kept"
        )
