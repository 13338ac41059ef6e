"""pytest's ``subtests``: a subtest fails for the wrapped calls made inside it, not for another's.

Each subtest makes a call-phase report of its own before the test's. Before, every report
judged all of the test's calls so far, so a regression in the first subtest failed every
later subtest, and the test itself, with the first one's table.
"""

from __future__ import annotations

import json

import pytest

from inner import run

pytest.importorskip("_pytest.subtests")  # built into pytest 9

WIDTHS = '''
import os

import torch
from torch import nn


def test_widths(irene, subtests):
    for width in (32, 64):
        with subtests.test(width=width):
            layers = [nn.Linear(width, width)]
            if os.environ.get("COSTLIER") == str(width):
                layers += [nn.Linear(width, width * 8), nn.Linear(width * 8, width)]
            irene(nn.Sequential(*layers), torch.randn(8, 16, width), label=f"w{width}")
    if os.environ.get("COSTLIER") == "outside":
        irene(nn.Sequential(nn.Linear(32, 256), nn.Linear(256, 32)), torch.randn(8, 16, 32), label="outside")
    else:
        irene(nn.Linear(32, 32), torch.randn(8, 16, 32), label="outside")
'''


def _run(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, costlier: str, *args: str) -> pytest.RunResult:
    monkeypatch.setenv("COSTLIER", costlier)
    return pytester.runpytest_subprocess("-p", "no:benchmark", "-p", "no:cacheprovider", "-p", "no:xdist", "-rA", *args)


def test_a_subtest_fails_for_its_own_calls_only(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    pytester.makepyfile(test_widths=WIDTHS)
    assert _run(pytester, monkeypatch, "", "--irene-save").ret == 0
    result = _run(pytester, monkeypatch, "32", "--irene-json=run.json")
    out = result.stdout.str()
    assert result.ret == 1
    result.stdout.fnmatch_lines(["SUBFAILED(width=32) test_widths.py::test_widths - [[]w32[]] energy regression*",
                                 "FAILED test_widths.py::test_widths - contains 1 failed subtest"])
    assert "SUBFAILED(width=64)" not in out and "test_widths (width=64)" not in out  # no failure section either
    run_file = json.loads((pytester.path / "run.json").read_text())
    status = {c["label"]: c["comparison"]["status"] for c in run_file["records"]}
    assert status == {"w32": "fail", "w64": "pass", "outside": "pass"}


def test_a_call_outside_the_subtests_fails_the_test(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    pytester.makepyfile(test_widths=WIDTHS)
    assert _run(pytester, monkeypatch, "", "--irene-save").ret == 0
    result = _run(pytester, monkeypatch, "outside")
    out = result.stdout.str()
    assert result.ret == 1 and "SUBFAILED" not in out
    result.stdout.fnmatch_lines(["FAILED test_widths.py::test_widths - [[]outside[]] energy regression*"])


BREAKS = '''
import os

import torch
from torch import nn


def test_sub(irene, subtests):
    with subtests.test("first"):
        irene(nn.Linear(32, 32), torch.randn(8, 32), label="first")
    assert not os.environ.get("BREAK"), "broken before the second call"
    irene(nn.Linear(32, 32), torch.randn(8, 32), label="second")
'''


def test_prune_keeps_the_baselines_of_a_test_that_failed_after_a_passing_subtest(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The passing subtest's report counted as the test's pass: its unreached label was pruned."""
    pytester.makepyfile(test_breaks=BREAKS)
    run(pytester, "--irene-save").assert_outcomes(passed=1)
    monkeypatch.setenv("BREAK", "1")
    result = run(pytester, "--irene-save", "--irene-prune")
    result.assert_outcomes(failed=1)
    assert "pruned" not in result.stdout.str()
    stored = json.loads((pytester.path / ".irene" / "test_breaks.json").read_text())["tests"]
    assert set(stored["test_breaks.py::test_sub"]) == {"first", "second"}
