"""Run files (``--irene-json``): one self-describing JSON document per pytest run.

Like pytest-benchmark's saved runs, a run file says where it came from so two
runs can be compared later, outside pytest (``irene compare``) or by the next
pytest run (``--irene-compare``): the format version, the machine (host
fingerprint), the commit (sha, branch, dirty flag, from git when available),
the pytest-irene version, the profile and feature mode, and every call's
predicted tree and comparison. Keys are sorted and records are in collection
order, so two runs of the same code give the same file and diff well.

Layout (``irene-run/2``)::

    {"format": "irene-run/2", "pytest_irene": "0.1.0",
     "host": {"cpu_model": ..., "cpu_count": ..., "gpus": [...], ...},
     "commit": {"sha": "3f2a...", "branch": "main", "dirty": false} | null,
     "profile": "irene-pc1", "feature_mode": "auto",
     "settings": {"tolerance": 0.05, "min_delta_j": 0.001, ...},
     "records": [<record_to_dict>, ...]}

``irene-run/1`` files (no host, commit or version; typed record fields under
``extra``) are still read.
"""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pytest_irene.atomic import atomic_write_text
from pytest_irene.compare.records import CallRecord, RecordError, record_from_dict, record_to_dict
from pytest_irene.engine.dataset import MAX_DEPTH
from pytest_irene.validate import (
    DuplicateKeyError, UnreadableNumberError, finite_or_none, hardware_problem, load_user_json, special_file,
)

RUN_FORMAT = "irene-run/2"
READABLE_FORMATS: tuple[str, ...] = ("irene-run/1", RUN_FORMAT)


class RunFileError(RecordError):
    """A run file is unreadable, corrupt, or not an ``irene-run`` document."""


@dataclass(frozen=True)
class CommitInfo:
    """The commit a run was made from."""

    sha: str
    """Full commit hash."""
    branch: str
    """Branch name (on a CI checkout in detached HEAD: the CI's branch variable, else ``"HEAD"``)."""
    dirty: bool
    """Whether tracked files had uncommitted changes."""

    def to_dict(self) -> dict[str, Any]:
        return {"sha": self.sha, "branch": self.branch, "dirty": self.dirty}


