"""``irene calibrate``: measure models on this rig, append to a dataset, train an energy model.

::

    irene calibrate --model bert-base-uncased --model gpt2 --batch-size 8 16 --seq-len 32 64 \\
        --meter emonpi:/dev/ttyAMA0,115200 --dataset calibration/datasets/my-rig.jsonl.gz \\
        -o models/my-rig.json

Every (model, batch size, sequence length) combination is one tree. Models are
built from their configurations (no weights are downloaded); ``--config
KEY=VALUE`` overrides configuration fields (e.g. a smaller model for a trial
run). The planned rig time is printed before anything runs.
"""

from __future__ import annotations

import argparse
import itertools
import json
from pathlib import Path
from typing import Any

from pytest_irene.errors import UsageError
from pytest_irene.rig.meters import METER_SPEC_HELP


def _config_value(text: str) -> tuple[str, Any]:
    key, eq, raw = text.partition("=")
    if not eq or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        value = raw
    return key, value


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "calibrate",
        help="measure models on this rig with a power meter, append to a dataset and train an energy model",
        description="Measure every distinct node of each model in isolation with a power meter (idle check "
        "first, several rounds, cool-down between), append the measured trees to an irene-tree/1 dataset and "
        "train an energy model file for this rig.",
    )
    parser.add_argument("--model", action="append", default=None, metavar="NAME",
                        help="architecture to measure (repeat for several), e.g. bert-base-uncased "
                        "(with --plan-only and no --model: the smallest plan a --prior transfer needs)")
    parser.add_argument("--batch-size", type=int, nargs="+", default=None, metavar="B", help="batch size(s)")
    parser.add_argument("--seq-len", type=int, nargs="+", default=None, metavar="S", help="sequence length(s)")
    parser.add_argument("--meter", default=None, metavar="SPEC", help=f"power meter: {METER_SPEC_HELP}")
    parser.add_argument("--dataset", default=None, metavar="OUT.jsonl[.gz]", help="dataset to append trees to")
    parser.add_argument("-o", "--output", default=None, metavar="MODEL.json",
                        help="energy model file to write (never a dataset; not needed with --no-train)")
    parser.add_argument("--prior", default=None, metavar="PROFILE|MODEL.json",
                        help="train by transfer from this profile (a few measured trees suffice; see irene train --prior)")
    parser.add_argument("--plan-only", action="store_true",
                        help="print the measurement plan and its rig time, measure nothing")
    parser.add_argument("--profile", default=None, help="profile name of this rig (default: the output file's stem)")
    parser.add_argument("--window", type=float, default=20.0, metavar="SECONDS",
                        help="seconds each node runs per round (default 20; at least --min-reports meter reports)")
    parser.add_argument("--rounds", type=int, default=5, metavar="N", help="rounds per node (default 5)")
    parser.add_argument("--cooldown", type=float, default=30.0, metavar="SECONDS",
                        help="pause between rounds (default 30)")
    parser.add_argument("--min-reports", type=int, default=10, metavar="N",
                        help="meter reports every window must span (default 10)")
    parser.add_argument("--idle-tolerance", type=float, default=0.10, metavar="FRACTION",
                        help="refuse to start above idle power by this fraction (default 0.10)")
    parser.add_argument("--idle-watts", type=float, default=None, metavar="W",
                        help="the rig's known idle power (default: judged from the idle window)")
    parser.add_argument("--idle-cpu", type=float, default=15.0, metavar="PCT",
                        help="refuse to start while the CPU is busier than this, %% (default 15)")
    parser.add_argument("--device", default="cpu", help="torch device to measure on (default cpu)")
    parser.add_argument("--config", type=_config_value, action="append", default=[], metavar="KEY=VALUE",
                        help="override a model configuration field (repeatable)")
    parser.add_argument("--no-train", action="store_true", help="only measure and append; do not train")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(func=run)


#: Meter assumed by ``--plan-only`` without ``--meter`` (its report period sets the windows).
PLAN_METER = "emonpi:/dev/ttyAMA0"


def _required(args: argparse.Namespace) -> None:
    """``--model``/``--batch-size``/``--seq-len`` go together; measuring needs the rest too."""
    given = [args.model is not None, args.batch_size is not None, args.seq_len is not None]
    if any(given) and not all(given):
        raise UsageError("--model, --batch-size and --seq-len go together: give all three")
    args.transfer_plan = args.plan_only and not any(given)
    if args.plan_only:
        if args.transfer_plan:
            from pytest_irene.engine.predict.transfer import TRANSFER_PLAN

            args.model = list(dict.fromkeys(m for m, _, _ in TRANSFER_PLAN))
            args.batch_size = sorted({b for _, b, _ in TRANSFER_PLAN})
            args.seq_len = sorted({s for _, _, s in TRANSFER_PLAN})
        args.meter = args.meter or PLAN_METER
        return
    needed = [("--model", args.model), ("--meter", args.meter), ("--dataset", args.dataset)]
    if not args.no_train:  # --no-train writes no model file
        needed.append(("-o/--output", args.output))
    for option, value in needed:
        if value is None:
            raise UsageError(f"{option} is required (only --plan-only measures nothing and needs none of them)")


#: The :class:`CalibrationSettings` field each option sets, so a refused value names the option.
SETTING_OPTIONS: dict[str, str] = {
    "window_s": "--window", "rounds": "--rounds", "cooldown_s": "--cooldown", "min_reports": "--min-reports",
    "idle_tolerance": "--idle-tolerance", "idle_power_w": "--idle-watts", "idle_cpu_pct": "--idle-cpu",
    "device": "--device", "profile": "--profile",
}


