"""Explorer speed: what a user waits for in ``irene serve``, ``irene sweep`` and ``--irene-html``.

Measured through the real Flask app (test client, no network): ``/api/energy``
cold (trace on meta + predict + JSON) and warm (LRU cache hit) for every
bundled architecture at batch 16, sequence 128; one ``/api/sweep`` of the six
paper models × 3 batch sizes × 4 sequence lengths; rendering and writing the
HTML report of all 193 dataset trees. Targets: a cold request under 1 s, a
cached one under 50 ms, a 72-point sweep under 15 s on 2 CPU cores.

Run from the repository root::

    python benchmarks/bench_explorer.py               # plain table
    python benchmarks/bench_explorer.py --markdown    # as in RESULTS.md
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from common import DATASET, table, timed

from pytest_irene.engine.architectures import ARCHITECTURES
from pytest_irene.engine.dataset import load_dataset
from pytest_irene.explorer.app import ServerConfig, create_app
from pytest_irene.explorer.html import write_report


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--markdown", action="store_true")
    args = parser.parse_args()
    client = create_app(ServerConfig()).test_client()
    client.get("/api/energy?model=distilgpt2&batch_size=1&seq_len=8")  # imports, model file load

    rows = []
    for name in ARCHITECTURES:
        url = f"/api/energy?model={name}&batch_size=16&seq_len=128"
        cold, t_cold = timed(lambda: client.get(url))
        warm, t_warm = timed(lambda: client.get(url))
        assert cold.status_code == 200 and warm.headers["X-Irene-Cache"] == "hit"
        rows.append([name, str(len(cold.data) // 1024), f"{t_cold * 1000:.0f}", f"{t_warm * 1000:.1f}"])
    print("/api/energy at batch 16, seq 128 (Flask test client)\n")
    print(table(["model", "JSON KiB", "cold ms", "cached ms"], rows, args.markdown))

    paper = [a for a in ARCHITECTURES if a != "sshleifer/tiny-ctrl"]
    query = "&".join(f"model={m}" for m in paper) + "&batch_sizes=8,16,32&seq_lens=32,64,128,256"
    refused = client.get("/api/sweep?" + query)  # default limit: 64 points
    big = create_app(ServerConfig(max_sweep_points=100)).test_client()
    sweep, t_sweep = timed(lambda: big.get("/api/sweep?" + query))
    assert sweep.status_code == 200
    points = len(sweep.get_json()["points"])
    _, t_again = timed(lambda: big.get("/api/sweep?" + query))

    trees = load_dataset(DATASET)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "report.html"
        _, t_report = timed(lambda: write_report(out, trees))
        size_mib = out.stat().st_size / 2**20
    print()
    print(table(
        ["what", "result"],
        [
            [f"/api/sweep, {points} points ({len(paper)} models × 3 batch sizes × 4 seq lens), default limit 64",
             f"{refused.status_code} ({refused.get_json()['parameter']})"],
            [f"/api/sweep, same {points} points, limit 100, cold cache", f"{t_sweep:.2f} s ({t_sweep / points * 1000:.0f} ms/point)"],
            [f"/api/sweep, same {points} points, cached", f"{t_again * 1000:.0f} ms"],
            [f"write_report of {len(trees)} dataset trees", f"{t_report:.2f} s, {size_mib:.1f} MiB"],
        ],
        args.markdown,
        left=2,
    ))
    return 0


if __name__ == "__main__":
    sys.exit(main())
