"""What a comparison of two runs should say besides its verdicts: warnings and hints.

A comparison that gated nothing looks like a clean pass ("0 failing"): the runs
hold no common call, every common call was made with another profile or feature
set, or another pytest-irene version wrote one side (a new tracer moves
predictions without any change to the code). :func:`run_warnings` names each
case so ``irene compare`` prints it in every format; :func:`renamed_tests` pairs
calls found on one side only that are most likely one test under a new name.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pytest_irene.compare.baselines import BaselineEntry
    from pytest_irene.compare.runs import CallChange, RunComparison


def renamed_tests(rc: RunComparison) -> list[tuple[CallChange, CallChange]]:
    """``(only in BASE, only in NEW)`` pairs with the same label, model, inputs and module
    energies: most likely a renamed or moved test. A hint only; they are not compared."""
    pairs: list[tuple[CallChange, CallChange]] = []
    unused = list(rc.only_new)
    for old in rc.only_base:
        match = next((c for c in unused if c.label == old.label and _same_energies(old.base, c.new)), None)
        if match is not None:
            unused.remove(match)
            pairs.append((old, match))
    return pairs


def _same_energies(a: BaselineEntry | None, b: BaselineEntry | None) -> bool:
    return a is not None and b is not None and (a.root, a.modules, a.inputs) == (b.root, b.modules, b.inputs)


def run_warnings(rc: RunComparison) -> list[str]:
    """One sentence per reason the comparison gated less than it seems to."""
    out = []
    b, n = rc.base.version, rc.new.version
    if rc.base.kind == rc.new.kind == "run" and b != n:
        said = {side: (v and f"pytest-irene {v}") or f"an {fmt or 'irene-run'} file with no version"
                for side, v, fmt in (("BASE", b, rc.base.format), ("NEW", n, rc.new.format))}
        out.append(f"BASE was written by {said['BASE']}, NEW by {said['NEW']}: a change can come from "
                   "pytest-irene itself (tracing, features), not only from the code")
    if not rc.calls:
        out.append("neither side holds a wrapped call: nothing was compared "
                   "(was pytest-irene disabled, or every irene() test deselected?)")
    elif not rc.both:
        out.append("no call is on both sides: nothing was compared (runs of another suite, or every test renamed?)")
    if skipped := rc.not_compared:
        reasons = sorted({c.comparison.reason.removeprefix("not compared: ") for c in skipped if c.comparison})
        more = f" (and {len(reasons) - 1} other reason(s))" if len(reasons) > 1 else ""
        everything = " (no call was compared at all)" if len(skipped) == len(rc.both) else ""
        out.append(f"{len(skipped)} of the {len(rc.both)} call(s) on both sides not compared, so not gated"
                   f"{everything}: {reasons[0]}{more}")
    return out
