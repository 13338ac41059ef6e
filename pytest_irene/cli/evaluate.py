"""``irene evaluate``: errors of an existing energy model on a measured dataset."""

from __future__ import annotations

import argparse

from pytest_irene.errors import ModelFileError, UsageError


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "evaluate",
        help="percent errors of an energy model (profile or file) on a measured dataset",
        description=(
            "Predict every tree of the dataset with the energy model and report the mean percent "
            "error per level (ml, module, model) and model. Evaluating on the model's own training "
            "data measures the fit, not generalisation: the command says how many of the trees are "
            "training data (recognised tree by tree, whatever file they come in)."
        ),
        epilog="Example: irene evaluate my-rig.jsonl.gz --profile irene-pc1 --json",
    )
    p.add_argument("datasets", nargs="+", metavar="DATASET", help="irene-tree/1 dataset file(s)")
    p.add_argument("--profile", required=True, metavar="P", help="bundled profile name or energy model file")
    p.add_argument("--features", default="model", metavar="model|all", help="feature set (default: model)")
    p.add_argument("--json", action="store_true", help="print exactly one JSON object instead of a table")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pytest_irene.engine.predict.crossval import node_errors, summarise
    from pytest_irene.engine.dataset import dataset_hash
    from pytest_irene.engine.predict.energy_model import EnergyModel
    from pytest_irene.report.tree_report import errors_table
    from pytest_irene.cli.common import FEATURE_CHOICES, check_choice, console, load_trees, print_json

    features = check_choice("--features", args.features, FEATURE_CHOICES)
    try:
        model = EnergyModel.load(args.profile)
    except ModelFileError as exc:
        raise ModelFileError(f"--profile: {exc}") from None
    trees = load_trees(args.datasets)
    own = model.training_trees_among(trees)
    if own is None:  # a file from before tree fingerprints: only the whole file list can be recognised
        own = len(trees) if dataset_hash(*args.datasets) == model.dataset_hash else 0
    try:  # refuses measured trees of another energy scope: two different quantities
        model.predict_many(trees, features=features)
    except UsageError as exc:
        raise UsageError(f"DATASET: {exc}") from None
    levels = summarise(node_errors(trees))
    outside = sum(1 for t in trees if t.meta.get("extrapolation"))
    if args.json:
        print_json(
            {
                "profile": model.profile,
                "features": features,
                "strategy": model.strategy,
                "trees": len(trees),
                "training_data": own > 0,
                "training_trees": own,
                "levels": levels,
                "energy_scope": model.energy_scope,
                "extrapolating_trees": outside,
            }
        )
        return 0
    out = console()
    out.print(errors_table({"levels": levels}, title=f"{model.describe()}, {features} features: percent error"))
    if own:
        which = "all" if own == len(trees) else f"{own} of {len(trees)}"
        out.print(
            f"note: {which} trees are the model's own training data (their error is a fit, not a held-out error)",
            style="yellow",
        )
    if outside:
        reasons = sorted({r for t in trees for r in t.meta.get("extrapolation", [])})
        out.print(
            f"note: {outside} of {len(trees)} trees lie outside the profile's training ranges "
            f"({'; '.join(reasons[:4])}{'; ...' if len(reasons) > 4 else ''})",
            style="yellow",
        )
    return 0
