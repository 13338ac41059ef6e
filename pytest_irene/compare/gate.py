"""The regression gate: compare a predicted tree with its baseline, hold it to a budget.

Pure functions over :mod:`pytest_irene.engine.tree` and :mod:`pytest_irene.compare.baselines`
data; no pytest. Each check returns a small result (:class:`Comparison`,
:class:`BudgetCheck`) and :func:`failure_text` turns a failed call into the
readable section that is attached to the test's report.
"""

from __future__ import annotations

from dataclasses import dataclass

from pytest_irene.compare.baselines import BaselineEntry, tree_energies
from pytest_irene.compare.comparison import DEFAULT_MIN_DELTA_J, DEFAULT_TOLERANCE, Comparison, ModuleDelta
from pytest_irene.compare.records import CallRecord
from pytest_irene.engine.tree import EnergyTree
from pytest_irene.units import format_change, format_energy


def _mismatch(
    entry: BaselineEntry, tree: EnergyTree, profile: str | None, features: str | None, energy_model: str | None
) -> str:
    """Why a baseline cannot be compared with this tree, ``""`` if it can."""
    if profile is not None and entry.profile != profile:
        return f"baseline was made with profile {entry.profile!r}, this run uses {profile!r}"
    if energy_model and entry.energy_model and entry.energy_model != energy_model:
        return (
            f"baseline was made with another version of energy model {entry.profile!r} "
            f"({entry.energy_model}, now {energy_model}); refresh it with --irene-save"
        )
    if features is not None and entry.features != features:
        return f"baseline was made with {entry.features!r} features, this run uses {features!r}"
    now = {"batch_size": int(tree.batch_size), "seq_len": int(tree.seq_len)}
    if entry.inputs != now:
        was = ", ".join(f"{k}={v}" for k, v in sorted(entry.inputs.items()))
        cur = ", ".join(f"{k}={v}" for k, v in sorted(now.items()))
        return f"baseline was made with input size {was}, this call has {cur}"
    return ""


def compare(
    baseline_entry: BaselineEntry | None,
    tree: EnergyTree,
    *,
    tolerance: float = DEFAULT_TOLERANCE,
    min_delta: float = DEFAULT_MIN_DELTA_J,
    profile: str | None = None,
    features: str | None = None,
    strict: bool = False,
    energy_model: str | None = None,
) -> Comparison:
    """Compare every module of ``tree`` with the baseline.

    A module fails when its energy moved by more than ``tolerance`` (relative)
    AND by more than ``min_delta`` joules (absolute), so tiny modules whose
    few microjoules move by 10 % never trip the gate. A module that appeared or
    disappeared fails when its energy exceeds ``min_delta``. The root (scope
    ``""``) is compared like any module.

    Without a baseline the status is ``new``; with a baseline made for another
    ``profile``, ``energy_model`` version, feature set or input size it is ``skipped``. Both pass, and
    both fail when ``strict``.
    """
    if baseline_entry is None:
        if strict:
            return Comparison("fail", "no baseline for this call and --irene-strict is set (run with --irene-save)")
        return Comparison("new", "no baseline yet; run with --irene-save to record one")
    why = _mismatch(baseline_entry, tree, profile, features, energy_model)
    if why:
        if strict:
            return Comparison("fail", f"not compared: {why}, and --irene-strict is set")
        return Comparison("skipped", f"not compared: {why}")

    now = tree_energies(tree)
    was = baseline_entry.energies()
    deltas: list[ModuleDelta] = []
    for scope, cur in now.items():
        old = was.get(scope)
        if old is None:
            deltas.append(ModuleDelta(scope, cur.type, None, cur.energy_j, cur.energy_j > min_delta))
            continue
        diff = abs(cur.energy_j - old.energy_j)
        if old.energy_j == 0:
            beyond = diff > 0
        else:
            beyond = diff / abs(old.energy_j) > tolerance
        deltas.append(ModuleDelta(scope, cur.type, old.energy_j, cur.energy_j, beyond and diff > min_delta))
    for scope, old in was.items():
        if scope not in now:
            deltas.append(ModuleDelta(scope, old.type, old.energy_j, None, old.energy_j > min_delta))
    failed = [d for d in deltas if d.failed]
    if failed:
        names = ", ".join(_scope_name(d.scope) for d in culprits(failed)[:3])
        return Comparison(
            "fail",
            f"{len(failed)} module(s) changed beyond {tolerance:.1%} and {format_energy(min_delta)}, "
            f"starting at {names}",
            tuple(deltas),
        )
    return Comparison("pass", f"every module within {tolerance:.1%} (or {format_energy(min_delta)})", tuple(deltas))


