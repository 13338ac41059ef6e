"""The regression gate: compare a predicted tree with its baseline, hold it to a budget.

Pure functions over :mod:`pytest_irene.engine.tree` and :mod:`pytest_irene.compare.baselines`
data; no pytest, no rendering. Each check returns a small result (:class:`Comparison`,
:class:`BudgetCheck`); :mod:`pytest_irene.report.failure` turns a failed call into the
readable section that is attached to the test's report.
"""

from __future__ import annotations

from dataclasses import dataclass

from pytest_irene.compare.baselines import (
    GENERATION_LENGTH_KEY, INPUT_ELEMENTS_KEY, NOTED_INPUT_KEYS, OTHER_INPUT_ELEMENTS_KEY, BaselineEntry, tree_energies,
)
from pytest_irene.compare.comparison import (
    DEFAULT_FAIL_ON,
    DEFAULT_MIN_DELTA_J,
    DEFAULT_TOLERANCE,
    Comparison,
    ModuleDelta,
    Rename,
    Status,
    counts_against,
    moved,
)
from pytest_irene.compare.renames import ScopesBelow, find_renames
from pytest_irene.engine.tree import EnergyTree, scope_label
from pytest_irene.units import format_energy


#: Said of a comparison against an ``irene-baselines/1`` entry (non-leaf modules only): the test
#: shows it even when it passes, so the user knows its leaf modules are not gated yet.
LEGACY_BASELINE_NOTE = "the baseline predates leaf-module coverage (irene-baselines/1): --irene-save to gate leaf modules"


def _sizes(inputs: dict[str, int]) -> dict[str, int]:
    """The input sizes that must match for a comparison (batch and tokens, not the generation
    length, nor the main input's elements, which only say whether the inputs are the same)."""
    return {k: v for k, v in inputs.items() if k not in NOTED_INPUT_KEYS}


def _tokens_note(entry: BaselineEntry, tree: EnergyTree) -> str:
    """``"tokens per sample changed 17 -> 65 with the same inputs ...; "`` when the sizes moved but
    the call read the same main input: the model changed how it reads it (a ViT's patch size), which
    the gate must judge rather than skip as another input size. ``""`` otherwise."""
    was, now = entry.inputs.get(INPUT_ELEMENTS_KEY), tree.meta.get(INPUT_ELEMENTS_KEY)
    sizes = {"batch_size": int(tree.batch_size), "seq_len": int(tree.seq_len)}
    if was is None or was != now or _sizes(entry.inputs) == sizes:
        return ""
    changed = [f"{'batch' if k == 'batch_size' else 'tokens per sample'} {entry.inputs.get(k)} -> {v}"
               for k, v in sizes.items() if entry.inputs.get(k) != v]
    return f"{', '.join(changed)} with the same inputs (the model reads them differently); "


def _length_note(entry: BaselineEntry, tree: EnergyTree) -> str:
    """``"generation length changed 8 -> 16 new tokens ...; "`` when both sides know it and it moved:
    a longer generation moves every decode module, which the user should not read as 30 regressions."""
    was, new_tokens = entry.inputs.get(GENERATION_LENGTH_KEY), tree.meta.get(GENERATION_LENGTH_KEY)
    if was is None or new_tokens is None or was == new_tokens:
        return ""
    return f"generation length changed {was} -> {new_tokens} new tokens (every decode module moves with it); "


