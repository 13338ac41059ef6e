"""The glue model: energy a module spends outside its children (reshapes, residual adds, masks)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from pytest_irene.engine.predict.regressors import MIN_ENERGY_J, weighted_lstsq
from pytest_irene.engine.predict.strategies.forest import Forest
from pytest_irene.validate import check, floats, require

#: Ridge on the per-category glue shares (deviations from the common share).
GLUE_RIDGE = 1e-3


@dataclass
class GlueModel:
    """Energy a module spends outside its children, from what it does beyond them.

    Columns (all in joules or counts, no intercept): the children's energies summed
    per child category (each leaf type seen in training, ``other`` leaves, child
    ``modules``), the node's flops and bytes beyond its children's, its number of
    children and its batch·sequence. A coefficient on a category is the share of
    glue that kind of child drags along (a MatMul/Softmax child implies head
    reshapes, scaling and masking of the same tensors; a child module implies
    almost none; many child blocks overlap slightly, giving a small negative
    share). Fitted by ``1/E(parent)²``-weighted ridge least squares on
    ground-truth children, so the error minimised is the parent's relative error.
    """

    categories: list[str]
    scale: list[float]
    coef: list[float]

    EXTRA = ("extra_flops", "extra_mem_bytes", "batch_seq")

    @property
    def columns(self) -> list[str]:
        return [f"energy:{c}" for c in self.categories] + [f"count:{c}" for c in self.categories] + list(self.EXTRA)

    def category_of(self, forest: Forest) -> np.ndarray:
        """Category index of every node as a child."""
        lookup = {c: i for i, c in enumerate(self.categories)}
        other, module = lookup["<other>"], lookup["<module>"]
        return np.array(
            [module if not leaf else lookup.get(t, other) for t, leaf in zip(forest.types, forest.is_leaf, strict=True)],
            dtype=np.int64,
        )

    def extra(self, forest: Forest, member: np.ndarray | None = None) -> np.ndarray:
        """Work beyond the children; children outside ``member`` count as the node's own work."""
        flops, mem = forest.col("flops"), forest.col("mem_bytes")
        keep = np.ones(len(forest.nodes), dtype=bool) if member is None else member
        return np.stack(
            [
                np.maximum(flops - forest.child_sum(np.where(keep, flops, 0.0)), 0.0),
                np.maximum(mem - forest.child_sum(np.where(keep, mem, 0.0)), 0.0),
                forest.col("batch_seq"),
            ],
            axis=1,
        )

    def category_sums(self, forest: Forest, values: np.ndarray, cat: np.ndarray) -> np.ndarray:
        out = np.zeros((len(forest.nodes), len(self.categories)))
        has = forest.parent >= 0
        np.add.at(out, (forest.parent[has], cat[has]), values[has])
        return out

    @classmethod
    def fit(cls, forest: Forest, min_count: int = 20) -> GlueModel:
        child = forest.parent >= 0
        leaf_child_types = forest.types[child & forest.is_leaf]
        names, counts = np.unique(leaf_child_types.astype(str), return_counts=True)
        cats = sorted(str(n) for n, c in zip(names, counts, strict=True) if c >= min_count)
        model = cls(categories=cats + ["<other>", "<module>"], scale=[], coef=[])
        internal = ~forest.is_leaf
        n_columns = len(model.columns)
        if not internal.any():  # flat data (roots without children): nothing to learn
            model.scale, model.coef = [1.0] * n_columns, [0.0] * n_columns
            return model
        cat = model.category_of(forest)
        ones = np.ones(len(forest.nodes))
        D = np.hstack(
            [
                model.category_sums(forest, forest.energy, cat),
                model.category_sums(forest, ones, cat),
                model.extra(forest),
            ]
        )[internal]
        G = forest.energy[internal]
        glue = G - forest.child_sum(forest.energy)[internal]
        w = 1.0 / np.maximum(G, MIN_ENERGY_J) ** 2
        scale = np.sqrt(np.average(D**2, axis=0, weights=w))
        scale = np.where(scale > 0, scale, 1.0)
        # Shares shrink toward a common share rather than toward zero: the design gets
        # a "all children" energy column and an "all children" count column, and the
        # per-category columns only carry (ridge-penalised) deviations from them. With
        # few training architectures the per-category shares stay near the common one,
        # and a category never seen (``<other>``) gets the common share.
        k = len(model.categories)
        common = np.stack([D[:, :k].sum(axis=1), D[:, k : 2 * k].sum(axis=1)], axis=1)
        cscale = np.sqrt(np.average(common**2, axis=0, weights=w))
        cscale = np.where(cscale > 0, cscale, 1.0)
        X = np.hstack([common / cscale, D / scale])
        ridge = np.full(X.shape[1], GLUE_RIDGE)
        ridge[:2] = 1e-6
        ridge[2 + 2 * k :] = 1e-6  # extra work: physical costs, lightly shrunk
        beta = weighted_lstsq(X, glue, w, ridge=ridge)
        raw = beta[2:] / scale
        raw[:k] += beta[0] / cscale[0]
        raw[k : 2 * k] += beta[1] / cscale[1]
        model.scale, model.coef = scale.tolist(), (raw * scale).tolist()
        return model

    def contributions_j(self, forest: Forest) -> np.ndarray:
        """Per node and column (:attr:`columns`), the joules each glue term adds, computed
        from the *measured* energies of the children (what fitting uses)."""
        cat = self.category_of(forest)
        ones = np.ones(len(forest.nodes))
        D = np.hstack(
            [self.category_sums(forest, forest.energy, cat), self.category_sums(forest, ones, cat), self.extra(forest)]
        )
        return (D / np.asarray(self.scale)) * np.asarray(self.coef)

    def scaled(self, per_call: float, per_flop: float, per_byte: float, per_token: float) -> GlueModel:
        """A copy whose machine costs are multiplied: the per-child-call terms (``count:*``),
        the extra flops, the extra bytes and the batch·sequence term. The shares of the
        children's energy (``energy:*``) are what a module does, not what the machine
        costs, and are kept."""
        k = len(self.categories)
        factors = np.ones(len(self.coef))
        factors[k : 2 * k] = per_call
        factors[2 * k :] = [per_flop, per_byte, per_token]
        return GlueModel(list(self.categories), list(self.scale), (np.asarray(self.coef) * factors).tolist())

    def glue_j(self, category_sums: np.ndarray, category_counts: np.ndarray, extra: np.ndarray) -> np.ndarray:
        D = np.hstack([category_sums, category_counts, extra])
        return (D / np.asarray(self.scale)) @ np.asarray(self.coef)

    def to_json(self) -> dict[str, Any]:
        return {"categories": list(self.categories), "scale": list(self.scale), "coef": list(self.coef)}

    @classmethod
    def from_json(cls, obj: Any) -> GlueModel:
        obj = require(obj, ("categories", "scale", "coef"), "glue model")
        cats = obj["categories"]
        check(
            isinstance(cats, list)
            and all(isinstance(c, str) for c in cats)
            and "<other>" in cats
            and "<module>" in cats
            and len(set(cats)) == len(cats),
            "glue model field 'categories': expected a list of distinct names including '<other>' and '<module>'",
        )
        n = 2 * len(cats) + len(cls.EXTRA)
        scale = floats(obj["scale"], "scale", n, "glue model")
        check(all(v > 0 for v in scale), "glue model field 'scale': expected positive values")
        return cls(list(cats), scale, floats(obj["coef"], "coef", n, "glue model"))
