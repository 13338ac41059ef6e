"""Markdown for CI: the session summary (GitHub step summary, ``--irene-markdown``) and ``irene compare --markdown``.

Rendering only, from call records or a :class:`~pytest_irene.compare.runs.RunComparison`.
GitHub caps what it shows: a job step summary at 1 MiB (1024k bytes), a
pull-request comment at 65536 characters. Reports are built as blocks (the
calls table first, then one block per failing call) and :func:`fit` keeps the
leading blocks that fit and says how many it left out, so a huge suite still
gives a readable, valid summary instead of an upload error.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
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

#: Module rows (and names per added/removed/renamed line) of one call's block: a change that
#: moves every expert of a 60-layer MoE has 16,000 culprits, and a block that long never fit a
#: comment, so :func:`fit` dropped it whole and the report named no module at all.
MAX_BLOCK_ROWS = 40

_STATUS_ICON = {
    "pass": "✅ pass",
    "fail": "❌ fail",
    "new": "🆕 new",
    "skipped": "⚠️ skipped",
    "saved": "💾 saved",
    "not saved": "❌ not saved",
    "costlier": "📈 costlier",
    "cheaper": "📉 cheaper",
    "regression": "❌ **regression**",
    "fail (cheaper)": "❌ fail (📉 cheaper)",
    "base only": "only in BASE",
    "new only": "only in NEW",
}


def _icon(word: str) -> str:
    """A status word with its icon (``❌ fail``); a word without one as it is."""
    return _STATUS_ICON.get(word, word)


def cell(text: object) -> str:
    """Text safe inside a Markdown table cell, heading or list item.

    Pipes are escaped (they would end the cell), line breaks become spaces (they
    would end the table), and ``<``, ``>`` and ``&`` become HTML entities: a test id
    or label holding ``<!--`` or ``<details>`` would otherwise hide the rest of a
    pull-request comment. Emphasis, code and link characters (``*_~`[]``) are
    backslash-escaped, so a label renders as written, and ``@`` is followed by a zero-width
    space: a label such as ``@team`` must not notify anyone from every PR comment (GitHub finds
    mentions in the rendered text, where an entity such as ``&#64;`` is an ``@`` again).
    """
    value = str(text).replace("\\", "\\\\").replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    value = _MARKDOWN_SPECIAL.sub(r"\\\g<0>", value).replace("@", "@\u200b")
    return _one_line(value).replace("|", "\\|")


#: Characters that start emphasis, strikethrough, code spans or links in GitHub-flavoured Markdown.
_MARKDOWN_SPECIAL = re.compile(r"[*_~`\[\]]")


def _one_line(text: str) -> str:
    return text.replace("\r\n", " ").replace("\r", " ").replace("\n", " ")


def code(text: object, *, in_table: bool = True) -> str:
    """Inline code that survives any text: test ids with backticks, pipes, ``<``, backslashes.

    Inside a code span HTML and backslash escapes are literal, so only the pipe is
    escaped (GitHub's tables take ``\\|`` inside code as a pipe) and the fence is one
    backtick longer than the longest run of backticks in the text. Outside a table
    (``in_table=False``: headings, list items) the pipe needs no escape and gets none.
    """
    value = _one_line(str(text))
    value = value.replace("|", "\\|") if in_table else value
    longest = max((len(run) for run in re.findall(r"`+", value)), default=0)
    fence = "`" * (longest + 1)
    pad = " " if longest or (value.startswith(" ") and value.endswith(" ")) else ""  # one is stripped
    return f"{fence}{pad}{value}{pad}{fence}"


def table(header: tuple[str, ...], rows: Iterable[tuple[str, ...]], right: tuple[int, ...] = ()) -> list[str]:
    """A GitHub-flavoured Markdown table; columns listed in ``right`` are right-aligned."""
    align = ["---:" if i in right else "---" for i in range(len(header))]
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join(align) + " |"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return lines


def _size(text: str, unit: str) -> int:
    return len(text.encode("utf-8")) if unit == "bytes" else len(text)


