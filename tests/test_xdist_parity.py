"""xdist parity: a suite run with ``-n 2`` gives what the same suite gives in one process.

Every output the plugin has is compared between a serial run (``-p no:xdist``) and an
xdist run of the same suite in the same state: each test's outcome and JUnit properties,
the terminal summary (totals, culprits, extrapolation lines, stale baselines, CI
annotations), the baseline files ``--irene-save`` writes, the run file (``--irene-json``),
the HTML report (``--irene-html``), the Markdown summary (``--irene-markdown``) and the
GitHub step summary, under ``--irene-save``, the gate (``--irene-fail-on=any``, ``-k``),
``--lf`` and ``--collect-only``. Only what pytest and xdist themselves print differently
(progress lines, the order failures are listed in, ``-x``'s exit code) and the minute the
HTML report was generated are left out. A worker that dies mid-run (``os._exit``) must
not take the calls of the tests it had already passed with it, and ``--dist each`` (every
test on every worker) must not count each call once per worker.

Both sides run as subprocesses (xdist needs real processes, and the serial side then
has the same terminal), with tiny models so each inner run takes seconds.
"""

from __future__ import annotations

import json
import re
import shutil
import sys
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import pytest

pytest.importorskip("xdist")

#: The report files every parity run writes (relative to the inner project), and the step summary.
REPORTS = ("run.json", "summary.md", "report.html", "step-summary.md")

COMMON = '''
import pytest
import torch
from torch import nn


class Tiny(nn.Module):
    def __init__(self, width=64):
        super().__init__()
        self.block = nn.Sequential(nn.Linear(32, width), nn.ReLU(), nn.Linear(width, 32))

    def forward(self, x):
        return self.block(x)
'''

#: Version 1 is saved; version 2 removes a parametrized case, drops a label and a test,
#: widens one model and narrows another. ``{...}`` are what the versions change.
PARAM = COMMON + '''

@pytest.mark.parametrize("bs", {cases})
def test_batch(irene, bs):
    irene(Tiny(), torch.randn(bs, 16, 32), label="fwd")
    if bs not in {no_short}:
        irene(Tiny(), torch.randn(bs, 8, 32), label="short")


def test_kept(irene):  # deselected with -k in version 2: its baseline is not stale
    irene(Tiny(), torch.randn(2, 16, 32))
'''

OTHER = COMMON + '''

class Boom(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(32, 32)

    def forward(self, x):
        raise ValueError("boom in forward")


@pytest.mark.irene(budget="1uJ")
def test_over_budget(irene):
    irene(Tiny(), torch.randn(8, 64, 32))


def test_model_raises(irene):
    irene(Boom(), torch.randn(2, 4, 32))


def test_assert_after(irene):
    assert irene(Tiny(), torch.randn(2, 16, 32)).total_j < 0


def test_long(irene):  # 1024 tokens: outside the profile's trained lengths
    irene(Tiny(), torch.randn(2, 1024, 32), label="long")


def test_wide(irene):
    irene(Tiny(width={wide}), torch.randn(4, 64, 32))


def test_narrow(irene):
    irene(Tiny(width={narrow}), torch.randn(4, 64, 32))
{gone}'''

GONE = '''

def test_gone(irene):
    irene(Tiny(), torch.randn(2, 16, 32), label="gone")
'''

CRASHING = COMMON + '''
import os


@pytest.mark.parametrize("n", range(6))
def test_tiny(irene, n):
    irene(Tiny(), torch.randn(n + 1, 8, 32), label="tiny")


def test_zz_crash(irene):  # collected last: xdist hands it to a worker that has run tests already
    irene(Tiny(), torch.randn(2, 8, 32), label="dying")
    os._exit(3)
'''


def write_version(pytester: pytest.Pytester, version: int) -> None:
    """Version 1 or 2 of the parity suite."""
    if version == 1:
        pytester.makepyfile(test_par=PARAM.format(cases=[1, 2, 4, 8], no_short=()))
        pytester.makepyfile(test_other=OTHER.format(wide=64, narrow=64, gone=GONE))
    else:
        pytester.makepyfile(test_par=PARAM.format(cases=[1, 2, 4], no_short=(2,)))
        pytester.makepyfile(test_other=OTHER.format(wide=1024, narrow=8, gone=""))


@dataclass
class Run:
    """What one inner run produced: exit code, the summary's text, outcomes and report files."""

    ret: int
    summary: str
    outcomes: dict[str, tuple[str, tuple[tuple[str, str], ...]]]
    """Per test (JUnit ``classname::name``): its outcome and its JUnit properties."""
    files: dict[str, str]
    stdout: str


