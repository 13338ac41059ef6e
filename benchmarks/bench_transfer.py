"""Generalisation: a second machine from a few measured trees, and a width never trained on.

The paper's second machine (PC2, ``calibration/datasets/irene-pc2-sample.jsonl.gz``: 64 trees
of bert-base-uncased and gpt2) stands in for "the new machine". The bundled ``irene-pc1``
profile is transferred (:func:`pytest_irene.engine.predict.transfer.transfer`) with 1, 2, 4 or
8 of its trees and evaluated on all the others; the row with exactly two trees (bert-base-uncased
and gpt2 at batch 16, sequence 128) is the target of ``REFERENCE.md``. For comparison: the
prior used as it is, and training from scratch on the same trees. Then ``crossvalidate --split
width`` on ``irene-pc1``: train on the six paper models (hidden 768), test on tiny-ctrl (hidden 16).

Usage: ``python benchmarks/bench_transfer.py [--write-results]``
"""

from __future__ import annotations

import argparse
import time

from common import DATASET, ROOT, table, write_results_section

from pytest_irene.engine.dataset import load_dataset
from pytest_irene.engine.predict.crossval import crossvalidate, node_errors, summarise
from pytest_irene.engine.predict.energy_model import EnergyModel
from pytest_irene.engine.predict.strategies import make_predictor
from pytest_irene.engine.predict.transfer import transfer

PC2 = ROOT / "calibration" / "datasets" / "irene-pc2-sample.jsonl.gz"
LEVELS = ("ml", "module", "model")
#: REFERENCE.md "Next targets", two trees: per feature set, (ML, module, model).
TARGETS = {"model": (3.0, 2.5, 2.0), "all": (0.6, 0.6, 0.6)}
#: REFERENCE.md width targets (model level; ML for model features too).
WIDTH_TARGETS = {"model": (8.0, None, 5.0), "all": (None, None, 2.0)}
#: The training trees of each row, in the order they are added (model, batch, sequence).
PLANS = {
    1: (("bert-base-uncased", 16, 128),),
    2: (("bert-base-uncased", 16, 128), ("gpt2", 16, 128)),
    4: (("bert-base-uncased", 16, 128), ("gpt2", 16, 128), ("bert-base-uncased", 8, 64), ("gpt2", 8, 64)),
    8: (
        ("bert-base-uncased", 16, 128),
        ("gpt2", 16, 128),
        ("bert-base-uncased", 8, 64),
        ("gpt2", 8, 64),
        ("bert-base-uncased", 32, 256),
        ("gpt2", 32, 256),
        ("bert-base-uncased", 24, 192),
        ("gpt2", 24, 192),
    ),
}


def errors(predictor, trees) -> dict[str, float]:
    predictor.predict_many(trees)
    return {lv: row["average"] for lv, row in summarise(node_errors(trees)).items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--write-results", action="store_true", help="replace the bench_transfer section of RESULTS.md")
    args = ap.parse_args()
    trees = load_dataset(PC2)
    prior = EnergyModel.load("irene-pc1")
    rows = []
    for n, plan in PLANS.items():
        key = {(m, b, s) for m, b, s in plan}
        train = [t for t in trees if (t.model_name, t.batch_size, t.seq_len) in key]
        test = [t for t in trees if (t.model_name, t.batch_size, t.seq_len) not in key]
        for features in ("model", "all"):
            methods = {"transfer from irene-pc1": lambda: transfer(prior.predictors[features], train).predictor}
            if n == 2:
                methods["irene-pc1 as it is"] = lambda: prior.predictors[features]
                methods["from scratch"] = lambda: make_predictor("glue", features).fit(train)
            for method, build in methods.items():
                t0 = time.perf_counter()
                predictor = build()
                fit_s = time.perf_counter() - t0
                err = errors(predictor, test)
                marks = []
                for lv, target in zip(LEVELS, TARGETS[features]):
                    ok = "" if n != 2 or not method.startswith("transfer") else (" ✓" if err[lv] <= target else " ✗")
                    marks.append(f"{err[lv]:.2f}{ok}")
                rows.append([str(n), features, method, str(len(test)), *marks, f"{fit_s:.2f}"])
    headers = ["trees", "features", "method", "test trees", "ML %", "module %", "model %", "fit s"]
    width_rows = []
    pc1 = load_dataset(DATASET)
    for features in ("model", "all"):
        levels = crossvalidate(pc1, features=features, split="width")["levels"]
        cells = []
        for lv, target in zip(LEVELS, WIDTH_TARGETS[features]):
            value = levels[lv]["average"]
            cells.append(f"{value:.2f}" + ("" if target is None else (" ✓" if value <= target else " ✗")))
        width_rows.append([features, *cells])
    body = "\n".join(
        [
            "## Generalisation: a new machine, a new width (`benchmarks/bench_transfer.py`)",
            "",
            f"`python benchmarks/bench_transfer.py --write-results` ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}).",
            "",
            "PC2 sample (64 trees of bert-base-uncased and gpt2, measured on the paper's second machine) as",
            "the new machine; the bundled `irene-pc1` as the prior; every tree not used for fitting is tested.",
            "Trees: 1 = bert b16 s128; 2 = + gpt2 b16 s128 (the target row, ✓/✗ against REFERENCE.md:",
            "model features ML ≤ 3, module ≤ 2.5, model ≤ 2; all features ≤ 0.6); 4 = + both at b8 s64;",
            "8 = + both at b32 s256 and b24 s192. The method is deterministic (no seed).",
            "",
            table(headers, rows, markdown=True),
            "",
            "All features meet the target from one tree on: the wall-energy physics transfers and only",
            "its three coefficients are refitted (PC2: rest-of-machine power 118 W against PC1's 100 W).",
            "Model features do not (about 4.5 / 3.3 / 3.4 % from two trees, against ML ≤ 3, module ≤ 2.5,",
            "model ≤ 2). What limits them: the measured PC2/PC1 ratio of a primitive drifts with the input",
            "size (Linear, MatMul, Conv1D: about 5-10 % higher relative cost at 256 tokens than at 8192),",
            "and three machine factors (floor, per flop, per byte) plus one factor per type, fitted at one",
            "input size, cannot represent that drift; more trees at other sizes do not fix it either",
            "(4 and 8 trees), because the factors stay constant in size. Tried and not kept: a size-elastic",
            "factor per type (its ratio a power of the work, fitted on the calibration leaves, ridge 0 or 1)",
            "moves the ML level 5.81 → 5.84-5.93 (1 tree), 4.48 → 4.34-4.37 (2), 4.17 → 4.29-5.07 (4) and",
            "4.13 → 3.70-3.75 (8): the drift is not a power law, so it helps with some plans and hurts others.",
            "",
            "### New width: `crossvalidate --split width` (train the six paper models, test tiny-ctrl)",
            "",
            "Targets (REFERENCE.md): model features model ≤ 5, ML ≤ 8; all features model ≤ 2.",
            "",
            table(["features", "ML %", "module %", "model %"], width_rows, markdown=True),
            "",
            "Seeds: the default `glue` strategy and the transfer are deterministic (no random order",
            "anywhere), so their spread over seeds is zero; the seed spreads of the paper's strategies",
            "are in the accuracy section.",
        ]
    )
    print(body)
    if args.write_results:
        write_results_section("transfer", body)


if __name__ == "__main__":
    main()
