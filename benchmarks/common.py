"""Helpers shared by the benchmark scripts, so each is written once.

Every ``benchmarks/bench_*.py`` prints tables, times calls and (some) replaces
its own section of ``benchmarks/RESULTS.md``; these used to be copied into each
script and had drifted apart. The scripts run as ``python benchmarks/bench_x.py``
from the repository root, which puts ``benchmarks/`` on ``sys.path``, so they
``from common import ...``.

Importing this module also puts the repository root first on ``sys.path``, so
the scripts benchmark the checkout's ``pytest_irene`` even where it is not
installed. Import it before ``pytest_irene``.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

#: The reference dataset measured on PC1.
DATASET = ROOT / "calibration" / "datasets" / "irene-pc1.jsonl.gz"
RESULTS_MD = ROOT / "benchmarks" / "RESULTS.md"

T = TypeVar("T")


def table(headers: Sequence[str], rows: Sequence[Sequence[str]], markdown: bool, left: int = 1) -> str:
    """Format a table: a GitHub table if ``markdown``, else aligned columns under a dashes line.

    In plain mode the first ``left`` columns are left-justified (names) and the
    rest right-justified (numbers).
    """
    if markdown:
        lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
        lines += ["| " + " | ".join(row) + " |" for row in rows]
        return "\n".join(lines)
    widths = [max([len(h)] + [len(row[i]) for row in rows]) for i, h in enumerate(headers)]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(
            c.ljust(w) if i < left else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths))
        ).rstrip()

    return "\n".join([line(headers), line(["-" * w for w in widths])] + [line(row) for row in rows])


def timed(fn: Callable[[], T]) -> tuple[T, float]:
    """``(fn(), wall seconds it took)``."""
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def write_results_section(name: str, body: str) -> None:
    """Replace the ``bench_{name}`` section of RESULTS.md with ``body`` (or append it), atomically.

    The section is everything between ``<!-- bench_{name}:start -->`` and
    ``<!-- bench_{name}:end -->``; the rest of the file is kept byte for byte.
    ``body`` should start with the section's ``## `` heading.
    """
    # Imported here so that table() and timed() work without the package.
    from pytest_irene.atomic import atomic_write_text

    start, end = f"<!-- bench_{name}:start -->", f"<!-- bench_{name}:end -->"
    section = start + "\n" + body.strip("\n") + "\n" + end
    path = RESULTS_MD
    current = path.read_text(encoding="utf-8") if path.exists() else "# Benchmark results\n"
    if start in current and end in current.split(start, 1)[1]:
        head, rest = current.split(start, 1)
        new = head + section + rest.split(end, 1)[1]
    else:
        new = current.rstrip("\n") + "\n\n" + section + "\n"
    atomic_write_text(path, new)
