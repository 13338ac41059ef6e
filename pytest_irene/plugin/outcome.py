"""A test's outcome with its wrapped calls' verdicts: pytest-memray's way, the test's own
report turns into a failure when a call failed the energy gate.

One decision, in :func:`apply_gate`: a passing test whose calls failed the gate fails with
the gate's text as its report, and so does one that skipped itself after such a call (the
summary counts that call as failed) and a fixture's teardown that made one (an error in
teardown); a test that failed anyway carries that text as a section; an ``xfail`` test
whose gate failed is the failure it expected (not one with ``raises=``: it passed, so it
fails); a passing call's notes (renamed or cheaper modules, a skipped baseline) are a section.
"""

from __future__ import annotations

import pytest

from pytest_irene.compare.records import CallRecord
from pytest_irene.errors import IreneError
from pytest_irene.report.failure import failure_text


def apply_gate(item: pytest.Item, call: pytest.CallInfo[None], report: pytest.TestReport, records: list[CallRecord]) -> None:
    """Update the call phase's ``report`` of ``item`` for its wrapped calls' ``records``."""
    if call.excinfo is not None and isinstance(call.excinfo.value, IreneError):
        report.longrepr = f"{type(call.excinfo.value).__name__}: {call.excinfo.value}"
    failed = [r for r in records if r.failed]
    if failed:
        text = failure_text(failed)
        reason = expected_failure(item) if call.excinfo is None and call.when == "call" else None
        if reason is not None:  # an xfail test whose gate failed: the failure it expected
            report.outcome = "skipped"
            report.wasxfail = reason
            report.longrepr = None
            report.sections.append(("irene energy gate", text))
        elif report.passed or (report.skipped and not hasattr(report, "wasxfail")):
            if report.skipped:
                text += "\n(the test skipped itself after these calls)"
            report.outcome = "failed"
            report.longrepr = text
            if hasattr(report, "wasxfail"):  # an XPASS of xfail(raises=...): a failure, not an xpass
                del report.wasxfail
        else:
            report.sections.append(("irene energy gate", text))
        return
    notes = [
        f"[{r.label}] {r.comparison.reason}"
        for r in records
        if r.comparison
        and (
            r.comparison.status != "pass"
            or r.comparison.renames
            or r.comparison.cheaper
            or r.comparison.legacy_baseline
        )
    ]
    if notes:
        report.sections.append(("irene", "\n".join(notes)))


def expected_failure(item: pytest.Item) -> str | None:
    """The reason of the ``xfail`` mark pytest evaluated for ``item`` when a failed energy gate
    counts as the failure it expects (no ``raises=``: the gate raises nothing; not under
    ``--runxfail``), else ``None``."""
    if item.config.option.runxfail:
        return None
    try:
        from _pytest.skipping import xfailed_key  # where pytest keeps the evaluated mark
    except ImportError:  # pragma: no cover - a pytest without it
        return None
    xfailed = item.stash.get(xfailed_key, None)
    if xfailed is None or xfailed.raises is not None:
        return None
    return xfailed.reason


__all__ = ["apply_gate", "expected_failure"]
