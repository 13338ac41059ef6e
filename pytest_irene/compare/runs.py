"""Compare two runs: each a run file (``--irene-json``) or a baselines directory (``.irene/``).

This is what ``irene compare BASE NEW`` and ``pytest --irene-compare=BASE`` share.
Both sides are read into the same shape, one
:class:`~pytest_irene.compare.baselines.BaselineEntry` per ``(node id, label)``,
and every call found on both sides goes through the gate's own
:func:`~pytest_irene.compare.gate.compare`, so tolerances, minimum deltas,
renamed modules and mismatched profiles are judged exactly as in the plugin.

The machine matters only for resource features: model-feature predictions are
made for the profile's hardware, whatever machine ran the tests. So when the
two runs come from different machines, calls predicted with ``all`` features
are not compared (as for a mismatched baseline) and the rest are, with a note.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pytest_irene.compare.baselines import (
    NOTED_INPUT_KEYS, BaselineEntry, BaselineError, entry_from_tree, read_baseline_file,
)
from pytest_irene.compare.comparison import (
    DEFAULT_MIN_DELTA_J,
    DEFAULT_TOLERANCE,
    Comparison,
    ModuleDelta,
    counts_against,
)
from pytest_irene.compare.comparison import FAIL_ON as GATE_FAIL_ON
from pytest_irene.compare.baseline_store import baseline_files
from pytest_irene.compare.runfile import CommitInfo, RunFileError, read_run_file
from pytest_irene.engine.tree import EnergyNode, EnergyTree

FailOn = Literal["none", "increase", "any"]
FAIL_ON: tuple[str, ...] = ("none", *GATE_FAIL_ON)

CallKey = tuple[str, str]


@dataclass(frozen=True)
class RunSide:
    """One side of a comparison, whatever file it came from."""

    source: str
    """The path it was read from, as given."""
    kind: Literal["run", "baselines"]
    """``run`` (a run file) or ``baselines`` (a baselines directory or file)."""
    entries: dict[CallKey, BaselineEntry]
    """Every call's module energies, keyed by ``(node id, label)``."""
    host: dict[str, Any] = field(default_factory=dict)
    """The machine of a run file (``{}`` for baselines, which do not record one)."""
    commit: CommitInfo | None = None
    """The commit of a run file, when it recorded one."""
    limits: dict[CallKey, tuple[float, float]] = field(default_factory=dict)
    """Per call, the ``(tolerance, min_delta_j)`` its test ran with (run files only)."""
    trees: dict[CallKey, EnergyTree] = field(default_factory=dict)
    """Per call, the predicted tree (run files only; baselines keep module energies only)."""
    version: str = ""
    """pytest-irene version that wrote a run file (``""``: baselines, or an ``irene-run/1`` file)."""
    format: str = ""
    """The file's format (``irene-run/2``); ``""`` for baselines."""

    def get(self, nodeid: str, label: str) -> BaselineEntry | None:
        """The entry of one call, ``None`` when this side has none (the :class:`BaselineStore` interface)."""
        return self.entries.get((nodeid, label))

    def describe(self) -> str:
        """``base.json (run, commit 1a2b3c4 on main, dirty)`` for headers."""
        parts = [self.kind]
        if self.commit is not None:
            parts.append(f"commit {self.commit.sha[:7]} on {self.commit.branch}" + (", dirty" if self.commit.dirty else ""))
        return f"{self.source} ({', '.join(parts)})"


def load_side(path: str | os.PathLike[str], option: str = "") -> RunSide:
    """Read a run file, a baseline file or a baselines directory; errors name ``option`` and the file."""
    p = Path(path)
    prefix = f"{option}: " if option else ""
    try:
        if p.is_dir():
            return _baselines_dir(p)
        if _format_of(p).startswith("irene-baselines/"):
            return RunSide(str(path), "baselines", _flatten({p: read_baseline_file(p)}))
        run = read_run_file(p)
    except (RunFileError, BaselineError) as exc:
        raise RunFileError(f"{prefix}{exc}") from None
    entries: dict[CallKey, BaselineEntry] = {}
    limits: dict[CallKey, tuple[float, float]] = {}
    trees: dict[CallKey, EnergyTree] = {}
    for rec in run.records:
        trees[rec.key] = rec.tree
        entries[rec.key] = entry_from_tree(
            rec.tree, profile=rec.profile, features=rec.features, energy_model=rec.energy_model
        )
        limits[rec.key] = (rec.tolerance, rec.min_delta_j)
    return RunSide(str(path), "run", entries, host=run.host, commit=run.commit, limits=limits, trees=trees,
                   version=run.version, format=run.format)