def fit(blocks: list[str], limit: int, *, unit: str = "chars", where: str = "the run file (--irene-json)",
        report_limit: int | None = None) -> str:
    """Join ``blocks`` (blank line between) keeping as many leading blocks as fit in ``limit``.

    ``unit`` is ``chars`` or ``bytes`` (UTF-8). When blocks are left out, a note
    says how many, the size the whole report is held to (``report_limit``, default
    ``limit``: the blocks may get only what a table above them left) and where the
    full report is. The result never exceeds ``limit``: with no room even for the
    note it is ``""``, since GitHub refuses a whole step summary that is over its limit.
    """
    text = "\n\n".join(blocks) + "\n"
    if _size(text, unit) <= limit:
        return text
    kept: list[str] = []
    for i, block in enumerate(blocks):
        note = (
            f"> **Truncated:** {len(blocks) - i} of {len(blocks)} sections are not shown "
            f"(the report is cut to {report_limit or limit} {unit} for GitHub); the full report is in {where}."
        )
        candidate = "\n\n".join([*kept, block, note]) + "\n"
        if _size(candidate, unit) > limit:
            out = "\n\n".join([*kept, note]) + "\n"
            return out if _size(out, unit) <= limit else ("\n\n".join(kept) + "\n" if kept else "")
        kept.append(block)
    return "\n\n".join(kept) + "\n"  # pragma: no cover - the loop returns once it no longer fits


@dataclass(frozen=True)
class CallsTable:
    """The calls table of a report, kept as rows so a suite too big for GitHub's limit
    still gets a table: the rows that matter (failing, changed, new) first, cut to fit."""

    head: list[str]
    """Lines above the table (heading, counts)."""
    header: tuple[str, ...]
    rows: list[tuple[str, ...]]
    right: tuple[int, ...]
    rank: list[int]
    """Per row, how much it matters: 0 (failing) first; rows of equal rank keep their order."""

    def render(self, rows: list[tuple[str, ...]] | None = None, note: str = "") -> str:
        lines = self.head + table(self.header, self.rows if rows is None else rows, self.right)
        return "\n".join(lines + (["", note] if note else []))

    def cut(self, limit: int, unit: str, where: str, report_limit: int | None = None) -> str:
        """The table within ``limit``: most important rows first, as many as fit, and a line
        saying how many rows were left out (``""`` when not even the head fits); the note
        names ``report_limit`` (default ``limit``), the size the whole report is held to."""
        order = sorted(range(len(self.rows)), key=lambda i: (self.rank[i], i))

        def attempt(n: int) -> str:
            note = (
                f"> **Truncated:** {len(self.rows) - n} of {len(self.rows)} calls are not listed "
                f"(the report is cut to {report_limit or limit} {unit} for GitHub; failing and changed calls are "
                "listed first); "
                f"the full report is in {where}."
            )
            return self.render([self.rows[i] for i in order[:n]], note)

        low, high = 0, len(self.rows)  # the largest n whose text fits: binary search
        if _size(attempt(0), unit) > limit:
            return ""
        while low < high:
            mid = (low + high + 1) // 2
            if _size(attempt(mid), unit) <= limit:
                low = mid
            else:
                high = mid - 1
        return attempt(low)


