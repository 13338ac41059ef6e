"""Terminal and JSON views of a predicted energy tree.

Every function returns a rich *renderable* (or plain JSON-able data) rather than
printing, so ``irene predict``, ``train``, ``evaluate``, ``crossvalidate`` and users'
scripts compose the same pieces and print them on their own console (energies
are formatted by :func:`pytest_irene.units.format_energy`, as in the plugin's
summary):

- :func:`tree_view`: the model tree with each node's energy and share of the root;
- :func:`bottlenecks_table`: the costliest innermost modules (where to optimise);
- :func:`breakdown_table`: energy by module type, as the paper's Tables 10/12;
- :func:`errors_table`: cross-validation / evaluation errors per level and model;
- :func:`report`: all of the above under a header;
- :func:`report_json` / :func:`node_json`: the same information for ``--json``.
"""

from __future__ import annotations

from typing import Any

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text
from rich.tree import Tree

from pytest_irene.engine.tree import (
    LEVELS,
    ROOT_LABEL,
    EnergyNode,
    EnergyTree,
    Source,
    describe_energy_scope,
    innermost_modules,
    scope_label,
)
from pytest_irene.units import format_energy



def format_share(share: float | None) -> str:
    """A fraction of the root as a percentage with one decimal (``"12.3%"``)."""
    return "-" if share is None else f"{share * 100:.1f}%"


def node_label(node: EnergyNode) -> str:
    """The name shown for a node: its scope, ``<model>`` for the model node."""
    return scope_label(node.scope)


def bottlenecks(
    tree: EnergyTree, n: int = 10, source: Source = "predicted", *, innermost: bool = True
) -> list[EnergyNode]:
    """The ``n`` costliest modules (:func:`innermost_modules` by default), energy descending, then scope.

    A model made of primitives only (no module between the root and its leaves)
    lists its primitives instead.
    """
    if innermost:
        return tree.bottlenecks(n, source=source, innermost=True)
    return tree.bottlenecks(n, "module", source) or tree.bottlenecks(n, "ml", source)


# -- rich renderables ----------------------------------------------------------------------


def _energy_text(node: EnergyNode, tree: EnergyTree, source: Source) -> Text:
    text = Text()
    value = node.energy_of(source)
    text.append(format_energy(value), style="bold cyan")
    if node is not tree.root:
        text.append(f"  {format_share(tree.share(node, source))}", style="magenta")
    if source == "predicted" and node.energy_j is not None:
        text.append(f"  (measured {format_energy(node.energy_j)})", style="dim")
    if node.notes.get("generic_regressor"):
        text.append("  [generic regressor]", style="yellow")
    return text


def _label(node: EnergyNode, tree: EnergyTree, source: Source) -> Text:
    text = Text()
    text.append(node.name or (tree.model_name or ROOT_LABEL), style="bold" if node.level != "ml" else "")
    text.append(f" {node.type}", style="green" if node.level != "ml" else "dim green")
    text.append("  ")
    text.append_text(_energy_text(node, tree, source))
    return text


#: Siblings of one type in a row that :func:`tree_view` shows before it sums the rest of the
#: run on one line: a 60-layer MoE with 256 experts per layer printed 78,000 lines (80 s in
#: rich) where 32 experts a layer and the rest's total say the same.
MAX_RUN = 32


def _runs(children: list[EnergyNode]) -> list[list[EnergyNode]]:
    """``children`` cut into runs of consecutive siblings of one type, in order."""
    runs: list[list[EnergyNode]] = []
    for child in children:
        if runs and runs[-1][0].type == child.type:
            runs[-1].append(child)
        else:
            runs.append([child])
    return runs


def _run_rest(rest: list[EnergyNode], tree: EnergyTree, source: Source) -> Text:
    """The line standing for the hidden end of a long run of same-type siblings: count, scopes, energy, share."""
    values = [n.energy_of(source) for n in rest]
    joules = sum(v for v in values if v is not None) if any(v is not None for v in values) else None
    total = tree.root.energy_of(source)
    share = f", {format_share(joules / total)}" if joules is not None and total else ""
    return Text(f"... {len(rest)} more {rest[0].type} ({node_label(rest[0])} to {node_label(rest[-1])}): "
                f"{format_energy(joules)}{share}", style="dim")


