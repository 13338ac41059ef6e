"""Turn trees and call records into the JSON the explorer's JS draws.

One shape (a *call view*) serves the HTML report, the web app's
``/api/energy`` and the browser: the whole ``irene-tree/1`` tree plus what a
reader wants next to it (total, operations sorted by energy, breakdown by
type, baseline deltas). The sorting and summing happen here, through
:class:`~pytest_irene.engine.tree.EnergyTree`'s own methods, so the page and the API
agree with the terminal report. Pure data: no torch.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

from pytest_irene.compare.records import CallRecord
from pytest_irene.engine.tree import EnergyNode, EnergyTree, Source, describe_energy_scope



def energy_source(tree: EnergyTree) -> Source:
    """``predicted`` when the tree has been predicted, else ``measured`` (a dataset tree)."""
    return "predicted" if tree.root.predicted_energy_j is not None else "measured"


def _finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


def module_partition(tree: EnergyTree, source: Source | None = None) -> dict[str, float]:
    """Energy of the operations grouped by the type of the module that runs them, joules.

    Module types nest (``BertAttention`` contains ``BertSelfAttention``), so the
    per-type breakdown of :meth:`EnergyTree.breakdown` overlaps and cannot be
    stacked. Charging every operation (leaf) to its nearest enclosing module
    gives a partition whose parts add up to the sum over operations, which is
    what a stacked bar needs. Operations directly under the root are charged to
    the root's type.
    """
    src = source or energy_source(tree)
    parts: dict[str, float] = {}
    for leaf in tree.leaves():
        value = leaf.energy_of(src)
        if value is None:
            continue
        owner = leaf.parent
        while owner is not None and owner.level not in ("module", "model"):
            owner = owner.parent
        key = owner.type if owner is not None else leaf.type
        parts[key] = parts.get(key, 0.0) + value
    return dict(sorted(parts.items(), key=lambda kv: (-kv[1], kv[0])))


def new_tokens(tree: EnergyTree) -> int | None:
    """Tokens a generation tree generates (``None`` for one forward pass).

    A :class:`~pytest_irene.engine.generation_tree.GenerationTree` knows its decode
    steps; a tree read back from a run file or an xdist worker only has
    ``meta["new_tokens"]``. Either way the page must say "per generation of N new
    tokens", as the terminal header does, not "per forward pass"."""
    steps = getattr(tree, "steps", None)
    if steps is not None:
        return int(steps.count) + 1
    value = tree.meta.get("new_tokens") if tree.root.type == "Generation" else None
    return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def verdict(record: CallRecord | None) -> str | None:
    """The badge a call shows: the terminal summary's status of the call
    (:func:`~pytest_irene.report.terminal.call_status`: ``fail`` whenever the test failed
    the gate, over budget included, ``saved``, ``not saved``...), with ``cheaper`` for a
    pass whose baseline is too high.

    ``comparison.status`` alone says ``pass`` for a call that blew its budget, so the
    badge contradicted the terminal's FAILED and the page's own failure count."""
    if record is None:
        return None
    from pytest_irene.report.terminal import call_status

    status = call_status(record)
    if status == "pass" and record.comparison is not None and record.comparison.cheaper:
        return "cheaper"
    return status


def _operation(tree: EnergyTree, node: EnergyNode, source: Source) -> dict[str, Any]:
    return {
        "scope": node.scope,
        "type": node.type,
        "energy_j": node.energy_of(source),
        "share": tree.share(node, source),
    }


def call_view(
    tree: EnergyTree,
    record: CallRecord | None = None,
    *,
    call_id: str = "call-0",
    title: str | None = None,
    profile: str | None = None,
) -> dict[str, Any]:
    """Everything the explorer shows for one wrapped call (or one predicted tree).

    Keys: ``id``, ``title``, ``model_name``, ``batch_size``, ``seq_len``,
    ``profile``, ``features``, ``extrapolation`` (why the prediction leaves the profile's
    training ranges; empty when it does not), ``energy_scope`` (+ ``energy_scope_text``: what the joules cover), ``source`` (which energy the view shows),
    ``total_j``, ``new_tokens`` (a generation's new tokens, ``None`` for one forward pass),
    ``status``/``reason``/``budget_j``/``over_budget`` (the gate's
    verdict, ``None`` outside pytest; ``verdict`` is the badge, :func:`verdict`; ``cheaper``
    and ``renames`` as in the comparison), ``tree`` (:meth:`EnergyTree.to_dict`),
    ``deltas`` (scope → baseline delta), ``removed`` (modules only in the
    baseline), ``operations`` (every ML primitive, costliest first),
    ``breakdown`` (``{"module": rows, "ml": rows}``, rows as in
    :meth:`EnergyTree.breakdown`) and ``partition`` (:func:`module_partition`).
    """
    source = energy_source(tree)
    comparison = record.comparison if record is not None else None
    deltas = {d.scope: d.to_dict() for d in comparison.deltas} if comparison else {}
    removed = [d.to_dict() for d in comparison.deltas if d.now_j is None] if comparison else []
    operations = [_operation(tree, n, source) for n in tree.bottlenecks(n=len(tree), level="ml", source=source)]
    if record is not None and title is None:
        title = record.nodeid if record.label in ("", "default") else f"{record.nodeid} [{record.label}]"
    return {
        "id": call_id,
        "title": title or tree.model_name or tree.root.type,
        "nodeid": record.nodeid if record else None,
        "label": record.label if record else None,
        "model_name": tree.model_name or tree.root.type,
        "batch_size": tree.batch_size,
        "seq_len": tree.seq_len,
        "device": tree.profile,
        "profile": record.profile if record else (profile or tree.meta.get("profile")),
        "features": record.features if record else tree.meta.get("features"),
        "extrapolation": list(tree.meta.get("extrapolation") or []),
        "energy_scope": tree.energy_scope,
        "energy_scope_text": describe_energy_scope(tree.energy_scope),
        "source": source,
        "total_j": _finite(tree.root.energy_of(source)),
        "measured_total_j": _finite(tree.root.energy_j),
        "new_tokens": new_tokens(tree),
        "status": comparison.status if comparison else None,
        "verdict": verdict(record),
        "cheaper": list(comparison.cheaper) if comparison else [],
        "renames": [r.to_dict() for r in comparison.renames] if comparison else [],
        "reason": comparison.reason if comparison else "",
        "budget_j": record.budget_j if record else None,
        "over_budget": bool(record.over_budget) if record else False,
        "failed": bool(record.failed) if record else False,
        "tree": tree.to_dict(),
        "deltas": deltas,
        "removed": removed,
        "operations": operations,
        "breakdown": {
            "module": [list(r) for r in tree.breakdown("module", source)],
            "ml": [list(r) for r in tree.breakdown("ml", source)],
        },
        "partition": module_partition(tree, source),
    }


def call_views(items: Iterable[EnergyTree | CallRecord] | EnergyTree | CallRecord) -> list[dict[str, Any]]:
    """Call views for a mix of trees and call records, in order."""
    if isinstance(items, (EnergyTree, CallRecord)):
        items = [items]
    views: list[dict[str, Any]] = []
    for i, item in enumerate(items):
        if isinstance(item, CallRecord):
            views.append(call_view(item.tree, item, call_id=f"call-{i}"))
        elif isinstance(item, EnergyTree):
            views.append(call_view(item, call_id=f"call-{i}"))
        else:
            raise TypeError(f"expected EnergyTree or CallRecord, got {type(item).__name__}")
    return views
