"""Where energy model files live, and how a profile name becomes a file.

A *profile* is an energy model calibrated on one machine (``irene-pc1`` is the
IrEne paper's PC1). Bundled profiles ship inside the wheel as
``pytest_irene/models/<profile>.json`` (pyproject force-includes the repo's
top-level ``models/`` there); in a source checkout or an editable install that
directory does not exist, so the repo's ``models/`` is used instead. Users may
also pass the path of their own model file (``irene train -o my-rig.json``)
wherever a profile is accepted.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pytest_irene.errors import ModelFileError

#: Suffix of an energy model file.
MODEL_SUFFIX = ".json"
#: ``format`` tag of an energy model file.
MODEL_FORMAT = "irene-model"
#: Schema version this code writes and the newest it reads.
SCHEMA_VERSION = 1


def models_dirs() -> list[Path]:
    """Directories searched for bundled profiles, first match wins.

    The installed package's ``models/`` comes first so a wheel never picks up a
    stray checkout; the checkout's top-level ``models/`` is the fallback.
    """
    package_dir = Path(__file__).resolve().parents[2]  # pytest_irene/
    return [package_dir / "models", package_dir.parent / "models"]


def bundled_dir() -> Path | None:
    """The directory the bundled profiles come from, ``None`` when neither exists."""
    for candidate in models_dirs():
        if candidate.is_dir():
            return candidate
    return None


def bundled_profiles() -> list[str]:
    """Names of the bundled profiles (``["irene-pc1"]``), sorted."""
    directory = bundled_dir()
    if directory is None:
        return []
    return sorted(p.stem for p in directory.glob(f"*{MODEL_SUFFIX}") if p.is_file() and not p.name.startswith("."))


def _looks_like_path(text: str) -> bool:
    return text.endswith(MODEL_SUFFIX) or os.sep in text or "/" in text or text.startswith(".") or text.startswith("~")


def resolve_profile(name_or_path: str | os.PathLike[str]) -> Path:
    """The model file of a bundled profile name, or the given path when it is a file.

    A name is tried as a bundled profile first (``irene-pc1``), then as a path;
    anything else raises :class:`ModelFileError` listing the bundled names, so a
    typo in ``--irene-profile`` says what would have worked.
    """
    text = os.fspath(name_or_path)
    if not text:
        raise ModelFileError(f"empty energy model name; expected a bundled profile ({_names()}) or a model file path")
    if not isinstance(name_or_path, Path) and not _looks_like_path(text):
        directory = bundled_dir()
        if directory is not None:
            candidate = directory / f"{text}{MODEL_SUFFIX}"
            if candidate.is_file():
                return candidate
    path = Path(text).expanduser()
    if path.is_file():
        return path.resolve()
    if path.exists():
        raise ModelFileError(f"{path}: not a file; expected an energy model JSON file")
    if isinstance(name_or_path, Path) and text in bundled_profiles():
        # A Path is always a path; say so rather than "unknown" next to a list holding the name.
        raise ModelFileError(
            f"no such file {text!r}; a Path is read as a file path: pass the bundled profile's name as a "
            f"string ({text!r}, not Path({text!r}))"
        )
    raise ModelFileError(
        f"unknown energy model {text!r}: no bundled profile of that name and no such file; "
        f"bundled profiles: {_names()}"
    )


def _names() -> str:
    names = bundled_profiles()
    return ", ".join(names) if names else "(none installed)"


def peek_profile(name_or_path: str | os.PathLike[str]) -> dict[str, Any]:
    """The parsed model file of a profile, checked without building any regressor.

    What is checked is what makes every prediction fail: the file exists and is
    a file, is JSON (read as :func:`~.model_file.read_json` reads it: no binary file, no
    NaN or infinite numbers, no field named twice), has ``format`` ``irene-model``,
    a ``schema_version`` this code reads, and at least one feature set. The
    pytest plugin calls this at configure time (``--collect-only`` included);
    the full validation of the weights happens when a call first needs them.
    """
    from pytest_irene.engine.predict.model_file import check_finite, read_json

    path = resolve_profile(name_or_path)
    doc = read_json(path)
    check_finite(doc, str(path))
    if not isinstance(doc, dict):
        raise ModelFileError(f"{path}: expected a JSON object (an energy model file), got {type(doc).__name__}")
    if doc.get("format") != MODEL_FORMAT:
        raise ModelFileError(
            f"{path}: field 'format': expected {MODEL_FORMAT!r}, got {doc.get('format')!r:.60}; not an energy model file"
        )
    version = doc.get("schema_version")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise ModelFileError(f"{path}: field 'schema_version': expected a positive integer, got {version!r:.60}")
    if version > SCHEMA_VERSION:
        raise ModelFileError(
            f"{path}: field 'schema_version': expected at most {SCHEMA_VERSION} (what this pytest-irene reads), "
            f"got {version}; a newer file needs a newer pytest-irene"
        )
    sets = doc.get("feature_sets")
    if not isinstance(sets, dict) or not sets:
        raise ModelFileError(f"{path}: field 'feature_sets': expected a non-empty object, got {sets!r:.60}")
    return doc
