"""``irene compare BASE NEW``: what changed in predicted energy between two runs (a PR against main).

Each side is a run file (``pytest --irene-json=run.json``) or a baselines
directory (``.irene/``). Per test and label: the totals and their change, the
modules that moved beyond ``--tolerance``/``--min-delta`` (deepest first: the
innermost module is the culprit), added, removed and renamed modules, and the
calls found on one side only. Exit 1 when a call regressed (``--fail-on``).
"""

from __future__ import annotations

import argparse

from pytest_irene.compare.runs import FAIL_ON, CallChange, RunComparison
from pytest_irene.engine.tree import scope_label
from pytest_irene.report.markdown import MAX_BLOCK_ROWS
from pytest_irene.units import format_change, format_energy


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "compare",
        help="compare two runs (run files or baselines directories): totals, moved modules, exit 1 on regression",
        description=(
            "Compare the predicted energy of every wrapped call in NEW with BASE. Each is a run file written by "
            "pytest --irene-json=PATH or a baselines directory such as .irene/. Modules are judged as the pytest "
            "gate judges them: beyond --tolerance AND beyond --min-delta. Exit status: 1 when a call fails "
            "--fail-on, 0 otherwise, 2 on bad input."
        ),
        epilog="Example: irene compare main-run.json pr-run.json --markdown > comment.md",
    )
    p.add_argument("base", metavar="BASE", help="run file or baselines directory of the reference (e.g. main)")
    p.add_argument("new", metavar="NEW", help="run file or baselines directory to check (e.g. the pull request)")
    p.add_argument(
        "--tolerance",
        metavar="PERCENT",
        default=None,
        help="relative change allowed per module (default: each test's own from a NEW run file, else 5%%)",
    )
    p.add_argument(
        "--min-delta",
        metavar="ENERGY",
        default=None,
        help="absolute changes below this never count, e.g. 1mJ (default: each test's own, else 1mJ)",
    )
    p.add_argument(
        "--fail-on",
        default="increase",
        metavar="none|increase|any",
        help="exit 1 on: nothing, an increase beyond the limits (default), or any change beyond them "
        "(including decreases and calls on one side only)",
    )
    p.add_argument(
        "-v", "--verbose", action="store_true",
        help="list every moved, added, removed and renamed module (default: the first 40 of each call)",
    )
    out = p.add_mutually_exclusive_group()
    out.add_argument("--markdown", action="store_true", help="print a Markdown report for a pull-request comment")
    out.add_argument("--json", action="store_true", help="print exactly one JSON object")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pytest_irene.cli.common import check_choice, print_json
    from pytest_irene.compare.runs import compare_runs, load_side
    from pytest_irene.units import parse_energy, parse_percent

    fail_on = check_choice("--fail-on", args.fail_on, FAIL_ON)
    tolerance = parse_percent(args.tolerance, "--tolerance") if args.tolerance is not None else None
    min_delta = parse_energy(args.min_delta, "--min-delta") if args.min_delta is not None else None
    base = load_side(args.base, "BASE")
    new = load_side(args.new, "NEW")
    rc = compare_runs(base, new, tolerance=tolerance, min_delta_j=min_delta)
    code = rc.exit_code(fail_on)
    if args.json:
        print_json({**rc.to_dict(fail_on), "fail_on": fail_on, "regressed": bool(code)})
    elif args.markdown:
        from pytest_irene.report.markdown import compare_markdown

        print(compare_markdown(rc, fail_on), end="")
    else:
        print("\n".join(text_lines(rc, fail_on, limit=None if args.verbose else MAX_BLOCK_ROWS)))
    return code


def text_lines(rc: RunComparison, fail_on: str, *, limit: int | None = None) -> list[str]:
    """The plain-text report: one paragraph per call, one-sided calls last, then the verdict.
    Of each call's module lines the first ``limit`` are listed (``None``: all): a change to
    every expert of a 60-layer MoE was megabytes of terminal."""
    lines = [f"BASE {rc.base.describe()}", f"NEW  {rc.new.describe()}"]
    if rc.machine_differences:
        lines.append(
            "machines differ (" + "; ".join(rc.machine_differences) + "): calls predicted with resource features "
            "are not compared; model-feature predictions do not depend on the machine"
        )
    lines += [f"warning: {w}" for w in rc.warnings]
    for call in rc.both:
        lines += [""] + _call_lines(call, fail_on, limit)
    for title, calls in (("only in BASE", rc.only_base), ("only in NEW", rc.only_new)):
        for call in calls:
            total = call.base_total_j if call.new is None else call.new_total_j
            lines.append(f"{title}: {call.nodeid} [{call.label}] ({format_energy(total)})")
    for old, new in rc.renamed_tests:
        lines.append(f"looks renamed (same energies, not compared): {old.nodeid} -> {new.nodeid} [{old.label}]")
    failing = [c for c in rc.calls if c.fails(fail_on)]
    counts = (f"{len(rc.both) - len(rc.not_compared)} compared, {len(rc.not_compared)} not compared, "
              f"{len(rc.only_base)} only in BASE, {len(rc.only_new)} only in NEW")
    lines += ["", f"{len(rc.calls)} call(s) ({counts}), {len(failing)} failing --fail-on={fail_on}"]
    return lines


def _call_lines(call: CallChange, fail_on: str, limit: int | None) -> list[str]:
    comp = call.comparison
    assert comp is not None
    verdict = call.verdict(fail_on)
    verdict = verdict.upper() if call.fails(fail_on) else verdict
    lines = [
        f"{call.nodeid} [{call.label}]: {format_energy(call.base_total_j)} -> {format_energy(call.new_total_j)} "
        f"({format_change(call.change) if call.compared else 'not compared'}) {verdict}",
        f"  {comp.reason}",
    ]
    modules = [
        f"  {scope_label(d.scope)} ({d.type}) {format_energy(d.baseline_j)} -> {format_energy(d.now_j)} "
        f"({format_change(d.change)})"
        for d in call.moved
    ]
    modules += [f"  added: {d.scope} ({d.type}, {format_energy(d.now_j)})" for d in call.added]
    modules += [f"  removed: {d.scope} ({d.type}, {format_energy(d.baseline_j)})" for d in call.removed]
    modules += [f"  renamed: {old} -> {new}" for old, new in call.renamed]
    if limit is not None and len(modules) > limit:
        modules = modules[:limit] + [f"  ... and {len(modules) - limit} more module line(s) (irene compare -v lists them all)"]
    return lines + modules
