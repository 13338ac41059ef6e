"""The energy model file format: validated reading and readable writing (JSON, never pickle).

:class:`~pytest_irene.engine.predict.energy_model.EnergyModel` is the object; this module is
the file. Reading names the file and the field of any problem (a newer schema, a missing
field, a wrong type, a NaN weight) and returns the fields the object is built from, so the
format's rules live in one place and the object's module stays about what a model does.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pytest_irene.errors import ModelFileError, UsageError
from pytest_irene.engine.dataset import FINGERPRINT_HEX_DIGITS
from pytest_irene.engine.feature_sets import FEATURE_SETS
from pytest_irene.engine.predict.profiles import MODEL_FORMAT, SCHEMA_VERSION
from pytest_irene.engine.tree import DEFAULT_ENERGY_SCOPE, ENERGY_SCOPES
from pytest_irene.validate import DuplicateKeyError, UnreadableNumberError, find_non_finite, hardware_problem, load_user_json


def writer_name() -> str:
    """``created_by`` of the files this version writes (``pytest-irene 0.1.0``)."""
    from pytest_irene import __version__

    return f"pytest-irene {__version__}"


def _error(source: str, field_name: str | None, problem: str) -> ModelFileError:
    where = f"field '{field_name}': " if field_name else ""
    return ModelFileError(f"{source}: {where}{problem}")


#: Leading bytes of files that are not JSON text, and what they are: a gzip (a dataset, or
#: a compressed model file), a zip (``torch.save``), a pickle (protocol 2+ starts with 0x80).
_BINARY_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"\x1f\x8b", "a gzip file (an irene-tree/1 dataset or a compressed file? decompress a model file first)"),
    (b"PK\x03\x04", "a zip archive (torch.save output?)"),
    (b"\x80", "a pickle; pytest-irene never unpickles a model file, since unpickling runs code from the file"),
)
_UTF8_BOM = b"\xef\xbb\xbf"
_TOO_DEEP = "JSON nested too deeply to read; expected an energy model file written by 'irene train'"


def read_json(path: Path) -> Any:
    """The parsed JSON of the model file at ``path`` (not yet validated: :func:`parse_fields`).

    Why so strict: a model file is often hand-edited or handed over by someone else, and a
    silent reading of the wrong thing gates tests on wrong joules. A binary file (gzip, zip,
    pickle) is named for what it is and never decoded further; a UTF-8 byte-order mark (what
    some Windows editors write) is skipped; a field named twice and nesting too deep for the
    parser are errors naming the file (and the field), never a silent last-value-wins or a
    ``RecursionError``. NaN/Infinity are :func:`check_finite`'s (:func:`parse_fields` runs it)."""
    source = str(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise _error(source, None, f"cannot read energy model file: {exc.strerror or exc}") from None
    for magic, what in _BINARY_MAGIC:
        if data.startswith(magic):
            raise _error(source, None, f"this is {what}; expected an energy model JSON file written by 'irene train'")
    if data.startswith(_UTF8_BOM):
        data = data[len(_UTF8_BOM) :]
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _error(
            source, None, f"not UTF-8 text (byte 0x{data[exc.start]:02x} at offset {exc.start}); "
            "expected an energy model JSON file written by 'irene train' (save it as UTF-8)"
        ) from None
    try:
        obj = load_user_json(text)
    except json.JSONDecodeError as exc:
        raise _error(
            source, None, f"not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno}); "
            "expected an energy model file written by 'irene train'"
        ) from None
    except UnreadableNumberError as exc:
        raise _error(source, None, f"{exc}; expected an energy model file written by 'irene train'") from None
    except DuplicateKeyError as exc:
        raise _error(
            source, str(exc), "named twice in one JSON object; expected each field once (which value is meant?)"
        ) from None
    except RecursionError:
        raise _error(source, None, _TOO_DEEP) from None
    return obj


def check_finite(obj: Any, source: str) -> None:
    """``ModelFileError`` naming the first NaN or infinite number (``NaN``, ``Infinity``, ``1e400``):
    not JSON, and never a trained weight."""
    try:
        bad = find_non_finite(obj)
    except RecursionError:  # parsed just below the parser's limit, walked just above it
        raise _error(source, None, _TOO_DEEP) from None
    if bad is not None:
        raise _error(source, bad, "NaN or infinite number; the model file is corrupt (retrain it with 'irene train')")


_TOP_FIELDS: tuple[tuple[str, type | tuple[type, ...], str], ...] = (
    ("profile", str, "a string"),
    ("created_by", str, "a string"),
    ("hardware", dict, "an object"),
    ("dataset", dict, "an object"),
    ("strategy", str, "a string"),
    ("hyper_parameters", dict, "an object"),
    ("feature_sets", dict, "an object"),
    ("cv_errors", dict, "an object"),
)


def _check_hardware(hardware: dict[str, Any], source: str) -> None:
    """A hand-edited fingerprint fails here, naming the field, rather than as a ``TypeError``
    when a run first compares it with the host."""
    problem = hardware_problem(hardware)
    if problem is not None:
        raise _error(source, f"hardware.{problem[0]}", problem[1])


def parse_fields(obj: Any, source: str) -> dict[str, Any]:
    """Validate a parsed model file; the keyword arguments of ``EnergyModel`` it describes.
    :class:`ModelFileError` names ``source`` and the field."""
    from pytest_irene.engine.predict.strategies import predictor_from_json

    if not isinstance(obj, dict):
        raise _error(source, None, f"expected a JSON object (an energy model file), got {type(obj).__name__}")
    if obj.get("format") != MODEL_FORMAT:
        raise _error(source, "format", f"expected {MODEL_FORMAT!r}, got {obj.get('format')!r}; not an energy model file")
    version = obj.get("schema_version")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise _error(source, "schema_version", f"expected a positive integer, got {version!r}")
    if version > SCHEMA_VERSION:
        raise _error(
            source,
            "schema_version",
            f"the file has schema version {version}, newer than {SCHEMA_VERSION} understood by this "
            f"{writer_name()}; upgrade pytest-irene to load it",
        )
    for name, kind, what in _TOP_FIELDS:
        if name not in obj:
            raise _error(source, name, "missing")
        if not isinstance(obj[name], kind):
            raise _error(source, name, f"expected {what}, got {type(obj[name]).__name__}")
    check_finite(obj, source)
    _check_hardware(obj["hardware"], source)

    dataset = obj["dataset"]
    files = dataset.get("files")
    if not isinstance(files, list) or not all(isinstance(f, str) for f in files):
        raise _error(source, "dataset.files", f"expected a list of file names, got {files!r}")
    digest = dataset.get("hash")
    if not isinstance(digest, str) or not digest.startswith("sha256:"):
        raise _error(source, "dataset.hash", f"expected 'sha256:<hex>', got {digest!r}")

    sets = obj["feature_sets"]
    if not sets:
        raise _error(source, "feature_sets", f"expected at least one of {list(FEATURE_SETS)}, got none")
    predictors: dict[str, Any] = {}
    for name, content in sets.items():
        where = f"feature_sets.{name}"
        if name not in FEATURE_SETS:
            raise _error(source, where, f"unknown feature set; expected one of {list(FEATURE_SETS)}")
        try:
            predictor = predictor_from_json(content)
        except ModelFileError as exc:
            raise _error(source, where, str(exc)) from None
        except (UsageError, KeyError, TypeError, ValueError) as exc:
            raise _error(source, where, f"invalid predictor: {exc}") from None
        if predictor.features != name:
            raise _error(source, f"{where}.features", f"expected {name!r}, got {predictor.features!r}")
        if predictor.strategy != obj["strategy"]:
            raise _error(source, f"{where}.strategy", f"expected {obj['strategy']!r} (the file's strategy), got {predictor.strategy!r}")
        predictors[name] = predictor

    if "ranges" in dataset:
        from pytest_irene.engine.predict.ranges import TrainingRanges

        try:
            TrainingRanges.from_json(dataset["ranges"])
        except ModelFileError as exc:
            raise _error(source, "dataset.ranges", str(exc)) from None

    if "tree_fingerprints" in dataset:
        prints = dataset["tree_fingerprints"]
        if not isinstance(prints, list) or not all(
            isinstance(f, str) and len(f) == FINGERPRINT_HEX_DIGITS and all(c in "0123456789abcdef" for c in f) for f in prints
        ):
            raise _error(
                source, "dataset.tree_fingerprints", f"expected a list of {FINGERPRINT_HEX_DIGITS}-digit lowercase hex strings"
            )

    scope = obj.get("energy_scope", DEFAULT_ENERGY_SCOPE)
    if scope not in ENERGY_SCOPES:
        raise _error(source, "energy_scope", f"expected one of {list(ENERGY_SCOPES)}, got {scope!r}")

    cv_errors = obj["cv_errors"]
    for name, value in cv_errors.items():
        if not isinstance(value, dict):
            raise _error(source, f"cv_errors.{name}", f"expected an object, got {type(value).__name__}")

    return dict(
        profile=obj["profile"],
        hardware=dict(obj["hardware"]),
        dataset_hash=digest,
        predictors=predictors,
        strategy=obj["strategy"],
        cv_errors={k: v for k, v in cv_errors.items()},
        dataset_files=list(files),
        dataset_info={k: v for k, v in dataset.items() if k not in ("files", "hash")},
        hyper_parameters=dict(obj["hyper_parameters"]),
        energy_scope=scope,
        created_by=obj["created_by"],
        schema_version=version,
    )


# -- writing ------------------------------------------------------------------------------------


def dump_json(obj: Any, indent: int = 0) -> str:
    """JSON with objects indented one space per level and scalar lists kept on one line.

    Regressor weights stay compact while the structure (profile, hardware, per-type
    regressors) reads top to bottom in a diff. ``allow_nan=False``: a NaN raises
    before anything is written.
    """
    pad = " " * (indent + 1)
    if isinstance(obj, dict):
        if not obj:
            return "{}"
        items = [f"{pad}{json.dumps(str(k))}: {dump_json(v, indent + 1)}" for k, v in obj.items()]
        return "{\n" + ",\n".join(items) + "\n" + " " * indent + "}"
    if isinstance(obj, list) and any(isinstance(v, (dict, list)) for v in obj):
        items = [f"{pad}{dump_json(v, indent + 1)}" for v in obj]
        return "[\n" + ",\n".join(items) + "\n" + " " * indent + "]"
    return json.dumps(obj, allow_nan=False, separators=(", ", ": "))


__all__ = ["dump_json", "writer_name", "parse_fields", "read_json"]
