"""How one predicted tree compares with its baseline: the per-module deltas and the verdict.

The call record that carries a comparison to every reporter, and its JSON, is
:class:`pytest_irene.compare.records.CallRecord`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

Status = Literal["pass", "fail", "new", "skipped"]

#: Defaults of ``--irene-tolerance`` (relative) and ``--irene-min-delta`` (joules),
#: shared by the plugin and ``irene compare``.
DEFAULT_TOLERANCE = 0.05
DEFAULT_MIN_DELTA_J = 0.001


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
