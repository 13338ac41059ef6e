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


#: What fails the gate: ``increase`` (a module costs more beyond the limits, or a costly
#: module appeared: the default, as pytest-benchmark and CodSpeed fail only on slowdowns)
#: or ``any`` (decreases and removed modules too, to keep the baselines tight).
FAIL_ON: tuple[str, ...] = ("increase", "any")
DEFAULT_FAIL_ON = "increase"


def counts_against(baseline_j: float | None, now_j: float | None, fail_on: str) -> bool:
    """Whether a change that :func:`moved` fails under ``fail_on``: any change for ``any``;
    for ``increase`` a module that costs more now, or did not exist before."""
    if fail_on == "any":
        return True
    return baseline_j is None or (now_j is not None and now_j > baseline_j)


def moved(baseline_j: float, now_j: float, *, tolerance: float, min_delta: float) -> bool:
    """Whether a module's energy changed enough to fail the gate.

    Beyond ``tolerance`` (relative) AND beyond ``min_delta`` joules (absolute), so a
    tiny module whose few microjoules move by 10 % never trips the gate. The one
    rule for both the per-module check and the rename matching.
    """
    diff = abs(now_j - baseline_j)
    beyond = diff > 0 if baseline_j == 0 else diff / abs(baseline_j) > tolerance
    return beyond and diff > min_delta


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
    """Whether this change alone fails the test: beyond tolerance and minimum delta (or added,
    or removed) in the direction ``fail_on`` counts (:func:`counts_against`)."""
    was: str | None = None
    """The module's scope in the baseline when it was renamed (``layers.0.mlp`` for
    ``layers.0.ffn``, see :class:`Rename`); ``None`` otherwise."""

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
            "was": self.was,
        }


@dataclass(frozen=True)
class Rename:
    """A subtree of modules that disappeared under one scope and reappeared under another,
    with the same types and energies: ``self.mlp`` renamed ``self.ffn``, same computation."""

    old: str
    """Scope of the subtree's top module in the baseline (``layers.0.mlp``)."""
    new: str
    """Its scope now (``layers.0.ffn``)."""
    type: str
    """Class name of the top module."""
    energy_j: float
    """Energy of the top module now, joules."""
    scopes: tuple[tuple[str, str], ...] = ()
    """Every ``(old, new)`` scope pair of the subtree, the top module first."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "old": self.old,
            "new": self.new,
            "type": self.type,
            "energy_j": self.energy_j,
            "scopes": [list(pair) for pair in self.scopes],
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
    """Every module present in the baseline or now, in tree order (a renamed module once,
    under its new scope, with :attr:`ModuleDelta.was`)."""
    renames: tuple[Rename, ...] = ()
    """Subtrees found renamed: they pass, except under ``--irene-strict``."""
    cheaper: tuple[str, ...] = ()
    """Innermost modules that got cheaper beyond the limits without failing (``--irene-fail-on
    increase``): the baseline is stale, ``--irene-save`` records the lower energy."""
    legacy_baseline: bool = False
    """The baseline predates leaf-module coverage (``irene-baselines/1``), so its leaves went
    ungated: the test shows the refresh note even when it passes."""

    @property
    def failed_modules(self) -> list[ModuleDelta]:
        return [d for d in self.deltas if d.failed]

    def to_dict(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "reason": self.reason,
            "deltas": [d.to_dict() for d in self.deltas],
            "renames": [r.to_dict() for r in self.renames],
            "cheaper": list(self.cheaper),
            "legacy_baseline": self.legacy_baseline,
        }