def _is_ancestor(scope: str, other: str) -> bool:
    base = scope.split("#", 1)[0]
    other = other.split("#", 1)[0]
    return other != base and (base == "" or other.startswith(base + "."))


def culprits(failed: list[ModuleDelta]) -> list[ModuleDelta]:
    """The failing modules that no failing descendant explains, largest absolute change first.

    Widening one feed-forward layer also moves its layer, the encoder and the
    model; the culprit is the innermost module, and it is the one to name.
    """
    inner = [d for d in failed if not any(_is_ancestor(d.scope, o.scope) for o in failed)]
    return sorted(inner, key=lambda d: (-abs((d.now_j or 0.0) - (d.baseline_j or 0.0)), d.scope))


@dataclass(frozen=True)
class BudgetCheck:
    """The outcome of holding one predicted total to a budget."""

    budget_j: float | None
    """The budget, joules; ``None`` when none applies."""
    total_j: float
    """The predicted total, joules."""

    @property
    def over(self) -> bool:
        return self.budget_j is not None and self.total_j > self.budget_j


def check_budget(tree: EnergyTree, budget_j: float | None) -> BudgetCheck:
    """Hold the predicted total of ``tree`` to ``budget_j`` (no limit when ``None``)."""
    return BudgetCheck(budget_j, float(tree.total_j or 0.0))


# -- failure text -------------------------------------------------------------------------


def _scope_name(scope: str) -> str:
    return scope or "<model>"


def _table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> list[str]:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    fmt = lambda r: "  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))  # noqa: E731
    return [fmt(header), fmt(tuple("-" * w for w in widths)), *(fmt(r) for r in rows)]


def innermost_modules(tree: EnergyTree, n: int) -> list:
    """The ``n`` costliest modules that contain no other module (attention, feed-forward, ...).

    Containers (the encoder, a layer) are always costlier than what they hold,
    so ranking every module would only ever name the outermost ones; the
    innermost modules say where the energy goes. Falls back to any node.
    """
    inner = [
        x
        for x in tree.walk()
        if x.level == "module" and x.predicted_energy_j is not None and not any(c.level == "module" for c in x.children)
    ]
    inner.sort(key=lambda x: (-(x.predicted_energy_j or 0.0), x.scope))
    return inner[:n] or tree.bottlenecks(n)


def budget_text(record: CallRecord, n: int = 5) -> list[str]:
    """Lines explaining a budget failure: the total and the ``n`` costliest modules."""
    tree = record.tree
    nodes = innermost_modules(tree, n)
    lines = [
        f"[{record.label}] predicted {format_energy(tree.total_j)} > budget {format_energy(record.budget_j)} "
        f"(profile {record.profile}, {record.features} features)",
        f"the {len(nodes)} costliest module{'s' if len(nodes) != 1 else ''}:",
    ]
    rows = [
        (_scope_name(x.scope), x.type, format_energy(x.predicted_energy_j), f"{tree.share(x):.1%}") for x in nodes
    ]
    lines += ["  " + line for line in _table(("module", "type", "energy", "share"), rows)]
    return lines


def comparison_text(record: CallRecord) -> list[str]:
    """Lines explaining a failed comparison: the changed, added and removed modules."""
    comp = record.comparison
    assert comp is not None
    if not comp.deltas:  # --irene-strict without a comparable baseline: nothing was compared
        return [f"[{record.label}] {comp.reason}"]
    lines = [f"[{record.label}] energy regression against the baseline: {comp.reason}"]
    changed = [d for d in comp.failed_modules if d.baseline_j is not None and d.now_j is not None]
    if changed:
        rows = [
            (_scope_name(d.scope), d.type, format_energy(d.baseline_j), format_energy(d.now_j), format_change(d.change))
            for d in changed
        ]
        lines += ["  " + line for line in _table(("module", "type", "baseline", "now", "change"), rows)]
    added = [d for d in comp.deltas if d.baseline_j is None]
    removed = [d for d in comp.deltas if d.now_j is None]
    if added:
        lines.append("added modules: " + ", ".join(f"{d.scope} ({d.type}, {format_energy(d.now_j)})" for d in added))
    if removed:
        lines.append(
            "removed modules: " + ", ".join(f"{d.scope} ({d.type}, {format_energy(d.baseline_j)})" for d in removed)
        )
    return lines


def failure_text(records: list[CallRecord]) -> str:
    """The report section for a test whose wrapped calls failed the gate."""
    blocks: list[str] = []
    for record in records:
        lines: list[str] = []
        if record.over_budget:
            lines += budget_text(record)
        if record.comparison is not None and record.comparison.status == "fail":
            lines += comparison_text(record)
        if lines:
            blocks.append("\n".join(lines))
    return "\n\n".join(blocks)