def _format_of(path: Path) -> str:
    """The ``format`` field of a JSON file, ``""`` when it cannot be told (the run-file reader then says why)."""
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):  # bad text, JSON or numbers: the reader then says why
        return ""
    return str(doc.get("format", "")) if isinstance(doc, dict) else ""


def _baselines_dir(directory: Path) -> RunSide:
    files = baseline_files(directory)
    if not files:
        raise RunFileError(f"{directory}: no baseline files (*.json) in this directory")
    return RunSide(str(directory), "baselines", _flatten({p: read_baseline_file(p) for p in files}))


def _flatten(files: dict[Path, dict[str, dict[str, BaselineEntry]]]) -> dict[CallKey, BaselineEntry]:
    return {(n, lbl): e for tests in files.values() for n, labels in tests.items() for lbl, e in labels.items()}


def entry_tree(entry: BaselineEntry) -> EnergyTree:
    """A baseline entry as a predicted tree of module nodes, so the gate can compare two entries.

    The gate compares a stored entry with a predicted tree; a side read from a
    baselines directory has entries only. Its modules become children of the
    root in stored order (a repeated scope ``block#2`` becomes a second
    ``block``), which gives back exactly the entry's energies.
    """
    root = EnergyNode("", entry.root.type, "model", predicted_energy_j=entry.root.energy_j)
    for key in sorted(entry.modules, key=_repeat_order):
        module = entry.modules[key]
        root.add_child(EnergyNode(key.split("#", 1)[0], module.type, "module", predicted_energy_j=module.energy_j))
    tree = EnergyTree(
        root,
        model_name=entry.model_name,
        batch_size=int(entry.inputs.get("batch_size", 0)),
        seq_len=int(entry.inputs.get("seq_len", 0)),
    )
    tree.meta.update({k: entry.inputs[k] for k in NOTED_INPUT_KEYS if k in entry.inputs})
    return tree


def _repeat_order(key: str) -> tuple[str, int]:
    base, _, n = key.partition("#")
    return (base, int(n) if n.isdigit() else 1)


