"""Report files a user asks for: checked before any work, and one-line errors when writing fails.

``--irene-json``, ``--irene-html`` (and ini ``irene_html``), ``irene predict
--html`` and ``irene sweep --csv/--html`` all write a file the user named. A
path that cannot work (a directory, a parent that is a file, a read-only
directory) is a usage error before a single model is traced; a write that
still fails at the end (the disk filled, the directory vanished) is an
:class:`OutputError` naming the option and the path, never a traceback. The
write itself is atomic (:mod:`pytest_irene.atomic`), so it leaves no temp file.
"""

from __future__ import annotations

import os
from pathlib import Path

from pytest_irene.atomic import atomic_write_text
from pytest_irene.errors import IreneError, UsageError


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


def _existing_ancestor(path: Path) -> Path:
    for parent in path.parents:
        if parent.exists():
            return parent
    return Path(path.anchor or ".")


def check_output_path(path: str | os.PathLike[str], option: str, value: str | None = None) -> Path:
    """``path`` when a file can be written there, else a :class:`UsageError` naming ``option``.

    ``value`` is what the user typed (shown in the message; default ``path``).
    Missing parent directories are fine (the write creates them), as long as the
    nearest existing one is a writable directory.
    """
    target = Path(path)
    said = f"{option}={value if value is not None else target}"
    if target.is_dir():
        raise UsageError(f"{said}: is a directory; expected a file path")
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
