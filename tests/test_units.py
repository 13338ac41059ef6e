"""The one parser behind --irene-budget, --irene-min-delta, --irene-tolerance, --irene-price and the marker."""

from __future__ import annotations

import math

import pytest

from pytest_irene.errors import UsageError
from pytest_irene.units import (
    format_change,
    format_cost,
    format_energy,
    kwh_per_million_calls,
    parse_energy,
    parse_percent,
    parse_price,
    usd_per_million_calls,
)


@pytest.mark.parametrize(
    ("text", "joules"),
    [
        ("12J", 12.0),
        ("12 J", 12.0),
        (" 12j ", 12.0),
        ("500mJ", 0.5),
        ("500 mJ", 0.5),
        ("0.5kJ", 500.0),
        ("2 kJ", 2000.0),
        ("1Wh", 3600.0),
        ("0.5 Wh", 1800.0),
        ("1kWh", 3.6e6),
        ("2 kWh", 7.2e6),
        ("1e-3J", 1e-3),
        (".25J", 0.25),
        ("10uJ", 1e-5),
    ],
)
def test_energy_units(text: str, joules: float) -> None:
    assert math.isclose(parse_energy(text, "--irene-budget"), joules, rel_tol=1e-12)


@pytest.mark.parametrize("text", ["12", "12.5", " 3 "])
def test_bare_number_is_a_usage_error_naming_the_option(text: str) -> None:
    with pytest.raises(UsageError, match=r"--irene-budget.*bare number"):
        parse_energy(text, "--irene-budget")


@pytest.mark.parametrize("text", ["12W", "12 joules", "12MJ", "1Mj", "2MWh", "12 calories", "J", "", "twelveJ", "١٢J", "１２J"])
def test_unknown_unit_or_garbage_is_a_usage_error(text: str) -> None:
    with pytest.raises(UsageError, match="--irene-min-delta"):
        parse_energy(text, "--irene-min-delta")


def test_python_numbers_are_refused_as_energies() -> None:
    with pytest.raises(UsageError, match="budget="):
        parse_energy(2.0, "budget=")  # type: ignore[arg-type]


@pytest.mark.parametrize("text", ["-1J", "nanJ", "infJ"])
def test_negative_or_non_finite_energy_is_refused(text: str) -> None:
    with pytest.raises(UsageError):
        parse_energy(text, "--irene-budget")


@pytest.mark.parametrize(("text", "fraction"), [("5%", 0.05), ("3 %", 0.03), ("0.5%", 0.005), (0.05, 0.05), (0, 0.0)])
def test_percentages(text: object, fraction: float) -> None:
    assert math.isclose(parse_percent(text, "--irene-tolerance"), fraction)  # type: ignore[arg-type]


@pytest.mark.parametrize("text", ["5", "five%", "-5%", "%", True, 5, 1.5])
def test_bad_percentages(text: object) -> None:
    with pytest.raises(UsageError, match="--irene-tolerance"):
        parse_percent(text, "--irene-tolerance")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("text", "cents"), [("13.19", 13.19), ("13.19c/kWh", 13.19), ("0.1319USD/kWh", 13.19), ("0.1319$", 13.19)]
)
def test_prices(text: str, cents: float) -> None:
    assert math.isclose(parse_price(text), cents)


def test_bad_price() -> None:
    with pytest.raises(UsageError, match="--irene-price"):
        parse_price("cheap")


def test_cost_matches_paper_table_3() -> None:
    # Table 3: 161 kWh per million questions costs 21.24 USD at 13.19 cents/kWh.
    energy_j = 161 * 3.6e6 / 1e6
    assert math.isclose(kwh_per_million_calls(energy_j), 161.0)
    assert round(usd_per_million_calls(energy_j), 2) == 21.24
    assert format_cost(energy_j) == "161 kWh, $21.2 /1M"


def test_formatting() -> None:
    assert format_energy(12.0) == "12 J"
    assert format_energy(0.0123) == "12.3 mJ"
    assert format_energy(1234.0) == "1.234 kJ"
    assert format_energy(None) == "-"
    assert format_change(0.1234) == "+12.3%"
    assert format_change(-0.05) == "-5.0%"
    assert format_change(-0.0004) == format_change(-0.0) == "+0.0%"  # no drop that rounds to nothing
    assert format_change(None) == "-"


def test_the_unit_is_chosen_after_rounding() -> None:
    """0.99996 J printed as "1000 mJ" and 999.96 J as "1000 J"."""
    from pytest_irene.units import format_energy

    assert [format_energy(j) for j in (0.99996, 999.96, 0.00099996, -0.99996, 3599999.0)] == [
        "1 J", "1 kJ", "1 mJ", "-1 J", "1 kWh"
    ]
