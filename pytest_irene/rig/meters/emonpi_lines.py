"""The emonPi's serial line formats: parsing a report line, and writing one (the emulator).

The emonPi's microcontroller prints one report per period on its serial port.
Two firmware families exist:

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
import re
import struct
from dataclasses import dataclass, field
from typing import Literal

from pytest_irene.validate import is_finite_number

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
    if not is_finite_number(value):
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


__all__ = [
    "BAUD",
    "EMONPI_NODE",
    "PERIOD_S",
    "EmonPiReport",
    "Firmware",
    "MalformedLine",
    "MissingChannel",
    "encode_jeelib",
    "parse_line",
]
