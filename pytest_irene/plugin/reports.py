"""What a session writes at its end: the run file and the terminal summary's text.

Functions of the session's state (:class:`~pytest_irene.plugin.session.IreneSession`),
kept apart from it so the session holds the run and this module says how it is reported.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING

from pytest_irene.compare.records import CallRecord
from pytest_irene.compare.runfile import RunFile, git_commit
from pytest_irene.compare.stale import stale_note
from pytest_irene.report.failure import listed

if TYPE_CHECKING:
    from pytest_irene.plugin.session import IreneSession

__all__ = ["repeated_notes", "run_file", "summary_notes", "summary_text"]


def run_file(manager: IreneSession, records: list[CallRecord]) -> RunFile:
    """``--irene-json``: the run as a self-describing run file (machine, commit, version, settings)."""
    from pytest_irene import __version__

    s = manager.settings
    return RunFile(
        records=[_relative_baseline(r, manager.config.rootpath) for r in records],
        host=manager.host_fingerprint(),
        commit=git_commit(manager.config.rootpath),
        version=__version__,
        profile=s.profile,
        feature_mode=s.features,
        settings={
            "budget_j": s.budget_j,
            "tolerance": s.tolerance,
            "min_delta_j": s.min_delta_j,
            "fail_on": s.fail_on,
            "strict": s.strict,
            "saved": s.save,
            "price_cents_per_kwh": s.price_cents_per_kwh,
            "feature_modes": manager.feature_modes(),
        },
    )

def _relative_baseline(record: CallRecord, rootdir: Path) -> CallRecord:
    """The record with its baseline file relative to the rootdir (as ``test_file`` is), so the
    same code gives the same run file in any checkout (a laptop, a CI runner's workspace)."""
    try:
        rel = Path(record.baseline_file).relative_to(rootdir).as_posix()
    except ValueError:  # outside the rootdir, or empty: kept as it is
        return record
    return dataclasses.replace(record, baseline_file=rel) if record.baseline_file else record


def summary_notes(manager: IreneSession) -> list[str]:
    """The lines under the summary table: save errors, files written."""
    notes = list(manager.save_errors) + list(manager.report_errors)
    if manager.saved_files:
        notes.append("baselines saved: " + ", ".join(str(p) for p in manager.saved_files))
    elif manager.settings.save and manager.to_save and not manager.save_errors and not manager.pruned_files:
        notes.append("baselines unchanged")  # (pruning rewrote files: its own line says so)
    if manager.stale:
        notes.append(stale_note(manager.stale, pruned=bool(manager.pruned_files)))
    notes += ungated_notes(manager) + dropped_notes(manager) + repeated_notes(manager)
    if manager.settings.json_path is not None and not manager.report_errors and not manager.collect_only:
        notes.append(f"irene: JSON report written to {manager.settings.json_path}")
    return notes

def ungated_notes(manager: IreneSession) -> list[str]:
    """Say so when the gate compared nothing for some calls, which a passing run hides:
    baselines of another energy-model version or input size (``skipped``), or a run file
    to compare with that holds none of this run's calls."""
    comps = [r.comparison for r in manager.records if r.comparison is not None]
    skipped = [c for c in comps if c.status == "skipped"]
    notes = []
    if skipped:
        reasons = sorted({c.reason.removeprefix("not compared: ") for c in skipped})
        more = f" (and {len(reasons) - 1} other reason(s))" if len(reasons) > 1 else ""
        where = manager.settings.compare_path  # --irene-save cannot refresh a run file to compare with
        fix = (f"make {where} with this profile, energy model and feature set" if where is not None
               else "--irene-save refreshes them")
        notes.append(
            f"irene: {len(skipped)} of {len(comps)} call(s) not gated: {reasons[0]}{more}; "
            f"{fix}, --irene-strict fails such calls"
        )
    where = manager.settings.compare_path
    if where is not None and comps and all(c.status == "new" for c in comps):
        notes.append(f"irene: none of this run's {len(comps)} call(s) is in {where}: nothing was gated against it")
    base = manager.base_run
    if base is not None and base.kind == "run" and comps:
        from pytest_irene import __version__

        if base.version != __version__:  # predictions may move with the tool, not the code
            made = f"pytest-irene {base.version}" if base.version else f"an older pytest-irene ({base.format})"
            notes.append(f"irene: --irene-compare={where} was written by {made}, this is {__version__}: "
                         "a change can come from pytest-irene itself (tracing, features), not only from the code")
    return notes


def dropped_notes(manager: IreneSession) -> list[str]:
    """Say so when calls of the ``--irene-compare`` run are gone from this one: a removed or
    renamed test, or a test that no longer makes a labelled call. No module of theirs can fail,
    so a passing gate would hide them. Only tests of the files collected this session count, and
    a test that exists but was deselected or did not pass is not taken as having dropped its calls."""
    base = manager.base_run
    if base is None or base.kind != "run":
        return []
    known, passed = manager.stale_tracker.known, manager.stale_tracker.passed
    files = {nodeid.split("::", 1)[0] for nodeid in known}
    made = {(r.nodeid, r.label) for r in manager.records}
    dropped = sorted(
        f"{nodeid} [{label}]" for nodeid, label in base.entries
        if (nodeid, label) not in made and nodeid.split("::", 1)[0] in files
        and (nodeid not in known or nodeid in passed)
    )
    if not dropped:
        return []
    return [f"irene: {len(dropped)} call(s) of {manager.settings.compare_path} not made by this run (a removed or "
            f"renamed test, or a call no longer made; nothing of theirs is gated): {listed(dropped)}"]


def repeated_notes(manager: IreneSession) -> list[str]:
    """Say so when xdist ran calls on several workers (``--dist each``): the summary and the
    run file keep one record per call, and a worker that predicted another energy is named."""
    repeated = manager.repeated_calls
    if not repeated:
        return []
    differ = sorted({f"{nodeid} [{label}]" for nodeid, label, same in repeated if not same})
    line = (f"irene: {len(repeated)} call(s) also ran on another xdist worker (--dist each): "
            "the summary, the run file and the baselines keep the first of each")
    if differ:
        more = f" and {len(differ) - 5} more" if len(differ) > 5 else ""
        line += f"; predicted differently there: {', '.join(differ[:5])}{more}"
    return [line]


def summary_text(manager: IreneSession, *, width: int, markup: bool, verbosity: int) -> str | None:
    """The terminal summary; ``None`` on an xdist worker or when nothing was wrapped."""
    if manager.is_worker or (not manager.records and not manager.save_errors and not manager.stale and not manager.report_errors):
        return None
    from pytest_irene.report.terminal import render_summary

    return render_summary(
        manager.records,
        width=width,
        markup=markup,
        verbosity=verbosity,
        price_cents_per_kwh=manager.settings.price_cents_per_kwh,
        notes=summary_notes(manager),
    )