def summary_section(stdout: str) -> str:
    """The plugin's part of the terminal: from the energy summary to pytest's closing lines
    (the short test summary, where failures are listed in the order they finished)."""
    start = stdout.find("irene energy summary")
    assert start >= 0, stdout
    lines = stdout[start:].splitlines()[1:]
    closing = re.compile(r"^=+ (short test summary info|\d+ \w+)")
    end = next((i for i, line in enumerate(lines) if closing.match(line)), len(lines))
    return "\n".join(lines[:end])


def junit_outcomes(path: Path) -> dict[str, tuple[str, tuple[tuple[str, str], ...]]]:
    """Each test case's outcome (``passed``, ``failure``, ``error``, ``skipped``) and properties."""
    out = {}
    for case in ET.parse(path).getroot().iter("testcase"):
        kinds = [child.tag for child in case if child.tag in ("failure", "error", "skipped")]
        props = tuple(sorted((p.get("name", ""), p.get("value", "")) for p in case.iter("property")))
        out[f"{case.get('classname')}::{case.get('name')}"] = (kinds[0] if kinds else "passed", props)
    return out


def untimed(text: str) -> str:
    """A report without the minute it was generated at (the HTML report's ``generated``)."""
    return re.sub(r'"generated":"[^"]*"', '"generated":"<time>"', text)


def inner_run(pytester: pytest.Pytester, xdist: bool, *args: str) -> Run:
    """One subprocess session writing every report, serial (``-p no:xdist``) or ``-n 2``."""
    for name in (*REPORTS, "junit.xml"):
        (pytester.path / name).unlink(missing_ok=True)
    mode = ("-n", "2") if xdist else ("-p", "no:xdist")
    result = pytester.runpytest_subprocess(
        "-p", "no:benchmark", *mode, "-v", "--irene-json=run.json", "--irene-markdown=summary.md",
        "--irene-html=report.html", "--junitxml=junit.xml", *args,
    )
    files = {name: untimed((pytester.path / name).read_text()) for name in REPORTS if (pytester.path / name).exists()}
    return Run(result.ret, summary_section(result.stdout.str()), junit_outcomes(pytester.path / "junit.xml"), files,
               result.stdout.str())


def assert_same(serial: Run, xdist: Run) -> None:
    """Everything the plugin decides and writes is the same; a message says which output differs."""
    assert xdist.outcomes == serial.outcomes
    assert xdist.summary == serial.summary, f"terminal summary differs:\n{serial.summary}\n--- -n 2:\n{xdist.summary}"
    assert sorted(xdist.files) == sorted(serial.files)
    for name in serial.files:
        assert xdist.files[name] == serial.files[name], f"{name} differs between the serial and the -n 2 run"
    assert xdist.ret == serial.ret


def baseline_texts(directory: Path) -> dict[str, str]:
    """Each baseline file's text: two saves of the same calls must write the same bytes."""
    return {p.name: p.read_text() for p in sorted(directory.glob("*.json"))}


