"""Scale: the biggest models teams ship, end to end on the meta device (nothing is downloaded).

For each model: trace on the meta device, predict with the bundled ``irene-pc1`` profile, then
everything a run does with the tree: its ``irene-tree/1`` line, the baseline file (save, load),
the gate against a baseline 10 % cheaper everywhere (every module moves), the failure section,
the terminal and Markdown summaries, the HTML explorer (payload and page), the run file and
``irene compare`` of two run files (text and ``--markdown``).

Models (configs built from transformers 5 classes on ``torch.device("meta")``):

* ``llama-405b``: Llama-3.1-405B's shape (126 layers, hidden 16384);
* ``deepseek-v3``: DeepSeek-V3's default config (61 layers, 256 routed experts, fused);
* ``qwen3-moe``: Qwen3-235B-A22B's shape (94 layers, 128 fused experts);
* ``moe-list``: a hand-written top-8 MoE with an ``nn.ModuleList`` of 256 experts a layer
  (older transformers' layout), 24 layers: ~31,000 nodes (61 layers trace in ~40 s, and take
  ~80,000 nodes; ``tests/test_scale.py`` builds that size synthetically);
* ``deep-120``: ``nn.Sequential`` nested 120 deep (the tracer refuses from ~155-170 on, by the stack it starts from: the row
  ``deep-200`` says how).

Usage: ``python benchmarks/bench_scale.py [--models a,b] [--write-results]`` (about 3 minutes).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import resource
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from common import table, timed, write_results_section
from torch import nn
from torch.nn import functional as F

from pytest_irene.cli import main as irene
from pytest_irene.compare.baseline_store import BaselineStore
from pytest_irene.compare.baselines import entry_from_tree, read_baseline_file
from pytest_irene.compare.gate import compare
from pytest_irene.compare.records import CallRecord
from pytest_irene.compare.runfile import RunFile, write_run_file
from pytest_irene.engine.dataset import dumps_tree, tree_from_dict
from pytest_irene.engine.predict.energy_model import EnergyModel
from pytest_irene.engine.tracing import trace
from pytest_irene.engine.tree import EnergyTree
from pytest_irene.explorer.html import json_for_script, render_report, report_data
from pytest_irene.report.failure import failure_text
from pytest_irene.report.markdown import session_markdown
from pytest_irene.report.terminal import render_summary
from pytest_irene.report.tree_report import report

NODEID = "tests/test_giant.py::test_giant"


# -- models --------------------------------------------------------------------------------------


class Expert(nn.Module):
    def __init__(self, d: int, f: int):
        super().__init__()
        self.gate_proj, self.up_proj = nn.Linear(d, f, bias=False), nn.Linear(d, f, bias=False)
        self.down_proj, self.act_fn = nn.Linear(f, d, bias=False), nn.SiLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(self.act_fn(self.gate_proj(x)) * self.up_proj(x))


class ListMoE(nn.Module):
    """Top-k routing over a ``ModuleList`` of experts, as Mixtral's block was written in transformers 4."""

    def __init__(self, d: int, f: int, experts: int, k: int):
        super().__init__()
        self.gate, self.k = nn.Linear(d, experts, bias=False), k
        self.experts = nn.ModuleList(Expert(d, f) for _ in range(experts))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        h = x.reshape(-1, d)
        weights, chosen = torch.topk(F.softmax(self.gate(h), dim=-1), self.k, dim=-1)
        out = torch.zeros_like(h)
        mask = F.one_hot(chosen, num_classes=len(self.experts)).permute(2, 1, 0)
        for e, expert in enumerate(self.experts):
            idx, rows = torch.where(mask[e])
            out.index_add_(0, rows, expert(h[rows]) * weights[rows, idx, None])
        return out.reshape(b, t, d)


class ListMoELayer(nn.Module):
    def __init__(self, d: int, f: int, experts: int, k: int):
        super().__init__()
        self.norm = nn.LayerNorm(d)
        self.attn = nn.MultiheadAttention(d, 8, batch_first=True)
        self.mlp = ListMoE(d, f, experts, k)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.norm(x)
        x = x + self.attn(h, h, h, need_weights=False)[0]
        return x + self.mlp(x)


class ListMoEModel(nn.Module):
    def __init__(self, layers: int, d: int = 1024, f: int = 512, experts: int = 256, k: int = 8):
        super().__init__()
        self.layers = nn.ModuleList(ListMoELayer(d, f, experts, k) for _ in range(layers))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x)
        return x


def _hf(config_name: str, **overrides: Any) -> Callable[[], tuple[nn.Module, Any]]:
    def build() -> tuple[nn.Module, Any]:
        import transformers

        config = getattr(transformers, config_name)(**overrides)
        with torch.device("meta"):
            model = transformers.AutoModel.from_config(config)
        return model, {"input_ids": torch.zeros(1, 128, dtype=torch.long, device="meta")}

    return build


