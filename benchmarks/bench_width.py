"""Width: how the bundled profile scales between hidden sizes, and where the per-call floor rules.

1. One BERT encoder layer (``BertLayer``) at batch 8, sequence 128, hidden 768 and hidden 4096
   (heads = hidden/64, FFN = 4·hidden), traced on the meta device and predicted with
   ``irene-pc1`` (model features). The predicted energy ratio 4096/768 should lie in the band
   between the ratio of bytes and the ratio of flops (energy is per-flop plus per-byte costs
   plus a floor, and the floor only pulls the ratio toward 1), per layer and per primitive type.
2. The floor-dominated regime per primitive on PC1 (``irene-pc1.jsonl.gz``, every model
   including tiny-ctrl): the smallest measured energy of each type (the per-call floor) and
   the bytes moved where a per-byte fit through the floor doubles it (below that size a
   call costs mostly its floor, so a change of the work there barely moves the energy).

Usage: ``python benchmarks/bench_width.py [--write-results]``
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from common import DATASET, table, write_results_section

from pytest_irene.engine.architectures import build_model, example_inputs
from pytest_irene.engine.dataset import load_dataset
from pytest_irene.engine.predict.energy_model import EnergyModel
from pytest_irene.engine.tracing import trace

HIDDEN = (768, 4096)
BATCH, SEQ = 8, 128


def layer_tree(hidden: int):
    model = build_model(
        "bert-base-uncased",
        num_hidden_layers=1,
        hidden_size=hidden,
        num_attention_heads=hidden // 64,
        intermediate_size=4 * hidden,
    )
    tree = trace(model, example_inputs(model, BATCH, SEQ), device="meta", model_name=f"bert h{hidden}")
    EnergyModel.load("irene-pc1").predict(tree)
    return tree


def ratio_rows() -> list[list[str]]:
    small, large = (layer_tree(h) for h in HIDDEN)

    def totals(tree, level_type):
        out: dict[str, list[float]] = {}
        for node in tree.walk():
            key = level_type(node)
            if key is None:
                continue
            acc = out.setdefault(key, [0.0, 0.0, 0.0])
            acc[0] += node.features["flops"]
            acc[1] += node.features["mem_bytes"]
            acc[2] += node.predicted_energy_j
        return out

    def key(node):
        if node.type == "BertLayer":
            return "BertLayer (whole layer)"
        return f"{node.type} (all in the layer)" if not node.children and ".layer.0." in node.scope else None

    a, b = totals(small, key), totals(large, key)
    rows = []
    for name in sorted(a, key=lambda k: (not k.startswith("BertLayer"), k)):
        if name not in b:
            continue
        rf, rb, re = (b[name][i] / a[name][i] if a[name][i] else float("nan") for i in range(3))
        lo, hi = min(rf, rb), max(rf, rb)
        ok = lo * 0.9 <= re <= hi * 1.1 if np.isfinite(lo) else False
        rows.append([name, f"{rf:.1f}", f"{rb:.1f}", f"{re:.1f}", "✓" if ok else "✗"])
    return rows


def floor_rows() -> list[list[str]]:
    leaves: dict[str, list[tuple[float, float]]] = {}
    for tree in load_dataset(DATASET):
        for node in tree.walk():
            if not node.children:
                leaves.setdefault(node.type, []).append((node.features["mem_bytes"], node.energy_j))
    rows = []
    for t, points in sorted(leaves.items()):
        x = np.array([p[0] for p in points])
        y = np.array([p[1] for p in points])
        floor = float(y.min())
        above = y > 1.5 * floor
        # per-byte cost of the energy above the floor, fitted where the work dominates
        per_byte = float(np.median((y[above] - floor) / x[above])) if above.any() else 0.0
        cross = floor / per_byte if per_byte > 0 else float("inf")
        observed = x.min() <= cross
        rows.append([
            t,
            f"{floor * 1e3:.2f}" if observed else f"≤ {floor * 1e3:.2f} (not reached)",
            f"{x.min() / 1e6:.3g}",
            "never (flat)" if not np.isfinite(cross) else f"{cross / 1e6:.3g}",
        ])
    return rows


#: Why the rows outside the band are where they are (figures from the runs named).
#: What the floor regime means for monotonicity, and the variant tried (figures from an in-process
#: run of ``crossvalidate`` on irene-pc1 with the variant patched in; ML / module / model %).
FLOOR_NOTES = (
    "At the floor, more work is not always more joules: the reference data measured floors flat",
    "within noise (tiny-ctrl's 16-wide Linear: 6.7-7.8 mJ at every batch and sequence), the shape",
    "memories recall those values, and below the trained sizes the log-space correction's slope",
    "goes on (about -1 % per doubling for that Linear). Tried and not kept: a correction that bends",
    "only the work above the floor, monotone by construction: `lomo` unchanged (0.84 / 1.17 / 0.99),",
    "`seq` 3.35 / 1.75 / 1.03 -> 4.49 / 2.82 / 2.22, `batch` 2.27 / 1.40 / 1.34 -> 2.39 / 1.37 / 1.37,",
    "`width` 25.57 / 13.22 / 38.68 -> 23.61 / 12.72 / 39.40.",
)
BAND_NOTES = (
    "Outside the band, and why:",
    "",
    "- **LayerNorm, below**: the profile learned a per-row cost from tiny-ctrl (per token, a LayerNorm",
    "  at hidden 16 costs about 40 % of one at hidden 768: `bench_limits.py` table 3, latency 0.025",
    "  against 0.062 µs per row), so at 1024 rows hidden 768 is partly row-bound and widening",
    "  raises the energy less than the work. The band assumes a per-call floor only; a per-row",
    "  floor pulls toward 1 too. Whether the per-row share measured at hidden 16 holds at 4096 is",
    "  an extrapolation (no wider LayerNorm was measured).",
    "- **MatMul, above (superlinear)**: the log-space correction rises with bytes at fixed batch and",
    "  sequence (+0.07 per log unit), and the residual memories pin the measured hidden-768 shape but",
    "  vanish at 4096. Tried and not kept: forcing the correction to be non-increasing in the work",
    "  (MatMul 6.2 -> 5.5, in band) cost the `seq` split 3.35 -> 3.62 % at ML level and the width",
    "  split 25.6 -> 27.9 % (model level 38.7 -> 36.6).",
    "- **GELU, at the edge**: no GELU of this size is in the data; the generic regressor predicts it",
    "  (flagged `generic_regressor`).",
)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--write-results", action="store_true", help="replace the bench_width section of RESULTS.md")
    args = ap.parse_args()
    body = "\n".join(
        [
            "## Width: scaling between hidden sizes and the floor regime (`benchmarks/bench_width.py`)",
            "",
            f"`python benchmarks/bench_width.py --write-results` ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}).",
            "",
            f"One BERT layer at batch {BATCH}, sequence {SEQ}, hidden 4096 against hidden 768, `irene-pc1`",
            "model features. Band (✓): the predicted energy ratio lies between the bytes ratio and the",
            "flops ratio (±10 %); the floor can only pull it toward 1.",
            "",
            table(["nodes", "flops ratio", "bytes ratio", "predicted energy ratio", "in band"], ratio_rows(), markdown=True),
            "",
            *BAND_NOTES,
            "",
            "Floor-dominated regime per primitive (PC1, all seven models): the per-call floor is the",
            "smallest energy measured for the type; below the crossover size (bytes moved) a call",
            "costs mostly its floor, so the gate sees a change of its work only weakly there. \"not",
            "reached\": the type was never measured small enough to show its floor (Conv1D exists only",
            "in the GPT-2 family at hidden 768), so its floor is an upper bound.",
            "",
            table(["primitive", "floor mJ", "smallest measured MB", "floor = work at MB"], floor_rows(), markdown=True),
            "",
            *FLOOR_NOTES,
        ]
    )
    print(body)
    if args.write_results:
        write_results_section("width", body)


if __name__ == "__main__":
    main()