@dataclass(frozen=True)
class CallChange:
    """One call (node id + label) across the two runs."""

    nodeid: str
    label: str
    base: BaselineEntry | None
    """The call in BASE; ``None`` when only NEW has it."""
    new: BaselineEntry | None
    """The call in NEW; ``None`` when only BASE has it."""
    comparison: Comparison | None
    """The gate's verdict when both sides have the call, else ``None``."""

    @property
    def base_total_j(self) -> float | None:
        return self.base.root.energy_j if self.base is not None else None

    @property
    def new_total_j(self) -> float | None:
        return self.new.root.energy_j if self.new is not None else None

    @property
    def compared(self) -> bool:
        """Whether the gate compared the two sides (not when another profile, energy-model
        version, feature set, input size or, for resource features, machine made them)."""
        return self.comparison is not None and bool(self.comparison.deltas)

    @property
    def change(self) -> float | None:
        """Relative change of the total (0.05 = +5 %); ``None`` unless both sides have a non-zero
        total and were compared: totals of another profile or feature set are not comparable."""
        if not self.compared or self.base_total_j is None or self.new_total_j is None or self.base_total_j == 0:
            return None
        return (self.new_total_j - self.base_total_j) / self.base_total_j

    @property
    def moved(self) -> list[ModuleDelta]:
        """Modules that moved beyond the limits (renamed ones excluded), deepest first, then largest change."""
        comp = self.comparison
        if comp is None or comp.status not in ("pass", "fail"):
            return []
        out = [d for d in comp.failed_modules if d.baseline_j is not None and d.now_j is not None and d.was is None]
        return sorted(out, key=lambda d: (-_depth(d.scope), -abs((d.now_j or 0.0) - (d.baseline_j or 0.0)), d.scope))

    @property
    def added(self) -> list[ModuleDelta]:
        comp = self.comparison
        return [d for d in comp.deltas if d.baseline_j is None] if comp is not None else []

    @property
    def removed(self) -> list[ModuleDelta]:
        comp = self.comparison
        return [d for d in comp.deltas if d.now_j is None] if comp is not None else []

    @property
    def renamed(self) -> list[tuple[str, str]]:
        """``(old scope, new scope)`` of each renamed subtree's top module."""
        comp = self.comparison
        return [(r.old, r.new) for r in comp.renames] if comp is not None else []

    @property
    def costlier(self) -> bool:
        """Whether a module moved up beyond the limits or a costly one appeared: a regression,
        whatever ``--fail-on`` says (it decides the exit code, not what the change is)."""
        comp = self.comparison
        return comp is not None and any(counts_against(d.baseline_j, d.now_j, "increase") for d in comp.failed_modules)

    def fails(self, fail_on: str) -> bool:
        """Whether this call fails ``irene compare --fail-on``: ``increase`` (energy up beyond the
        limits: a module moved up or a costly module appeared) or ``any`` (any change beyond them,
        or a call on one side only)."""
        if fail_on == "none":
            return False
        if self.comparison is None:
            return fail_on == "any"
        if fail_on == "any":
            return self.comparison.status == "fail"
        return self.costlier

    def status(self, fail_on: str) -> str:
        """The call's word under ``--fail-on``: ``fail`` only when it fails that rule; a change
        beyond the limits the rule lets pass is ``costlier`` or ``cheaper``; else the comparison's."""
        if self.comparison is None:
            return "base only" if self.new is None else "new only"
        if self.fails(fail_on):
            return "fail"
        if self.comparison.status == "fail":
            return "costlier" if self.costlier else "cheaper"
        return self.comparison.status

    def verdict(self, fail_on: str) -> str:
        """:meth:`status`, with a failing call's direction: ``regression`` when it is
        :attr:`costlier`, ``fail (cheaper)`` when only ``--fail-on any`` fails a decrease."""
        status = self.status(fail_on)
        if status == "fail" and self.comparison is not None:
            return "regression" if self.costlier else "fail (cheaper)"
        return status

    def to_dict(self, fail_on: str) -> dict[str, Any]:
        """``status`` is the call's word under ``fail_on`` (:meth:`status`), as the text, the Markdown
        and the exit code read it: the raw comparison's ``fail`` also marked a cheaper call that passes."""
        return {
            "nodeid": self.nodeid,
            "label": self.label,
            "side": "both" if self.base and self.new else ("base" if self.base else "new"),
            "compared": self.compared,
            "base_total_j": self.base_total_j,
            "new_total_j": self.new_total_j,
            "change": self.change,
            "status": self.status(fail_on),
            "verdict": self.verdict(fail_on),
            "reason": self.comparison.reason if self.comparison is not None else "",
            "moved": [d.to_dict() for d in self.moved],
            "added": [d.to_dict() for d in self.added],
            "removed": [d.to_dict() for d in self.removed],
            "renamed": [{"old": o, "new": n} for o, n in self.renamed],
        }


def _depth(scope: str) -> int:
    return scope.count(".") + 1 if scope else 0


