"""The README's GitHub Actions workflow, run step by step here.

GitHub cannot be reached from CI, so the workflow's own commands are taken from the
README and executed in order as the workflow would on GitHub: the run on main, the
artifact hand-over (a copy), the gate of a pull request that makes a module costlier,
the comment's comparison, and a pull request before main has any energy run. A
renamed option, a changed exit status or a step that reads ``base/`` without checking
it exists fails here instead of in a user's first pull request.
"""

from __future__ import annotations

import re
import shlex
import shutil
from pathlib import Path
from typing import Any

import pytest

from inner import run
from test_plugin import write_tiny

yaml = pytest.importorskip("yaml")

README = Path(__file__).resolve().parents[1] / "README.md"
GUARD = "steps.base.outputs.run-id"


def workflow() -> dict[str, Any]:
    text = README.read_text(encoding="utf-8")
    section = text[text.index("### Energy review in CI") :]
    return yaml.safe_load(re.search(r"```yaml\n(.*?)```", section, re.S).group(1))


def steps() -> list[dict[str, Any]]:
    return workflow()["jobs"]["energy"]["steps"]


def command(tool: str, when: str, *, base: bool | None = None) -> list[str]:
    """The argv after ``tool`` (``pytest`` or ``irene``) of the one step that runs it on
    ``when`` (``push`` or ``pull_request``), with (``base=True``) or without main's run file."""
    found = []
    for step in steps():
        cond = str(step.get("if", ""))
        line = str(step.get("run", "")).strip()
        if not line.startswith(tool + " ") or f"github.event_name == '{when}'" not in cond:
            continue
        if base is not None and (f"{GUARD} != ''" in cond) != base:
            continue
        found.append(shlex.split(line.split(" > ")[0])[1:])
    assert len(found) == 1, (when, base, found)
    return found[0]


def test_the_workflow_uses_standard_actions_and_guards_every_read_of_main_s_run() -> None:
    wf = workflow()
    assert wf["permissions"]["pull-requests"] == "write" and wf["permissions"]["actions"] == "read"
    for step in steps():
        if "uses" in step:
            assert re.fullmatch(r"actions/[a-z-]+@v\d+", step["uses"]), step["uses"]
        reads_base = "base/" in str(step.get("run", "")) or step.get("with", {}).get("path") == "base"
        posts = "uses" in step and "github-script" in step["uses"]
        if reads_base or posts:  # the first pull request has no base run: these must not run then
            assert f"{GUARD} != ''" in str(step["if"]), step
    (find,) = [s for s in steps() if s.get("id") == "base"]
    assert "// empty" in find["run"]  # no run found: an empty output, not the string "null"


def test_the_workflow_s_commands_gate_a_regression_and_write_the_comment(
    pytester: pytest.Pytester, capsys: pytest.CaptureFixture[str]
) -> None:
    from pytest_irene.cli import main

    write_tiny(pytester, width=64)
    run(pytester, *command("pytest", "push")).assert_outcomes(passed=1)  # main's energy run
    (pytester.path / "base").mkdir()
    shutil.copy(pytester.path / "energy-run.json", pytester.path / "base" / "energy-run.json")  # upload/download

    write_tiny(pytester, width=512)  # the pull request makes the block costlier
    result = run(pytester, *command("pytest", "pull_request", base=True))
    result.assert_outcomes(failed=1)
    assert "block (Sequential)" in result.stdout.str()  # the module that got costlier is named
    assert (pytester.path / "junit.xml").is_file() and (pytester.path / "energy-run.json").is_file()

    capsys.readouterr()
    assert main(command("irene", "pull_request", base=True)) == 0  # --fail-on none: the comment step never fails the job itself
    comment = capsys.readouterr().out
    assert "test_tiny.py::test_tiny" in comment and "`block`" in comment


def test_a_pull_request_before_main_has_an_energy_run(pytester: pytest.Pytester) -> None:
    write_tiny(pytester, width=64)
    first = command("pytest", "pull_request", base=False)
    assert not any("base/" in arg for arg in first)
    run(pytester, *first).assert_outcomes(passed=1)  # no baselines yet: reported as new, not failed
    assert (pytester.path / "energy-run.json").is_file()
