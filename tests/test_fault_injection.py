"""Fault injection during ``--irene-save`` under ``-n 2`` (issue 11).

A worker is killed mid-run, and separately ``os.replace`` raises while the
controller writes the baseline files. Afterwards every baseline file on disk
must be either the old one or the new one, byte for byte, and valid. One test
per module, so each file is written by exactly one test and "old or new" is
well defined. These inner sessions run as real processes (xdist needs them).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

pytest.importorskip("xdist")

from inner import run  # noqa: E402
from pytest_irene.compare.baselines import read_baseline_file  # noqa: E402

MODULE = '''
import os
import signal

import torch


def test_{name}(irene):
    width = int(os.environ.get("IRENE_FAULT_WIDTH", "16"))
    irene(torch.nn.Sequential(torch.nn.Linear(16, width), torch.nn.Linear(width, 16)), torch.randn(2, 4, 16))
    if os.environ.get("IRENE_FAULT_KILL") == "{name}":
        os.kill(os.getpid(), signal.SIGKILL)  # the worker dies after its call was recorded
'''

#: The controller's os.replace fails on its second call: one baseline file cannot be renamed into place.
CONFTEST = '''
import os

import pytest


@pytest.hookimpl(tryfirst=True)
def pytest_sessionfinish(session):
    if os.environ.get("IRENE_FAULT_REPLACE") and not hasattr(session.config, "workerinput"):
        real, calls = os.replace, []

        def failing(src, dst, *args, **kwargs):
            calls.append(dst)
            if len(calls) == 2:
                raise OSError(28, "No space left on device (injected)")
            return real(src, dst, *args, **kwargs)

        os.replace = failing
'''

NAMES = ("a", "b", "c", "d")


def files(directory: Path) -> dict[str, str]:
    return {p.name: p.read_text() for p in sorted(directory.glob("*.json"))}


@pytest.fixture
def project(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> tuple[pytest.Pytester, dict, dict]:
    """A project with old baselines saved, and the files a clean save of the new version writes."""
    for name in NAMES:
        pytester.makepyfile(**{f"test_{name}": MODULE.replace("{name}", name)})
    pytester.makeconftest(CONFTEST)
    run(pytester, "--irene-save").assert_outcomes(passed=len(NAMES))
    old = files(pytester.path / ".irene")
    monkeypatch.setenv("IRENE_FAULT_WIDTH", "48")
    reference = pytester.path / "reference"
    run(pytester, "--irene-save", f"--irene-baselines={reference}").assert_outcomes(passed=len(NAMES))
    new = files(reference)
    shutil.rmtree(reference)
    assert set(old) == set(new) and all(old[k] != new[k] for k in old)
    return pytester, old, new


def assert_old_or_new(directory: Path, old: dict, new: dict) -> dict[str, str]:
    now = files(directory)
    assert set(now) == set(old)
    state = {}
    for name, text in now.items():
        assert text in (old[name], new[name]), f"{name} is neither the old nor the new file"
        read_baseline_file(directory / name)  # valid
        state[name] = "old" if text == old[name] else "new"
    assert not list(directory.glob("*.tmp")) and not list(directory.glob(".*.tmp"))
    return state


def test_killed_worker_during_save_leaves_every_file_old_or_new(project, monkeypatch) -> None:
    pytester, old, new = project
    monkeypatch.setenv("IRENE_FAULT_KILL", "b")
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-n", "2", "--irene-save")
    assert result.ret == pytest.ExitCode.TESTS_FAILED  # the killed worker's test is reported as crashed
    assert "worker" in result.stdout.str() and "crashed" in result.stdout.str()
    state = assert_old_or_new(pytester.path / ".irene", old, new)
    assert state["test_b.json"] == "old"  # its entry died with the worker
    assert sum(1 for s in state.values() if s == "new") >= 2  # the others were saved


def test_failing_rename_during_save_leaves_every_file_old_or_new(project, monkeypatch) -> None:
    pytester, old, new = project
    monkeypatch.setenv("IRENE_FAULT_REPLACE", "1")
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-n", "2", "--irene-save")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(["*baselines NOT saved: *No space left on device (injected)*"])
    state = assert_old_or_new(pytester.path / ".irene", old, new)
    assert sorted(state.values()) == ["new", "new", "new", "old"]  # only the file whose rename failed is old