@dataclass(frozen=True)
class RunFile:
    """A run: where and how it was made, and every call's record."""

    records: list[CallRecord]
    """Every wrapped call, in collection order."""
    host: dict[str, Any] = field(default_factory=dict)
    """The machine's fingerprint (:func:`pytest_irene.rig.runtime.host_fingerprint`); ``{}`` when unknown."""
    commit: CommitInfo | None = None
    """The commit, ``None`` outside a git checkout (or for ``irene-run/1`` files)."""
    version: str = ""
    """pytest-irene version that wrote the file (``""`` for ``irene-run/1``)."""
    profile: str = ""
    """``--irene-profile`` of the run (each record also carries the profile it used)."""
    feature_mode: str = ""
    """``--irene-features`` as requested (``auto``/``model``/``all``); each record has what was used."""
    settings: dict[str, Any] = field(default_factory=dict)
    """The gate's other options (tolerance, minimum delta, budget, strict, ...), for reference."""
    format: str = RUN_FORMAT
    """The format the file was written in."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": RUN_FORMAT,
            "pytest_irene": self.version,
            "host": dict(self.host),
            "commit": self.commit.to_dict() if self.commit else None,
            "profile": self.profile,
            "feature_mode": self.feature_mode,
            "settings": dict(self.settings),
            "records": [record_to_dict(r) for r in self.records],
        }


def git_commit(directory: str | os.PathLike[str]) -> CommitInfo | None:
    """The commit checked out at ``directory``; ``None`` when git or a repository is missing.

    GitHub Actions checks pull requests out in detached HEAD: the branch is then
    taken from ``GITHUB_HEAD_REF`` (pull requests) or ``GITHUB_REF_NAME``.
    """

    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(
                ["git", *args], cwd=directory, capture_output=True, text=True, timeout=10, check=False
            )
        except (OSError, subprocess.SubprocessError):
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    sha = git("rev-parse", "HEAD")
    if not sha:
        return None
    branch = git("rev-parse", "--abbrev-ref", "HEAD") or "HEAD"
    if branch == "HEAD":
        branch = os.environ.get("GITHUB_HEAD_REF") or os.environ.get("GITHUB_REF_NAME") or "HEAD"
    status = git("status", "--porcelain", "--untracked-files=no")
    return CommitInfo(sha=sha, branch=branch, dirty=bool(status))


def run_file_text(run: RunFile) -> str:
    """``run`` as a run file's text: indented, keys sorted, trailing newline. A change that is not a
    number (a baseline of 5e-324 J: +inf %) is ``null``, as ``irene compare --json`` writes it; the
    run file was not written at all (a traceback at the end of the run)."""
    return json.dumps(finite_or_none(run.to_dict()), indent=1, sort_keys=True, allow_nan=False) + "\n"


def write_run_file(path: str | os.PathLike[str], run: RunFile) -> None:
    """Write ``run`` atomically (:func:`run_file_text`)."""
    atomic_write_text(Path(path), run_file_text(run))


def read_run_file(path: str | os.PathLike[str]) -> RunFile:
    """Read and validate a run file of any readable format; :class:`RunFileError` names the file and field."""
    p = Path(path)
    special = special_file(p)
    if special:
        raise RunFileError(f"{p}: {special}; expected a run file")
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise RunFileError(f"{p}: no such run file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise RunFileError(f"{p}: cannot read run file: {exc}") from None
    if not text.strip():
        raise RunFileError(
            f"{p}: empty run file (0 bytes of JSON); expected an irene-run document written by pytest --irene-json=PATH "
            "(an artifact that did not download, or a shell redirect that failed, leaves one)"
        )
    try:
        doc = load_user_json(text)
    except json.JSONDecodeError as exc:
        raise RunFileError(
            f"{p}: corrupt run file (invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg})"
        ) from None
    except UnreadableNumberError as exc:
        raise RunFileError(f"{p}: corrupt run file ({exc})") from None
    except DuplicateKeyError as exc:
        raise RunFileError(f"{p}: field {exc} named twice in one JSON object (which value is meant?)") from None
    except RecursionError:  # the parser recurses per nesting level: a tree some 450 modules deep
        raise RunFileError(
            f"{p}: run file nested too deep to read (a tree over {MAX_DEPTH} levels deep is not a model tree "
            "pytest-irene can compare)"
        ) from None
    found = doc.get("format") if isinstance(doc, dict) else type(doc).__name__
    if isinstance(found, str) and _newer(found):
        raise RunFileError(
            f"{p}: run file format {found!r} is newer than this pytest-irene reads "
            f"({', '.join(READABLE_FORMATS)}); upgrade pytest-irene, or compare runs written by the same version"
        )
    if found not in READABLE_FORMATS:
        raise RunFileError(
            f"{p}: not a pytest-irene run file (expected format {' or '.join(map(repr, READABLE_FORMATS))}, "
            f"found {found!r}); run files are written by pytest --irene-json=PATH"
        )
    records = doc.get("records")
    if not isinstance(records, list):
        raise RunFileError(f"{p}: records: expected a list, got {type(records).__name__}")
    try:
        parsed = [record_from_dict(obj, f"records[{i}]") for i, obj in enumerate(records)]
    except RecordError as exc:
        raise RunFileError(f"{p}: {exc}") from None
    first: dict[tuple[str, str], int] = {}
    for i, rec in enumerate(parsed):  # a hand-merged file: a comparison would silently keep one of them
        j = first.setdefault(rec.key, i)
        if j != i:
            raise RunFileError(
                f"{p}: records[{i}]: call {rec.nodeid} [{rec.label}] is also records[{j}]; a run file holds each "
                "(node id, label) once, so one of them would be compared and the other silently dropped"
            )
    if found == "irene-run/1":
        settings = doc.get("settings") if isinstance(doc.get("settings"), dict) else {}
        return RunFile(
            records=parsed,
            profile=str(settings.get("profile", "")),
            feature_mode=str(settings.get("features", "")),
            settings=dict(settings),
            format=found,
        )
    host = _object(doc, "host", p)
    bad_host = hardware_problem(host)
    if bad_host is not None:  # compared with another machine's: a list of GPUs as 5 raised TypeError
        raise RunFileError(f"{p}: host.{bad_host[0]}: {bad_host[1]}")
    return RunFile(
        records=parsed,
        host=host,
        commit=_commit(doc.get("commit"), p),
        version=_string(doc, "pytest_irene", p),
        profile=_string(doc, "profile", p),
        feature_mode=_string(doc, "feature_mode", p),
        settings=_object(doc, "settings", p),
        format=found,
    )


def _newer(found: str) -> bool:
    """Whether ``found`` is an ``irene-run/N`` format of a later version than this one writes."""
    prefix, _, number = found.partition("/")
    return prefix == "irene-run" and number.isdigit() and int(number) > int(RUN_FORMAT.split("/")[1])


def _string(doc: dict[str, Any], key: str, path: Path) -> str:
    value = doc.get(key, "")
    if not isinstance(value, str):
        raise RunFileError(f"{path}: {key}: expected a string, got {value!r}")
    return value


def _object(doc: dict[str, Any], key: str, path: Path) -> dict[str, Any]:
    value = doc.get(key, {})
    if not isinstance(value, dict):
        raise RunFileError(f"{path}: {key}: expected an object, got {type(value).__name__}")
    return dict(value)


def _commit(obj: Any, path: Path) -> CommitInfo | None:
    if obj is None:
        return None
    if (
        not isinstance(obj, dict)
        or not isinstance(obj.get("sha"), str)
        or not isinstance(obj.get("branch"), str)
        or not isinstance(obj.get("dirty"), bool)
    ):
        raise RunFileError(f"{path}: commit: expected {{'sha': str, 'branch': str, 'dirty': bool}} or null, got {obj!r}")
    return CommitInfo(sha=obj["sha"], branch=obj["branch"], dirty=obj["dirty"])
