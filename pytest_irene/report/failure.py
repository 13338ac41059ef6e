"""The failure section of a test whose wrapped calls failed the gate.

Rendering only: the gate (:mod:`pytest_irene.compare.gate`) has already judged
each call into a :class:`~pytest_irene.compare.comparison.CallRecord`; this turns
the failed ones into the plain-text section pytest shows under the test, as
pytest-memray turns a limit into a readable failure.
"""

from __future__ import annotations

from pytest_irene.compare.comparison import counts_against
from pytest_irene.compare.records import CallRecord
from pytest_irene.engine.tree import scope_label
from pytest_irene.units import format_change, format_energy

#: Rows of the changed-modules table: a 32-layer model moves hundreds of modules
#: at once, and the failing-modules summary already names the deepest ones.
MAX_TABLE_ROWS = 30
#: Modules named per "added"/"removed"/"renamed" line: doubling a 60-layer MoE's experts adds
#: 78,000 modules, and one line naming them all was 4 MB of failure section.
MAX_LISTED = 20


def text_table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> list[str]:
    """Lines of a plain table: the first two columns left-aligned (names), the others right (numbers)."""
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

    def fmt(row: tuple[str, ...]) -> str:
        return "  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths)))

    return [fmt(header), fmt(tuple("-" * w for w in widths)), *(fmt(r) for r in rows)]


def budget_text(record: CallRecord, n: int = 5) -> list[str]:
    """Lines explaining a budget failure: the total and the ``n`` costliest innermost modules."""
    tree = record.tree
    nodes = tree.bottlenecks(n, innermost=True)
    lines = [
        f"[{record.label}] predicted {format_energy(tree.total_j)} > budget {format_energy(record.budget_j)} "
        f"(profile {record.profile}, {record.features} features)",
        f"the {len(nodes)} costliest module{'s' if len(nodes) != 1 else ''}:",
    ]
    rows = [(scope_label(x.scope), x.type, format_energy(x.energy_of()), f"{tree.share(x):.1%}") for x in nodes]
    lines += ["  " + line for line in text_table(("module", "type", "energy", "share"), rows)]
    return lines


def comparison_text(record: CallRecord) -> list[str]:
    """Lines explaining a failed comparison: the changed, added, removed and renamed modules."""
    comp = record.comparison
    assert comp is not None
    if not comp.deltas:  # --irene-strict without a comparable baseline: nothing was compared
        return [f"[{record.label}] {comp.reason}"]
    grew = any(counts_against(d.baseline_j, d.now_j, "increase") for d in comp.failed_modules)
    what = "energy regression" if grew else ("energy change" if comp.failed_modules else "energy gate")
    lines = [f"[{record.label}] {what} against the baseline: {comp.reason}"]
    changed = [d for d in comp.failed_modules if d.baseline_j is not None and d.now_j is not None and d.was is None]
    if changed:
        rows = [
            (scope_label(d.scope), d.type, format_energy(d.baseline_j), format_energy(d.now_j), format_change(d.change))
            for d in changed[:MAX_TABLE_ROWS]
        ]
        lines += ["  " + line for line in text_table(("module", "type", "baseline", "now", "change"), rows)]
        if len(changed) > MAX_TABLE_ROWS:
            lines.append(f"  ... and {len(changed) - MAX_TABLE_ROWS} more module(s) that moved (all are in --irene-json)")
    added = [d for d in comp.deltas if d.baseline_j is None]
    removed = [d for d in comp.deltas if d.now_j is None]
    if added:
        lines.append("added modules: " + listed([f"{d.scope} ({d.type}, {format_energy(d.now_j)})" for d in added]))
    if removed:
        lines.append(
            "removed modules: " + listed([f"{d.scope} ({d.type}, {format_energy(d.baseline_j)})" for d in removed])
        )
    if comp.renames:
        lines.append("renamed modules: " + rename_list(record))
    return lines


def listed(items: list[str], limit: int | None = MAX_LISTED) -> str:
    """The first ``limit`` items, comma-separated, and how many more there are (``None``: all of them)."""
    if limit is None or len(items) <= limit:
        return ", ".join(items)
    return ", ".join(items[:limit]) + f" ... and {len(items) - limit} more (all are in --irene-json)"


def rename_list(record: CallRecord, limit: int | None = MAX_LISTED) -> str:
    """``old -> new (Type, energy)`` for the renamed subtrees of the call, comma-separated, the first
    ``limit`` of them (``None``: all) and how many more."""
    comp = record.comparison
    renames = comp.renames if comp is not None else ()
    return listed([f"{r.old} -> {r.new} ({r.type}, {format_energy(r.energy_j)})" for r in renames], limit)


def extrapolation_note(record: CallRecord) -> list[str]:
    """The line saying the call's prediction leaves the profile's training ranges, if it does: the
    failure is read on its own (``-q`` has no summary lines, CI logs are read from the failure up),
    and a change predicted outside the data is less certain than one inside it."""
    where = record.tree.meta.get("extrapolation") if isinstance(record.tree.meta, dict) else None
    if not where:
        return []
    return [f"[{record.label}] extrapolates (trust the figures less): {'; '.join(where)}"]


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
            lines += extrapolation_note(record)
            blocks.append("\n".join(lines))
    return "\n\n".join(blocks)
