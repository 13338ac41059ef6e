"""The options of an emonPi meter spec (``emonpi:PORT[,BAUD][,channels=P1+P2][,node=5][,period=S]``).

:meth:`EmonPiReader.from_spec <pytest_irene.rig.meters.emonpi.EmonPiReader.from_spec>` reads
them through :func:`reader_options`; each option has one parser, so a bad value
names the option and what was expected.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import Any

from pytest_irene.rig.meters.base import spec_error

#: The firmware's default baud rate (JeeLib); the newer key:value/JSON firmware uses 115200.
DEFAULT_BAUD = 38400


def _channels(text: str) -> tuple[str, ...]:
    channels = tuple(c.strip() for c in text.split("+") if c.strip())
    if not channels:
        raise ValueError("empty channel list")
    bad = [c for c in channels if not _CHANNEL.match(c)]
    if bad:
        raise ValueError(f"{', '.join(bad)} is not an emonPi power channel; expected P1, P2, ... joined by +")
    return channels


def _positive_int(what: str, example: str) -> Callable[[str], int]:
    """A parser of a positive integer option; its error says what was expected, not ``int()``'s words."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = 0
        if value <= 0:
            raise ValueError(f"{text!r} is not {what} such as {example}")
        return value

    return parse


def _period(text: str) -> float:
    """Seconds between reports: a NaN, zero or negative period would size every window to nothing."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{text!r} is not a report period: seconds, a positive number such as 9.8")
    return value


_CHANNEL = re.compile(r"^P\d+(?:_\d+)?$")
#: spec option -> (keyword of EmonPiReader, parser raising ValueError)
_SPEC_OPTIONS: dict[str, tuple[str, Callable[[str], Any]]] = {
    "baud": ("baud", _positive_int("a baud rate", "38400 or 115200")),
    "channels": ("channels", _channels),
    "node": ("node", _positive_int("an RF node id", "5")),
    "period": ("period_s", _period),
}



def reader_options(options: str, spec: str, expected: str) -> tuple[str, dict[str, Any]]:
    """``(port, EmonPiReader keyword arguments)`` of the part after ``emonpi:``; a usage error names ``spec``."""
    parts = [p.strip() for p in options.split(",") if p.strip()]
    if not parts or "=" in parts[0]:
        raise spec_error(spec, "the emonPi needs a serial port, e.g. emonpi:/dev/ttyAMA0", expected)
    kwargs: dict[str, Any] = {"baud": DEFAULT_BAUD}
    for opt in parts[1:]:
        key, eq, value = opt.partition("=")
        name = key if eq else "baud"
        if name not in _SPEC_OPTIONS:
            raise spec_error(spec, f"unknown option {key!r}", expected)
        keyword, parse = _SPEC_OPTIONS[name]
        try:
            kwargs[keyword] = parse(value if eq else key)
        except ValueError as exc:
            raise spec_error(spec, f"bad value in {opt!r} ({exc})", expected) from None
    return parts[0], kwargs