def _settings(args: argparse.Namespace, profile: str) -> Any:
    """The run's :class:`CalibrationSettings`; a refused value is a usage error naming its option."""
    from pytest_irene.rig.calibration_plan import CalibrationSettings, SettingError

    try:
        return CalibrationSettings(
            window_s=args.window,
            rounds=args.rounds,
            cooldown_s=args.cooldown,
            min_reports=args.min_reports,
            idle_tolerance=args.idle_tolerance,
            idle_power_w=args.idle_watts,
            idle_cpu_pct=args.idle_cpu,
            device=args.device,
            profile=profile,
        )
    except SettingError as exc:
        raise UsageError(f"{SETTING_OPTIONS.get(exc.setting, exc.setting)}: {exc.problem}") from None


def _overrides(config: list[tuple[str, Any]]) -> dict[str, Any]:
    """``--config KEY=VALUE`` pairs as a dict; a key given twice is refused (the last would win silently)."""
    overrides: dict[str, Any] = {}
    for key, value in config:
        if key in overrides:
            raise UsageError(f"--config: {key} given twice ({key}={overrides[key]!r} and {key}={value!r})")
        overrides[key] = value
    return overrides


def _build(name: str, overrides: dict[str, Any]) -> Any:
    """The model to measure; config overrides :func:`build_model` refuses name ``--config``."""
    from pytest_irene.engine.architectures import ConfigOverrideError, build_model, format_overrides

    try:
        return build_model(name, device="cpu", **overrides)
    except ConfigOverrideError as exc:
        raise UsageError(f"--config {format_overrides(exc.overrides)}: {name}: {exc.problem}") from None


def run(args: argparse.Namespace) -> int:
    from pytest_irene.rig.calibration import Calibrator, Target, cv_summary, format_duration, train_rig_model
    from pytest_irene.rig.meters import parse_meter_spec
    from pytest_irene.outputs import check_output_path
    from pytest_irene.rig.calibration_files import check_dataset_for_append, check_model_output

    _required(args)
    dataset = Path(args.dataset or "plan.jsonl")
    if not (dataset.name.endswith(".jsonl") or dataset.name.endswith(".jsonl.gz")):
        raise UsageError(f"--dataset: expected a .jsonl or .jsonl.gz file, got {dataset}")
    if any(b <= 0 for b in args.batch_size) or any(s <= 0 for s in args.seq_len):
        raise UsageError("--batch-size and --seq-len must be positive integers")
    if not args.plan_only:  # a path that cannot be written fails now, not after hours of measuring
        check_output_path(dataset, "--dataset")
        if not args.no_train:
            check_output_path(args.output, "-o/--output")
            check_model_output(args.output, [dataset], "-o/--output", prior=args.prior)
    output = Path(args.output or "plan.json")
    # the profile names the rig in every dataset line: the model file's stem, else (--no-train) the dataset's
    named = output if args.output or args.plan_only else Path(dataset.name.removesuffix(".gz").removesuffix(".jsonl"))
    profile = args.profile or named.name.removesuffix(".json")
    settings = _settings(args, profile)
    meter = parse_meter_spec(args.meter)
    if not args.plan_only:  # a corrupt dataset or one of another energy scope: before the models are built
        check_dataset_for_append(dataset, meter.energy_scope, "--dataset")
    if args.prior is not None and args.no_train:
        raise UsageError("--prior: it sets how the model file is trained, and --no-train trains none; drop one")
    if args.prior is not None:  # a bad prior fails now, not when training after the measurements
        from pytest_irene.engine.predict.transfer import load_prior

        load_prior(args.prior, meter.energy_scope, "--prior")

    from pytest_irene.engine.architectures import example_inputs, known_architectures

    unknown = [m for m in args.model if m not in known_architectures()]
    if unknown:
        known = ", ".join(known_architectures())
        raise UsageError(f"--model: unknown architecture(s) {', '.join(unknown)}; known: {known}")
    overrides = _overrides(args.config)
    targets = []
    for name in args.model:
        model = _build(name, overrides)
        for batch, seq in itertools.product(args.batch_size, args.seq_len):
            inputs = example_inputs(model, batch, seq, device="cpu")
            targets.append(Target(model, inputs, f"{name} b{batch} s{seq}", name, batch, seq))

    if args.plan_only:
        planner = Calibrator(meter, settings, dataset, progress=False)
        print(planner.plan([planner.prepare(t) for t in targets]).describe())
        if args.transfer_plan:
            print("irene calibrate: the smallest plan a transfer needs (one input size of an encoder and a "
                  f"decoder); measure it with --prior {args.prior or 'irene-pc1'} "
                  "(or train the dataset with irene train --prior)")
        return 0
    with Calibrator(meter, settings, dataset, progress=not args.no_progress, dataset_option="--dataset") as cal:
        try:
            trees = cal.run(targets)
        except KeyboardInterrupt:  # Ctrl-C: say what is kept and how to go on, then stop as interrupted
            print(f"irene calibrate: interrupted: {cal.kept()}; run again for the models and sizes not in it yet",
                  flush=True)
            raise
        hardware = cal.hardware()
    for warning in cal.warnings:
        print(f"irene calibrate: warning: {warning}")
    print(f"irene calibrate: {len(trees)} tree(s) appended to {dataset} "
          f"in {format_duration(sum(t.meta['calibration']['measure_s'] for t in trees))}")
    if args.no_train:
        return 0
    model_file = train_rig_model([dataset], output, profile=profile, hardware=hardware, prior=args.prior)
    print(f"irene calibrate: energy model for profile {profile!r} written to {output}")
    for line in cv_summary(model_file):
        print(f"irene calibrate: {line}")
    return 0
