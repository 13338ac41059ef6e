"""Atomic file writes.

Baselines, datasets and energy models are things users keep in git or collect
over hours on a rig: a crash or a full disk must never leave them half-written.
Everything is written to a temporary file in the same directory and renamed
over the target, which POSIX guarantees to be atomic.
"""

from __future__ import annotations

import gzip
import os
import shutil
import tempfile
from pathlib import Path


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old or the new file, never a mix.

    A symlink is written through, as ``open(path, "w")`` would: renaming over the link itself
    would replace it with a plain file and leave the file it points at (say, a report
    published from another directory) stale."""
    target = Path(path)
    if target.is_symlink():
        target = target.resolve()
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        if target.exists():
            shutil.copymode(target, tmp)
        else:
            os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    """Write UTF-8 ``text`` atomically (see :func:`atomic_write_bytes`)."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_append_lines(path: str | os.PathLike[str], lines: list[str]) -> None:
    """Append text lines to a (possibly gzip-compressed) file atomically.

    The existing content is copied with the new lines into a temporary file that
    then replaces the original, so a crash keeps every line written before.
    Compression follows the ``.gz`` suffix.
    """
    target = Path(path)
    gz = target.suffix == ".gz"
    old = b""
    if target.exists():
        old = gzip.decompress(target.read_bytes()) if gz else target.read_bytes()
        if old and not old.endswith(b"\n"):
            old += b"\n"
    new = old + "".join(line.rstrip("\n") + "\n" for line in lines).encode("utf-8")
    atomic_write_bytes(target, gzip.compress(new, mtime=0) if gz else new)
