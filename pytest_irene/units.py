"""One parser for the energy, tolerance and price strings users type, and cost helpers.

Options, ini values and marker arguments all go through these functions, so
``--irene-budget=12J``, ``irene_budget = 12 J`` and ``@pytest.mark.irene(budget="12J")``
mean the same thing and fail the same way. A bare number is refused on purpose:
``12`` could be joules or watt-hours, a factor of 3600 apart, and a silent guess
would make a gate that never fails.
"""

from __future__ import annotations

import math
import re

from pytest_irene.errors import UsageError

#: Joules per unit, keyed by the lower-cased unit name users may type.
ENERGY_UNITS_J: dict[str, float] = {
    "uj": 1e-6,
    "µj": 1e-6,  # U+00B5 MICRO SIGN
    "μj": 1e-6,  # U+03BC GREEK SMALL LETTER MU: looks the same, and is what many keyboards type
    "mj": 1e-3,
    "j": 1.0,
    "kj": 1e3,
    "mwh": 3.6,  # battery-sized budgets; "MWh" (mega) is still refused below
    "wh": 3600.0,
    "kwh": 3.6e6,
}
#: How the units are spelled in messages.
ENERGY_UNIT_NAMES: tuple[str, ...] = ("uJ", "mJ", "J", "kJ", "mWh", "Wh", "kWh")

J_PER_KWH = 3.6e6
#: Electricity price used by the IrEne paper's Table 3 (US average), US cents per kWh.
DEFAULT_PRICE_CENTS_PER_KWH = 13.19

#: ASCII digits only: ``\d`` also matches Arabic-Indic or full-width digits, which float() then reads
_NUMBER = r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?"
_ENERGY_RE = re.compile(rf"^\s*({_NUMBER})\s*([^\s\d]+)\s*$")
_PERCENT_RE = re.compile(rf"^\s*({_NUMBER})\s*%\s*$")
_PRICE_RE = re.compile(rf"^\s*({_NUMBER})\s*(c|¢|ct|cents?|usd|\$)?\s*(?:/\s*kwh)?\s*$", re.IGNORECASE)


def _finite(value: float, option: str, text: object, what: str) -> float:
    if not math.isfinite(value):
        raise UsageError(f"{option}: expected {what}, got {text!r} (not a finite number)")
    if value < 0:
        raise UsageError(f"{option}: expected {what} >= 0, got {text!r}")
    return value


def parse_energy(text: str | float | int, option: str = "energy") -> float:
    """Parse ``"12J"``, ``"12 J"``, ``"500mJ"``, ``"5µJ"``, ``"0.5 kJ"``, ``"3mWh"``, ``"2 kWh"`` into joules.

    Units are case-insensitive (``12j``, ``1 KJ``) except that a capital ``M`` (mega: ``MJ``,
    ``MWh``) is refused rather than read as milli. A unicode minus counts as a minus; negative
    energies, NaN, infinity and thousands separators (``1,000J``) are refused.

    ``option`` names where the value came from (``--irene-budget``) so the
    :class:`UsageError` raised for a bare number or an unknown unit points at it.
    """
    if isinstance(text, bool) or not isinstance(text, str):
        what = f"the bare number {text!r}" if isinstance(text, (int, float)) and not isinstance(text, bool) \
            else f"{text!r} (a {type(text).__name__}, not a string)"
        raise UsageError(f"{option}: expected an energy with a unit such as '12J', '500mJ' or '0.1Wh', got {what}")
    text = text.replace("\u2212", "-")  # a unicode minus (pasted from a document) is a minus
    match = _ENERGY_RE.match(text)
    if match is None:
        if re.match(rf"^\s*{_NUMBER}\s*$", text):
            raise UsageError(
                f"{option}: expected an energy with a unit ({', '.join(ENERGY_UNIT_NAMES)}), "
                f"got the bare number {text!r}; write e.g. '{text.strip()}J'"
            )
        hint = "; write the digits without separators" if re.search(r"\d[,_ ']\d", text) else ""
        raise UsageError(f"{option}: expected an energy such as '12J', '500 mJ' or '0.1Wh', got {text!r}{hint}")
    number, unit = match.groups()
    factor = ENERGY_UNITS_J.get(unit.lower())
    if factor is None or unit.startswith("M"):  # M is mega in SI (MJ, Mj): refuse rather than guess milli
        raise UsageError(
            f"{option}: unknown energy unit {unit!r} in {text!r}; use one of {', '.join(ENERGY_UNIT_NAMES)}"
        )
    return _finite(float(number) * factor, option, text, "an energy")


