"""CI outputs through inner pytest sessions: GitHub step summary and annotations, --irene-markdown, JUnit properties."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from inner import run
from test_plugin import write_tiny


def test_github_step_summary_annotations_and_markdown(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    write_tiny(pytester, width=64)
    run(pytester, "--irene-save").assert_outcomes(passed=1)
    write_tiny(pytester, width=512)
    summary = pytester.path / "step_summary.md"
    summary.write_text("## earlier step output\n")
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    monkeypatch.setenv("GITHUB_ACTIONS", "true")
    result = run(pytester, "--irene-min-delta=0J", "--irene-markdown=comment.md")
    result.assert_outcomes(failed=1)

    text = summary.read_text()
    assert text.startswith("## earlier step output\n### pytest-irene energy summary")  # appended, not replaced
    assert "| `test_tiny.py::test_tiny` | tiny |" in text and "❌ fail" in text
    # the deepest modules that moved are named (with --irene-min-delta=0J the leaves of the block)
    assert "### Failing modules" in text and "| `block.0` | Linear |" in text
    comment = (pytester.path / "comment.md").read_text()
    assert comment == text[len("## earlier step output\n"):]
    result.stdout.fnmatch_lines(["irene: Markdown summary written to *comment.md"])

    lines = (pytester.path / "test_tiny.py").read_text().splitlines()
    (error,) = [line for line in result.stdout.lines if line.startswith("::error ")]
    props, message = error[len("::error "):].split("::", 1)
    fields = dict(p.split("=", 1) for p in props.split(","))
    # on the line of the irene(...) call that regressed (a parametrized test's own line is its decorator's)
    assert fields["file"] == "test_tiny.py" and lines[int(fields["line"]) - 1].strip().startswith("tree = irene(")
    assert fields["title"] == "irene energy gate%3A test_tiny.py%3A%3Atest_tiny [tiny]"
    assert "block.0 (Linear)" in message and "\n" not in message


def test_no_annotations_outside_github_actions(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GITHUB_ACTIONS", raising=False)
    monkeypatch.delenv("GITHUB_STEP_SUMMARY", raising=False)
    write_tiny(pytester, width=64)
    run(pytester, "--irene-save").assert_outcomes(passed=1)
    write_tiny(pytester, width=512)
    result = run(pytester, "--irene-min-delta=0J")
    result.assert_outcomes(failed=1)
    assert not any(line.startswith("::error") for line in result.stdout.lines)


def test_junit_xml_carries_the_energy_properties(pytester: pytest.Pytester) -> None:
    write_tiny(pytester, width=64)
    run(pytester, "--irene-save").assert_outcomes(passed=1)
    write_tiny(pytester, width=512)
    run(pytester, "--junitxml=out.xml", "--irene-min-delta=0J", "--irene-json=r.json").assert_outcomes(failed=1)
    case = ET.parse(pytester.path / "out.xml").getroot().find(".//testcase")
    props = {p.get("name"): p.get("value") for p in case.iter("property")}
    import json

    total = json.loads((pytester.path / "r.json").read_text())["records"][0]["total_j"]
    assert float(props["irene.tiny.predicted_j"]) == pytest.approx(total, rel=1e-5)
    assert float(props["irene.tiny.change"]) > 0.01
    assert props["irene.tiny.profile"] == "irene-pc1" and props["irene.tiny.status"] == "fail"


def test_annotations_are_relative_to_the_github_workspace(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    """A suite with its own rootdir in a subdirectory (like examples/): GitHub places an
    annotation by its path in the repository, not in pytest's rootdir."""
    suite = pytester.mkdir("suite")
    (suite / "pytest.ini").write_text("[pytest]\n")
    monkeypatch.chdir(suite)
    write_tiny(pytester, width=64).rename(suite / "test_tiny.py")
    run(pytester, "--irene-save").assert_outcomes(passed=1)
    (suite / "test_tiny.py").unlink()
    write_tiny(pytester, width=512).rename(suite / "test_tiny.py")
    monkeypatch.setenv("GITHUB_ACTIONS", "true")
    monkeypatch.setenv("GITHUB_WORKSPACE", str(pytester.path))
    result = run(pytester, "--irene-min-delta=0J")
    result.assert_outcomes(failed=1)
    (error,) = [line for line in result.stdout.lines if line.startswith("::error ")]
    assert error.startswith("::error file=suite/test_tiny.py,line=")