def tree_view(
    tree: EnergyTree,
    *,
    max_depth: int | None = None,
    min_share: float = 0.0,
    source: Source = "predicted",
    max_run: int | None = MAX_RUN,
) -> Tree:
    """The model tree with each node's energy and share of the root.

    ``max_depth`` cuts the tree below that depth (root = 0); ``min_share`` hides
    nodes under that fraction of the root (a count of hidden nodes is shown), so
    a 12-layer model stays readable; of a run of more than ``max_run`` consecutive
    siblings of one type (experts, layers) the first ``max_run`` are shown and the
    rest summed on one line (``None``: all shown).
    """
    view = Tree(_label(tree.root, tree, source), guide_style="dim")
    # a stack, not recursion: a model nested hundreds of modules deep
    pending: list[tuple[Tree, EnergyNode, int]] = [(view, tree.root, 0)] if max_depth is None or max_depth > 0 else []
    while pending:
        parent_view, node, depth = pending.pop()
        hidden = 0
        for run in _runs(node.children):
            shown = run if max_run is None or len(run) <= max_run else run[:max_run]
            for child in shown:
                if min_share > 0 and tree.share(child, source) < min_share:
                    hidden += 1
                    continue
                branch = parent_view.add(_label(child, tree, source))
                if max_depth is None or depth + 1 < max_depth:
                    pending.append((branch, child, depth + 1))
                elif child.children:
                    branch.add(Text(f"... {sum(1 for _ in child.walk()) - 1} nodes below", style="dim"))
            if len(shown) < len(run):
                parent_view.add(_run_rest(run[len(shown):], tree, source))
        if hidden:
            parent_view.add(Text(f"... {hidden} node(s) under {format_share(min_share)} each", style="dim"))
    return view


def bottlenecks_table(tree: EnergyTree, n: int = 10, source: Source = "predicted") -> Table:
    """The ``n`` costliest innermost modules: rank, scope, type, energy, share of the root."""
    title = f"Top {n} bottleneck modules" if tree.modules() else f"Top {n} bottleneck primitives"
    table = Table(title=title, title_justify="left")
    table.add_column("#", justify="right", style="dim")
    table.add_column("module")
    table.add_column("type", style="green")
    table.add_column("energy", justify="right", style="cyan")
    table.add_column("share", justify="right", style="magenta")
    for rank, node in enumerate(bottlenecks(tree, n, source), start=1):
        table.add_row(
            str(rank), node_label(node), node.type, format_energy(node.energy_of(source)), format_share(tree.share(node, source))
        )
    return table


def breakdown_table(tree: EnergyTree, level: str | None = "module", source: Source = "predicted") -> Table:
    """Energy by node type (paper Tables 10/12): type, count, energy, share of the root.

    Nested types overlap (``BertAttention`` contains ``BertSelfAttention``), as in the paper.
    """
    what = "module type" if level == "module" else ("primitive" if level == "ml" else "node type")
    table = Table(title=f"Energy by {what}", title_justify="left")
    table.add_column("type", style="green")
    table.add_column("count", justify="right")
    table.add_column("energy", justify="right", style="cyan")
    table.add_column("share", justify="right", style="magenta")
    for type_name, joules, share, count in tree.breakdown(level, source):  # type: ignore[arg-type]
        table.add_row(type_name, str(count), format_energy(joules), format_share(share))
    return table


def header(tree: EnergyTree, *, profile: str | None = None, features: str | None = None, source: Source = "predicted") -> Text:
    """One line: model, input size, total energy, profile and feature set (and a second
    line naming what the prediction extrapolates, when it leaves the training ranges)."""
    profile = profile or tree.meta.get("profile")
    features = features or tree.meta.get("features")
    text = Text()
    text.append(tree.model_name or type(tree.root).__name__, style="bold")
    text.append(f"  batch {tree.batch_size} x seq {tree.seq_len}: ")
    text.append(format_energy(tree.root.energy_of(source)), style="bold cyan")
    steps = getattr(tree, "steps", None)  # a GenerationTree: its decode steps, one per new token after the first
    text.append(f" {source} per generation of {steps.count + 1} new tokens" if steps is not None else f" {source} per forward pass")
    if profile:
        text.append(f"  (profile {profile}")
        text.append(f", {features} features)" if features else ")")
    text.append(f"  [{describe_energy_scope(tree.energy_scope)}]", style="yellow" if tree.energy_scope != "wall" else "")
    if tree.meta.get("extrapolation"):
        text.append("\n  extrapolates: " + "; ".join(tree.meta["extrapolation"]), style="yellow")
    return text


