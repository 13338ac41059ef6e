"""What a calibration run's windows measured, per group of identical nodes, and how it
lands on the tree.

Identical layers run once (one *group* per node signature); each round adds one energy
per execution, one row of resource features and the meter reports its window saw. At
the end every node of a group gets the mean over rounds, and a group no window
measured is marked unmeasured with the reason its replay failed, so the trainer skips
it instead of learning a zero.
"""

from __future__ import annotations

import statistics
from collections.abc import Hashable, Iterable
from dataclasses import dataclass, field

from pytest_irene.engine.tree import EnergyNode, EnergyTree
from pytest_irene.rig.runtime.capture import mark_uncaptured, mark_unmeasured


def mean_features(rows: list[dict[str, float]]) -> dict[str, float]:
    """Per key, the mean over the rows that have a value for it."""
    keys = {k for row in rows for k in row}
    out = {}
    for key in sorted(keys):
        values = [row[key] for row in rows if key in row and row[key] is not None]
        if values:
            out[key] = float(statistics.fmean(values))
    return out


@dataclass
class Readings:
    """What one target's windows measured so far, per group of identical nodes."""

    groups: Iterable[Hashable]
    energies: dict[Hashable, list[float]] = field(init=False)
    """Energy of one execution, J, one value per round."""
    features: dict[Hashable, list[dict[str, float]]] = field(init=False)
    """Resource features of one execution, one row per round."""
    reports: dict[Hashable, list[int]] = field(init=False)
    """Meter reports inside each window."""

    def __post_init__(self) -> None:
        keys = list(self.groups)
        self.energies = {k: [] for k in keys}
        self.features = {k: [] for k in keys}
        self.reports = {k: [] for k in keys}

    def add(self, key: Hashable, energy_per_execution_j: float, features: dict[str, float], reports: int) -> None:
        """One round's window of group ``key``."""
        self.energies[key].append(energy_per_execution_j)
        self.features[key].append(features)
        self.reports[key].append(reports)

    def fewest_reports(self) -> int | None:
        """The fewest meter reports any window saw (``None``: no window measured)."""
        few = [min(r) for r in self.reports.values() if r]
        return min(few) if few else None

    def max_spread(self) -> float:
        """The largest relative spread (std/mean) of a group's energy over rounds."""
        spreads = [
            statistics.pstdev(e) / statistics.fmean(e) for e in self.energies.values() if len(e) > 1 and statistics.fmean(e) > 0
        ]
        return max(spreads) if spreads else 0.0

    def apply(self, tree: EnergyTree, groups: dict[Hashable, list[str]], failed: dict[Hashable, str]) -> None:
        """Give every node of ``tree`` its group's mean energy and resource features."""
        by_scope: dict[str, EnergyNode] = {n.scope: n for n in tree.walk()}
        for key, scopes in groups.items():
            values = self.energies[key]
            feats = mean_features(self.features[key]) if self.features[key] else {}
            for scope in scopes:
                node = by_scope[scope]
                if values:
                    node.energy_j = float(statistics.fmean(values))
                    node.features.update(feats)
                else:
                    mark_unmeasured([node], failed.get(key, "not measured"))
        mark_uncaptured(tree)


__all__ = ["Readings", "mean_features"]
