"""Validators for the JSON that users load (model files, predictors, regressors, baselines, run files).

Every check raises :class:`~pytest_irene.errors.ModelFileError` with a message that
names the field and what was expected, so a bad file is fixed without a traceback.
One module, so the regressors, the strategies and the energy model file all word
their errors the same way.
"""

from __future__ import annotations

import errno
import json
import math
import os
import stat
from collections.abc import Sequence
from typing import Any

from pytest_irene.errors import ModelFileError


def is_finite_number(value: Any) -> bool:
    """Whether a JSON value is a finite number and not a bool. NaN, infinities and integers beyond a
    float's range (``1e400`` without a point would read as ``1`` and 400 zeros: an ``int``) are not;
    the test every reader of user files makes, so none of them overflows on such a value."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:
        return False


class DuplicateKeyError(ValueError):
    """A JSON object names one field twice (``json`` would keep the last value silently)."""


def unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """``object_pairs_hook`` for files users hand-edit (model files, baselines): a field named
    twice is a :class:`DuplicateKeyError` (its message: the field), not a silent last-value-wins."""
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise DuplicateKeyError(key)
        out[key] = value
    return out


class UnreadableNumberError(ValueError):
    """A JSON integer Python refuses to convert (over its 4300-digit limit): ``json`` raises a bare
    ``ValueError`` advising ``sys.set_int_max_str_digits``, which every reader let through as a traceback."""


def load_user_json(text: str) -> Any:
    """``json.loads`` for files users hand-edit or download (baselines, run files, datasets, model
    files): a field named twice is a :class:`DuplicateKeyError` (:func:`unique_keys`), an integer too
    long to read an :class:`UnreadableNumberError`; syntax errors (``JSONDecodeError``) and nesting
    past the parser's limit (``RecursionError``) pass through for the caller to word."""
    try:
        return json.loads(text, object_pairs_hook=unique_keys)
    except (json.JSONDecodeError, DuplicateKeyError):
        raise
    except ValueError:
        raise UnreadableNumberError("an integer of thousands of digits, too long to read as a number") from None


def find_non_finite(obj: Any, where: str = "") -> str | None:
    """Dotted path of the first NaN or infinite number in a parsed JSON value (``NaN``, ``Infinity``,
    ``1e400`` are not JSON; ``json`` reads them), ``None`` when every number is finite."""
    if isinstance(obj, float):
        return None if math.isfinite(obj) else (where or "(the document)")
    if isinstance(obj, dict):
        for key, value in obj.items():
            found = find_non_finite(value, f"{where}.{key}" if where else str(key))
            if found:
                return found
    elif isinstance(obj, list):
        for i, value in enumerate(obj):
            found = find_non_finite(value, f"{where}[{i}]")
            if found:
                return found
    return None


def finite_or_none(obj: Any) -> Any:
    """``obj`` with every NaN/inf replaced by ``None`` (e.g. an average over no held-out model, a
    change against a baseline of 5e-324 J), for JSON written with ``allow_nan=False``."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: finite_or_none(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite_or_none(v) for v in obj]
    return obj


def special_file(path: Any) -> str | None:
    """What keeps ``path`` from being read as a stored file, in words, or ``None``: a symbolic link
    that loops (read as missing: a looping baseline counted its calls as new) or a FIFO, socket or
    device (reading a FIFO waits for a writer forever). Missing files and directories are the
    caller's to word."""
    try:
        mode = os.stat(path).st_mode
    except OSError as exc:
        return "a symbolic link that loops" if exc.errno == errno.ELOOP else None
    return None if stat.S_ISREG(mode) or stat.S_ISDIR(mode) else "not a regular file (a FIFO, socket or device)"


def link_loops(path: Any) -> bool:
    """Whether ``path`` is a symbolic link that loops (``exists()`` says False, as for a missing
    file; ``resolve()`` raises ``RuntimeError`` on Python before 3.13)."""
    try:
        os.stat(path)
    except OSError as exc:
        return exc.errno == errno.ELOOP
    return False


def check(cond: bool, what: str) -> None:
    """Raise ``ModelFileError(what)`` unless ``cond``."""
    if not cond:
        raise ModelFileError(what)


