"""What one wrapped call produced, and its JSON: the hand-over point to every reporter.

A :class:`CallRecord` is made once per ``irene(...)`` call by the plugin and is
then only read: by the terminal summary, ``--irene-json`` run files, the HTML
explorer, the CI reporters and user hooks. Its JSON form (:func:`record_to_dict`
/ :func:`record_from_dict`) is used both for the xdist hand-over and inside run
files, so it is validated on the way in: a corrupt run file is reported with
its path and the bad field, never half-read.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pytest_irene.compare.comparison import DEFAULT_MIN_DELTA_J, DEFAULT_TOLERANCE, Comparison, ModuleDelta, Rename
from pytest_irene.engine.tree import EnergyTree
from pytest_irene.errors import IreneError
from pytest_irene.units import DEFAULT_PRICE_CENTS_PER_KWH
from pytest_irene.validate import is_finite_number

STATUSES: tuple[str, ...] = ("pass", "fail", "new", "skipped")


class RecordError(IreneError):
    """A call record (in a run file or an xdist hand-over) is not valid; the message names where."""


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
    call_index: int = 0
    """Position of this call among its test's calls (0 for the first)."""
    item_index: int = 0
    """Position of the test in the collection, the same on every xdist worker (sort key)."""
    feature_mode_reason: str = ""
    """Why ``features`` was chosen (``auto: host matches the calibration rig ...``)."""
    tolerance: float = DEFAULT_TOLERANCE
    """Relative change allowed per module (0.05 = 5 %), after marker and hooks."""
    min_delta_j: float = DEFAULT_MIN_DELTA_J
    """Absolute change below which a module never fails, joules."""
    hardware: str = ""
    """One-line description of the hardware the profile stands for."""
    energy_model: str = ""
    """Version of the energy model file (12 hex digits of its SHA-256); ``""`` when unknown."""
    baseline_file: str = ""
    """The baseline file this call is stored in (or would be)."""
    saved: bool = False
    """Whether the run saved baselines (``--irene-save``) instead of comparing."""
    save_refused: bool = False
    """``--irene-save`` refused this call's baseline file (corrupt, unwritable): nothing was stored for it."""
    price_cents_per_kwh: float = DEFAULT_PRICE_CENTS_PER_KWH
    """Electricity price for the cost columns, US cents per kWh."""
    test_file: str = ""
    """Source file of the test, relative to the rootdir when inside it (for CI annotations)."""
    test_line: int | None = None
    """1-based line in ``test_file`` of the ``irene(...)`` call (of the test function when the call was
    made from another file, a helper's); ``None`` when unknown."""

    @property
    def failed(self) -> bool:
        return self.over_budget or (self.comparison is not None and self.comparison.status == "fail")

    @property
    def key(self) -> tuple[str, str]:
        """``(node id, label)``: what identifies a call across runs."""
        return (self.nodeid, self.label)


def sort_records(records: list[CallRecord]) -> list[CallRecord]:
    """Records in collection order (then call order), whatever order xdist workers finished in.

    Every xdist worker collects the same items in the same order, so the index
    of a test in ``session.items`` is the same on every worker.
    """
    return sorted(records, key=lambda r: (r.item_index, r.nodeid, r.call_index))


# -- JSON ---------------------------------------------------------------------------------------


def comparison_from_dict(obj: Any, where: str) -> Comparison:
    """Rebuild a :class:`Comparison` from :meth:`Comparison.to_dict` output, validating it."""
    _require(isinstance(obj, dict), where, "an object", obj)
    status = obj.get("status")
    _require(status in STATUSES, f"{where}.status", f"one of {', '.join(STATUSES)}", status)
    reason = obj.get("reason", "")
    _require(isinstance(reason, str), f"{where}.reason", "a string", reason)
    deltas = obj.get("deltas", [])
    _require(isinstance(deltas, list), f"{where}.deltas", "a list", deltas)
    out = []
    for i, d in enumerate(deltas):
        at = f"{where}.deltas[{i}]"
        _require(isinstance(d, dict), at, "an object", d)
        for key in ("scope", "type"):
            _require(isinstance(d.get(key), str), f"{at}.{key}", "a string", d.get(key))
        was = d.get("was")
        _require(was is None or isinstance(was, str), f"{at}.was", "a string or null", was)
        out.append(
            ModuleDelta(
                d["scope"],
                d["type"],
                _number(d.get("baseline_j"), f"{at}.baseline_j", optional=True),
                _number(d.get("now_j"), f"{at}.now_j", optional=True),
                bool(d.get("failed")),
                was,
            )
        )
    renames = obj.get("renames", [])
    _require(isinstance(renames, list), f"{where}.renames", "a list", renames)
    cheaper = obj.get("cheaper", [])  # absent in run files written before --irene-fail-on
    _require(isinstance(cheaper, list) and all(isinstance(c, str) for c in cheaper), f"{where}.cheaper", "a list of scopes", cheaper)
    legacy = obj.get("legacy_baseline", False)  # absent in run files written before this field
    _require(isinstance(legacy, bool), f"{where}.legacy_baseline", "true or false", legacy)
    return Comparison(
        status=status,
        reason=reason,
        deltas=tuple(out),
        renames=tuple(_rename_from_dict(r, f"{where}.renames[{i}]") for i, r in enumerate(renames)),
        cheaper=tuple(cheaper),
        legacy_baseline=legacy,
    )


