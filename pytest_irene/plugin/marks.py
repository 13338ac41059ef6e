"""The ``@pytest.mark.irene(budget=..., tolerance=..., profile=...)`` marker.

One function reads the marker of a test and returns what it overrides; the
session merges that with the command-line settings and the hooks.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from pytest_irene.errors import UsageError
from pytest_irene.units import parse_energy, parse_percent

MARKER = "irene"
MARKER_HELP = (
    "irene(budget='2J', tolerance='3%', profile='irene-pc1', device='cpu'): energy budget, module tolerance, "
    "energy model profile and tracing device for this test, overriding "
    "--irene-budget/--irene-tolerance/--irene-profile/--irene-device"
)
_ALLOWED = ("budget", "tolerance", "profile", "device")


@dataclass(frozen=True)
class IreneMark:
    """What a test's ``irene`` marker overrides; ``None`` fields keep the run's settings."""

    budget_j: float | None = None
    """Energy budget in joules."""
    tolerance: float | None = None
    """Module tolerance as a fraction."""
    profile: str | None = None
    """Energy model profile name or path."""
    device: str | None = None
    """Device to trace on (``cpu`` for data-dependent code); ``None`` keeps ``--irene-device``."""


def read_mark(item: pytest.Item) -> IreneMark:
    """Parse the ``irene`` markers of ``item`` (test, class and module level), keyword by keyword:
    the closest marker that sets a keyword wins, so a module's ``pytestmark = pytest.mark.irene(budget=...)``
    still holds for a test whose own marker only sets ``tolerance=`` (as ``pytest.mark.parametrize``
    and other stacked markers combine, rather than the closest one hiding the rest).

    Raises :class:`UsageError` naming the test and the argument for a bad value
    or an unknown keyword, so a typo like ``budjet=`` does not silently do nothing.
    """
    marks = list(item.iter_markers(MARKER))  # closest first
    if not marks:
        return IreneMark()
    where = f"@pytest.mark.irene on {item.nodeid}"
    kwargs: dict[str, object] = {}
    for mark in marks:
        if mark.args:
            raise UsageError(f"{where}: takes keyword arguments only ({', '.join(_ALLOWED)}), got {mark.args!r}")
        unknown = sorted(set(mark.kwargs) - set(_ALLOWED))
        if unknown:
            raise UsageError(f"{where}: unknown argument(s) {unknown}; expected {', '.join(_ALLOWED)}")
        for key, value in mark.kwargs.items():
            kwargs.setdefault(key, value)
    budget = kwargs.get("budget")
    tolerance = kwargs.get("tolerance")
    profile = kwargs.get("profile")
    device = kwargs.get("device")
    if device is not None and (not isinstance(device, str) or not device.strip()):
        raise UsageError(f"{where}: device= expected a torch device name such as 'cpu', got {device!r}")
    if profile is not None and (not isinstance(profile, str) or not profile.strip()):
        raise UsageError(f"{where}: profile= expected a profile name or path, got {profile!r}")
    return IreneMark(
        budget_j=parse_energy(budget, f"{where}: budget=") if budget is not None else None,
        tolerance=parse_percent(tolerance, f"{where}: tolerance=") if tolerance is not None else None,
        profile=profile.strip() if profile is not None else None,
        device=device.strip() if device is not None else None,
    )


#: The fixture a test wraps model code with.
FIXTURE = "irene"


def is_energy_test(item: pytest.Item) -> bool:
    """Whether ``item`` is one ``--irene-only`` keeps: it uses the ``irene`` fixture (directly or
    through another fixture) or carries the ``irene`` mark, as ``--benchmark-only`` keeps the
    tests that use ``benchmark``."""
    return FIXTURE in getattr(item, "fixturenames", ()) or item.get_closest_marker(MARKER) is not None
