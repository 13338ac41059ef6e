"""Markdown for CI: the session summary (GitHub step summary, ``--irene-markdown``) and ``irene compare --markdown``.

Rendering only, from call records or a :class:`~pytest_irene.compare.runs.RunComparison`.
GitHub caps what it shows: a job step summary at 1 MiB (1024k bytes), a
pull-request comment at 65536 characters. Reports are built as blocks (the
calls table first, then one block per failing call) and :func:`fit` keeps the
leading blocks that fit and says how many it left out, so a huge suite still
gives a readable, valid summary instead of an upload error.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from pytest_irene.compare.gate import culprits
from pytest_irene.compare.records import CallRecord
from pytest_irene.report.terminal import call_status, root_change
from pytest_irene.engine.tree import scope_label
from pytest_irene.units import format_change, format_energy

if TYPE_CHECKING:
    from pytest_irene.compare.runs import CallChange, RunComparison

#: GitHub's limit for a job step summary, bytes ("supports content up to a size of 1024k").
STEP_SUMMARY_LIMIT_BYTES = 1024 * 1024
#: GitHub's limit for a pull-request or issue comment body (65536 characters), less
#: room for a marker line the posting step adds to find its own comment again.
COMMENT_LIMIT_CHARS = 65536 - 256

_STATUS_ICON = {
    "pass": "✅ pass",
    "fail": "❌ fail",
    "new": "🆕 new",
    "skipped": "⚠️ skipped",
    "saved": "💾 saved",
    "not saved": "❌ not saved",
    "changed": "📉 changed",
    "base only": "only in BASE",
    "new only": "only in NEW",
}


def cell(text: object) -> str:
    """Text safe inside a Markdown table cell (pipes escaped, no line breaks)."""
    return str(text).replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def code(text: object) -> str:
    """Inline code, with backticks in ``text`` kept from closing it."""
    value = cell(text)
    return f"`` {value} ``" if "`" in value else f"`{value}`"


def table(header: tuple[str, ...], rows: Iterable[tuple[str, ...]], right: tuple[int, ...] = ()) -> list[str]:
    """A GitHub-flavoured Markdown table; columns listed in ``right`` are right-aligned."""
    align = ["---:" if i in right else "---" for i in range(len(header))]
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join(align) + " |"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return lines


def fit(blocks: list[str], limit: int, *, unit: str = "chars", where: str = "the run file (--irene-json)") -> str:
    """Join ``blocks`` (blank line between) keeping as many leading blocks as fit in ``limit``.

    ``unit`` is ``chars`` or ``bytes`` (UTF-8). When blocks are left out, a note
    says how many and where the full report is; the result never exceeds ``limit``.
    """

    def size(text: str) -> int:
        return len(text.encode("utf-8")) if unit == "bytes" else len(text)

    text = "\n\n".join(blocks) + "\n"
    if size(text) <= limit:
        return text
    kept: list[str] = []
    for i, block in enumerate(blocks):
        note = (
            f"> **Truncated:** {len(blocks) - i} of {len(blocks)} sections are not shown "
            f"(GitHub's limit is {limit} {unit}); the full report is in {where}."
        )
        candidate = "\n\n".join([*kept, block, note]) + "\n"
        if size(candidate) > limit:
            return "\n\n".join([*kept, note]) + "\n"
        kept.append(block)
    return "\n\n".join(kept) + "\n"  # pragma: no cover - the loop returns once it no longer fits


# -- the session summary --------------------------------------------------------------------


def _failing_block(record: CallRecord) -> str:
    lines = [f"#### {code(record.nodeid)} [{cell(record.label)}]"]
    if record.over_budget:
        lines.append(f"Predicted {format_energy(record.tree.total_j)} is over the budget of {format_energy(record.budget_j)}.")
    comp = record.comparison
    if comp is not None and comp.status == "fail":
        lines.append(cell(comp.reason))
        mods = culprits(comp.failed_modules)
        if mods:
            lines.append("")
            rows = [
                (
                    code(scope_label(d.scope)),
                    cell(d.type),
                    format_energy(d.baseline_j) if d.baseline_j is not None else "added",
                    format_energy(d.now_j) if d.now_j is not None else "removed",
                    f"renamed from {code(d.was)}" if d.was is not None else format_change(d.change),
                )
                for d in mods
            ]
            lines += table(("module", "type", "baseline", "now", "change"), rows, right=(2, 3, 4))
    return "\n".join(lines)


def _notes_blocks(notes: list[str] | None) -> list[str]:
    """The lines under the summary as one bullet-list block (none without notes)."""
    return ["\n".join(f"- {cell(n)}" for n in notes)] if notes else []


def session_blocks(records: list[CallRecord], notes: list[str] | None = None) -> list[str]:
    """The summary as blocks: heading and calls table, failing modules per failing call, then notes."""
    if not records:
        head = "### pytest-irene energy summary\n\nNo wrapped call ran in this session."
        return [head] + _notes_blocks(notes)
    counts: dict[str, int] = {}
    for r in records:
        counts[call_status(r)] = counts.get(call_status(r), 0) + 1
    total = sum(r.tree.total_j or 0.0 for r in records)
    head = [
        "### pytest-irene energy summary",
        "",
        f"{len(records)} wrapped call(s): " + ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
        + f"; {format_energy(total)} predicted in all.",
        "",
    ]
    rows = [
        (
            code(r.nodeid),
            cell(r.label),
            format_energy(r.tree.total_j),
            format_change(root_change(r)),
            cell(r.profile),
            _STATUS_ICON.get(call_status(r), call_status(r)),
        )
        for r in records
    ]
    blocks = ["\n".join(head + table(("test", "label", "predicted", "vs baseline", "profile", "status"), rows, right=(2, 3)))]
    failing = [r for r in records if r.failed]
    if failing:
        blocks.append("### Failing modules")
        blocks += [_failing_block(r) for r in failing]
    blocks += _notes_blocks(notes)
    return blocks


def session_markdown(records: list[CallRecord], notes: list[str] | None = None, *, limit: int = COMMENT_LIMIT_CHARS,
                     unit: str = "chars") -> str:
    """The session summary in Markdown, within ``limit`` (``unit``: ``chars`` or ``bytes``)."""
    return fit(session_blocks(records, notes), limit, unit=unit)


# -- irene compare --markdown ---------------------------------------------------------------------


def _call_block(call: CallChange) -> str:
    lines = [f"#### {code(call.nodeid)} [{cell(call.label)}]", cell(call.comparison.reason if call.comparison else "")]
    if call.moved:
        lines += ["", "Modules beyond the limits, deepest first:", ""]
        rows = [
            (code(scope_label(d.scope)), cell(d.type), format_energy(d.baseline_j), format_energy(d.now_j), format_change(d.change))
            for d in call.moved
        ]
        lines += table(("module", "type", "before", "after", "change"), rows, right=(2, 3, 4))
    for title, deltas, key in (("Added", call.added, "now_j"), ("Removed", call.removed, "baseline_j")):
        if deltas:
            lines += ["", f"{title}: " + ", ".join(f"{code(d.scope)} ({cell(d.type)}, {format_energy(getattr(d, key))})" for d in deltas)]
    if call.renamed:
        lines += ["", "Renamed: " + ", ".join(f"{code(o)} → {code(n)}" for o, n in call.renamed)]
    return "\n".join(lines)


def compare_blocks(rc: RunComparison, fail_on: str = "increase") -> list[str]:
    """``irene compare --markdown`` as blocks: header and totals table, one block per changed call, one-sided calls."""
    head = [
        "### pytest-irene energy comparison",
        "",
        f"BASE {code(rc.base.describe())} → NEW {code(rc.new.describe())}",
    ]
    if rc.machine_differences:
        head += ["", "> The runs come from different machines (" + cell("; ".join(rc.machine_differences))
                 + "): calls predicted with resource features are not compared."]
    rows = [
        (
            code(c.nodeid),
            cell(c.label),
            format_energy(c.base_total_j) if c.base_total_j is not None else "-",
            format_energy(c.new_total_j) if c.new_total_j is not None else "-",
            format_change(c.change),
            ("**regression** " if c.fails(fail_on) else "") + _STATUS_ICON.get(c.status(fail_on), c.status(fail_on)),
        )
        for c in rc.calls
    ]
    head += [""] + table(("test", "label", "before", "after", "change", "verdict"), rows, right=(2, 3, 4))
    blocks = ["\n".join(head)]
    blocks += [_call_block(c) for c in rc.both if c.moved or c.added or c.removed or c.renamed]
    for title, calls in (("Calls only in BASE", rc.only_base), ("Calls only in NEW", rc.only_new)):
        if calls:
            blocks.append(f"#### {title}\n\n" + "\n".join(f"- {code(c.nodeid)} [{cell(c.label)}]" for c in calls))
    return blocks


def compare_markdown(rc: RunComparison, fail_on: str = "increase", *, limit: int = COMMENT_LIMIT_CHARS) -> str:
    """``irene compare --markdown``: a pull-request comment within GitHub's 65536 characters."""
    return fit(compare_blocks(rc, fail_on), limit, where="the output of irene compare --json")
