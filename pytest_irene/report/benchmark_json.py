"""Per-call energies in the JSON that benchmark-history tools read (``irene export``).

- github-action-benchmark, tool ``customSmallerIsBetter``: a JSON array of
  ``{"name": str, "unit": str, "value": number, "range"?: str, "extra"?: str}``
  (the action's ``BenchmarkResult``); names must be unique.
- Bencher Metric Format (BMF): ``{benchmark: {measure: {"value": number,
  "lower_value"?: number, "upper_value"?: number}}}``; benchmark names up to
  1024 characters, measure names up to 64.

Predictions are deterministic, so there is no spread to report: ``range``,
``lower_value`` and ``upper_value`` are left out rather than invented.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from pytest_irene.compare.baselines import entry_from_tree
from pytest_irene.compare.runfile import RunFile
from pytest_irene.errors import UsageError

FORMATS: tuple[str, ...] = ("github-action-benchmark", "bencher")
#: The Bencher measure the energies are reported under (created on first upload).
BENCHER_MEASURE = "energy-j"
BENCHER_NAME_LIMIT = 1024


@dataclass(frozen=True)
class Point:
    """One exported value: a call's total, or one module of it."""

    name: str
    """``tests/test_a.py::test_x [label]``, plus `` :: scope`` for a module."""
    energy_j: float
    """Predicted energy of one execution, joules."""
    extra: str
    """Profile, features and commit, for the chart's tooltip."""


def points(runs: Iterable[tuple[str, RunFile]], *, modules: bool = False) -> list[Point]:
    """Every call's total (and, with ``modules``, every module's energy) of the runs, in order.

    The same name in two runs must carry the same value (shards of one run are
    fine); different values are an error naming both files.
    """
    out: dict[str, tuple[Point, str]] = {}
    for source, run in runs:
        commit = f", commit {run.commit.sha[:12]}" if run.commit else ""
        for rec in run.records:
            extra = f"profile {rec.profile}, {rec.features} features{commit}"
            name = f"{rec.nodeid} [{rec.label}]"
            found = [Point(name, float(rec.tree.total_j or 0.0), extra)]
            if modules:
                entry = entry_from_tree(rec.tree, profile=rec.profile, features=rec.features)
                found += [Point(f"{name} :: {scope}", m.energy_j, extra) for scope, m in entry.modules.items()]
            for point in found:
                seen = out.get(point.name)
                if seen is not None and seen[0].energy_j != point.energy_j:
                    raise UsageError(f"{point.name!r} is in {seen[1]} and {source} with different energies; export one run at a time")
                out.setdefault(point.name, (point, source))
    return [p for p, _ in out.values()]


def github_action_benchmark(pts: list[Point]) -> list[dict[str, Any]]:
    """The ``customSmallerIsBetter`` array (unit ``J``)."""
    return [{"name": p.name, "unit": "J", "value": p.energy_j, "extra": p.extra} for p in pts]


def bencher(pts: list[Point]) -> dict[str, Any]:
    """The BMF object: one benchmark per point, measure :data:`BENCHER_MEASURE`."""
    for p in pts:
        if len(p.name) > BENCHER_NAME_LIMIT:
            raise UsageError(f"Bencher benchmark names are limited to {BENCHER_NAME_LIMIT} characters: {p.name[:80]}...")
    return {p.name: {BENCHER_MEASURE: {"value": p.energy_j}} for p in pts}