@dataclass(frozen=True)
class RunComparison:
    """Every call of BASE and NEW, compared."""

    base: RunSide
    new: RunSide
    calls: list[CallChange]
    """Calls on both sides first (NEW's order), then only in BASE, then only in NEW."""
    machine_differences: list[str]
    """How the two runs' machines differ (empty when they match or one is unknown)."""

    @property
    def both(self) -> list[CallChange]:
        return [c for c in self.calls if c.comparison is not None]

    @property
    def only_base(self) -> list[CallChange]:
        return [c for c in self.calls if c.new is None]

    @property
    def only_new(self) -> list[CallChange]:
        return [c for c in self.calls if c.base is None]

    @property
    def not_compared(self) -> list[CallChange]:
        """Calls on both sides that the gate could not compare (see :attr:`CallChange.compared`)."""
        return [c for c in self.both if not c.compared]

    @property
    def renamed_tests(self) -> list[tuple[CallChange, CallChange]]:
        """``(only in BASE, only in NEW)`` pairs that look like one renamed test (:mod:`run_notes`)."""
        from pytest_irene.compare.run_notes import renamed_tests

        return renamed_tests(self)

    @property
    def warnings(self) -> list[str]:
        """What makes this comparison weaker than it looks (:func:`run_notes.run_warnings`)."""
        from pytest_irene.compare.run_notes import run_warnings

        return run_warnings(self)

    def exit_code(self, fail_on: str) -> int:
        """1 when a call fails ``fail_on`` (see :meth:`CallChange.fails`), else 0."""
        return int(any(c.fails(fail_on) for c in self.calls))

    def to_dict(self, fail_on: str) -> dict[str, Any]:
        return {
            "base": _side_dict(self.base),
            "new": _side_dict(self.new),
            "machine_differences": list(self.machine_differences),
            "warnings": self.warnings,
            "not_compared": len(self.not_compared),
            "renamed_tests": [{"base": o.nodeid, "new": n.nodeid, "label": o.label} for o, n in self.renamed_tests],
            "calls": [c.to_dict(fail_on) for c in self.calls],
        }


def _side_dict(side: RunSide) -> dict[str, Any]:
    return {"source": side.source, "kind": side.kind, "commit": side.commit.to_dict() if side.commit else None,
            "pytest_irene": side.version or None, "format": side.format or None}


def machine_differences(base_host: dict[str, Any], new_host: dict[str, Any]) -> list[str]:
    """How two recorded machines differ; empty when either is unknown or they match."""
    if not base_host or not new_host:
        return []
    from pytest_irene.rig.runtime.fingerprint import fingerprint_differences

    return fingerprint_differences(base_host, new_host)


def machine_mismatch(differences: list[str], features: str) -> str:
    """Why a call predicted with ``features`` cannot be compared across machines, ``""`` if it can."""
    if not differences or features != "all":
        return ""
    return "the base run was made on another machine (" + "; ".join(differences) + ") and resource features depend on it"


def compare_runs(
    base: RunSide,
    new: RunSide,
    *,
    tolerance: float | None = None,
    min_delta_j: float | None = None,
    strict: bool = False,
) -> RunComparison:
    """Compare every call of ``new`` with ``base`` through the gate.

    ``tolerance``/``min_delta_j`` of ``None`` take, per call, the limits NEW's
    test ran with (a marker's tolerance) when NEW is a run file, else the
    plugin's defaults.
    """
    from pytest_irene.compare.gate import compare

    diffs = machine_differences(base.host, new.host)
    calls: list[CallChange] = []
    for key, now in new.entries.items():
        was = base.entries.get(key)
        if was is None:
            continue
        tol, delta = new.limits.get(key, (DEFAULT_TOLERANCE, DEFAULT_MIN_DELTA_J))
        why = machine_mismatch(diffs, now.features) or machine_mismatch(diffs, was.features)
        if why:
            comparison = not_compared(why, strict)
        else:
            comparison = compare(
                was,
                new.trees[key] if key in new.trees else entry_tree(now),
                tolerance=tol if tolerance is None else tolerance,
                min_delta=delta if min_delta_j is None else min_delta_j,
                profile=now.profile,
                features=now.features,
                strict=strict,
                energy_model=now.energy_model or None,
                fail_on="any",  # every move is marked; CallChange.fails applies --fail-on
            )
        calls.append(CallChange(key[0], key[1], was, now, comparison))
    calls += [CallChange(k[0], k[1], e, None, None) for k, e in base.entries.items() if k not in new.entries]
    calls += [CallChange(k[0], k[1], None, e, None) for k, e in new.entries.items() if k not in base.entries]
    return RunComparison(base, new, calls, diffs)


def not_compared(why: str, strict: bool) -> Comparison:
    """The verdict for a baseline that cannot be compared: ``skipped``, or ``fail`` under ``--irene-strict``."""
    if strict:
        return Comparison("fail", f"not compared: {why}, and --irene-strict is set")
    return Comparison("skipped", f"not compared: {why}")
