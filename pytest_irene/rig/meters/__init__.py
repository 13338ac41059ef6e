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
from pytest_irene.rig.meters.base import Measurement, MeterError, MeterEvent, MeterWarning, PowerMeter, PowerSample, spec_error
from pytest_irene.rig.meters.polled import PolledMeter

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

METER_SPEC_HELP = "emonpi:PORT[,BAUD][,channels=P1+P2][,period=S] | nvml[:INDEX] | rapl[:SYSFS_DIR]"


def _bad(spec: str, problem: str) -> UsageError:
    return spec_error(spec, problem, METER_SPEC_HELP)


def parse_meter_spec(spec: str) -> PowerMeter:
    """Build the meter a spec string names (see the module docstring); :class:`UsageError` if malformed."""
    kind, _, rest = spec.strip().partition(":")
    kind = kind.lower()
    if kind == "emonpi":
        from pytest_irene.rig.meters.emonpi import EmonPiReader

        return EmonPiReader.from_spec(rest, spec, METER_SPEC_HELP)
    if kind == "nvml":
        from pytest_irene.rig.meters.nvml import NvmlMeter

        try:
            index = int(rest) if rest else 0
        except ValueError:
            raise _bad(spec, f"GPU index {rest!r} is not an integer") from None
        if index < 0:
            raise _bad(spec, f"GPU index {index} is negative; NVML counts GPUs from 0")
        return NvmlMeter(index)
    if kind == "rapl":
        from pytest_irene.rig.meters.rapl import POWERCAP_DIR, RaplMeter

        return RaplMeter(rest or POWERCAP_DIR)
    raise _bad(spec, f"unknown meter {kind!r}")
