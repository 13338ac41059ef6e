"""The terminal summary: one rich table of every wrapped call, then the failing modules.

Rendering only: the rows are computed from :class:`~pytest_irene.compare.comparison.CallRecord`
objects (the same ones every reporter gets) and the result is plain text for
pytest's terminal writer, with colour only when pytest has markup on
(``--color=no`` and non-terminals get none). ``-q`` shrinks it to one line
plus the failing modules.
"""

from __future__ import annotations

import io

from pytest_irene.compare.gate import culprits
from pytest_irene.compare.records import CallRecord
from pytest_irene.engine.tree import scope_label
from pytest_irene.report.failure import MAX_LISTED, listed, rename_list
from pytest_irene.units import (
    DEFAULT_PRICE_CENTS_PER_KWH,
    format_change,
    format_energy,
    kwh_per_million_calls,
    usd_per_million_calls,
)

_STATUS_STYLE = {"pass": "green", "fail": "bold red", "new": "cyan", "skipped": "yellow", "saved": "blue", "not saved": "bold red"}


def call_status(record: CallRecord) -> str:
    """``fail``, ``pass``, ``new``, ``skipped``, ``saved`` (baseline written this run)
    or ``not saved`` (``--irene-save`` refused its baseline file)."""
    if record.failed:
        return "fail"
    if record.save_refused:
        return "not saved"
    if record.comparison is None:
        return "saved" if record.saved else "pass"
    return record.comparison.status


def root_change(record: CallRecord) -> float | None:
    """Relative change of the whole model's energy against the baseline, if compared."""
    if record.comparison is None:
        return None
    for delta in record.comparison.deltas:
        if delta.scope == "":
            return delta.change
    return None


def costliest(record: CallRecord) -> str:
    """``scope (share)`` of the costliest innermost module (see :func:`~pytest_irene.engine.tree.innermost_modules`)."""
    nodes = record.tree.bottlenecks(1, innermost=True)
    if not nodes:
        return "-"
    node = nodes[0]
    return f"{scope_label(node.scope)} ({record.tree.share(node):.0%})"