def fit_report(first: CallsTable, rest: list[str], limit: int, *, unit: str, where: str) -> str:
    """``first`` (the calls table) and the ``rest`` blocks within ``limit``.

    When everything fits it is one plain report. Otherwise the table is cut to at
    most half the limit (so the failing modules still get room) or to what is left
    after them, and the rest is fitted after it with :func:`fit`.
    """
    whole = "\n\n".join([first.render(), *rest]) + "\n"
    if _size(whole, unit) <= limit:
        return whole
    rest_size = _size("\n\n".join(rest) + "\n\n", unit) if rest else 0
    budget = max(limit - rest_size, limit // 2)
    head = first.cut(budget - 1, unit, where, limit) if _size(first.render() + "\n", unit) > budget else first.render()
    if not head:  # not even the table's heading fits: the note alone says where the report is
        return fit([first.render(), *rest], limit, unit=unit, where=where)
    room = limit - _size(head + "\n\n", unit)
    tail = fit(rest, room, unit=unit, where=where, report_limit=limit) if rest and room > 0 else ""
    return head + ("\n\n" + tail if tail else "\n")


# -- the session summary --------------------------------------------------------------------

#: Which rows a cut table keeps first: failing, then changed or not compared, then new.
_RANK = {"fail": 0, "not saved": 0, "costlier": 1, "cheaper": 1, "skipped": 1, "base only": 1, "new only": 1,
         "new": 2}
RUN_FILE = "the run file (--irene-json)"
COMPARE_JSON = "the output of irene compare --json"


def _failing_block(record: CallRecord) -> str:
    lines = [f"#### {code(record.nodeid, in_table=False)} [{cell(record.label)}]"]
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
                for d in mods[:MAX_BLOCK_ROWS]
            ]
            lines += table(("module", "type", "baseline", "now", "change"), rows, right=(2, 3, 4))
            lines += _more_rows(len(mods), "innermost module(s) that moved", RUN_FILE)
    return "\n".join(lines)


def _more_rows(total: int, what: str, where: str) -> list[str]:
    """The line under a table cut to :data:`MAX_BLOCK_ROWS` rows, saying how many were left out."""
    if total <= MAX_BLOCK_ROWS:
        return []
    return ["", f"… and {total - MAX_BLOCK_ROWS} more {what}; all are in {where}."]


def _names(shown: list[str], total: int) -> str:
    """``shown`` (the first of ``total`` names, at most :data:`MAX_BLOCK_ROWS`), comma-separated, and how many more."""
    more = f" … and {total - len(shown)} more" if total > len(shown) else ""
    return ", ".join(shown) + more


def _notes_blocks(notes: list[str] | None) -> list[str]:
    """The lines under the summary as one bullet-list block (none without notes)."""
    return ["\n".join(f"- {cell(n)}" for n in notes)] if notes else []


def session_table(records: list[CallRecord]) -> CallsTable:
    """The heading, the counts and one row per wrapped call."""
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
            _icon(call_status(r)),
        )
        for r in records
    ]
    rank = [_RANK.get(call_status(r), 3) for r in records]
    return CallsTable(head, ("test", "label", "predicted", "vs baseline", "profile", "status"), rows, (2, 3), rank)


def _session_rest(records: list[CallRecord], notes: list[str] | None) -> list[str]:
    failing = [r for r in records if r.failed]
    blocks = ["### Failing modules", *(_failing_block(r) for r in failing)] if failing else []
    return blocks + _notes_blocks(notes)


def session_blocks(records: list[CallRecord], notes: list[str] | None = None) -> list[str]:
    """The summary as blocks: heading and calls table, failing modules per failing call, then notes."""
    if not records:
        head = "### pytest-irene energy summary\n\nNo wrapped call ran in this session."
        return [head] + _notes_blocks(notes)
    return [session_table(records).render(), *_session_rest(records, notes)]


def session_markdown(records: list[CallRecord], notes: list[str] | None = None, *, limit: int = COMMENT_LIMIT_CHARS,
                     unit: str = "chars", where: str = RUN_FILE) -> str:
    """The session summary in Markdown, within ``limit`` (``unit``: ``chars`` or ``bytes``);
    ``where`` says where the full report is when something is left out."""
    if not records:
        return fit(session_blocks(records, notes), limit, unit=unit, where=where)
    return fit_report(session_table(records), _session_rest(records, notes), limit, unit=unit, where=where)


# -- irene compare --markdown ---------------------------------------------------------------------