def _mismatch(
    entry: BaselineEntry, tree: EnergyTree, profile: str | None, features: str | None, energy_model: str | None
) -> str:
    """Why a baseline cannot be compared with this tree, ``""`` if it can. One model file named
    two ways (``../rig.json``, an absolute path) is one profile: its version (file hash) says so."""
    same_model = bool(energy_model) and entry.energy_model == energy_model
    if profile is not None and entry.profile != profile and not same_model:
        return f"baseline was made with profile {entry.profile!r}, this run uses {profile!r}"
    if energy_model and entry.energy_model and entry.energy_model != energy_model:
        return (
            f"baseline was made with another version of energy model {entry.profile!r} "
            f"({entry.energy_model}, now {energy_model}); refresh it with --irene-save"
        )
    if features is not None and entry.features != features:
        return f"baseline was made with {entry.features!r} features, this run uses {features!r}"
    now = {"batch_size": int(tree.batch_size), "seq_len": int(tree.seq_len)}
    if _sizes(entry.inputs) != now and not _tokens_note(entry, tree):
        was = ", ".join(f"{k}={v}" for k, v in sorted(_sizes(entry.inputs).items()))
        cur = ", ".join(f"{k}={v}" for k, v in sorted(now.items()))
        return f"baseline was made with input size {was}, this call has {cur}"
    others = entry.inputs.get(OTHER_INPUT_ELEMENTS_KEY), tree.meta.get(OTHER_INPUT_ELEMENTS_KEY)
    if None not in others and others[0] != others[1]:  # (baselines saved before it record none)
        return (f"baseline was made with other inputs beside the main one ({others[0]} elements, this call "
                f"{others[1]}: pixels of another size, a longer mask?)")
    return ""


def compare(
    baseline_entry: BaselineEntry | None,
    tree: EnergyTree,
    *,
    tolerance: float = DEFAULT_TOLERANCE,
    min_delta: float = DEFAULT_MIN_DELTA_J,
    profile: str | None = None,
    features: str | None = None,
    strict: bool = False,
    energy_model: str | None = None,
    fail_on: str = DEFAULT_FAIL_ON,
) -> Comparison:
    """Compare every module of ``tree`` (leaf modules included) with the baseline.

    A module fails when its energy :func:`~pytest_irene.compare.comparison.moved`:
    by more than ``tolerance`` (relative) AND by more than ``min_delta`` joules
    (absolute), so tiny modules whose few microjoules move by 10 % never trip the
    gate, in a direction ``fail_on`` counts (``increase``: up; ``any``: either way;
    a call whose modules only got cheaper passes and says so). A module that
    appeared fails when its energy exceeds ``min_delta``, one that disappeared
    too under ``any``, unless it was renamed (:func:`~pytest_irene.compare.renames.find_renames`:
    same subtree shape, types and energies under another scope), which passes
    and is reported, and fails only when ``strict``. The root (scope ``""``) is
    compared like any module. A generation's length (``max_new_tokens``) against the
    baseline's is named in the reason when it changed.

    Without a baseline the status is ``new``; with a baseline made for another
    ``profile``, ``energy_model`` version, feature set or input size it is ``skipped``. Both pass, and
    both fail when ``strict``.
    """
    if baseline_entry is None:
        if strict:
            return Comparison("fail", "no baseline for this call and --irene-strict is set (run with --irene-save)")
        return Comparison("new", "no baseline yet; run with --irene-save to record one")
    why = _mismatch(baseline_entry, tree, profile, features, energy_model)
    if why:
        if strict:
            return Comparison("fail", f"not compared: {why}, and --irene-strict is set")
        return Comparison("skipped", f"not compared: {why}")

    now = tree_energies(tree, leaves=baseline_entry.leaves)
    was = baseline_entry.energies()
    renames = find_renames(was, now, tolerance=tolerance, min_delta=min_delta)
    renamed_from = {new: old for r in renames for old, new in r.scopes}
    tops = {r.new for r in renames}
    deltas: list[ModuleDelta] = []
    cheaper: list[ModuleDelta] = []  # moved down beyond the limits, which fail_on does not count
    for scope, cur in now.items():
        if scope in renamed_from:
            old = was[renamed_from[scope]]
            failed = strict and scope in tops
            deltas.append(ModuleDelta(scope, cur.type, old.energy_j, cur.energy_j, failed, was=renamed_from[scope]))
            continue
        prev = was.get(scope)
        if prev is None:
            deltas.append(ModuleDelta(scope, cur.type, None, cur.energy_j, cur.energy_j > min_delta))
            continue
        beyond = moved(prev.energy_j, cur.energy_j, tolerance=tolerance, min_delta=min_delta)
        failed = beyond and counts_against(prev.energy_j, cur.energy_j, fail_on)
        deltas.append(ModuleDelta(scope, cur.type, prev.energy_j, cur.energy_j, failed))
        if beyond and not failed:
            cheaper.append(deltas[-1])
    gone = set(renamed_from.values())
    for scope, prev in was.items():
        if scope not in now and scope not in gone:
            beyond = prev.energy_j > min_delta
            failed = beyond and counts_against(prev.energy_j, None, fail_on)
            deltas.append(ModuleDelta(scope, prev.type, prev.energy_j, None, failed))
            if beyond and not failed:
                cheaper.append(deltas[-1])
    cheapest = culprits(cheaper)
    status, reason = _verdict(deltas, renames, tolerance, min_delta, strict, baseline_entry.leaves, len(cheaper), cheapest)
    reason = _length_note(baseline_entry, tree) + _tokens_note(baseline_entry, tree) + reason
    return Comparison(
        status, reason, tuple(deltas), tuple(renames), tuple(d.scope for d in cheapest), not baseline_entry.leaves
    )


