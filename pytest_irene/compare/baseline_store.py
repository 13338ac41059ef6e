"""The baselines directory: one JSON file per test module, read lazily, saved file by file under a lock.

The file format (entries, validation, the text layout) is :mod:`pytest_irene.compare.baselines`;
this module owns what happens on disk: where a test's file is, merging a save into what is
stored, pruning, and never leaving a half-written or temporary file behind.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from pytest_irene.atomic import atomic_write_text
from pytest_irene.compare.baselines import (
    FORMAT,
    BaselineEntry,
    BaselineError,
    dumps_document,
    merge_entry,
    parse_document,
    read_baseline_file,
)

try:
    import fcntl
except ImportError:  # Windows: no advisory locks on a directory (see _locked)
    fcntl = None  # type: ignore[assignment]


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive advisory lock on the directory of ``path`` for a read-merge-write.

    Locking the directory itself (not a side file) leaves nothing behind to commit. Without
    ``fcntl`` (Windows) nothing is locked: saves stay atomic file by file, and xdist is
    unaffected (only its controller saves), but two separate pytest processes saving into one
    baselines directory at the same moment can each keep only their own entries of a file.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    if fcntl is None:
        yield
        return
    fd = os.open(path.parent, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def nodeid_module(nodeid: str) -> str:
    """The test module part of a node id (``tests/test_a.py`` of ``tests/test_a.py::T::test[1]``)."""
    return nodeid.split("::", 1)[0]



def baseline_files(directory: Path) -> list[Path]:
    """Every ``*.json`` file under ``directory``, sorted. A directory that cannot be read is a
    :class:`BaselineError` naming it: skipped (as ``Path.rglob`` does), its calls would count as new
    and the gate would pass them unseen."""

    def unreadable(exc: OSError) -> None:
        raise BaselineError(f"{exc.filename}: cannot read the baseline directory: {exc.strerror or exc}")

    found: list[Path] = []
    for root, _dirs, names in os.walk(directory, onerror=unreadable):
        found.extend(Path(root) / name for name in names if name.endswith(".json"))
    return sorted(p for p in found if p.is_file())

class BaselineStore:
    """The baseline directory: read entries by (node id, label), save many at once.

    Files are read lazily and cached, so a session that only touches one test
    module never opens the others, and a corrupt file only affects its own tests.
    """

    def __init__(self, directory: str | os.PathLike[str]):
        self.directory = Path(directory)
        self._cache: dict[Path, dict[str, dict[str, BaselineEntry]]] = {}

    def path_for(self, nodeid: str) -> Path:
        """The file holding the baselines of the test module of ``nodeid``."""
        module = nodeid_module(nodeid)
        rel = Path(module)
        if rel.is_absolute() or ".." in rel.parts:  # tests outside the rootdir
            rel = Path("_outside") / "_".join(p for p in rel.parts if p not in ("/", ".."))
        if not rel.name or rel.name in (".", ".."):  # no module part at all: never crash a save over it
            rel = Path("_outside") / "_unnamed"
        return self.directory / rel.with_suffix(".json")

    def _file(self, path: Path) -> dict[str, dict[str, BaselineEntry]]:
        if path not in self._cache:
            self._cache[path] = read_baseline_file(path)
        return self._cache[path]

    def get(self, nodeid: str, label: str) -> BaselineEntry | None:
        """The stored entry, ``None`` if there is none; :class:`BaselineError` if its file is bad."""
        return self._file(self.path_for(nodeid)).get(nodeid, {}).get(label)

    def save(self, entries: dict[tuple[str, str], BaselineEntry]) -> list[Path]:
        """Write ``{(node id, label): entry}`` (see :meth:`save_each`); returns the files written.

        Raises the first :class:`BaselineError` (or ``OSError``) of a file that was
        refused, after every other file has been saved.
        """
        result = self.save_each(entries)
        if result.errors:
            raise next(iter(result.errors.values()))
        return result.written

    def save_each(self, entries: dict[tuple[str, str], BaselineEntry]) -> SaveResult:
        """Write ``{(node id, label): entry}``, merging into the existing files, each on its own.

        Entries of other tests (e.g. deselected with ``-k``) are kept, and so are
        fields this version does not know. Each file is re-read under a lock right
        before it is replaced, so two sessions saving at once both keep their
        entries. A bad existing file (or a failed write) refuses that file alone:
        it is left as it was and the other files are still saved.
        """
        by_file: dict[Path, dict[tuple[str, str], BaselineEntry]] = {}
        for (nodeid, label), entry in entries.items():
            by_file.setdefault(self.path_for(nodeid), {})[(nodeid, label)] = entry
        result = SaveResult()
        for path in sorted(by_file):

            def merge(current: dict[str, dict[str, BaselineEntry]], path: Path = path) -> None:
                for (nodeid, label), entry in by_file[path].items():
                    current.setdefault(nodeid, {})[label] = entry

            try:
                changed = self._rewrite(path, merge)
            except (BaselineError, OSError) as exc:
                result.errors[path] = exc
                continue
            (result.written if changed else result.unchanged).append(path)
        return result

    def files(self) -> list[Path]:
        """Every baseline file under the directory, sorted."""
        if not self.directory.is_dir():
            return []
        return baseline_files(self.directory)

    def tests_in(self, path: Path) -> dict[str, dict[str, BaselineEntry]]:
        """The entries of one baseline file, ``{node id: {label: entry}}`` (read once, cached)."""
        return self._file(path)

    def prune(self, entries: set[tuple[str, str]]) -> list[Path]:
        """Drop ``{(node id, label)}`` from their files (under the lock, like :meth:`save`).

        A test left without labels is dropped; a file left without tests is
        deleted. Returns the files rewritten or deleted.
        """
        by_file: dict[Path, set[tuple[str, str]]] = {}
        for nodeid, label in entries:
            by_file.setdefault(self.path_for(nodeid), set()).add((nodeid, label))
        changed: list[Path] = []
        for path in sorted(by_file):

            def drop(current: dict[str, dict[str, BaselineEntry]], path: Path = path) -> None:
                for nodeid, label in by_file[path]:
                    current.get(nodeid, {}).pop(label, None)
                    if nodeid in current and not current[nodeid]:
                        del current[nodeid]

            try:
                rewritten = self._rewrite(path, drop)
            except OSError as exc:  # the disk filled: say which file ("[Errno 28] ..." named none), and
                done = f" (pruned before it: {', '.join(str(p) for p in changed)})" if changed else ""  # what was
                raise BaselineError(f"{path}: {exc.strerror or exc}{done}") from None
            if rewritten:
                changed.append(path)
        return changed

    def _rewrite(self, path: Path, change: Callable[[dict[str, dict[str, BaselineEntry]]], None]) -> bool:
        """Re-read ``path`` under the lock, apply ``change``, write it back if it changed (delete it if emptied).

        A symlinked file is written through (the link stays), temp files a killed
        writer left are removed, and fields this version does not know (in the
        file or in an entry) are kept.
        """
        target = path.resolve() if path.is_symlink() else path
        with _locked(target):
            remove_stale_temp_files(target)
            doc, current = parse_document(target)
            change(current)
            self._cache[path] = current
            old = target.read_text(encoding="utf-8") if target.exists() else None
            if not current:
                if old is not None:
                    target.unlink()
                    path.unlink(missing_ok=True)  # the link too, when there was one
                return old is not None
            stored = doc.get("tests", {})
            doc["format"] = FORMAT  # a /1 file is rewritten as /2; its entries keep "leaves": false
            doc["tests"] = {
                nodeid: {label: merge_entry(stored.get(nodeid, {}).get(label), e) for label, e in labels.items()}
                for nodeid, labels in current.items()
            }
            text = dumps_document(doc)
            if text == old:
                return False
            atomic_write_text(target, text)
            return True


@dataclass
class SaveResult:
    """What :meth:`BaselineStore.save_each` did with each file."""

    written: list[Path] = field(default_factory=list)
    """Files whose content changed."""
    unchanged: list[Path] = field(default_factory=list)
    """Files that already held exactly these entries."""
    errors: dict[Path, Exception] = field(default_factory=dict)
    """Files refused (left as they were) and why: a corrupt file, a failed write."""


def remove_stale_temp_files(target: Path) -> list[Path]:
    """Delete the temp files a killed writer left next to ``target`` (``.test_x.json.*.tmp``).

    Called with the directory lock held: every writer of a baseline file holds
    that lock until its rename, so any temp file found then belongs to a writer
    that died (``kill -9`` during a save).
    """
    removed: list[Path] = []
    for tmp in target.parent.glob(f".{glob.escape(target.name)}.*.tmp"):
        try:
            tmp.unlink()
        except OSError:
            continue
        removed.append(tmp)
    return removed