def parse_percent(text: str | float | int, option: str = "tolerance") -> float:
    """Parse a tolerance into a fraction: ``"5%"`` → 0.05.

    Strings must carry ``%`` (``"5"`` could mean 5 % or 500 %). Python numbers,
    as in ``@pytest.mark.irene(tolerance=0.05)``, are taken as fractions, and a number
    above 1 is refused for the same reason (``tolerance=5``).
    """
    if isinstance(text, bool):
        raise UsageError(f"{option}: expected a percentage such as '5%', got {text!r}")
    if isinstance(text, (int, float)):
        value = _finite(float(text), option, text, "a fraction")
        if value > 1:  # tolerance=5 is far likelier a 5 % meant than a 500 % one
            raise UsageError(
                f"{option}: {text!r} is a fraction ({value:.0%}); write 0.05 or '5%' for five percent "
                f"(a tolerance over 100 % must be a string such as '{value:.0%}')"
            )
        return value
    match = _PERCENT_RE.match(str(text))
    if match is None:
        raise UsageError(f"{option}: expected a percentage such as '5%' or '2.5 %', got {text!r}")
    return _finite(float(match.group(1)) / 100.0, option, text, "a percentage")


def parse_price(text: str | float | int, option: str = "--irene-price") -> float:
    """Parse an electricity price into US cents per kWh.

    ``"13.19"`` and ``"13.19c/kWh"`` are cents per kWh; ``"0.1319USD/kWh"`` and
    ``"0.1319$"`` are dollars per kWh.
    """
    if isinstance(text, bool):
        raise UsageError(f"{option}: expected a price such as '13.19c/kWh', got {text!r}")
    if isinstance(text, (int, float)):
        return _finite(float(text), option, text, "a price in cents/kWh")
    match = _PRICE_RE.match(str(text))
    if match is None:
        raise UsageError(f"{option}: expected a price such as '13.19c/kWh' or '0.1319USD/kWh', got {text!r}")
    value = float(match.group(1))
    unit = (match.group(2) or "c").lower()
    if unit in ("usd", "$"):
        value *= 100.0
    return _finite(value, option, text, "a price")


def format_energy(energy_j: float | None) -> str:
    """Human-readable energy with a unit that keeps 3-4 significant digits (``"1.234 J"``)."""
    if energy_j is None:
        return "-"
    if energy_j == 0 or not math.isfinite(energy_j):
        return f"{energy_j:g} J".replace("-0 J", "0 J")  # "nan J", "inf J": never "nan uJ" or "inf kWh"
    # the unit is chosen after rounding to the 4 digits shown: 0.99996 J is "1 J", not "1000 mJ"
    magnitude = float(f"{abs(energy_j):.4g}")  # explorer/static/format.js mirrors this digit for digit: change both
    if magnitude >= J_PER_KWH:
        return f"{energy_j / J_PER_KWH:.4g} kWh"
    if magnitude >= 1e3:
        return f"{energy_j / 1e3:.4g} kJ"
    if magnitude >= 1.0:
        return f"{energy_j:.4g} J"
    if magnitude >= 1e-3:
        return f"{energy_j * 1e3:.4g} mJ"
    return f"{energy_j * 1e6:.4g} uJ"


def format_change(change: float | None) -> str:
    """A relative change as a signed percentage (``"+12.3%"``), ``"-"`` when unknown. A change that
    rounds to nothing is ``"+0.0%"`` whatever its sign: ``"-0.0%"`` read as a drop that is not there."""
    if change is None:
        return "-"
    shown = f"{change * 100:+.1f}"
    return ("+0.0" if float(shown) == 0 else shown) + "%"


def kwh_per_million_calls(energy_j: float) -> float:
    """Energy of one million calls of ``energy_j`` joules each, in kWh (paper Table 3's unit)."""
    return energy_j * 1e6 / J_PER_KWH


def usd_per_million_calls(energy_j: float, price_cents_per_kwh: float = DEFAULT_PRICE_CENTS_PER_KWH) -> float:
    """Electricity cost of one million calls, US dollars, at ``price_cents_per_kwh``."""
    return kwh_per_million_calls(energy_j) * price_cents_per_kwh / 100.0


def format_cost(energy_j: float | None, price_cents_per_kwh: float = DEFAULT_PRICE_CENTS_PER_KWH) -> str:
    """``"0.333 kWh, $0.04 /1M calls"``: what a million calls of this size cost."""
    if energy_j is None:
        return "-"
    kwh = kwh_per_million_calls(energy_j)
    usd = usd_per_million_calls(energy_j, price_cents_per_kwh)
    return f"{kwh:.3g} kWh, ${usd:.3g} /1M"
