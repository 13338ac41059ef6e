"""``irene merge SHARD... -o RUN``: the run files of a suite split over CI jobs, as one run file."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "merge",
        help="merge the run files of one run's shards (CI matrix, pytest-split) into one run file",
        description=(
            "Read the run files that the shards of one pytest run wrote with --irene-json=PATH and write them "
            "as one run file, for irene compare, --irene-compare and irene export. Refuses shards of different "
            "commits, versions, profiles, feature modes or gate settings, and a call found in two shards with "
            "different energies."
        ),
        epilog="Example: irene merge shard-1.json shard-2.json -o run.json",
    )
    p.add_argument("runs", nargs="+", metavar="SHARD", help="run file(s) from --irene-json, one per shard")
    p.add_argument("-o", "--output", required=True, metavar="PATH", help="the merged run file (written atomically)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import sys

    from pytest_irene.compare.merge import merge_runs
    from pytest_irene.compare.runfile import read_run_file, run_file_text
    from pytest_irene.errors import UsageError
    from pytest_irene.outputs import check_not_an_input, check_output_path, same_file, write_output

    for i, path in enumerate(args.runs):  # a shard named twice is a typo for another one, which is then missing
        twin = next((earlier for earlier in args.runs[:i] if same_file(path, earlier)), None)
        if twin is not None:
            raise UsageError(f"SHARD {path}: given twice (also as {twin}); give each shard's run file once")
    check_output_path(args.output, "-o/--output", kind="run")
    check_not_an_input(args.output, args.runs, "-o/--output")  # replacing a shard would lose that shard
    merged, notes = merge_runs([(path, read_run_file(path)) for path in args.runs])
    write_output(args.output, run_file_text(merged), "-o/--output")
    for note in notes:
        print(f"irene merge: {note}", file=sys.stderr)
    print(f"irene merge: {len(args.runs)} run file(s), {len(merged.records)} call(s) written to {args.output}",
          file=sys.stderr)
    return 0