def summary_counts(records: list[CallRecord]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for record in records:
        status = call_status(record)
        counts[status] = counts.get(status, 0) + 1
    return counts


def one_line(records: list[CallRecord]) -> str:
    counts = summary_counts(records)
    parts = [f"{n} {s}" for s, n in sorted(counts.items())]
    total = sum(r.tree.total_j or 0.0 for r in records)
    counted = f", {', '.join(parts)}" if parts else ""  # no calls (--collect-only): no stray ", ;"
    return f"irene: {len(records)} wrapped call(s){counted}; {format_energy(total)} predicted in all"


def extrapolation_lines(records: list[CallRecord]) -> list[str]:
    """One line per call whose prediction leaves the profile's training ranges (trust it less)."""
    return [
        f"extrapolates: {r.nodeid} [{r.label}]: {'; '.join(r.tree.meta['extrapolation'])}"
        for r in records
        if r.tree.meta.get("extrapolation")
    ]


#: Culprits per call in the end-of-session summary (``-v`` lists them all): a generation that
#: got longer moves every decode module, which on a 32-layer LLM is ~300 lines per call; the
#: test's failure section has the table, so the summary only names the largest and says where the rest are.
SUMMARY_CULPRITS = 5


def failing_module_lines(records: list[CallRecord], limit_per_call: int | None = None) -> list[str]:
    """One line per failing call and the innermost modules that made it fail.

    Enclosing modules (the layer, the encoder, the model) moved because their
    children did; they are counted, not listed, so the culprit stands out.
    ``limit_per_call`` keeps the costliest culprits of each call and counts the rest.
    """
    lines: list[str] = []
    for record in records:
        if not record.failed:
            continue
        head = f"{record.nodeid} [{record.label}]"
        if record.over_budget:
            lines.append(
                f"{head}: {format_energy(record.tree.total_j)} over budget {format_energy(record.budget_j)}"
            )
        comp = record.comparison
        if comp is not None and comp.status == "fail":
            mods = culprits(comp.failed_modules)
            if not mods:
                lines.append(f"{head}: {comp.reason}")
            enclosing = len(comp.failed_modules) - len(mods)
            hidden = len(mods) - limit_per_call if limit_per_call is not None and len(mods) > limit_per_call else 0
            for d in mods[: len(mods) - hidden]:
                if d.was is not None:
                    what = f"renamed from {d.was} (--irene-strict)"
                elif d.baseline_j is None:
                    what = f"added, {format_energy(d.now_j)}"
                elif d.now_j is None:
                    what = f"removed, was {format_energy(d.baseline_j)}"
                else:
                    what = f"{format_energy(d.baseline_j)} -> {format_energy(d.now_j)} ({format_change(d.change)})"
                lines.append(f"{head}: {scope_label(d.scope)} ({d.type}) {what}")
            if hidden:
                lines.append(f"{head}: ... and {hidden} more innermost module(s) (-v lists them here; all are in --irene-json)")
            if enclosing and mods:
                lines.append(f"{head}: ... and {enclosing} enclosing module(s) that moved with them")
    return lines


def renamed_module_lines(records: list[CallRecord], limit_per_call: int | None = None) -> list[str]:
    """One line per passing call whose modules were found renamed (they pass unless ``--irene-strict``),
    naming the first ``limit_per_call`` renames (``None``: all) and counting the rest."""
    return [
        f"{r.nodeid} [{r.label}]: {rename_list(r, limit_per_call)}"
        for r in records
        if not r.failed and r.comparison is not None and r.comparison.renames
    ]


def render_summary(
    records: list[CallRecord],
    *,
    width: int = 120,
    markup: bool = False,
    verbosity: int = 0,
    price_cents_per_kwh: float = DEFAULT_PRICE_CENTS_PER_KWH,
    notes: list[str] | None = None,
) -> str:
    """The whole summary as text (ANSI colour only when ``markup``)."""
    from rich import box
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    console = Console(
        file=io.StringIO(),
        width=max(width, 40),
        force_terminal=markup,
        no_color=not markup,
        color_system="standard" if markup else None,
        highlight=False,
        emoji=False,
    )
    if verbosity < 0:
        console.print(one_line(records), markup=False, soft_wrap=True)
    else:
        table = Table(box=box.SIMPLE_HEAD, pad_edge=False, expand=False)
        for name, justify in (
            ("test", "left"),
            ("label", "left"),
            ("total", "right"),
            ("vs baseline", "right"),
            ("costliest module", "left"),
            ("status", "left"),
            ("kWh /1M calls", "right"),
            (f"USD /1M @{price_cents_per_kwh:g}c", "right"),
        ):
            table.add_column(name, justify=justify, no_wrap=True)  # type: ignore[arg-type]
        for record in records:  # Text, not markup: ids like test_x[bert] or test_p[/tmp] are data
            status = call_status(record)
            total = record.tree.total_j or 0.0
            table.add_row(
                Text(record.nodeid),
                Text(record.label),
                format_energy(record.tree.total_j),
                format_change(root_change(record)),
                Text(costliest(record)),
                Text(status, style=_STATUS_STYLE.get(status, "") if markup else ""),
                f"{kwh_per_million_calls(total):.3g}",
                f"{usd_per_million_calls(total, price_cents_per_kwh):.3g}",
            )
        # never fold node ids: widen past the terminal rather than break them
        natural = console.measure(table, options=console.options.update(max_width=10_000)).maximum
        console.width = max(console.width, natural)
        console.print(table)
        console.print(one_line(records), markup=False, soft_wrap=True)
        for line in extrapolation_lines(records):
            console.print(line, markup=False, soft_wrap=True, style="yellow" if markup else None)
        reasons = sorted({r.feature_mode_reason for r in records if r.feature_mode_reason})
        for reason in reasons:
            console.print(f"feature mode: {reason}", markup=False, soft_wrap=True)
    failing = failing_module_lines(records, limit_per_call=None if verbosity > 0 else SUMMARY_CULPRITS)
    if failing:
        console.print("failing modules:", style="bold red" if markup else None, markup=False)
        for line in failing:
            console.print(f"  {line}", markup=False, soft_wrap=True)
    cheaper = [
        f"{r.nodeid} [{r.label}]: "
        + listed([scope_label(s) for s in r.comparison.cheaper], None if verbosity > 0 else MAX_LISTED)
        for r in records
        if r.comparison is not None and r.comparison.cheaper
    ]
    if cheaper:
        console.print("cheaper than the baseline (passed; --irene-save records the lower energy):", markup=False)
        for line in cheaper:
            console.print(f"  {line}", markup=False, soft_wrap=True)
    renamed = renamed_module_lines(records, None if verbosity > 0 else MAX_LISTED)  # 15,000 renamed experts: 1 MB
    if renamed:
        console.print("renamed modules (same types and energies, not failed):", markup=False)
        for line in renamed:
            console.print(f"  {line}", markup=False, soft_wrap=True)
    for note in notes or []:
        console.print(note, markup=False, soft_wrap=True, style="bold red" if markup else None)
    return console.file.getvalue()  # type: ignore[attr-defined]
