"""Sweeps: predicted energy over a grid of architectures × batch sizes × sequence lengths.

Every combination is traced on the meta device and predicted, which is fast
enough to sweep dozens of points interactively. The result answers "how does
cost grow with input size?" and "which architecture should I pick?": the
report draws energy against sequence length per batch size and per
architecture, and the module-type partition as stacked bars.
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from pytest_irene.atomic import atomic_write_text
from pytest_irene.engine.tree import EnergyTree
from pytest_irene.explorer.payload import energy_source, module_partition

#: ``predict(spec, batch_size, seq_len, profile) -> EnergyTree``; :func:`.models.predict_tree` by default.
PredictFn = Callable[[Any, int, int, str], EnergyTree]


@dataclass(frozen=True)
class SweepPoint:
    """The prediction for one (architecture, batch size, sequence length)."""

    model: str
    batch_size: int
    seq_len: int
    total_j: float
    """Predicted energy of one forward pass (the root), joules."""
    operations_j: float
    """Sum of the operations' (leaves') predicted energies, joules."""
    parts: dict[str, float]
    """Operations' energy by the type of the module that runs them, joules
    (:func:`~pytest_irene.explorer.payload.module_partition`); sums to ``operations_j``."""
    extrapolation: tuple[str, ...] = ()
    """Why this prediction leaves the profile's training ranges (``tree.meta["extrapolation"]``;
    empty when it does not): a sweep walks off the trained batch sizes and lengths easily,
    and its charts, table and CSV must say which points are extrapolated."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "batch_size": self.batch_size,
            "seq_len": self.seq_len,
            "total_j": self.total_j,
            "operations_j": self.operations_j,
            "parts": dict(self.parts),
            "extrapolation": list(self.extrapolation),
        }


def point_from_tree(model: str, tree: EnergyTree) -> SweepPoint:
    source = energy_source(tree)
    parts = module_partition(tree, source)
    return SweepPoint(
        model=model,
        batch_size=tree.batch_size,
        seq_len=tree.seq_len,
        total_j=float(tree.root.energy_of(source) or 0.0),
        operations_j=float(sum(parts.values())),
        parts=parts,
        extrapolation=tuple(str(r) for r in tree.meta.get("extrapolation") or ()),
    )


@dataclass
class Sweep:
    """All points of a sweep, with the grid they were taken on."""

    profile: str
    models: list[str]
    batch_sizes: list[int]
    seq_lens: list[int]
    points: list[SweepPoint] = field(default_factory=list)

    @property
    def part_types(self) -> list[str]:
        """Module types of the partition, costliest overall first (stable colours across charts)."""
        totals: dict[str, float] = {}
        for p in self.points:
            for k, v in p.parts.items():
                totals[k] = totals.get(k, 0.0) + v
        return [k for k, _ in sorted(totals.items(), key=lambda kv: (-kv[1], kv[0]))]

    def to_dict(self) -> dict[str, Any]:
        """The JSON the explorer's sweep view draws (``/api/sweep`` and the report)."""
        return {
            "profile": self.profile,
            "models": list(self.models),
            "batch_sizes": list(self.batch_sizes),
            "seq_lens": list(self.seq_lens),
            "part_types": self.part_types,
            "points": [p.to_dict() for p in self.points],
        }

    def to_csv(self) -> str:
        """One row per point: grid coordinates, total, one ``<ModuleType>_j`` column per part,
        and ``extrapolation`` (the reasons joined by ``; ``, empty inside the training ranges)."""
        types = self.part_types
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(["model", "profile", "batch_size", "seq_len", "energy_j", "operations_j"] + [f"{t}_j" for t in types] + ["extrapolation"])
        for p in self.points:
            writer.writerow(
                [p.model, self.profile, p.batch_size, p.seq_len, repr(p.total_j), repr(p.operations_j)]
                + [repr(p.parts.get(t, 0.0)) for t in types]
                + ["; ".join(p.extrapolation)]
            )
        return buf.getvalue()

    def write_csv(self, path: str | os.PathLike[str]) -> None:
        atomic_write_text(path, self.to_csv())


def run_sweep(
    specs: Sequence[Any],
    batch_sizes: Sequence[int],
    seq_lens: Sequence[int],
    profile: str,
    *,
    predict: PredictFn | None = None,
    on_point: Callable[[SweepPoint], None] | None = None,
) -> Sweep:
    """Predict every (spec, batch size, sequence length); ``on_point`` is called after each (progress)."""
    if predict is None:
        from pytest_irene.explorer.models import predict_tree

        predict = predict_tree
    sweep = Sweep(profile, [s.name for s in specs], sorted(set(batch_sizes)), sorted(set(seq_lens)))
    for spec in specs:
        for b in sweep.batch_sizes:
            for s in sweep.seq_lens:
                point = point_from_tree(spec.name, predict(spec, b, s, profile))
                sweep.points.append(point)
                if on_point is not None:
                    on_point(point)
    return sweep