def _call_block(call: CallChange) -> str:
    lines = [f"#### {code(call.nodeid, in_table=False)} [{cell(call.label)}]",
             cell(call.comparison.reason if call.comparison else "")]
    moved = call.moved
    if moved:
        lines += ["", "Modules beyond the limits, deepest first:", ""]
        rows = [
            (code(scope_label(d.scope)), cell(d.type), format_energy(d.baseline_j), format_energy(d.now_j), format_change(d.change))
            for d in moved[:MAX_BLOCK_ROWS]
        ]
        lines += table(("module", "type", "before", "after", "change"), rows, right=(2, 3, 4))
        lines += _more_rows(len(moved), "module(s) beyond the limits", COMPARE_JSON)
    for title, deltas, key in (("Added", call.added, "now_j"), ("Removed", call.removed, "baseline_j")):
        if deltas:
            lines += ["", f"{title}: " + _names([
                f"{code(d.scope, in_table=False)} ({cell(d.type)}, {format_energy(getattr(d, key))})"
                for d in deltas[:MAX_BLOCK_ROWS]], len(deltas))]
    if call.renamed:
        lines += ["", "Renamed: " + _names([f"{code(o, in_table=False)} → {code(n, in_table=False)}"
                                            for o, n in call.renamed[:MAX_BLOCK_ROWS]], len(call.renamed))]
    return "\n".join(lines)


def compare_table(rc: RunComparison, fail_on: str = "increase") -> CallsTable:
    """The header (both sides, warnings) and one row per call of either side."""
    head = [
        "### pytest-irene energy comparison",
        "",
        f"BASE {code(rc.base.describe(), in_table=False)} → NEW {code(rc.new.describe(), in_table=False)}",
    ]
    if rc.machine_differences:
        head += ["", "> The runs come from different machines (" + cell("; ".join(rc.machine_differences))
                 + "): calls predicted with resource features are not compared."]
    head += [line for w in rc.warnings for line in ("", f"> ⚠️ **Warning:** {cell(w)}.")]
    head.append("")
    rows = [
        (
            code(c.nodeid),
            cell(c.label),
            format_energy(c.base_total_j) if c.base_total_j is not None else "-",
            format_energy(c.new_total_j) if c.new_total_j is not None else "-",
            format_change(c.change) if c.compared or c.comparison is None else "not compared",
            _icon(c.verdict(fail_on)),
        )
        for c in rc.calls
    ]
    rank = [0 if c.fails(fail_on) else _RANK.get(c.status(fail_on), 3) for c in rc.calls]
    return CallsTable(head, ("test", "label", "before", "after", "change", "verdict"), rows, (2, 3, 4), rank)


def _compare_rest(rc: RunComparison) -> list[str]:
    blocks = [_call_block(c) for c in rc.both if c.moved or c.added or c.removed or c.renamed]
    skipped = rc.not_compared
    if skipped:
        blocks.append("#### Calls not compared\n\n" + "\n".join(
            f"- {code(c.nodeid, in_table=False)} [{cell(c.label)}]: {cell(c.comparison.reason if c.comparison else '')}"
            for c in skipped))
    renamed = rc.renamed_tests
    if renamed:
        blocks.append("#### Tests that look renamed (same energies, not compared)\n\n" + "\n".join(
            f"- {code(o.nodeid, in_table=False)} → {code(n.nodeid, in_table=False)} [{cell(o.label)}]" for o, n in renamed))
    for title, calls in (("Calls only in BASE", rc.only_base), ("Calls only in NEW", rc.only_new)):
        if calls:
            blocks.append(f"#### {title}\n\n" + "\n".join(f"- {code(c.nodeid, in_table=False)} [{cell(c.label)}]" for c in calls))
    return blocks


def compare_blocks(rc: RunComparison, fail_on: str = "increase") -> list[str]:
    """``irene compare --markdown`` as blocks: header and totals table, one block per changed call, one-sided calls."""
    return [compare_table(rc, fail_on).render(), *_compare_rest(rc)]


def compare_markdown(rc: RunComparison, fail_on: str = "increase", *, limit: int = COMMENT_LIMIT_CHARS) -> str:
    """``irene compare --markdown``: a pull-request comment within GitHub's 65536 characters."""
    return fit_report(compare_table(rc, fail_on), _compare_rest(rc), limit, unit="chars", where=COMPARE_JSON)
