"""A rerun test (pytest-rerunfailures): the last attempt's calls are the test's, as its outcome is.

The first attempt below widens the model and fails; the rerun predicts the narrow one and
passes. Before, the rerun's ``irene()`` was refused as "called twice" (the first attempt's
record was still there), and under xdist the controller kept the failed attempt's record.
"""

from __future__ import annotations

import json

import pytest

pytest.importorskip("pytest_rerunfailures")

FLAKY = '''
import torch
from torch import nn

ATTEMPTS = {"n": 0}


def test_flaky(irene):
    ATTEMPTS["n"] += 1
    first = ATTEMPTS["n"] == 1
    width = 256 if first else 32
    irene(nn.Sequential(nn.Linear(32, width), nn.Linear(width, 32)), torch.randn(4, 16, 32))
    if first:
        irene(nn.Linear(32, 32), torch.randn(4, 16, 32), label="first-attempt-only")
    assert not first, "the first attempt fails"


def test_steady(irene):
    irene(nn.Linear(32, 32), torch.randn(4, 16, 32))
'''


def _run(pytester: pytest.Pytester, *mode: str) -> tuple[pytest.RunResult, dict]:
    (pytester.path / "run.json").unlink(missing_ok=True)
    result = pytester.runpytest_subprocess(
        "-p", "no:benchmark", "-p", "no:cacheprovider", "--reruns", "1", "--irene-save", "--irene-json=run.json", *mode
    )
    return result, json.loads((pytester.path / "run.json").read_text())


def _calls(run: dict) -> dict[tuple[str, str], float]:
    return {(c["nodeid"].split("::")[-1], c["label"]): c["total_j"] for c in run["records"]}


@pytest.mark.parametrize("mode", [("-p", "no:xdist"), ("-n", "2")], ids=["serial", "xdist"])
def test_a_rerun_test_keeps_its_last_attempts_calls(pytester: pytest.Pytester, mode: tuple[str, ...]) -> None:
    if mode[0] == "-n":
        pytest.importorskip("xdist")
    pytester.makepyfile(test_flaky=FLAKY)
    result, run = _run(pytester, *mode)
    assert result.ret == 0 and "2 passed, 1 rerun" in result.stdout.str()
    assert "called twice" not in result.stdout.str()
    calls = _calls(run)
    assert set(calls) == {("test_flaky", "default"), ("test_steady", "default")}  # no first-attempt-only call
    assert "first-attempt-only" not in (pytester.path / ".irene" / "test_flaky.json").read_text()
    # The narrow model of the rerun, not the wide one of the failed attempt: the same energy
    # as a run where the test passes at once.
    pytester.makepyfile(test_flaky=FLAKY.replace('ATTEMPTS = {"n": 0}', 'ATTEMPTS = {"n": 1}'))
    _, once = _run(pytester, *mode)
    assert calls == _calls(once)