def floats(obj: Any, name: str, length: int | None = None, owner: str = "regressor") -> list[float]:
    """A list of finite floats (optionally of exactly ``length`` values); ``owner`` names
    the object holding field ``name`` (``glue model``), so the message says where to look."""
    check(isinstance(obj, list), f"{owner} field '{name}': expected a list of numbers, got {type(obj).__name__}")
    out: list[float] = []
    for v in obj:
        check(
            isinstance(v, (int, float)) and not isinstance(v, bool),
            f"{owner} field '{name}': expected numbers, got {v!r:.60}",
        )
        check(is_finite_number(v), f"{owner} field '{name}': weight is NaN or infinite ({v!r:.60})")
        out.append(float(v))
    if length is not None:
        check(len(out) == length, f"{owner} field '{name}': expected {length} values, got {len(out)}")
    return out


def finite(value: Any, name: str, owner: str = "regressor") -> float:
    """One finite number (bools are rejected: ``True`` is not a weight)."""
    check(
        isinstance(value, (int, float)) and not isinstance(value, bool),
        f"{owner} field '{name}': expected a number, got {value!r:.60}",
    )
    check(is_finite_number(value), f"{owner} field '{name}': weight is NaN or infinite ({value!r:.60})")
    return float(value)


def non_negative(values: Sequence[float], name: str, owner: str = "regressor") -> None:
    """Every value ``>= 0``: a fit constrained non-negative (a launch floor, a cost per flop)
    never stores a negative one, so a hand-edited negative cost would predict negative energy."""
    bad = next((v for v in values if v < 0), None)
    check(bad is None, f"{owner} field '{name}': expected values >= 0 (a non-negative fit), got {bad!r}")


def flag(value: Any, name: str, owner: str = "regressor") -> bool:
    """A JSON boolean: ``bool("no")`` is ``True``, so a string or number is refused, not coerced."""
    check(isinstance(value, bool), f"{owner} field '{name}': expected true or false, got {value!r:.60}")
    return value


def count(value: Any, name: str, owner: str, minimum: int = 1) -> int:
    """An integer ``>= minimum`` (``4.7`` or ``"four"`` refused, not truncated)."""
    check(
        isinstance(value, int) and not isinstance(value, bool) and value >= minimum,
        f"{owner} field '{name}': expected an integer >= {minimum}, got {value!r:.60}",
    )
    return value


def names(obj: Any, what: str) -> list[str]:
    """A list of strings (feature or type names); ``what`` names the field in the error."""
    check(isinstance(obj, list) and all(isinstance(n, str) for n in obj), f"{what}: expected a list of names")
    return list(obj)


def require(obj: Any, keys: Sequence[str], what: str) -> dict[str, Any]:
    """``obj`` as a dict holding every key of ``keys``; ``what`` names it in the error."""
    check(isinstance(obj, dict), f"{what}: expected an object, got {type(obj).__name__}")
    for key in keys:
        check(key in obj, f"{what}: missing field '{key}'")
    return obj


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


#: Fields of a host fingerprint (a model file's ``hardware``, a measured tree's ``meta.host``)
#: that the host comparison reads (``auto``/``all`` feature modes): each may be ``null``,
#: otherwise what the expectation says. Other keys are kept as they are.
HARDWARE_FIELDS: tuple[tuple[str, Any, str], ...] = (
    ("description", lambda v: isinstance(v, str), "a string"),
    ("cpu_model", lambda v: isinstance(v, str), "a string"),
    ("cpu_count", lambda v: isinstance(v, int) and not isinstance(v, bool) and v > 0, "a positive integer"),
    ("memory_gib", lambda v: _is_number(v) and v >= 0, "a number of GiB >= 0"),
    ("gpus", lambda v: isinstance(v, list) and all(isinstance(g, str) for g in v), "a list of GPU names"),
    ("driver_version", lambda v: isinstance(v, str), "a string"),
)


def hardware_problem(hardware: dict[str, Any]) -> tuple[str, str] | None:
    """``(field, what was expected and got)`` for the first malformed fingerprint field, else ``None``.
    The caller words the error: a model file and a dataset line name their place differently."""
    for name, ok, what in HARDWARE_FIELDS:
        value = hardware.get(name)
        if value is not None and not ok(value):
            return name, f"expected {what} or null, got {value!r:.60}"
    return None


__all__ = ["HARDWARE_FIELDS", "DuplicateKeyError", "UnreadableNumberError", "check", "count", "find_non_finite", "finite", "finite_or_none",
           "flag", "floats", "hardware_problem", "is_finite_number", "link_loops", "load_user_json", "names",
           "non_negative", "require", "special_file", "unique_keys"]