def _verdict(
    deltas: list[ModuleDelta],
    renames: list[Rename],
    tolerance: float,
    min_delta: float,
    strict: bool,
    leaves: bool,
    cheaper: int,
    cheapest: list[ModuleDelta],
) -> tuple[Status, str]:
    """The status and the one-sentence reason of a comparison that ran (``cheaper`` modules moved
    down beyond the limits without failing, ``cheapest`` the innermost of them)."""
    moved_ = [d for d in deltas if d.failed and d.was is None]
    notes: list[str] = []
    if renames:
        shown = ", ".join(f"{scope_label(r.old)} -> {scope_label(r.new)}" for r in renames[:3])
        more = f" and {len(renames) - 3} more" if len(renames) > 3 else ""
        notes.append(f"{len(renames)} module(s) renamed ({shown}{more})")
    if not leaves:
        notes.append(LEGACY_BASELINE_NOTE)
    if cheaper:
        names = ", ".join(scope_label(d.scope) for d in cheapest[:3])
        notes.append(
            f"{cheaper} module(s) cheaper beyond the limits, starting at {names} "
            "(--irene-save records the lower energy; --irene-fail-on=any fails on decreases)"
        )
    tail = "".join(f"; {n}" for n in notes)
    limits = f"{tolerance:.1%} and {format_energy(min_delta)}"
    if moved_:
        names = ", ".join(scope_label(d.scope) for d in culprits(moved_)[:3])
        grew = "changed" if any(not counts_against(d.baseline_j, d.now_j, "increase") for d in moved_) else "costlier"
        return "fail", f"{len(moved_)} module(s) {grew} beyond {limits}, starting at {names}{tail}"
    if renames and strict:
        return "fail", f"{notes[0]} and --irene-strict is set; accept the new names with --irene-save"
    if cheaper:
        return "pass", f"no module costlier beyond {limits}{tail}"
    return "pass", f"every module within {tolerance:.1%} (or {format_energy(min_delta)}){tail}"


def culprits(failed: list[ModuleDelta]) -> list[ModuleDelta]:
    """The failing modules that no failing descendant explains, largest absolute change first.

    Widening one feed-forward layer also moves its layer, the encoder and the
    model; the culprit is the innermost module (down to a leaf such as
    ``intermediate.dense`` or ``lm_head``), and it is the one to name.
    """
    below = ScopesBelow(d.scope for d in failed)  # asking every other failing module was quadratic
    inner = [d for d in failed if not below(d.scope)]
    return sorted(inner, key=lambda d: (-abs((d.now_j or 0.0) - (d.baseline_j or 0.0)), d.scope))


@dataclass(frozen=True)
class BudgetCheck:
    """The outcome of holding one predicted total to a budget."""

    budget_j: float | None
    """The budget, joules; ``None`` when none applies."""
    total_j: float
    """The predicted total, joules."""

    @property
    def over(self) -> bool:
        return self.budget_j is not None and self.total_j > self.budget_j


def check_budget(tree: EnergyTree, budget_j: float | None) -> BudgetCheck:
    """Hold the predicted total of ``tree`` to ``budget_j`` (no limit when ``None``)."""
    return BudgetCheck(budget_j, float(tree.total_j or 0.0))
