"""Report files a user asks for: checked before any work, and one-line errors when writing fails.

``--irene-json``, ``--irene-html`` (and ini ``irene_html``), ``irene predict
--html`` and ``irene sweep --csv/--html`` all write a file the user named. A
path that cannot work (a directory, a parent that is a file, a read-only
directory) is a usage error before a single model is traced, and so is an
existing file that is not an earlier report of the same kind (a test file, a
baseline, a model file: replacing it would lose it); a write that
still fails at the end (the disk filled, the directory vanished) is an
:class:`OutputError` naming the option and the path, never a traceback. The
write itself is atomic (:mod:`pytest_irene.atomic`), so it leaves no temp file.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Callable

from pytest_irene.atomic import atomic_write_text
from pytest_irene.errors import IreneError, UsageError
from pytest_irene.validate import link_loops


class OutputError(IreneError):
    """A report file could not be written; the message names the option and the path."""


def same_file(a: str | os.PathLike[str], b: str | os.PathLike[str]) -> bool:
    """Whether ``a`` and ``b`` are one existing file (also through a link): an output that would
    replace one of its own inputs."""
    try:
        return Path(a).exists() and Path(b).exists() and os.path.samefile(a, b)
    except OSError:
        return False


def check_not_an_input(output: str | os.PathLike[str], inputs: list[str], option: str) -> None:
    """Refuse an output that is one of the command's own inputs: writing it would replace that input."""
    for path in inputs:
        if same_file(output, path):
            raise UsageError(f"{option}={output}: is also the input {path}; write the output to a new file")


_HEAD_BYTES = 64 * 1024

#: Report kind -> (what it is called, whether a file's first 64 KiB are one). Each writer's own mark:
#: a run file's sorted keys put ``"format"`` near the top; the HTML and Markdown reports name the
#: plugin in their first lines; a sweep CSV starts with its fixed header.
REPORT_KINDS: dict[str, tuple[str, Callable[[str], bool]]] = {
    "run": ("pytest-irene run file", lambda head: re.search(r'"format":\s*"irene-run/', head) is not None),
    "html": ("pytest-irene HTML report",
             lambda head: head.lstrip().lower().startswith("<!doctype html") and "pytest-irene" in head),
    "markdown": ("pytest-irene Markdown summary", lambda head: "pytest-irene" in head.split("\n", 1)[0]),
    "csv": ("CSV of irene sweep", lambda head: head.startswith("model,profile,batch_size,seq_len,energy_j")),
    "export": ("irene export JSON (github-action-benchmark or Bencher)", lambda head: _is_export(head)),
}


def _is_export(head: str) -> bool:
    """``irene export``'s output: github-action-benchmark's array of ``{"name", "unit": "J", ...}``
    or Bencher's ``{name: {"energy-j": {"value": ...}}}`` (formats owned by those tools: no marker)."""
    from pytest_irene.report.benchmark_json import BENCHER_MEASURE

    return (re.match(r'\s*\[\s*\{\s*"name":\s*"(?:[^"\\]|\\.)*",\s*"unit":\s*"J"', head) is not None
            or re.match(r'\s*\{\s*"(?:[^"\\]|\\.)*":\s*\{\s*"' + re.escape(BENCHER_MEASURE) + r'":\s*\{\s*"value"', head) is not None)


def _holds_other_content(path: Path, kind: str) -> bool:
    """Whether ``path`` is a non-empty file that is not an earlier report of ``kind``."""
    try:
        if not path.is_file() or path.stat().st_size == 0:
            return False
        with path.open("rb") as handle:
            head = handle.read(_HEAD_BYTES).decode("utf-8", errors="replace")
    except OSError:
        return False  # unreadable: the write itself will say why
    return not REPORT_KINDS[kind][1](head)


def check_distinct(outputs: dict[str, Path | None]) -> None:
    """Refuse two report options (option -> path) naming one file: the second write would replace
    the first report."""
    seen: list[tuple[str, Path]] = []
    for option, path in outputs.items():
        if path is None:
            continue
        for first, other in seen:
            if os.path.abspath(path) == os.path.abspath(other) or same_file(path, other):
                raise UsageError(f"{option}={path}: is also the file of {first}; give each report its own file")
        seen.append((option, path))


def _existing_ancestor(path: Path) -> Path:
    for parent in path.parents:
        if parent.exists():
            return parent
    return Path(path.anchor or ".")


def check_output_path(path: str | os.PathLike[str], option: str, value: str | None = None, *,
                      kind: str | None = None) -> Path:
    """``path`` when a file can be written there, else a :class:`UsageError` naming ``option``.

    ``value`` is what the user typed (shown in the message; default ``path``).
    Missing parent directories are fine (the write creates them), as long as the
    nearest existing one is a writable directory. With ``kind`` (a key of
    :data:`REPORT_KINDS`), an existing non-empty file is replaced only when it
    is an earlier report of that kind.
    """
    target = Path(path)
    said = f"{option}={value if value is not None else target}"
    if not str(path).strip() or (value is not None and not value.strip()):
        raise UsageError(f"{option}: expected a file path, got an empty value")
    if target.is_dir():
        raise UsageError(f"{said}: is a directory; expected a file path")
    if link_loops(target):  # the atomic write's resolve() raised RuntimeError at the end of the run
        raise UsageError(f"{said}: a symbolic link that loops; expected a file path")
    if kind is not None and _holds_other_content(target, kind):
        raise UsageError(f"{said}: exists and is not a {REPORT_KINDS[kind][0]}; refusing to replace it "
                         "(remove it or pick another path)")
    ancestor = _existing_ancestor(target)
    if not ancestor.is_dir():
        raise UsageError(f"{said}: {ancestor} is not a directory")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise UsageError(f"{said}: cannot write into {ancestor} (read-only or no permission)")
    return target


def output_error(option: str, path: str | os.PathLike[str], exc: OSError) -> OutputError:
    """The one-line error for a failed write of the report ``option`` asked for."""
    return OutputError(f"{option}: cannot write {path}: {exc.strerror or exc}")


def write_output(path: str | os.PathLike[str], text: str, option: str) -> None:
    """Write ``text`` atomically; an :class:`OutputError` naming ``option`` and ``path`` if that fails."""
    try:
        atomic_write_text(path, text)
    except OSError as exc:
        raise output_error(option, path, exc) from None