def test_every_output_is_the_same_under_xdist(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    """One suite through save, gate, ``--lf`` and ``--collect-only``, each run serially and with
    ``-n 2`` from the same state: outcomes, summary and every report file must match."""
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(pytester.path / "step-summary.md"))
    monkeypatch.setenv("GITHUB_ACTIONS", "true")
    write_version(pytester, 1)

    # --irene-save: the same baseline files, every entry of the parametrized cases the workers split
    serial = inner_run(pytester, False, "--irene-save")
    saved = baseline_texts(pytester.path / ".irene")
    shutil.rmtree(pytester.path / ".irene")
    xdist = inner_run(pytester, True, "--irene-save")
    assert_same(serial, xdist)
    assert baseline_texts(pytester.path / ".irene") == saved
    assert set(saved) == {"test_par.json", "test_other.json"} and sorted(serial.files) == sorted(REPORTS)
    assert len(json.loads(saved["test_par.json"])["tests"]) == 5  # four cases and test_kept
    assert "baselines saved: " in serial.summary

    # the gate against them, --irene-fail-on=any, --irene-budget, a subset (-k): culprits,
    # extrapolation, stale baselines
    write_version(pytester, 2)
    gate = ("--irene-min-delta=1uJ", "--irene-fail-on=any", "--irene-budget=28mJ", "-k", "not kept")
    serial = inner_run(pytester, False, *gate)
    xdist = inner_run(pytester, True, *gate)
    assert_same(serial, xdist)
    for expected in (
        "test_other.py::test_wide [default]: block.1 (ReLU)",
        "test_other.py::test_narrow [default]: block.1 (ReLU)",  # cheaper fails under --irene-fail-on=any
        "extrapolates: test_other.py::test_long [long]",
        "irene: 4 stale baseline(s)",
        "test_par.py::test_batch[2] [short] (the test passed without making this call)",
        "test_par.py::test_batch[8] [fwd] (test no longer exists)",
        "test_other.py::test_gone [gone] (test no longer exists)",
        "::error file=test_other.py",
    ):
        assert expected in serial.summary, expected
    assert re.search(r"test_other.py::test_long \[long\]: [\d.]+ mJ over budget 28 mJ", serial.summary)
    assert "test_kept" not in serial.summary  # deselected: neither run nor stale
    failed = {name for name, (outcome, _) in serial.outcomes.items() if outcome != "passed"}
    gated = ("over_budget", "model_raises", "assert_after", "long", "wide", "narrow")
    assert failed == {f"test_other::test_{n}" for n in gated}
    if sys.version_info >= (3, 11):  # exception notes are Python 3.11+
        assert "pytest-irene: cannot trace Boom" in xdist.stdout  # the model's exception, with its note, from a worker

    # --lf (the failures both gate runs recorded), --irene-fail-on=increase, no budget: the
    # narrowed model passes as cheaper, and a narrowed run lists no stale baseline, in both
    cache = pytester.path / ".pytest_cache"
    shutil.copytree(cache, pytester.path / "cache-after-gate")
    serial = inner_run(pytester, False, "--lf", "--irene-min-delta=1uJ")
    shutil.rmtree(cache)  # the serial run forgot test_narrow's failure: -n 2 starts from the same cache
    shutil.copytree(pytester.path / "cache-after-gate", cache)
    xdist = inner_run(pytester, True, "--lf", "--irene-min-delta=1uJ")
    assert_same(serial, xdist)
    assert len(serial.outcomes) == 6 and serial.outcomes["test_other::test_narrow"][0] == "passed"
    assert "cheaper than the baseline" in serial.summary and "stale baseline" not in serial.summary
    assert sorted(serial.files) == sorted(REPORTS)

    # --collect-only -n 2 (xdist then runs in one process): the same stale baselines, no call
    serial = inner_run(pytester, False, "--collect-only")
    xdist = inner_run(pytester, True, "--collect-only")
    assert_same(serial, xdist)
    assert "irene: 3 stale baseline(s)" in serial.summary and "0 wrapped call(s)" in serial.summary
    assert serial.files == {} and "written to" not in serial.summary  # no report replaced by an empty run


def test_a_crashed_worker_keeps_the_calls_of_the_tests_it_passed(pytester: pytest.Pytester) -> None:
    """A worker killed by ``os._exit`` hands over no ``workeroutput``: the calls of the tests it
    had passed were lost (xdist reported them passed, the summary, the run file and
    ``--irene-save`` did not know them). Each test's calls now travel on its own report."""
    pytester.makepyfile(test_crashing=CRASHING)
    crashed = inner_run(pytester, True, "--irene-save")
    died = re.search(r"worker '(gw\d+)' crashed while running 'test_crashing.py::test_zz_crash'", crashed.stdout)
    assert died, crashed.stdout
    before = re.findall(rf"\[{died.group(1)}\] \[ *\d+%\] PASSED (\S+)", crashed.stdout.split("crashed while running")[0])
    assert before, "the crashed worker had passed no test before: nothing to lose"  # the case under test happens
    crashed_baselines = baseline_texts(pytester.path / ".irene")
    shutil.rmtree(pytester.path / ".irene")

    # the same suite without the crashing test, in one process: what the passed tests must give
    serial = inner_run(pytester, False, "--irene-save", "--deselect", "test_crashing.py::test_zz_crash")
    assert serial.outcomes == {k: v for k, v in crashed.outcomes.items() if not k.endswith("test_zz_crash")}
    assert json.loads(crashed.files["run.json"]) == json.loads(serial.files["run.json"])
    assert baseline_texts(pytester.path / ".irene") == crashed_baselines
    assert "irene: 6 wrapped call(s), 6 saved" in crashed.summary


def test_dist_each_keeps_one_record_per_call(pytester: pytest.Pytester) -> None:
    """``--dist each`` runs every test on every worker: the controller got each call twice,
    so the summary counted them twice and the run file held each call twice (``irene
    compare`` refuses such a file). The run keeps one record per call, as serially, and says so."""
    write_version(pytester, 1)
    pytester.path.joinpath("test_other.py").unlink()
    serial = inner_run(pytester, False, "--irene-save")
    saved = baseline_texts(pytester.path / ".irene")
    shutil.rmtree(pytester.path / ".irene")
    each = inner_run(pytester, True, "--irene-save", "--dist", "each")
    assert json.loads(each.files["run.json"]) == json.loads(serial.files["run.json"])
    assert baseline_texts(pytester.path / ".irene") == saved
    note = ("irene: 9 call(s) also ran on another xdist worker (--dist each): "
            "the summary, the run file and the baselines keep the first of each")
    assert each.summary.replace(note + "\n", "") == serial.summary
    assert note in each.files["summary.md"].replace("\\", "")  # the Markdown escapes its underscores and dashes
