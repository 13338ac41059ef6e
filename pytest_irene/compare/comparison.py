"""What one wrapped call produced and how it compares with its baseline.

These records are the hand-over point between the gate (plugin) and every
reporter (terminal summary, ``--irene-json``, ``--irene-html``, user hooks):
reporters read them, never the plugin's internals.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from pytest_irene.engine.tree import EnergyTree

Status = Literal["pass", "fail", "new", "skipped"]


@dataclass(frozen=True)
class ModuleDelta:
    """The change of one module's predicted energy against the baseline."""

    scope: str
    """Module path (``encoder.layer.0.intermediate``); ``""`` for the whole model."""
    type: str
    """Module class name (``BertIntermediate``)."""
    baseline_j: float | None
    """Energy in the baseline, joules; ``None`` when the module is new."""
    now_j: float | None
    """Energy now, joules; ``None`` when the module was removed."""
    failed: bool
    """Whether this change alone fails the test (beyond tolerance and minimum delta, or added/removed)."""

    @property
    def change(self) -> float | None:
        """Relative change (0.05 = +5 %); ``None`` when added or removed."""
        if self.baseline_j is None or self.now_j is None or self.baseline_j == 0:
            return None
        return (self.now_j - self.baseline_j) / self.baseline_j

    def to_dict(self) -> dict[str, Any]:
        return {
            "scope": self.scope,
            "type": self.type,
            "baseline_j": self.baseline_j,
            "now_j": self.now_j,
            "change": self.change,
            "failed": self.failed,
        }


@dataclass(frozen=True)
class Comparison:
    """The outcome of comparing one predicted tree with its stored baseline."""

    status: Status
    """``pass``, ``fail`` (a module moved beyond tolerance), ``new`` (no baseline yet) or
    ``skipped`` (the baseline was made with another profile, feature set or input size)."""
    reason: str = ""
    """Why the status is what it is, in one sentence for humans."""
    deltas: tuple[ModuleDelta, ...] = ()
    """Every module present in the baseline or now, in tree order."""

    @property
    def failed_modules(self) -> list[ModuleDelta]:
        return [d for d in self.deltas if d.failed]

    def to_dict(self) -> dict[str, Any]:
        return {"status": self.status, "reason": self.reason, "deltas": [d.to_dict() for d in self.deltas]}


@dataclass
class CallRecord:
    """One call of the ``irene`` fixture: the predicted tree and what the gate made of it."""

    nodeid: str
    """The test's node id."""
    label: str
    """The label given to the call (``"default"`` when none)."""
    tree: EnergyTree
    """The predicted tree."""
    profile: str
    """Energy model profile the prediction used."""
    features: str
    """Feature set used: ``model`` or ``all``."""
    comparison: Comparison | None = None
    """Baseline comparison; ``None`` when comparison did not run (e.g. ``--irene-save``)."""
    budget_j: float | None = None
    """Energy budget the total was held to, joules; ``None`` when there was none."""
    over_budget: bool = False
    """Whether the predicted total exceeded the budget."""
    extra: dict[str, Any] = field(default_factory=dict)
    """Anything else a reporter may show (e.g. feature-mode reason)."""

    @property
    def failed(self) -> bool:
        return self.over_budget or (self.comparison is not None and self.comparison.status == "fail")
