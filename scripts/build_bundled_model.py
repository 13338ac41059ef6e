"""Build the bundled energy model ``models/irene-pc1.json`` from the reference dataset.

Run from the repository root after the predictor's default strategy changes::

    python scripts/build_bundled_model.py            # writes models/irene-pc1.json
    python scripts/build_bundled_model.py --check    # exit 1 when the shipped file is stale

Both feature sets are trained with the default strategy on
``calibration/datasets/irene-pc1.jsonl.gz``; the hardware is the IrEne paper's
PC1 (FORMAT.md), written in the shape of ``runtime.host_fingerprint()`` so the
plugin can tell whether the current host is that rig (it never is in CI, so CI
uses model features). The driver version of PC1 was not published: ``null``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from pytest_irene.engine.predict.energy_model import EnergyModel  # noqa: E402
from pytest_irene.engine.predict.training import train_energy_model  # noqa: E402

PROFILE = "irene-pc1"
DATASET = REPO / "calibration" / "datasets" / "irene-pc1.jsonl.gz"
OUTPUT = REPO / "models" / f"{PROFILE}.json"

#: PC1 of the IrEne paper: Intel i9-7900X (10 cores, 20 threads), 32 GiB, one GTX 1080 Ti used.
PC1_HARDWARE: dict = {
    "description": "IrEne PC1: Intel i9-7900X, 32 GiB, NVIDIA GTX 1080 Ti (PyTorch 1.7, fp32)",
    "cpu_model": "Intel(R) Core(TM) i9-7900X CPU @ 3.30GHz",
    "cpu_count": 20,
    "memory_gib": 32.0,
    "gpus": ["GeForce GTX 1080 Ti"],
    "driver_version": None,
}


def build() -> EnergyModel:
    """Train the bundled model (deterministic: same data and code give the same file)."""
    return train_energy_model([DATASET], profile=PROFILE, hardware=PC1_HARDWARE)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--output", type=Path, default=OUTPUT, help=f"model file to write (default {OUTPUT})")
    parser.add_argument("--check", action="store_true", help="compare with the existing file instead of writing")
    args = parser.parse_args(argv)
    model = build()
    text = model.dumps()
    if args.check:
        current = args.output.read_text(encoding="utf-8") if args.output.is_file() else ""
        if current != text:
            print(f"{args.output} is stale: rerun python scripts/build_bundled_model.py", file=sys.stderr)
            return 1
        print(f"{args.output} is up to date")
        return 0
    model.save(args.output)
    for name, cv in model.cv_errors.items():
        levels = cv.get("levels") or {}
        summary = ", ".join(f"{lv} {row.get('average', float('nan')):.2f}%" for lv, row in levels.items())
        print(f"{name}: {cv.get('split')} cross-validation: {summary}")
    print(f"wrote {args.output} ({args.output.stat().st_size} bytes, strategy {model.strategy})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
