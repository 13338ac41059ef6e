"""``irene export RUN... --format github-action-benchmark|bencher``: energy history charts from tools teams already run."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "export",
        help="per-call energies of run files as github-action-benchmark or Bencher (BMF) JSON",
        description=(
            "Read run files written by pytest --irene-json=PATH and print each call's predicted total "
            "(and, with --modules, every module's energy) in joules, in the JSON that "
            "github-action-benchmark (tool: customSmallerIsBetter) or Bencher (BMF, json adapter) reads."
        ),
        epilog="Example: irene export run.json --format github-action-benchmark -o energy-benchmark.json",
    )
    p.add_argument("runs", nargs="+", metavar="RUN", help="run file(s) from --irene-json (e.g. xdist or matrix shards)")
    p.add_argument("--format", required=True, metavar="github-action-benchmark|bencher", help="output format")
    p.add_argument("--modules", action="store_true", help="also export every module of every call")
    p.add_argument("-o", "--output", metavar="PATH", default=None, help="write to PATH (atomically) instead of stdout")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import json
    import sys

    from pytest_irene.cli.common import check_choice
    from pytest_irene.compare.runfile import read_run_file
    from pytest_irene.errors import UsageError
    from pytest_irene.outputs import check_not_an_input, check_output_path, write_output
    from pytest_irene.report.benchmark_json import FORMATS, bencher, github_action_benchmark, points

    fmt = check_choice("--format", args.format, FORMATS)
    if args.output:
        check_not_an_input(args.output, args.runs, "-o/--output")  # first: the more precise refusal
        check_output_path(args.output, "-o/--output", kind="export")
    pts = points(((path, read_run_file(path)) for path in args.runs), modules=args.modules)
    if not pts:  # github-action-benchmark fails on an empty array with "No benchmark result was found"
        raise UsageError(
            f"{', '.join(args.runs)}: no wrapped call in the run file(s), nothing to export "
            "(was pytest-irene disabled, or every irene() test deselected?)"
        )
    doc = github_action_benchmark(pts) if fmt == "github-action-benchmark" else bencher(pts)
    text = json.dumps(doc, indent=1, allow_nan=False) + "\n"
    if args.output:
        write_output(args.output, text, "-o/--output")
        print(f"irene export: {len(pts)} value(s) written to {args.output}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 0