def _list_moe(layers: int) -> Callable[[], tuple[nn.Module, Any]]:
    def build() -> tuple[nn.Module, Any]:
        with torch.device("meta"):
            model = ListMoEModel(layers)
        return model, torch.zeros(1, 128, 1024, device="meta")

    return build


def _deep(depth: int) -> Callable[[], tuple[nn.Module, Any]]:
    def build() -> tuple[nn.Module, Any]:
        model: nn.Module = nn.Linear(64, 64)
        for _ in range(depth):
            model = nn.Sequential(model)
        return model, torch.zeros(1, 128, 64)

    return build


MODELS: dict[str, Callable[[], tuple[nn.Module, Any]]] = {
    "llama-405b": _hf("LlamaConfig", hidden_size=16384, intermediate_size=53248, num_hidden_layers=126,
                      num_attention_heads=128, num_key_value_heads=8, vocab_size=128256),
    "deepseek-v3": _hf("DeepseekV3Config"),
    "qwen3-moe": _hf("Qwen3MoeConfig", num_hidden_layers=94, num_experts=128, num_experts_per_tok=8, hidden_size=4096,
                     moe_intermediate_size=1536, num_attention_heads=64, num_key_value_heads=4, vocab_size=151936),
    "moe-list": _list_moe(24),
    "deep-120": _deep(120),
    "deep-200": _deep(200),
}
#: Per model, the scope text a refactor renames (``old``, ``new``): the gate must pair every renamed
#: subtree (each layer, or each expert of the list MoE) rather than fail them as removed and added.
RENAMES: dict[str, tuple[str, str]] = {
    "llama-405b": ("layers.", "blocks."), "deepseek-v3": ("layers.", "blocks."), "qwen3-moe": ("layers.", "blocks."),
    "moe-list": (".experts.", ".ffn_experts."), "deep-120": ("0.0.0.0.0", "0.0.0.0.1"),
}


# -- one model end to end ------------------------------------------------------------------------


def _scaled(tree: EnergyTree, factor: float) -> EnergyTree:
    """A copy of ``tree`` whose every predicted energy is ``factor`` times the original."""
    copy = tree_from_dict(tree.to_dict())
    for node in copy.walk():
        if node.predicted_energy_j is not None:
            node.predicted_energy_j *= factor
    return copy


def _renamed(tree: EnergyTree, old: str, new: str) -> EnergyTree:
    """A copy of ``tree`` with the first ``old`` replaced by ``new`` in every scope (the same computation)."""
    copy = tree_from_dict(tree.to_dict())
    for node in copy.walk():
        node.scope = node.scope.replace(old, new, 1)
    return copy


def _cli(*argv: str) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        irene(list(argv))
    return out.getvalue()


def _kib(n: int) -> str:
    return f"{n / 1024:,.0f}"


def _run(name: str, energy_model: EnergyModel, work: Path) -> dict[str, str]:
    """Every measurement of one model, as the table's cells (``error`` says where it stopped)."""
    row: dict[str, str] = {"model": name}
    model, inputs = MODELS[name]()
    try:
        tree, row["trace s"] = _seconds(lambda: trace(model, inputs))
    except Exception as exc:  # noqa: BLE001 - the row says how the tracer refused
        row["error"] = f"trace: {type(exc).__name__}: {str(exc)[:90]}..."
        return row
    _, row["predict s"] = _seconds(lambda: energy_model.predict(tree))
    row["nodes"], row["depth"] = f"{len(tree):,}", str(max(n.depth for n in tree.walk()))
    line, row["tree json s"] = _seconds(lambda: dumps_tree(tree))
    row["tree KiB"] = _kib(len(line))
    cheaper = _scaled(tree, 1 / 1.1)  # the baseline: 10 % cheaper everywhere, so every module moves
    entry = entry_from_tree(cheaper, profile="irene-pc1", features="model")
    store = BaselineStore(work / name / ".irene")
    [path], row["baseline save s"] = _seconds(lambda: store.save({(NODEID, "default"): entry}))
    row["baseline KiB"] = _kib(path.stat().st_size)
    _, row["baseline load s"] = _seconds(lambda: read_baseline_file(path))
    comparison, row["compare s"] = _seconds(lambda: compare(entry, tree, profile="irene-pc1", features="model"))
    row["failed"] = f"{len(comparison.failed_modules):,}"
    if name in RENAMES:
        same = entry_from_tree(tree, profile="irene-pc1", features="model")
        renamed = _renamed(tree, *RENAMES[name])
        moved, row["rename compare s"] = _seconds(lambda: compare(same, renamed, profile="irene-pc1", features="model"))
        row["renames"] = f"{len(moved.renames):,} ({moved.status})"
    record = CallRecord(NODEID, "default", tree, "irene-pc1", "model", comparison=comparison)
    text, row["failure s"] = _seconds(lambda: failure_text([record]))
    row["failure chars"] = f"{len(text):,}"
    summary, row["summary s"] = _seconds(lambda: render_summary([record]))
    row["summary chars"] = f"{len(summary):,}"
    markdown, row["markdown s"] = _seconds(lambda: session_markdown([record]))
    row["markdown chars"] = f"{len(markdown):,}"
    console_text, row["tree report s"] = _seconds(lambda: _render_report(tree))
    row["tree report lines"] = f"{console_text.count(chr(10)):,}"
    payload, row["payload s"] = _seconds(lambda: json_for_script(report_data([record])))
    row["payload KiB"] = _kib(len(payload))
    _, row["html s"] = _seconds(lambda: render_report([record]))
    base_run, new_run = work / name / "base.json", work / name / "new.json"
    _, row["run files s"] = _seconds(lambda: (
        write_run_file(base_run, RunFile([CallRecord(NODEID, "default", cheaper, "irene-pc1", "model")])),
        write_run_file(new_run, RunFile([record]))))
    row["run file KiB"] = _kib(new_run.stat().st_size)
    out, row["irene compare s"] = _seconds(lambda: _cli("compare", str(base_run), str(new_run)))
    row["compare text chars"] = f"{len(out):,}"
    out, row["compare --markdown s"] = _seconds(lambda: _cli("compare", str(base_run), str(new_run), "--markdown"))
    row["compare md chars"] = f"{len(out):,}"
    row["peak RSS MiB"] = f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:,.0f}"
    return row


