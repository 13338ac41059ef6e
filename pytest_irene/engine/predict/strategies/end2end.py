"""End2End (the paper) and StepWise (its ablation): modules as α-weighted sums of children.

``E(n) = Σ_c α(c)·E(c)``, ``α(c) = 1 + tanh(W·φ(f(c)) + b)/τ`` with τ = 10 and φ
polynomial features of the standardised node features, trained end-to-end through
the tree with loss ``Σ (P−G)²/G²`` (Adam 1e-3). Torch is only used here, to train.
Training is seeded and restores torch's global random state afterwards.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from pytest_irene.engine.predict.regressors import LeafRegressors
from pytest_irene.engine.predict.strategies.alpha import AlphaWeighting
from pytest_irene.engine.predict.strategies.base import Predictor
from pytest_irene.engine.predict.strategies.forest import Forest
from pytest_irene.validate import require


@dataclass
class TreeBatch:
    """The nodes of a few trees, concatenated for one training step (parents re-indexed)."""

    phi: np.ndarray
    """Polynomial features of each node (rows)."""
    leaf_pred: np.ndarray
    """Predicted energy of each leaf, J (ignored on modules)."""
    parent: np.ndarray
    """Index of each node's parent within the batch, ``-1`` for roots."""
    depth: np.ndarray
    """Depth of each node in its tree (root 0)."""
    is_leaf: np.ndarray
    """Whether each node is a leaf."""
    energy: np.ndarray
    """Measured energy of each node, J."""


class _TreeBatches:
    """Per-tree slices of a training forest, concatenated into a :class:`TreeBatch` on demand."""

    def __init__(self, forest: Forest, phi: np.ndarray, leaf_pred: np.ndarray):
        self.parts: list[TreeBatch] = []
        n_trees = int(forest.tree_index.max()) + 1
        starts = np.searchsorted(forest.tree_index, np.arange(n_trees + 1))
        for t in range(n_trees):
            a, b = int(starts[t]), int(starts[t + 1])
            parent = forest.parent[a:b].copy()
            parent[parent >= 0] -= a
            self.parts.append(
                TreeBatch(phi[a:b], leaf_pred[a:b], parent, forest.depth[a:b], forest.is_leaf[a:b], forest.energy[a:b])
            )

    def batch(self, ids: Sequence[int]) -> TreeBatch:
        chosen = [self.parts[t] for t in ids]
        offsets = np.cumsum([0] + [len(p.phi) for p in chosen[:-1]])
        return TreeBatch(
            phi=np.concatenate([p.phi for p in chosen]),
            leaf_pred=np.concatenate([p.leaf_pred for p in chosen]),
            parent=np.concatenate([np.where(p.parent >= 0, p.parent + o, -1) for p, o in zip(chosen, offsets)]),
            depth=np.concatenate([p.depth for p in chosen]),
            is_leaf=np.concatenate([p.is_leaf for p in chosen]),
            energy=np.concatenate([p.energy for p in chosen]),
        )


class End2EndPredictor(Predictor):
    """The paper's End2End: α trained through the whole tree (``teacher=False``).

    With ``teacher=True`` (:class:`StepWisePredictor`) each module is instead the
    α-weighted sum of its children's *measured* energies while training."""

    strategy = "end2end"
    teacher = False
    tau = 10.0
    epochs = 8
    lr = 1e-3
    trees_per_step = 1

    def __init__(self, features: str, seed: int = 0):
        super().__init__(features, seed)
        self.alpha: AlphaWeighting | None = None

    #: Degree of the polynomial features (the paper's choice; 560 columns for ``all``).
    degree = 3

    def fit_forest(self, forest: Forest) -> None:
        import torch

        self.fit_leaves(forest, "paper")
        leaf_pred, _ = self.leaf_predictions(forest)
        self.alpha = AlphaWeighting.init(forest.X, self.degree, self.tau)
        phi = self.alpha.phi(forest.X)
        batches = _TreeBatches(forest, phi, leaf_pred)
        n_trees = len(batches.parts)
        gen = torch.Generator().manual_seed(self.seed)
        torch_state = torch.random.get_rng_state()
        torch.manual_seed(self.seed)
        W = torch.zeros(phi.shape[1], dtype=torch.float64, requires_grad=True)
        b = torch.zeros(1, dtype=torch.float64, requires_grad=True)
        with torch.no_grad():
            W.normal_(0.0, 0.01, generator=gen)
        opt = torch.optim.Adam([W, b], lr=self.lr)
        for _epoch in range(self.epochs):
            order = torch.randperm(n_trees, generator=gen).tolist()
            for s in range(0, n_trees, self.trees_per_step):
                batch = batches.batch(order[s : s + self.trees_per_step])
                if batch.is_leaf.all():  # no module in these trees: nothing to weight
                    continue
                loss = self._loss(torch, W, b, batch)
                opt.zero_grad()
                loss.backward()
                opt.step()
        torch.random.set_rng_state(torch_state)
        self.alpha.W = W.detach().numpy().astype(float).tolist()
        self.alpha.b = float(b.detach().numpy()[0])

    def _loss(self, torch: Any, W: Any, b: Any, batch: TreeBatch) -> Any:
        """Mean over depths of the summed squared relative errors of the batch's modules."""
        alpha = 1.0 + torch.tanh(torch.from_numpy(batch.phi) @ W + b) / self.tau
        measured = torch.from_numpy(batch.energy)
        internal = torch.from_numpy(~batch.is_leaf)
        parent, depth = batch.parent, batch.depth
        if self.teacher:
            has = parent >= 0
            contrib = alpha[torch.from_numpy(has)] * measured[torch.from_numpy(has)]
            pred = torch.zeros(len(batch.energy), dtype=torch.float64).index_add(
                0, torch.from_numpy(parent[has]), contrib
            )
        else:
            pred = torch.from_numpy(np.where(batch.is_leaf, batch.leaf_pred, 0.0))
            for d in range(int(depth.max()), 0, -1):
                kids = np.nonzero(depth == d)[0]
                k = torch.from_numpy(kids)
                pred = pred.index_add(0, torch.from_numpy(parent[kids]), alpha[k] * pred[k])
        rel = (pred - measured) / measured
        return (rel[internal] ** 2).sum() / max(1, len(set(depth.tolist())))

    def predict_forest(self, forest: Forest) -> tuple[np.ndarray, np.ndarray]:
        assert self.alpha is not None
        leaf, generic = self.leaf_predictions(forest)
        alpha = self.alpha.alpha(forest.X)
        return forest.fold_with(leaf, lambda idx, v: alpha[idx] * v, None), generic

    def params_json(self) -> dict[str, Any]:
        assert self.leaves is not None and self.alpha is not None
        return {"leaves": self.leaves.to_json(), "alpha": self.alpha.to_json()}

    def load_params(self, obj: dict[str, Any]) -> None:
        obj = require(obj, ("leaves", "alpha"), "predictor params")
        self.leaves = LeafRegressors.from_json(obj["leaves"])
        self.alpha = AlphaWeighting.from_json(obj["alpha"], len(self.feature_names))


class StepWisePredictor(End2EndPredictor):
    """Paper ablation: the same α, trained one level at a time on ground-truth children."""

    strategy = "stepwise"
    teacher = True
