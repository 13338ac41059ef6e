"""Atomic writes: old or new content, never a mix, and symlinks written through."""

from __future__ import annotations

import gzip
import os
from pathlib import Path

from pytest_irene.atomic import atomic_append_lines, atomic_write_text


def test_a_symlinked_target_is_written_through_and_stays_a_link(tmp_path: Path) -> None:
    real = tmp_path / "published" / "report.html"
    real.parent.mkdir()
    real.write_text("old")
    os.chmod(real, 0o600)
    link = tmp_path / "report.html"
    link.symlink_to(real)
    atomic_write_text(link, "new")
    assert link.is_symlink() and real.read_text() == "new"
    assert real.stat().st_mode & 0o777 == 0o600  # the file's mode is kept
    assert sorted(p.name for p in real.parent.iterdir()) == ["report.html"]  # no temp file left


def test_a_dangling_symlink_creates_the_file_it_names(tmp_path: Path) -> None:
    link = tmp_path / "run.json"
    link.symlink_to(tmp_path / "runs" / "latest.json")
    atomic_write_text(link, "{}")
    assert link.is_symlink() and (tmp_path / "runs" / "latest.json").read_text() == "{}"


def test_append_through_a_link_keeps_earlier_lines(tmp_path: Path) -> None:
    real = tmp_path / "data.jsonl.gz"
    atomic_append_lines(real, ["a"])
    link = tmp_path / "link.jsonl.gz"
    link.symlink_to(real)
    atomic_append_lines(link, ["b"])
    assert gzip.decompress(real.read_bytes()) == b"a\nb\n" and link.is_symlink()
