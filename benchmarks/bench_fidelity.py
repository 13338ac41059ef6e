"""Fidelity of the live path: trace a real architecture, predict, compare with the wall meter.

For each of the six paper architectures at three input sizes of the reference
dataset (its smallest, a middle and its largest batch x sequence), the model is
built from its bundled config and traced live on the meta device (what a user's
test does), predicted with model features, and every
node is compared with the node of the same scope measured on PC1
(``calibration/datasets/irene-pc1.jsonl.gz``). Columns:

- ``live``: the bundled ``irene-pc1`` model. It was trained on these very trees,
  so this isolates what the live path adds (tracer features vs. the dataset's).
- ``dataset``: the same model on the dataset's own tree (same nodes): the fit
  error without the tracer. ``live`` close to ``dataset`` = the tracer transfers.
- ``live, held out``: a model trained without that architecture (leave one model
  out), predicting the live trace: what a user's new architecture can expect.

Errors are mean percent errors over matched nodes of each level (``ml``,
``module``) and of the root (``model``). Dataset type names of transformers
4.2.2 (``Block``, ``MultiHeadSelfAttention``) differ from today's but scopes
match, so nodes are matched by scope. A second table lists the node types where
the live prediction moves furthest from the dataset-tree prediction (the
tracer's features differ from the dataset's there).

Run from the repository root::

    python benchmarks/bench_fidelity.py [--markdown] [--profile irene-pc1]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

from common import DATASET, table

from pytest_irene.engine.architectures import ARCHITECTURES, build_model, example_inputs
from pytest_irene.engine.dataset import load_dataset
from pytest_irene.engine.predict.energy_model import EnergyModel
from pytest_irene.engine.predict.strategies import make_predictor
from pytest_irene.engine.tracing import trace
from pytest_irene.engine.tree import EnergyTree

PAPER_MODELS = ARCHITECTURES[:6]
LEVELS = ("ml", "module", "model")


def errors(predicted: EnergyTree, measured: EnergyTree) -> tuple[dict[str, float], int, int]:
    """Mean percent error per level over nodes matched by scope; (errors, matched, unmatched live nodes)."""
    truth = {n.scope: n for n in measured.walk()}
    per: dict[str, list[float]] = {lv: [] for lv in LEVELS}
    unmatched = 0
    for node in predicted.walk():
        ref = truth.get(node.scope)
        if ref is None or not ref.energy_j:
            unmatched += 1
            continue
        level = "model" if node is predicted.root else node.level
        per[level].append(100.0 * abs(node.predicted_energy_j - ref.energy_j) / ref.energy_j)
    matched = sum(len(v) for v in per.values())
    return {lv: (statistics.fmean(v) if v else float("nan")) for lv, v in per.items()}, matched, unmatched


def sizes_of(trees: list[EnergyTree], name: str) -> list[tuple[int, int]]:
    """Three measured input sizes of a model: the smallest, a middle one and the largest."""
    sizes = sorted({(t.batch_size * t.seq_len, t.batch_size, t.seq_len) for t in trees if t.model_name == name})
    picks = [sizes[0], sizes[len(sizes) // 2], sizes[-1]] if len(sizes) >= 3 else sizes
    return [(b, s) for _, b, s in picks]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="irene-pc1")
    parser.add_argument("--markdown", action="store_true")
    parser.add_argument("--top-types", type=int, default=10, help="rows of the shift table (default 10)")
    args = parser.parse_args(argv)

    t_start = time.perf_counter()
    energy_model = EnergyModel.load(args.profile)
    predictor = energy_model.predictors["model"]
    trees = load_dataset(DATASET)
    by_key = {(t.model_name, t.batch_size, t.seq_len): t for t in trees}

    rows = []
    sums: dict[str, list[float]] = {}
    shifts: dict[tuple[str, str], list[float]] = {}
    for name in PAPER_MODELS:
        held_out = make_predictor(energy_model.strategy, "model", seed=0).fit([t for t in trees if t.model_name != name])
        model = build_model(name)
        for batch, seq in sizes_of(trees, name):
            measured = by_key[(name, batch, seq)]
            live = trace(model, example_inputs(name, batch, seq), model_name=name)
            predictor.predict(live)
            e_live, matched, unmatched = errors(live, measured)
            live_j = {n.scope: n.predicted_energy_j for n in live.walk()}
            predictor.predict(measured)
            e_data, _, _ = errors(measured, measured)
            for node in measured.walk():
                if node.scope in live_j and node.energy_j:
                    shift = 100.0 * abs(live_j[node.scope] - node.predicted_energy_j) / node.energy_j
                    shifts.setdefault((name, node.type), []).append(shift)
            held_out.predict(live)
            e_held, _, _ = errors(live, measured)
            row = [name, f"{batch}x{seq}", f"{matched}/{matched + unmatched}"]
            for key, err in (("live", e_live), ("dataset", e_data), ("held", e_held)):
                for lv in LEVELS:
                    row.append(f"{err[lv]:.2f}")
                    sums.setdefault(f"{key}.{lv}", []).append(err[lv])
            rows.append(row)
    avg = ["average", "", ""] + [
        f"{statistics.fmean(sums[f'{key}.{lv}']):.2f}" for key in ("live", "dataset", "held") for lv in LEVELS
    ]
    rows.append(avg)
    headers = ["model", "BxS", "matched"] + [
        f"{what} {lv} %" for what in ("live", "dataset", "live held-out") for lv in LEVELS
    ]
    print(
        f"Live trace (meta) + predict with {energy_model.profile} ({energy_model.strategy}, model features) "
        f"vs. measured PC1 energy; {time.perf_counter() - t_start:.1f} s in all\n"
    )
    print(table(headers, rows, args.markdown, left=2))
    worst = sorted(shifts.items(), key=lambda kv: -statistics.fmean(kv[1]))[: args.top_types]
    print("\nWhere the live path moves the prediction: |live - dataset-tree prediction| / measured, mean over nodes\n")
    print(
        table(
            ["model", "type (dataset name)", "nodes", "mean shift %", "max shift %"],
            [[m, t, str(len(v)), f"{statistics.fmean(v):.2f}", f"{max(v):.2f}"] for (m, t), v in worst],
            args.markdown,
            left=2,
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
