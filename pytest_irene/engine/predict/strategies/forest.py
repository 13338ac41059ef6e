"""Trees as flat arrays: how every strategy sees its nodes.

Prediction is vectorised: the nodes of one or many trees are flattened into numpy
arrays (:class:`Forest`), leaves are predicted per type in one call each, and the
tree is then folded bottom-up one depth at a time with ``np.add.at``.
Training trees are sorted by (model, batch, sequence) before anything else, so two
fits on the same data give bit-identical predictions whatever the file order.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from pytest_irene.engine.tree import EnergyNode, EnergyTree, scope_label
from pytest_irene.errors import UsageError


@dataclass
class Forest:
    """The nodes of one or more trees as flat arrays (parents before children).

    ``X`` holds ``feature_names`` columns; ``parent`` is ``-1`` for roots;
    ``energy`` is NaN where not measured.
    """

    nodes: list[EnergyNode]
    types: np.ndarray
    levels: np.ndarray
    X: np.ndarray
    feature_names: list[str]
    parent: np.ndarray
    depth: np.ndarray
    is_leaf: np.ndarray
    energy: np.ndarray
    tree_index: np.ndarray

    @property
    def max_depth(self) -> int:
        return int(self.depth.max()) if len(self.depth) else 0

    def col(self, name: str) -> np.ndarray:
        return self.X[:, self.feature_names.index(name)]

    def child_sum(self, values: np.ndarray) -> np.ndarray:
        """Per node, the sum of ``values`` over its direct children (0 for leaves)."""
        out = np.zeros(len(self.nodes))
        has = self.parent >= 0
        np.add.at(out, self.parent[has], values[has])
        return out

    def fold_with(self, leaf_values: np.ndarray, contrib, finish) -> np.ndarray:
        """Bottom-up by depth: leaves keep ``leaf_values``; an internal node gets the sum of
        ``contrib(child_idx, child_values)`` over its children, passed through
        ``finish(node_idx, summed)`` when given (one vectorised step per depth)."""
        values = np.where(self.is_leaf, leaf_values, 0.0).astype(np.float64)
        for d in range(self.max_depth, 0, -1):
            kids = np.nonzero(self.depth == d)[0]
            if len(kids) == 0:
                continue
            parents = self.parent[kids]
            acc = np.zeros(len(self.nodes))
            np.add.at(acc, parents, contrib(kids, values[kids]))
            targets = np.unique(parents)
            targets = targets[~self.is_leaf[targets]]
            summed = acc[targets]
            values[targets] = finish(targets, summed) if finish is not None else summed
        return values


def flatten(trees: Sequence[EnergyTree], feature_names: Sequence[str]) -> Forest:
    """Flatten trees into a :class:`Forest`; ``UsageError`` when a node lacks a feature."""
    nodes: list[EnergyNode] = []
    parent: list[int] = []
    depth: list[int] = []
    tree_index: list[int] = []
    for ti, tree in enumerate(trees):
        stack: list[tuple[EnergyNode, int, int]] = [(tree.root, -1, 0)]
        while stack:
            node, p, d = stack.pop()
            idx = len(nodes)
            nodes.append(node)
            parent.append(p)
            depth.append(d)
            tree_index.append(ti)
            for child in reversed(node.children):
                stack.append((child, idx, d + 1))
    names = list(feature_names)
    X = np.empty((len(nodes), len(names)))
    for i, node in enumerate(nodes):
        feats = node.features
        try:
            X[i] = [feats[f] for f in names]
        except KeyError as exc:
            tree = trees[tree_index[i]]
            missing = [f for f in names if f not in feats]
            raise UsageError(
                f"node {scope_label(node.scope)!r} of {tree.model_name or 'tree'} lacks feature(s) {missing} "
                f"needed by this predictor; trees traced without measuring have model features only "
                f"(use features='model')"
            ) from exc
    energy = np.array([np.nan if n.energy_j is None else float(n.energy_j) for n in nodes])
    return Forest(
        nodes=nodes,
        # a known primitive under another name (a scaled Embedding, nn.GELU) uses its dataset type
        types=np.array([n.notes.get("regressor_type", n.type) for n in nodes], dtype=object),
        levels=np.array([n.level for n in nodes], dtype=object),
        X=X,
        feature_names=names,
        parent=np.asarray(parent, dtype=np.int64),
        depth=np.asarray(depth, dtype=np.int64),
        is_leaf=np.array([not n.children for n in nodes], dtype=bool),
        energy=energy,
        tree_index=np.asarray(tree_index, dtype=np.int64),
    )


def sort_trees(trees: Sequence[EnergyTree]) -> list[EnergyTree]:
    """Training order independent of file order: by (model, batch, sequence, root energy)."""
    return sorted(trees, key=lambda t: (t.model_name, t.batch_size, t.seq_len, t.root.energy_j or 0.0))


def training_forest(trees: Sequence[EnergyTree], names: Sequence[str]) -> Forest:
    """Sorted, flattened training trees; ``UsageError`` on none or on a node without measured energy."""
    if not trees:
        raise UsageError("cannot fit a predictor on zero trees")
    ordered = sort_trees(trees)
    forest = flatten(ordered, names)
    if np.isnan(forest.energy).any():
        i = int(np.nonzero(np.isnan(forest.energy))[0][0])
        tree = ordered[int(forest.tree_index[i])]
        raise UsageError(
            f"training tree {tree.model_name or 'unnamed'} (batch {tree.batch_size}, seq {tree.seq_len}): node "
            f"{scope_label(forest.nodes[i].scope)!r} has no measured energy (energy_j)"
        )
    return forest
