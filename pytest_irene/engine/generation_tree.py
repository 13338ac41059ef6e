"""Generation trees as data: the grouped decode steps and how they are predicted (no torch).

See :mod:`pytest_irene.engine.generation` for how they are traced. Prediction
(:func:`predict_generation`) predicts the prefill and up to
:data:`MAX_PREDICTED_STEPS` decode steps with the energy model, spread evenly
over the steps (every step when there are fewer); a step in between gets each
node's energy interpolated linearly in the KV length, and the decode nodes hold
the sum over steps. The reference data has no decode-step measurements: decode
figures are extrapolated from forwards over whole sequences.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pytest_irene.engine.tree import EnergyNode, EnergyTree, join_scope

__all__ = ["GenerationTree", "DecodeSteps", "predict_generation", "copy_tree", "copy_node", "signature", "SUMMED",
           "MAX_PREDICTED_STEPS"]

#: Decode steps predicted by the energy model; the others are interpolated between them.
MAX_PREDICTED_STEPS = 64
#: Features that grow with the KV length and add up over steps.
SUMMED = ("flops", "mem_bytes")


@dataclass
class DecodeSteps:
    """Every decode step's features: ``base + step·slope`` per node (affine), or one traced tree per step."""

    template: EnergyTree
    """The tree of the first decode step (the model's own scopes)."""
    count: int
    """Number of decode steps."""
    prompt_len: int
    """KV length at the first decode step."""
    slope: list[dict[str, float]] | None = None
    """Per node (walk order), the change of each summed feature per step; ``None`` when every step was traced."""
    traced: list[EnergyTree] = field(default_factory=list)
    """Every step's traced tree, when the affine law did not hold (or on a real device)."""

    def step(self, index: int) -> EnergyTree:
        """The tree of decode step ``index`` (0-based; KV length ``prompt_len + index``)."""
        if not 0 <= index < self.count:
            raise IndexError(f"decode step {index} out of range: {self.count} step(s)")
        if self.slope is None:
            return self.traced[index]
        tree = copy_tree(self.template, "")
        for node, template, slope in zip(tree.walk(), self.template.walk(), self.slope, strict=True):
            for name in SUMMED:
                node.features[name] = template.features[name] + index * slope[name]
        tree.meta["kv_len"] = self.prompt_len + index
        return tree

    def summed(self) -> list[dict[str, float]]:
        """Per node (walk order), each summed feature over every step."""
        if self.slope is None:
            per_step = [list(t.walk()) for t in self.traced]
            return [{k: float(sum(nodes[i].features[k] for nodes in per_step)) for k in SUMMED}
                    for i in range(len(per_step[0]))]
        n = self.count
        return [{k: float(n * node.features[k] + slope[k] * n * (n - 1) / 2) for k in SUMMED}
                for node, slope in zip(self.template.walk(), self.slope, strict=True)]


@dataclass(eq=False)
class GenerationTree(EnergyTree):
    """An :class:`EnergyTree` of a whole generation (root ``Generation``: ``prefill`` and ``decode``)."""

    prefill: EnergyTree | None = field(default=None, repr=False)
    """The prefill forward's own tree (model scopes, not prefixed)."""
    steps: DecodeSteps | None = field(default=None, repr=False)
    """Every decode step's features."""
    step_energies_j: list[float] = field(default_factory=list, repr=False)
    """Predicted energy of each decode step, joules (after prediction)."""
    _knots: list[int] = field(default_factory=list, init=False, repr=False)
    """The decode steps the energy model predicted (see :func:`predict_generation`)."""
    _knot_energies: list[list[float | None]] = field(default_factory=list, init=False, repr=False)
    """Per predicted step, each node's predicted energy (walk order); the other steps interpolate them."""
    _knot_generic: list[bool] = field(default_factory=list, init=False, repr=False)
    """Per node (walk order), whether a generic regressor predicted it in any predicted step."""

    def decode_step(self, index: int) -> EnergyTree:
        """One decode step's tree with its own features (0-based; ``steps.count`` steps).

        After prediction every node carries the energy the generation's totals were built from
        (the predicted steps' energies, interpolated in between), so ``decode_step(i).total_j``
        is ``step_energies_j[i]``: the step's tree is built afresh from the template, and would
        otherwise hold no prediction at all."""
        if self.steps is None:
            raise IndexError("this generation has no decode step (max_new_tokens=1)")
        tree = self.steps.step(index)
        if self._knots:
            for i, node in enumerate(tree.walk()):
                node.predicted_energy_j = _interpolated(self._knot_energies, i, self._knots, index)
                if self._knot_generic[i]:
                    node.notes["generic_regressor"] = True
        return tree


