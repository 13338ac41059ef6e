"""Power meters behind one interface (see :mod:`.base`), chosen by a spec string.

``--irene-meter`` / ``irene calibrate --meter`` take one of::

    emonpi:/dev/ttyAMA0[,BAUD][,channels=P1+P2][,node=5][,period=SECONDS]
    nvml[:INDEX]
    rapl[:SYSFS_DIR]

Nothing is opened by :func:`parse_meter_spec`; call ``start()`` (or use the
meter as a context manager) to open the device.
"""

from __future__ import annotations

from pytest_irene.errors import UsageError
from pytest_irene.rig.meters.base import Measurement, MeterError, MeterEvent, MeterWarning, PolledMeter, PowerMeter, PowerSample

__all__ = [
    "Measurement",
    "MeterError",
    "MeterEvent",
    "MeterWarning",
    "PolledMeter",
    "PowerMeter",
    "PowerSample",
    "parse_meter_spec",
    "METER_SPEC_HELP",
]

METER_SPEC_HELP = "emonpi:PORT[,BAUD][,channels=P1+P2] | nvml[:INDEX] | rapl"


def _bad(spec: str, problem: str) -> UsageError:
    return UsageError(f"meter spec {spec!r}: {problem} (expected {METER_SPEC_HELP})")


def parse_meter_spec(spec: str) -> PowerMeter:
    """Build the meter a spec string names (see the module docstring); :class:`UsageError` if malformed."""
    kind, _, rest = spec.strip().partition(":")
    kind = kind.lower()
    if kind == "emonpi":
        from pytest_irene.rig.meters.emonpi import DEFAULT_BAUD, EmonPiReader

        parts = [p.strip() for p in rest.split(",") if p.strip()]
        if not parts or "=" in parts[0]:
            raise _bad(spec, "the emonPi needs a serial port, e.g. emonpi:/dev/ttyAMA0")
        port, options = parts[0], parts[1:]
        baud, channels, node, period = DEFAULT_BAUD, ("P1",), 5, None
        for opt in options:
            key, eq, value = opt.partition("=")
            try:
                if not eq:
                    baud = int(key)
                elif key == "channels":
                    channels = tuple(c.strip() for c in value.split("+") if c.strip())
                    if not channels:
                        raise ValueError("empty channel list")
                elif key == "node":
                    node = int(value)
                elif key == "period":
                    period = float(value)
                else:
                    raise _bad(spec, f"unknown option {key!r}")
            except ValueError as exc:
                raise _bad(spec, f"bad value in {opt!r} ({exc})") from None
        if baud <= 0:
            raise _bad(spec, f"bad baud rate {baud}")
        return EmonPiReader(port, baud, channels=channels, node=node, period_s=period)
    if kind == "nvml":
        from pytest_irene.rig.meters.nvml import NvmlMeter

        try:
            index = int(rest) if rest else 0
        except ValueError:
            raise _bad(spec, f"GPU index {rest!r} is not an integer") from None
        return NvmlMeter(index)
    if kind == "rapl":
        from pytest_irene.rig.meters.rapl import POWERCAP_DIR, RaplMeter

        return RaplMeter(rest or POWERCAP_DIR)
    raise _bad(spec, f"unknown meter {kind!r}")
