"""``irene crossvalidate``: how accurate is a strategy on a dataset (percent error per level)."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "crossvalidate",
        help="cross-validated percent errors of a strategy on measured datasets",
        description=(
            "lomo (default): leave one model out over the six paper models (others only train); "
            "seq: train on all but each model's two longest sequence lengths, test on those; "
            "batch: likewise with the largest batch size; width: train on the six paper models, test on "
            "the others (sshleifer/tiny-ctrl, hidden 16). Errors are mean percent errors per level "
            "(ml, module, model), per held-out model and on average."
        ),
        epilog="Example: irene crossvalidate calibration/datasets/irene-pc1.jsonl.gz --features all --json",
    )
    p.add_argument("datasets", nargs="+", metavar="DATASET", help="irene-tree/1 dataset file(s)")
    p.add_argument("--features", default="model", metavar="model|all", help="feature set (default: model)")
    p.add_argument("--strategy", default=None, help="tree strategy (default: the predictor's default)")
    p.add_argument("--split", default="lomo", metavar="lomo|seq|batch|width", help="how to split train and test (default: lomo)")
    p.add_argument("--seed", type=int, default=0, help="seed of the strategies that shuffle (default 0)")
    p.add_argument("--json", action="store_true", help="print exactly one JSON object instead of a table")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pytest_irene.engine.predict.crossval import SPLITS, crossvalidate
    from pytest_irene.report.tree_report import errors_table
    from pytest_irene.cli.common import FEATURE_CHOICES, check_choice, check_strategy, console, load_trees, print_json

    features = check_choice("--features", args.features, FEATURE_CHOICES)
    split = check_choice("--split", args.split, SPLITS)
    strategy = check_strategy(args.strategy)
    trees = load_trees(args.datasets)
    result = crossvalidate(trees, features=features, strategy=strategy, split=split, seed=args.seed)
    if args.json:
        # Everything that decides the numbers: the seed (end2end and stepwise shuffle) and which
        # data (hash and tree count), so two outputs are comparable or visibly not.
        from pytest_irene.engine.dataset import dataset_hash

        print_json(
            {
                "features": features,
                "strategy": strategy,
                "split": split,
                "levels": result["levels"],
                "seed": args.seed,
                "trees": len(trees),
                "datasets": [str(d) for d in args.datasets],
                "dataset_hash": dataset_hash(*args.datasets),
            }
        )
        return 0
    console().print(errors_table(result, title=f"{strategy}, {features} features, {split} split: percent error"))
    return 0
