"""``irene train``: fit an energy model file on measured datasets."""

from __future__ import annotations

import argparse
from typing import Any

from pytest_irene.errors import UsageError


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "train",
        help="train an energy model file on measured datasets",
        description=(
            "Fit the regressors of one or both feature sets on irene-tree/1 datasets, cross-validate "
            "them (errors are stored in the file) and write a versioned JSON energy model that "
            "--irene-profile, --profile and EnergyModel.load accept as a path."
        ),
        epilog="Example: irene train calibration/datasets/my-rig.jsonl.gz -o models/my-rig.json",
    )
    p.add_argument("datasets", nargs="+", metavar="DATASET", help="irene-tree/1 dataset file(s) (.jsonl or .jsonl.gz)")
    p.add_argument("-o", "--output", required=True, metavar="MODEL.json", help="energy model file to write (atomically)")
    p.add_argument(
        "--features",
        default=None,
        metavar="model|all",
        help="train only this feature set (default: both when the data has resource features, else model)",
    )
    p.add_argument("--strategy", default=None, help="tree strategy (default: the most accurate, see crossvalidate)")
    p.add_argument("--profile", default=None, metavar="NAME", help="profile name stored in the file (default: the output file's name)")
    p.add_argument("--seed", type=int, default=0, help="seed of the strategies that train with random order (default 0)")
    p.add_argument("--no-crossvalidate", action="store_true", help="skip the cross-validation whose errors the file records")
    p.add_argument(
        "--prior",
        default=None,
        metavar="PROFILE|MODEL.json",
        help="transfer calibration: keep this profile's structure and fit only what differs on the new "
        "machine (costs per flop, byte and call; rest-of-machine power) from a few measured trees",
    )
    p.set_defaults(func=run)


def _feature_sets(option: str | None, dataset_paths: list[str]) -> tuple[str, ...]:
    from pytest_irene.engine.dataset import load_dataset
    from pytest_irene.engine.tree import RESOURCE_FEATURES
    from pytest_irene.cli.common import FEATURE_CHOICES, check_choice

    if option is not None:
        return (check_choice("--features", option, FEATURE_CHOICES),)
    trees = load_dataset(*dataset_paths)
    has_resources = bool(trees) and all(all(f in t.root.features for f in RESOURCE_FEATURES) for t in trees)
    return ("model", "all") if has_resources else ("model",)


def run(args: argparse.Namespace) -> int:

    from pytest_irene.cli.common import check_strategy
    from pytest_irene.engine.predict.training import train_energy_model

    strategy = check_strategy(args.strategy)
    from pytest_irene.outputs import check_output_path

    from pytest_irene.rig.calibration_files import check_model_output

    output = check_output_path(args.output, "-o/--output")  # before training: minutes must not end in a refused write
    check_model_output(output, args.datasets, "-o/--output", prior=args.prior)  # never over a dataset or another kind of file
    profile = args.profile or output.stem
    if not profile:
        raise UsageError("--profile: expected a non-empty name")
    if args.prior is not None:
        return _run_transfer(args, output, profile)
    sets = _feature_sets(args.features, args.datasets)
    model = train_energy_model(
        args.datasets,
        profile=profile,
        feature_sets=sets,
        strategy=strategy,
        seed=args.seed,
        crossvalidate=not args.no_crossvalidate,
    )
    _save_and_summarise(model, output)
    return 0


def _run_transfer(args: argparse.Namespace, output: Any, profile: str) -> int:
    from pytest_irene.cli.common import FEATURE_CHOICES, check_choice, console
    from pytest_irene.engine.predict.transfer import transfer_energy_model


    if args.strategy is not None:
        raise UsageError("--strategy: a transferred model keeps its prior's strategy; drop --strategy or --prior")
    from pytest_irene.engine.predict.energy_model import EnergyModel
    from pytest_irene.errors import ModelFileError

    sets = None if args.features is None else [check_choice("--features", args.features, FEATURE_CHOICES)]
    try:
        EnergyModel.load(args.prior)  # a bad prior named as the option the user typed
    except ModelFileError as exc:
        raise ModelFileError(f"--prior: {exc}") from None
    model = transfer_energy_model(
        args.datasets, prior=args.prior, profile=profile, feature_sets=sets, crossvalidate=not args.no_crossvalidate
    )
    out = console()
    info = model.hyper_parameters["transfer"]
    for name in model.feature_sets:
        used = info["used"][name]
        out.print(
            f"{name} features: transferred from {info['prior']} with {used['trees']} tree(s), "
            f"{used['signatures']} distinct node signature(s)"
        )
    _save_and_summarise(model, output)
    return 0


def _save_and_summarise(model: Any, output: Any) -> None:
    from pytest_irene.cli.common import console
    from pytest_irene.report.tree_report import errors_table

    try:
        model.save(output)
    except OSError as exc:
        raise UsageError(f"-o/--output: cannot write {output}: {exc.strerror or exc}") from None
    out = console()
    for name in model.feature_sets:
        cv = model.cv_errors.get(name)
        if cv and cv.get("levels"):
            out.print(errors_table(cv, title=f"{name} features: {cv['split']} cross-validation, percent error"))
        elif cv:
            out.print(f"{name} features: {cv.get('note', 'no cross-validation')}")
    out.print(
        f"wrote {output}: profile {model.profile}, strategy {model.strategy}, "
        f"feature sets {', '.join(model.feature_sets)}, {model.dataset_info.get('trees')} trees ({model.dataset_hash[:19]}...)"
    )
