"""The model tree: what IrEne predicts energy for.

A tree mirrors how a transformer is built: the root is the whole model
(level ``model``), internal nodes are modules (``module``: ``BertLayer``,
``BertSelfAttention``) and leaves are ML primitives (``ml``: ``Linear``,
``Softmax``, functional ``MatMul``). Measured and predicted energy live on every
node, so a user can see *which module* is costly, not only the total.

This module is pure data: no torch, no numpy. Tracing, features, prediction and
reporting all produce or consume these objects.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

from pytest_irene.engine.renamed import renamed_fields
from pytest_irene.errors import NodeNotFound, UsageError

Level = Literal["model", "module", "ml"]
LEVELS: tuple[Level, ...] = ("model", "module", "ml")
Source = Literal["predicted", "measured"]
#: Which energy a tree method reads: the energy model's prediction or the rig's measurement.
SOURCES: tuple[Source, ...] = ("predicted", "measured")

#: Features known from the model alone: deterministic, hardware independent.
#: ``bytes_per_element`` is the element size of the node's result (fp32 4, bf16/fp16 2):
#: the dtype the node computes in, so one profile can hold fp32 and bf16 measurements.
MODEL_FEATURES: tuple[str, ...] = (
    "batch_size", "seq_len", "batch_seq", "params", "flops", "mem_bytes", "bytes_per_element",
)
#: Model features the paper's data lacks (``irene-pc1`` is all fp32); a predictor uses one
#: only when every training node has it, so profiles trained on that data are unchanged.
OPTIONAL_MODEL_FEATURES: tuple[str, ...] = ("bytes_per_element",)
#: Features measured while the node runs on real hardware (dataset format ``irene-tree/1``).
RESOURCE_FEATURES: tuple[str, ...] = (
    "cpu",
    "mem",
    "gpu",
    "gpu_mem",
    "gpu_clk",
    "gpu_mem_clk",
    "latency_s",
    "gpu_energy_j",
)
#: Resource features only some rigs can measure (RAPL); omitted, never zero, where absent.
OPTIONAL_RESOURCE_FEATURES: tuple[str, ...] = ("cpu_energy_j",)
#: Features that live on the tree line rather than on each node in the dataset format.
TREE_LEVEL_FEATURES: tuple[str, ...] = ("batch_size", "seq_len", "batch_seq")
#: What a measured ``energy_j`` covers: the whole machine at the wall (emonPi), the GPU
#: board alone (NVML's total-energy counter) or the CPU packages alone (RAPL).
ENERGY_SCOPES: tuple[str, ...] = ("wall", "gpu-board", "cpu-package")
#: The scope of a dataset or model file that does not state one: the paper's data were
#: measured at the wall, and so was everything written before the field existed.
DEFAULT_ENERGY_SCOPE = "wall"
_SCOPE_TEXT = {
    "wall": "wall energy",
    "gpu-board": "GPU-board energy only (NVML), not wall",
    "cpu-package": "CPU-package energy only (RAPL), not wall",
}


def describe_energy_scope(scope: str) -> str:
    """A few words saying what the joules of ``scope`` cover, for report headers and the explorer."""
    return _SCOPE_TEXT.get(scope, f"{scope} energy")


#: ``node.notes`` key of a normalisation leaf's width, the last dimension it normalises (the tracer
#: reads it off the call: see :func:`pytest_irene.engine.predict.ranges.tree_width`).
NORM_WIDTH_NOTE = "norm_width"
#: How the root (scope ``""``) is named wherever a scope is shown to a person.
ROOT_LABEL = "<model>"

#: The last scope component the tracer gives a functional primitive (``<caller>.matmul#0``,
#: ``.softmax#1``, ``.scaled_dot_product_attention#0``, as in the reference dataset). Such a
#: node is not an ``nn.Module`` the user can name, so baselines and the gate skip it.
_FUNCTIONAL_SCOPE = re.compile(r"(?:^|\.)(?:matmul|softmax|scaled_dot_product_attention)#\d+$")


def scope_label(scope: str) -> str:
    """A scope as shown to a person: itself, :data:`ROOT_LABEL` for the root."""
    return scope or ROOT_LABEL


def join_scope(parent: str, name: str) -> str:
    """The scope of ``name`` under ``parent``: ``parent.name``, ``name`` under the root (scope ``""``),
    ``parent`` itself for an empty ``name`` (a copied tree's root under a prefix).

    The one place scopes are joined, so a node under the root never gets a leading dot
    (``".q_proj"``), which ``tree["q_proj"]`` and baselines could not find."""
    return f"{parent}.{name}" if parent and name else (parent or name)


def _check_choice(argument: str, value: Any, choices: tuple[Any, ...]) -> None:
    """:class:`UsageError` naming ``argument`` and the valid ``choices`` when ``value`` is not one of them:
    a misspelt level or source would otherwise match no node and read as "no energy"."""
    if value not in choices:
        raise UsageError(f"{argument}: expected one of {', '.join(repr(c) for c in choices)}, got {value!r}")


@renamed_fields(energy="energy_j", predicted_energy="predicted_energy_j")
@dataclass(eq=False)
class EnergyNode:
    """One node of a model tree."""

    scope: str
    """Module path inside the model (``encoder.layer.0.attention.self``); ``""`` for the root.
    Functional primitives carry their caller's scope plus ``.matmul#i`` / ``.softmax#i``."""
    type: str
    """Class name (``BertSelfAttention``, ``Linear``) or primitive name (``MatMul``)."""
    level: Level
    """``model`` (the root), ``module`` (internal node) or ``ml`` (an ML primitive, a leaf)."""
    features: dict[str, float] = field(default_factory=dict)
    """Model features (:data:`MODEL_FEATURES`) and, when measured, resource features
    (:data:`RESOURCE_FEATURES`), for ONE execution of the node."""
    energy_j: float | None = None
    """Measured ground-truth energy of one execution, joules; ``None`` when not measured."""
    predicted_energy_j: float | None = None
    """Predicted energy of one execution, joules; set by ``EnergyModel.predict``."""
    children: list[EnergyNode] = field(default_factory=list)
    """Child nodes in execution order; empty for leaves."""
    notes: dict[str, Any] = field(default_factory=dict)
    """Free-form annotations that are not features, e.g. ``{"generic_regressor": True}``
    when the node's type was never seen in training and a generic regressor predicted it."""
    parent: EnergyNode | None = field(default=None, repr=False)
    """The parent node, ``None`` for the root. Maintained by :meth:`add_child`."""

    def __repr__(self) -> str:
        """One line: the dataclass repr printed every descendant (tens of kB for one BERT node)."""
        energy = "".join(f", {k}={getattr(self, k)!r}" for k in ("energy_j", "predicted_energy_j")
                         if getattr(self, k) is not None)
        return (f"EnergyNode(scope={self.scope!r}, type={self.type!r}, level={self.level!r}{energy}, "
                f"children={len(self.children)})")

    def add_child(self, child: EnergyNode) -> EnergyNode:
        """Append ``child`` and set its parent; returns the child."""
        child.parent = self
        self.children.append(child)
        return child

    @property
    def is_leaf(self) -> bool:
        return not self.children

    @property
    def is_module(self) -> bool:
        """Whether the node is an ``nn.Module`` the user can name: the root, a container, or a
        leaf module such as ``lm_head`` or a ``Conv2d`` stem; ``False`` for a functional primitive
        (``torch.matmul``, ``softmax``) that the tracer named after its caller."""
        return self.level != "ml" or not _FUNCTIONAL_SCOPE.search(self.scope)

    @property
    def name(self) -> str:
        """Last component of the scope (``self`` for ``...attention.self``), ``""`` for the root."""
        return self.scope.rsplit(".", 1)[-1] if self.scope else ""

    @property
    def depth(self) -> int:
        depth, node = 0, self.parent
        while node is not None:
            depth, node = depth + 1, node.parent
        return depth

    def walk(self) -> Iterator[EnergyNode]:
        """This node and all its descendants, depth first, in execution order."""
        stack = [self]
        while stack:
            node = stack.pop()
            yield node
            stack.extend(reversed(node.children))

    def energy_of(self, source: Source = "predicted") -> float | None:
        """The node's predicted or measured energy in joules."""
        return self.predicted_energy_j if source == "predicted" else self.energy_j

    def to_dict(self) -> dict[str, Any]:
        """The node as in the ``irene-tree/1`` format (plus ``predicted_energy_j``/``notes`` when set)."""
        out: dict[str, Any] = {
            "scope": self.scope,
            "type": self.type,
            "level": self.level,
            "features": {k: v for k, v in self.features.items() if k not in TREE_LEVEL_FEATURES},
            "energy_j": self.energy_j,
        }
        if self.predicted_energy_j is not None:
            out["predicted_energy_j"] = self.predicted_energy_j
        if self.notes:
            out["notes"] = dict(self.notes)
        out["children"] = [c.to_dict() for c in self.children]
        return out


def _close_scopes(scope: Any, scopes: list[str], limit: int = 5) -> list[str]:
    """Up to ``limit`` scopes a user likely meant: those containing ``scope`` (a short name such
    as ``attention``), else the nearest spellings (``encoder.layer.0.atention``), which a
    substring never finds."""
    if not scope or not isinstance(scope, str):
        return []
    near = [s for s in scopes if scope in s][:limit]
    return near or difflib.get_close_matches(scope, scopes, n=limit, cutoff=0.75)


@renamed_fields(device="profile")
@dataclass(eq=False)
class EnergyTree:
    """A model tree for one model run at one input size."""

    root: EnergyNode
    """The model node (level ``model``)."""
    model_name: str = ""
    """Architecture name (``bert-base-uncased``) or the model's class name for live models."""
    batch_size: int = 0
    seq_len: int = 0
    profile: str = ""
    """Name of the hardware profile the measurements come from (``irene-pc1``); ``""`` for a
    traced, unmeasured tree. Stored under the key ``device`` in the ``irene-tree/1`` format."""
    meta: dict[str, Any] = field(default_factory=dict)
    """Extra line-level information kept verbatim (e.g. profile, input shapes)."""
    calls: dict[str, Any] = field(default_factory=dict, repr=False)
    """Live call records keyed by scope, filled by ``trace(..., capture=True)`` so the node
    runner can replay each node in isolation. Holds tensors and modules: never serialised."""

    @property
    def energy_scope(self) -> str:
        """What ``energy_j`` (measured) covers, one of :data:`ENERGY_SCOPES`: ``meta["energy_scope"]``,
        else :data:`DEFAULT_ENERGY_SCOPE` (a dataset line that does not say was measured at the wall)."""
        return str(self.meta.get("energy_scope", DEFAULT_ENERGY_SCOPE))

    def __repr__(self) -> str:
        """One line for a notebook: the dataclass repr held the whole tree (15 kB for a 2-layer BERT)."""
        total = "" if self.total_j is None else f", total_j={self.total_j!r}"
        return (f"EnergyTree(model_name={self.model_name!r}, batch_size={self.batch_size}, seq_len={self.seq_len}, "
                f"profile={self.profile!r}, nodes={len(self)}{total})")

    @classmethod
    def from_dict(cls, obj: dict[str, Any]) -> EnergyTree:
        """The inverse of :meth:`to_dict`, validated (:class:`~pytest_irene.errors.DatasetError` names the field)."""
        from pytest_irene.engine.dataset import tree_from_dict  # dataset imports this module

        return tree_from_dict(obj)

    # -- navigation ---------------------------------------------------------------------

    def walk(self) -> Iterator[EnergyNode]:
        """Every node, depth first, in execution order, root first."""
        return self.root.walk()

    def __iter__(self) -> Iterator[EnergyNode]:
        return self.walk()

    def __len__(self) -> int:
        return sum(1 for _ in self.walk())

    def find(self, scope: str) -> EnergyNode:
        """The node with this scope (``""``: the root); :class:`~pytest_irene.errors.NodeNotFound`
        (a ``KeyError``) naming close matches (:func:`_close_scopes`) if there is none."""
        for node in self.walk():
            if node.scope == scope:
                return node
        near = _close_scopes(scope, [n.scope for n in self.walk()])
        hint = f"; did you mean one of {near}?" if near else ""
        raise NodeNotFound(f"no node with scope {scope!r} in {self.model_name or 'tree'}{hint}")

    def __getitem__(self, scope: str) -> EnergyNode:
        return self.find(scope)

    def nodes(self, level: Level | None = None) -> list[EnergyNode]:
        """All nodes, or those of one level, in execution order."""
        return [n for n in self.walk() if level is None or n.level == level]

    def leaves(self) -> list[EnergyNode]:
        return self.nodes("ml")

    def modules(self) -> list[EnergyNode]:
        return self.nodes("module")

    # -- energy -------------------------------------------------------------------------

    @property
    def total_j(self) -> float | None:
        """Predicted energy of the whole model, joules."""
        return self.root.predicted_energy_j

    @property
    def per_token_j(self) -> float | None:
        """For a generation tree (``meta["new_tokens"]``): predicted energy per generated token, joules."""
        tokens = self.meta.get("new_tokens")
        total = self.root.predicted_energy_j
        if not tokens or total is None:
            return None
        return total / float(tokens)

    @property
    def measured_total_j(self) -> float | None:
        """Measured energy of the whole model, joules."""
        return self.root.energy_j

    def share(self, node: EnergyNode, source: Source = "predicted") -> float:
        """Fraction (0-1) of the root's energy spent in ``node``.

        A node of another tree, or a tree with no energy of ``source`` at all (not predicted yet, or
        never measured) raises :class:`~pytest_irene.errors.UsageError`: a share of nothing is not 0 %, and a 0.0 would
        read as "this node costs nothing". A node without energy in a tree that has some (a node
        the rig could not measure) or a root of 0 J gives 0.0.
        """
        _check_choice("share(source=...)", source, SOURCES)
        top = node  # a node of another tree would get a plausible, wrong share of this root
        while top.parent is not None:
            top = top.parent
        if top is not self.root and not any(n is node for n in self.walk()):  # walk: children set without add_child
            raise UsageError(f"share: node {scope_label(node.scope)!r} ({node.type}) is not in this tree "
                             f"({self.model_name or 'tree'}); pass one of its own nodes (tree.find(scope))")
        total = self.root.energy_of(source)
        if total is None and not any(n.energy_of(source) is not None for n in self.walk()):
            raise UsageError(self._no_energy(source))
        mine = node.energy_of(source)
        if not total or mine is None:
            return 0.0
        return mine / total

    def _no_energy(self, source: Source) -> str:
        name = self.model_name or "this tree"
        if source == "predicted":
            return f"{name} has no predictions yet: call EnergyModel.predict(tree) first (or pytest_irene.predict)"
        return f"{name} has no measured energy: measure it on the rig, or use source='predicted'"

    def breakdown(
        self,
        level: Level | None = "module",
        source: Source = "predicted",
    ) -> list[tuple[str, float, float, int]]:
        """Energy by node type, like the paper's Tables 10/12.

        Returns ``(type, joules, share of the root, count)`` rows sorted by energy,
        summed over every node of that type at ``level`` (all non-root levels when
        ``None``). Nested types overlap (``BertAttention`` contains
        ``BertSelfAttention``), exactly as in the paper's tables. A level or source that is
        not one of :data:`LEVELS` / :data:`SOURCES` raises :class:`~pytest_irene.errors.UsageError`
        (it would match no node and look like a tree without energy).
        """
        _check_choice("breakdown(level=...)", level, (*LEVELS, None))
        _check_choice("breakdown(source=...)", source, SOURCES)
        sums: dict[str, list[float]] = {}
        for node in self.walk():
            if node is self.root or (level is not None and node.level != level):
                continue
            value = node.energy_of(source)
            if value is None:
                continue
            row = sums.setdefault(node.type, [0.0, 0])
            row[0] += value
            row[1] += 1
        total = self.root.energy_of(source) or 0.0
        rows = [(t, e, (e / total if total else 0.0), int(c)) for t, (e, c) in sums.items()]
        return sorted(rows, key=lambda r: (-r[1], r[0]))

    def bottlenecks(
        self,
        n: int = 10,
        level: Level | None = None,
        source: Source = "predicted",
        *,
        innermost: bool = False,
    ) -> list[EnergyNode]:
        """The ``n`` costliest non-root nodes (of one level, or any), energy descending, then scope.

        ``innermost`` ranks only :func:`innermost_modules` (where to optimise); a tree with no
        module between the root and its primitives then ranks its primitives.
        """
        _check_choice("bottlenecks(level=...)", level, (*LEVELS, None))
        _check_choice("bottlenecks(source=...)", source, SOURCES)
        if innermost:
            pool = innermost_modules(self) or self.leaves()
        else:
            pool = [x for x in self.walk() if x is not self.root and (level is None or x.level == level)]
        cands = [x for x in pool if x.energy_of(source) is not None]
        return sorted(cands, key=lambda x: (-(x.energy_of(source) or 0.0), x.scope))[:n]

    # -- serialisation ------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """The tree as one ``irene-tree/1`` line."""
        out: dict[str, Any] = {
            "format": "irene-tree/1",
            "device": self.profile,
            "model_name": self.model_name,
            "batch_size": self.batch_size,
            "seq_len": self.seq_len,
        }
        if self.meta:
            out["meta"] = dict(self.meta)
        out["root"] = self.root.to_dict()
        return out

    def set_tree_features(self) -> None:
        """Copy batch size, sequence length and their product onto every node's features."""
        for node in self.walk():
            node.features["batch_size"] = float(self.batch_size)
            node.features["seq_len"] = float(self.seq_len)
            node.features["batch_seq"] = float(self.batch_size * self.seq_len)


def innermost_modules(tree: EnergyTree) -> list[EnergyNode]:
    """Modules with no module below them (``BertSelfAttention``, ``BertIntermediate``, ...), in tree order.

    Containers (``encoder``, ``encoder.layer.3``) always cost more than their parts
    and say nothing about *what* to optimise, so bottleneck lists and budget
    failures name these.
    """
    return [n for n in tree.modules() if not any(c.level == "module" for c in n.children)]