def signature(tree: EnergyTree) -> list[tuple[str, str, str]]:
    """(scope, type, level) of every node: two steps with equal signatures have the same module tree."""
    return [(n.scope, n.type, n.level) for n in tree.walk()]


def copy_tree(tree: EnergyTree, prefix: str) -> EnergyTree:
    """A copy of ``tree`` (nodes, features, notes; no predictions) with every scope prefixed by ``prefix``."""
    root = copy_node(tree.root, prefix)
    out = EnergyTree(root=root, model_name=tree.model_name, batch_size=tree.batch_size, seq_len=tree.seq_len)
    out.meta = dict(tree.meta)
    return out


def copy_node(node: EnergyNode, prefix: str) -> EnergyNode:
    """A copy of ``node`` and its subtree with ``prefix.`` before every scope (``prefix`` for the root)."""
    scope = join_scope(prefix, node.scope)
    copy = EnergyNode(scope=scope, type=node.type, level=node.level, features=dict(node.features), notes=dict(node.notes))
    for child in node.children:
        copy.add_child(copy_node(child, prefix))
    return copy


# -- prediction -------------------------------------------------------------------------


def _knots(count: int) -> list[int]:
    if count <= MAX_PREDICTED_STEPS:
        return list(range(count))
    return sorted({int(round(x)) for x in np.linspace(0, count - 1, MAX_PREDICTED_STEPS)})


def predict_generation(tree: GenerationTree, predict_many: Callable[[Sequence[EnergyTree]], None]) -> None:
    """Predict a generation tree: the prefill, then decode steps (see the module docstring)."""
    assert tree.prefill is not None
    steps = tree.steps
    knots = _knots(steps.count) if steps is not None else []
    knot_trees = [steps.step(k) for k in knots] if steps is not None else []
    predict_many([tree.prefill, *knot_trees])
    pre = tree.root.children[0]
    for mine, theirs in zip(pre.walk(), tree.prefill.walk(), strict=True):
        mine.predicted_energy_j = theirs.predicted_energy_j
        if theirs.notes.get("generic_regressor"):
            mine.notes["generic_regressor"] = True
    total = pre.predicted_energy_j or 0.0
    tree.step_energies_j = []
    walks = [list(t.walk()) for t in knot_trees]
    tree._knots = knots
    tree._knot_energies = [[n.predicted_energy_j for n in nodes] for nodes in walks]
    tree._knot_generic = [any(bool(n.notes.get("generic_regressor")) for n in column) for column in zip(*walks)]
    if steps is not None:
        dec = tree.root.children[1]
        all_steps = np.arange(steps.count)
        for i, node in enumerate(dec.walk()):
            node.predicted_energy_j = float(_interpolated(tree._knot_energies, i, knots, all_steps).sum())
            if tree._knot_generic[i]:
                node.notes["generic_regressor"] = True
        tree.step_energies_j = [float(v) for v in _interpolated(tree._knot_energies, 0, knots, all_steps)]
        total += dec.predicted_energy_j or 0.0
    tree.root.predicted_energy_j = total


def _interpolated(energies: list[list[float | None]], node: int, knots: list[int], at: Any) -> Any:
    """Node ``node``'s energy at step(s) ``at``, linear in the step between the predicted ``knots``
    (a node the energy model left unpredicted counts 0 J); a float for one step, an array for many."""
    values = np.array([per_node[node] or 0.0 for per_node in energies])
    out = np.interp(at, knots, values)
    return float(out) if np.ndim(out) == 0 else out