def _render_report(tree: EnergyTree) -> str:
    """``irene predict``'s terminal report (tree at full depth, bottlenecks, breakdown), as text."""
    from rich.console import Console

    console = Console(file=io.StringIO(), width=120, color_system=None)
    console.print(report(tree))
    return console.file.getvalue()  # type: ignore[attr-defined]


def _seconds(fn: Callable[[], Any]) -> tuple[Any, str]:
    out, seconds = timed(fn)
    return out, f"{seconds:.2f}"


# -- tables --------------------------------------------------------------------------------------

#: The tables' columns, by what they measure.
TABLES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("Trace, predict, files", ("nodes", "depth", "trace s", "predict s", "tree json s", "tree KiB", "baseline save s",
                               "baseline KiB", "baseline load s", "run files s", "run file KiB", "peak RSS MiB")),
    ("Gate and reports (every module 10 % costlier than its baseline)",
     ("failed", "compare s", "renames", "rename compare s", "failure s", "failure chars", "summary s", "summary chars", "markdown s", "markdown chars",
      "tree report s", "tree report lines")),
    ("Explorer and irene compare", ("payload s", "payload KiB", "html s", "irene compare s", "compare text chars",
                                    "compare --markdown s", "compare md chars")),
)


def tables(rows: list[dict[str, str]], markdown: bool) -> str:
    parts = []
    for title, columns in TABLES:
        cells = [[r["model"], *(r.get(c, "-") for c in columns)] for r in rows]
        parts += [f"### {title}", "", table(["model", *columns], cells, markdown), ""]
    errors = [f"- `{r['model']}`: {r['error']}" for r in rows if "error" in r]
    return "\n".join(parts + (["Not traced:", "", *errors] if errors else []))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default=",".join(MODELS), help=f"comma-separated, of {', '.join(MODELS)}")
    ap.add_argument("--write-results", action="store_true", help="replace the bench_scale section of RESULTS.md")
    args = ap.parse_args()
    torch.set_num_threads(2)
    energy_model = EnergyModel.load("irene-pc1")
    rows = []
    with tempfile.TemporaryDirectory() as work:
        for name in args.models.split(","):
            rows.append(_run(name, energy_model, Path(work)))
            print(json.dumps(rows[-1]), flush=True)
    print(tables(rows, markdown=False))
    if args.write_results:
        stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
        body = "\n".join([
            "## Scale: the biggest models, end to end (`benchmarks/bench_scale.py`)",
            "",
            f"`python benchmarks/bench_scale.py --write-results` ({stamp}), 2 CPU threads, meta device, "
            "batch 1 x 128 tokens, profile irene-pc1. Sizes in KiB, text in characters; the peak RSS is the "
            "process's so far (it only grows). The tree report is `irene predict`'s (full depth); "
            "`tests/test_scale.py` holds the 61-layer x 256-expert list MoE (78,754 nodes) synthetically.",
            "",
            tables(rows, markdown=True),
        ])
        write_results_section("scale", body)


if __name__ == "__main__":
    main()