def errors_table(result: dict[str, Any], title: str = "Percent error") -> Table:
    """Per-model errors by level (``crossvalidate``/``evaluate`` results), ``average`` last."""
    levels = result.get("levels") or {}
    models: list[str] = []
    for lv in LEVELS[::-1]:
        for model in (levels.get(lv) or {}):
            if model != "average" and model not in models:
                models.append(model)
    table = Table(title=title, title_justify="left")
    table.add_column("model")
    for lv in ("ml", "module", "model"):
        table.add_column(f"{lv} %", justify="right")

    def cell(level: str, model: str) -> str:
        value = (levels.get(level) or {}).get(model)
        return "-" if value is None or value != value else f"{value:.2f}"

    for model in models:
        table.add_row(model, *(cell(lv, model) for lv in ("ml", "module", "model")))
    table.add_row(Text("average", style="bold"), *(Text(cell(lv, "average"), style="bold") for lv in ("ml", "module", "model")))
    return table


def report(
    tree: EnergyTree,
    *,
    breakdown: bool = True,
    top: int = 10,
    max_depth: int | None = None,
    min_share: float = 0.0,
    source: Source = "predicted",
    show_tree: bool = True,
    max_run: int | None = MAX_RUN,
) -> RenderableType:
    """Header, tree, bottlenecks and (optionally) the breakdown by module type, as one renderable
    (``max_run`` as in :func:`tree_view`)."""
    parts: list[RenderableType] = [header(tree, source=source)]
    if show_tree:
        parts.append(tree_view(tree, max_depth=max_depth, min_share=min_share, source=source, max_run=max_run))
    if top > 0:
        parts.append(bottlenecks_table(tree, top, source))
    if breakdown:
        parts.append(breakdown_table(tree, "module", source))
    return Group(*parts)


# -- JSON ----------------------------------------------------------------------------------


def node_json(node: EnergyNode, tree: EnergyTree, source: Source = "predicted") -> dict[str, Any]:
    """A node without its children: scope, type, level, energy (J) and share of the root."""
    return {
        "scope": node.scope,
        "type": node.type,
        "level": node.level,
        "energy_j": node.energy_of(source),
        "share": tree.share(node, source),
    }


def report_json(tree: EnergyTree, *, top: int = 10, source: Source = "predicted") -> dict[str, Any]:
    """Everything :func:`report` shows, JSON-able: header fields, the tree (``irene-tree/1``,
    with ``predicted_energy_j`` on every node), bottlenecks and the breakdown by module type."""
    return {
        "model_name": tree.model_name,
        "batch_size": tree.batch_size,
        "seq_len": tree.seq_len,
        "profile": tree.meta.get("profile"),
        "features": tree.meta.get("features"),
        "extrapolation": list(tree.meta.get("extrapolation") or []),
        "energy_scope": tree.energy_scope,
        "total_j": tree.root.energy_of(source),
        "per_token_j": tree.per_token_j if source == "predicted" else None,  # generation trees only
        "bottlenecks": [node_json(n, tree, source) for n in bottlenecks(tree, top, source)],
        "breakdown": [
            {"type": t, "count": c, "energy_j": j, "share": s} for t, j, s, c in tree.breakdown("module", source)
        ],
        "tree": tree.to_dict(),
    }


__all__ = [
    "bottlenecks",
    "bottlenecks_table",
    "breakdown_table",
    "errors_table",
    "format_share",
    "header",
    "innermost_modules",
    "node_json",
    "report",
    "report_json",
    "tree_view",
]
