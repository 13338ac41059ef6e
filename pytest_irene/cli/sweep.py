"""``irene sweep``: predicted energy over architectures × batch sizes × sequence lengths."""

from __future__ import annotations

import argparse
import functools
import sys

from pytest_irene.errors import UsageError


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "sweep",
        help="predict energy for every architecture × batch size × sequence length",
        description=(
            "Trace every combination on the meta device, predict it, and write the energy against "
            "sequence length per batch size and per architecture (HTML charts, CSV). "
            "Compact BERT variants: --model bert-base-uncased --layers 2,4,6,8,10,12 "
            "--hidden 128,256,512,768 sweeps the 24 compact BERTs."
        ),
        epilog="Example: irene sweep --model bert-base-uncased --model distilbert-base-uncased "
        "--batch-sizes 8,16,32 --seq-lens 32,64,128,256 --html sweep.html --csv sweep.csv",
    )
    p.add_argument("--model", action="append", default=[], metavar="NAME",
                   help="bundled architecture (repeatable); ARCH[L=4,H=256] for one compact variant")
    p.add_argument("--module", action="append", default=[], metavar="PATH:FACTORY",
                   help="model factory, as for irene predict: returns a torch.nn.Module or (module, inputs), "
                   "may take batch_size/seq_len keyword arguments (repeatable)")
    p.add_argument("--batch-sizes", required=True, metavar="LIST", help="comma-separated batch sizes, e.g. 8,16,32")
    p.add_argument("--seq-lens", required=True, metavar="LIST", help="comma-separated sequence lengths, e.g. 32,64,128,256")
    p.add_argument("--layers", metavar="LIST", help="with --hidden: compact variants of each --model (layers, e.g. 2,4,6)")
    p.add_argument("--hidden", metavar="LIST", help="with --layers: hidden sizes (multiples of 64, e.g. 128,256)")
    p.add_argument("--profile", default=None, help="energy model profile or model file (default: the first bundled one)")
    p.add_argument("--device", default="meta",
                   help="device the models are traced on (default meta: no weights touched; "
                   "cpu for data-dependent code)")
    p.add_argument("--html", metavar="PATH", help="write the interactive charts to this self-contained page")
    p.add_argument("--csv", metavar="PATH", help="write one row per combination to this CSV file")
    p.set_defaults(func=run)


def build_specs(args: argparse.Namespace) -> list:
    from pytest_irene.explorer.models import ModelSpec, compact_variants, resolve_model
    from pytest_irene.explorer.params import ParameterError, parse_int_list

    if not args.model and not args.module:
        raise UsageError("give at least one --model NAME or --module PATH:FACTORY")
    if bool(args.layers) != bool(args.hidden):
        raise UsageError("--layers and --hidden go together (compact variants need both)")
    if args.layers and args.module:
        raise UsageError(
            "--layers/--hidden: compact variants are built from bundled --model architectures; a --module factory "
            "builds its own model and cannot be resized (sweep the factories without --layers/--hidden)"
        )
    specs: list[ModelSpec] = []
    try:
        if args.layers:
            layers = parse_int_list(args.layers, "--layers", maximum=128)
            hidden = parse_int_list(args.hidden, "--hidden", maximum=16384)
            for name in args.model:
                base = resolve_model(name, parameter="--model")
                if base.architecture is None or base.overrides:
                    raise UsageError(f"--layers/--hidden: {name!r} must be a bundled architecture")
                specs.extend(compact_variants(base.architecture, layers, hidden, parameter="--model"))
        else:
            specs.extend(resolve_model(name, parameter="--model") for name in args.model)
        specs.extend(ModelSpec(ref, factory=ref) for ref in args.module)
    except ParameterError as exc:
        raise UsageError(str(exc)) from None
    unique: list[ModelSpec] = []
    for s in specs:
        if s not in unique:
            unique.append(s)
    return unique


def run(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from pytest_irene.explorer.html import render_report
    from pytest_irene.outputs import check_distinct, check_output_path, write_output
    from pytest_irene.explorer.models import bundled_profiles, predict_tree
    from pytest_irene.explorer.params import MAX_BATCH_SIZE, MAX_SEQ_LEN, ParameterError, parse_int_list
    from pytest_irene.explorer.sweep import run_sweep
    from pytest_irene.cli.common import check_device_option
    from pytest_irene.engine.factories import load_factory

    try:
        batch_sizes = parse_int_list(args.batch_sizes, "--batch-sizes", maximum=MAX_BATCH_SIZE)
        seq_lens = parse_int_list(args.seq_lens, "--seq-lens", maximum=MAX_SEQ_LEN)
    except ParameterError as exc:
        raise UsageError(str(exc)) from None
    for option, path, kind in (("--csv", args.csv, "csv"), ("--html", args.html, "html")):
        if path is not None:
            check_output_path(path, option, kind=kind)
    check_distinct({"--csv": args.csv, "--html": args.html})
    device = check_device_option("--device", args.device)
    specs = build_specs(args)
    for ref in args.module:
        try:
            load_factory(ref)  # a bad reference fails before any work
        except UsageError as exc:
            raise UsageError(f"--module {exc}") from None
    profile = args.profile
    if profile is None:
        profiles = bundled_profiles()
        if not profiles:
            raise UsageError("--profile: no bundled profiles installed; give a model file")
        profile = profiles[0]
    from pytest_irene.explorer.models import energy_model

    energy_model(profile)  # a bad --profile fails before the first point, not after the progress bar starts
    total = len(specs) * len(batch_sizes) * len(seq_lens)
    console = Console(stderr=True)
    with Progress(
        TextColumn("[bold]sweep"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.description}"),
        TimeElapsedColumn(), console=console, transient=False,
    ) as progress:
        task = progress.add_task("", total=total)

        def advance(point) -> None:
            progress.update(task, advance=1, description=f"{point.model} b={point.batch_size} s={point.seq_len}")

        sweep = run_sweep(specs, batch_sizes, seq_lens, profile, on_point=advance,
                          predict=functools.partial(predict_tree, device=device))
    if args.csv:
        write_output(args.csv, sweep.to_csv(), "--csv")
        console.print(f"irene sweep: wrote {len(sweep.points)} rows to {args.csv}")
    if args.html:
        write_output(args.html, render_report([], title="pytest-irene energy sweep", sweep=sweep.to_dict()), "--html")
        console.print(f"irene sweep: wrote charts to {args.html}")
    if not args.csv and not args.html:
        sys.stdout.write(sweep.to_csv())
    return 0