def _rename_from_dict(obj: Any, where: str) -> Rename:
    _require(isinstance(obj, dict), where, "an object", obj)
    for key in ("old", "new", "type"):
        _require(isinstance(obj.get(key), str), f"{where}.{key}", "a string", obj.get(key))
    pairs = obj.get("scopes", [])
    ok = isinstance(pairs, list) and all(
        isinstance(p, list) and len(p) == 2 and all(isinstance(x, str) for x in p) for p in pairs
    )
    _require(ok, f"{where}.scopes", "a list of [old, new] scope pairs", pairs)
    energy_j = _number(obj.get("energy_j"), f"{where}.energy_j")
    assert energy_j is not None
    return Rename(obj["old"], obj["new"], obj["type"], energy_j, tuple((a, b) for a, b in pairs))


def record_to_dict(record: CallRecord) -> dict[str, Any]:
    """A call record as plain JSON data (the tree in ``irene-tree/1`` form)."""
    return {
        "nodeid": record.nodeid,
        "label": record.label,
        "profile": record.profile,
        "features": record.features,
        "total_j": record.tree.total_j,
        "budget_j": record.budget_j,
        "over_budget": record.over_budget,
        "failed": record.failed,
        "comparison": record.comparison.to_dict() if record.comparison is not None else None,
        "call_index": record.call_index,
        "item_index": record.item_index,
        "feature_mode_reason": record.feature_mode_reason,
        "tolerance": record.tolerance,
        "min_delta_j": record.min_delta_j,
        "hardware": record.hardware,
        "energy_model": record.energy_model,
        "baseline_file": record.baseline_file,
        "saved": record.saved,
        "save_refused": record.save_refused,
        "price_cents_per_kwh": record.price_cents_per_kwh,
        "test_file": record.test_file,
        "test_line": record.test_line,
        "tree": record.tree.to_dict(),
    }


#: The typed fields of a record and what their JSON must be: (name, kind, default).
_FIELDS: tuple[tuple[str, str, Any], ...] = (
    ("call_index", "int", 0),
    ("item_index", "int", 0),
    ("feature_mode_reason", "str", ""),
    ("tolerance", "float", DEFAULT_TOLERANCE),
    ("min_delta_j", "float", DEFAULT_MIN_DELTA_J),
    ("hardware", "str", ""),
    ("energy_model", "str", ""),
    ("baseline_file", "str", ""),
    ("saved", "bool", False),
    ("save_refused", "bool", False),
    ("price_cents_per_kwh", "float", DEFAULT_PRICE_CENTS_PER_KWH),
    ("test_file", "str", ""),
    ("test_line", "int?", None),
)


def record_from_dict(obj: Any, where: str = "record") -> CallRecord:
    """Rebuild a record from :func:`record_to_dict` output; :class:`RecordError` names ``where`` and the field.

    The ``irene-run/1`` layout kept the typed fields in an ``extra`` object: it
    is read too, so old run files stay readable.
    """
    from pytest_irene.engine.dataset import tree_from_dict
    from pytest_irene.errors import DatasetError

    _require(isinstance(obj, dict), where, "an object", obj)
    for key in ("nodeid", "label", "profile", "features"):
        _require(isinstance(obj.get(key), str), f"{where}.{key}", "a string", obj.get(key))
    legacy = obj.get("extra") if isinstance(obj.get("extra"), dict) else {}
    typed: dict[str, Any] = {}
    for name, kind, default in _FIELDS:
        value = obj.get(name, legacy.get(name, default))
        typed[name] = _typed(value, kind, f"{where}.{name}")
    comp = obj.get("comparison")
    try:
        tree = tree_from_dict(obj.get("tree"), path=f"{where}.tree")
    except DatasetError as exc:
        raise RecordError(str(exc)) from None
    return CallRecord(
        nodeid=obj["nodeid"],
        label=obj["label"],
        tree=tree,
        profile=obj["profile"],
        features=obj["features"],
        comparison=None if comp is None else comparison_from_dict(comp, f"{where}.comparison"),
        budget_j=_number(obj.get("budget_j"), f"{where}.budget_j", optional=True),
        over_budget=bool(obj.get("over_budget")),
        **typed,
    )


def _require(ok: bool, where: str, expected: str, got: Any) -> None:
    if not ok:
        shown = repr(got) if len(repr(got)) <= 60 else type(got).__name__
        raise RecordError(f"{where}: expected {expected}, got {shown}")


def _number(value: Any, where: str, *, optional: bool = False) -> float | None:
    if value is None and optional:
        return None
    ok = is_finite_number(value)
    _require(ok, where, "a finite number" + (" or null" if optional else ""), value)
    return float(value)


def _typed(value: Any, kind: str, where: str) -> Any:
    if kind == "str":
        _require(isinstance(value, str), where, "a string", value)
        return value
    if kind == "bool":
        _require(isinstance(value, bool), where, "true or false", value)
        return value
    if kind == "float":
        return _number(value, where)
    if value is None and kind == "int?":
        return None
    _require(isinstance(value, int) and not isinstance(value, bool), where, "an integer", value)
    return value
