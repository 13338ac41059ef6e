"""A new user's sweep of the CI outputs: big suites, odd test ids, runs that cannot be compared.

Each test is the regression test of one defect found in that sweep; the docstring
says what a user did and what went wrong before.
"""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import pytest

from inner import run
from pytest_irene.cli import main
from pytest_irene.compare.runfile import RunFile, RunFileError, read_run_file, write_run_file
from pytest_irene.report.markdown import COMMENT_LIMIT_CHARS, STEP_SUMMARY_LIMIT_BYTES, code, fit, session_markdown
from runs import HOST, bert_record, write_run
from test_plugin import write_tiny


def over_budget(nodeid: str, **kw) -> object:
    rec = bert_record(1024, nodeid=nodeid, **kw)
    return dataclasses.replace(rec, over_budget=True, budget_j=0.1)


def table_rows(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("| ")]


def cells(row: str) -> int:
    return len(re.split(r"(?<!\\)\|", row))


def irene(capsys: pytest.CaptureFixture[str], *args: object) -> tuple[int, str]:
    code_ = main([*map(str, args)])
    return code_, capsys.readouterr().out


def test_a_thousand_calls_still_get_a_table_with_the_failing_call_first() -> None:
    """Before: with ~600 calls or more the calls table alone was over 65536 characters and the
    whole PR comment was one line, "Truncated: 1 of 1 sections are not shown"."""
    records = [bert_record(1024, nodeid=f"tests/test_bert.py::test_case[{i}]", item_index=i) for i in range(1000)]
    records[700] = over_budget("tests/test_bert.py::test_case[700]", item_index=700)
    text = session_markdown(records)
    assert len(text) <= COMMENT_LIMIT_CHARS
    rows = table_rows(text)
    assert len(rows) > 300 and "test_case[700]" in rows[2] and "❌ fail" in rows[2]  # the failing call leads
    assert re.search(r"\*\*Truncated:\*\* \d+ of 1000 calls are not listed \(the report is cut to 65280 chars for GitHub", text)
    assert "#### `tests/test_bert.py::test_case[700]` [default]" in text  # its failure section still fits
    small = session_markdown(records[:3])
    assert "Truncated" not in small and [r.split(" | ")[0] for r in table_rows(small)[2:]] == [
        f"| `tests/test_bert.py::test_case[{i}]`" for i in range(3)]  # collection order when it fits


def test_fit_never_exceeds_its_limit() -> None:
    """Before: with less room than its own note, fit returned the note anyway, so a step summary
    with a few bytes left went over GitHub's 1 MiB, and GitHub drops the whole summary then."""
    assert fit(["x" * 100], 50) == ""
    records = [bert_record(1024, nodeid=f"t.py::test_{i}") for i in range(5)]
    for limit in (0, 10, 120, 400, 900):
        assert len(session_markdown(records, limit=limit, unit="bytes").encode()) <= limit


def test_markdown_escapes_test_ids_and_labels() -> None:
    """Before: a label holding ``<!--`` hid the rest of the PR comment, a backslash in an id was
    doubled inside code, and an id with a double backtick closed its code span early."""
    ids = ["t.py::test_x[a|b]", "t.py::test_y[``q``]", "t.py::test_z[C:\\dir]"]
    records = [over_budget(n, label=lbl) for n, lbl in zip(ids, ["<!-- hide", "<details>two\nlines|x", "a&b"])]
    text = session_markdown(records)
    assert "<!--" not in text and "<details>" not in text and "&lt;!-- hide" in text and "a&amp;b" in text
    rows = table_rows(text)
    assert len({cells(r) for r in rows}) == 1 and len(rows) >= 2 + len(ids)
    assert "| `t.py::test_x[a\\|b]` |" in text  # GitHub reads \| inside a table's code span as a pipe
    assert "#### `t.py::test_x[a|b]` [&lt;!-- hide]" in text  # no table: no escape shown literally
    assert "``` t.py::test_y[``q``] ```" in text and "`t.py::test_z[C:\\dir]`" in text
    assert code(" x") == "` x`" and code(" x ") == "`  x  `" and code("a`b") == "`` a`b ``"


def test_terminal_summary_shows_bracketed_ids_as_text() -> None:
    """Before: the summary table read node ids as rich markup: ``test_x[bert]`` lost its
    parameter (two parametrized calls looked the same) and ``test_p[/tmp]`` crashed the summary
    with MarkupError."""
    from pytest_irene.report.terminal import render_summary

    records = [bert_record(1024, nodeid="t.py::test_x[bert]", label="[red]enc"), bert_record(1024, nodeid="t.py::test_p[/tmp]")]
    for markup in (False, True):
        out = render_summary(records, width=200, markup=markup)
        assert "t.py::test_x[bert]" in out and "t.py::test_p[/tmp]" in out and "[red]enc" in out


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("sweep")
    other = bert_record(4096)
    other.profile = "my-rig"
    write_run_file(d / "old.json", RunFile(records=[bert_record(1024)], host=dict(HOST), version="0.0.9",
                                           profile="irene-pc1", feature_mode="model"))
    moved = bert_record(1024, nodeid="tests/test_encoder.py::test_encoder")
    return {"base": write_run(d / "base.json", [bert_record(1024)]), "profile": write_run(d / "profile.json", [other]),
            "old": d / "old.json", "moved": write_run(d / "moved.json", [moved]), "dir": d}


def test_compare_says_loudly_when_calls_could_not_be_compared(runs, capsys) -> None:
    """Before: comparing with a run of another profile printed ``+250.0%`` next to ``skipped`` (totals
    of two energy models are not comparable), the Markdown gave no reason, and the last line read
    "1 call(s), 0 failing" as if everything had been gated."""
    code_, out = irene(capsys, "compare", runs["base"], runs["profile"])
    assert code_ == 0
    assert ("warning: 1 of the 1 call(s) on both sides not compared, so not gated (no call was compared at all): "
            "baseline was made with profile 'irene-pc1', this run uses 'my-rig'") in out
    assert "(not compared) skipped" in out and "%" not in out.split("skipped")[0].split("\n")[-1]
    assert out.rstrip().endswith("1 call(s) (0 compared, 1 not compared, 0 only in BASE, 0 only in NEW), "
                                 "0 failing --fail-on=increase")
    _, md = irene(capsys, "compare", runs["base"], runs["profile"], "--markdown")
    assert "> ⚠️ **Warning:** 1 of the 1 call(s) on both sides not compared" in md
    (row,) = table_rows(md)[2:]
    assert "| not compared | ⚠️ skipped |" in row and "%" not in row
    assert "#### Calls not compared" in md and "this run uses 'my-rig'" in md.split("#### Calls not compared")[1]
    doc = json.loads(irene(capsys, "compare", runs["base"], runs["profile"], "--json")[1])
    assert doc["not_compared"] == 1 and doc["calls"][0]["compared"] is False and doc["calls"][0]["change"] is None
    assert doc["warnings"][0].startswith("1 of the 1 call(s)")


def test_compare_warns_when_another_pytest_irene_version_wrote_a_side(runs, capsys) -> None:
    """Before: runs written by two pytest-irene versions were compared without a word, though a
    new tracer or feature set moves predictions with no change to the code."""
    code_, out = irene(capsys, "compare", runs["old"], runs["base"])
    assert code_ == 0 and "pass" in out
    assert ("warning: BASE was written by pytest-irene 0.0.9, NEW by pytest-irene 0.1.0: a change can come "
            "from pytest-irene itself") in out
    _, md = irene(capsys, "compare", runs["old"], runs["base"], "--markdown")
    assert "⚠️ **Warning:** BASE was written by pytest-irene 0.0.9" in md
    doc = json.loads(irene(capsys, "compare", runs["old"], runs["base"], "--json")[1])
    assert doc["base"]["pytest_irene"] == "0.0.9" and doc["new"]["pytest_irene"] == "0.1.0"
    assert "BASE was written" not in irene(capsys, "compare", runs["base"], runs["base"])[1]


def test_a_renamed_test_is_pointed_out(runs, capsys) -> None:
    """Before: a test moved to another file showed as one call only in BASE and one only in NEW,
    with nothing tying them together."""
    code_, out = irene(capsys, "compare", runs["base"], runs["moved"])
    assert code_ == 0
    assert ("looks renamed (same energies, not compared): tests/test_bert.py::test_encoder -> "
            "tests/test_encoder.py::test_encoder [default]") in out
    _, md = irene(capsys, "compare", runs["base"], runs["moved"], "--markdown")
    assert "#### Tests that look renamed" in md
    doc = json.loads(irene(capsys, "compare", runs["base"], runs["moved"], "--json")[1])
    assert doc["renamed_tests"] == [{"base": "tests/test_bert.py::test_encoder",
                                     "new": "tests/test_encoder.py::test_encoder", "label": "default"}]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty run file (0 bytes of JSON)"),
        ('{"format": "irene-run/3", "records": []}',
         "run file format 'irene-run/3' is newer than this pytest-irene reads (irene-run/1, irene-run/2); upgrade"),
    ],
)
def test_empty_and_newer_run_files_say_what_they_are(tmp_path: Path, text: str, message: str) -> None:
    """Before: an empty file was "invalid JSON at line 1, column 1" and a newer format was
    "not a pytest-irene run file"."""
    path = tmp_path / "run.json"
    path.write_text(text)
    with pytest.raises(RunFileError, match=re.escape(message)):
        read_run_file(path)


def test_a_run_file_with_a_call_twice_is_refused(runs, capsys) -> None:
    """Before: hand-merged shards holding a call twice were read, and the comparison silently
    kept the last one."""
    doc = json.loads(runs["base"].read_text())
    doc["records"].append(doc["records"][0])
    twice = runs["dir"] / "twice.json"
    twice.write_text(json.dumps(doc))
    assert main(["compare", str(runs["base"]), str(twice)]) == 2
    err = capsys.readouterr().err
    assert f"NEW: {twice}: records[1]: call tests/test_bert.py::test_encoder [default] is also records[0]" in err


def test_step_summary_stays_within_github_s_limit(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    """Before: an almost full step summary still got the truncation note (over 1 MiB: GitHub then
    drops the step's whole summary), and the note pointed at --irene-json when none was written."""
    write_tiny(pytester, width=64)
    run(pytester, "--irene-save").assert_outcomes(passed=1)
    write_tiny(pytester, width=512)
    summary = pytester.path / "summary.md"
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    summary.write_text("")
    run(pytester, "--irene-min-delta=0J").assert_outcomes(failed=1)
    full = summary.stat().st_size
    summary.write_text("x" * (STEP_SUMMARY_LIMIT_BYTES - full + 200))  # room for a cut summary only
    run(pytester, "--irene-min-delta=0J").assert_outcomes(failed=1)
    assert summary.stat().st_size <= STEP_SUMMARY_LIMIT_BYTES
    assert "the full report is in the job log (the terminal summary)" in summary.read_text()
    summary.write_text("x" * (STEP_SUMMARY_LIMIT_BYTES - 20))
    result = run(pytester, "--irene-min-delta=0J")
    assert summary.stat().st_size == STEP_SUMMARY_LIMIT_BYTES - 20
    result.stdout.fnmatch_lines([f"irene: GITHUB_STEP_SUMMARY already holds {STEP_SUMMARY_LIMIT_BYTES - 20} of GitHub's*"
                                 "not added; the full report is in the job log (the terminal summary)"])
    # the run file is named as the checkout knows it, not by the runner's absolute path
    summary.write_text("x" * (STEP_SUMMARY_LIMIT_BYTES - full + 200))
    run(pytester, "--irene-min-delta=0J", f"--irene-json={pytester.path / 'out' / 'run.json'}")
    text = summary.read_text()
    assert "the full report is in the run file out/run.json (--irene-json)" in text and str(pytester.path) not in text


def test_gating_against_a_run_of_another_pytest_irene_version_says_so(pytester: pytest.Pytester) -> None:
    """Before: ``--irene-compare`` with main's run file from an older pytest-irene said nothing;
    and the run file held the absolute path of each baseline file, so a laptop's run file and a CI
    runner's differed for the same code."""
    write_tiny(pytester, width=64)
    run(pytester, "--irene-json=main.json").assert_outcomes(passed=1)
    doc = json.loads((pytester.path / "main.json").read_text())
    # and the baseline file is rootdir-relative, like test_file: the same run file in every checkout
    assert doc["records"][0]["baseline_file"] == ".irene/test_tiny.json"
    doc["pytest_irene"] = "0.0.9"
    (pytester.path / "main.json").write_text(json.dumps(doc))
    result = run(pytester, "--irene-compare=main.json")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["irene: --irene-compare=*main.json was written by pytest-irene 0.0.9, this is *"])


def test_an_annotation_names_a_few_modules_not_thirty_six() -> None:
    """Before: widening bert-base's feed-forward gave an annotation of 36 lines, each repeating
    the node id and label the title already holds."""
    from pytest_irene.compare.comparison import Comparison, ModuleDelta
    from pytest_irene.plugin.ci import ANNOTATION_LINES, annotation

    deltas = tuple(ModuleDelta(f"encoder.layer.{i}.dense", "Linear", 1.0, 1.5, True) for i in range(36))
    rec = dataclasses.replace(bert_record(1024), comparison=Comparison("fail", "36 module(s) costlier", deltas))
    props, message = annotation(rec).removeprefix("::error ").split("::", 1)
    lines = message.split("%0A")
    assert "title=irene energy gate%3A tests/test_bert.py%3A%3Atest_encoder [default]" in props
    assert len(lines) == ANNOTATION_LINES and lines[0].startswith("encoder.layer.") and "test_encoder" not in message
    assert lines[-1] == "... and 27 more line(s) in the job log"


def test_a_base_run_of_another_profile_is_not_refreshed_with_irene_save(pytester: pytest.Pytester) -> None:
    """Before: gating against main's run file made with another profile advised ``--irene-save``,
    which cannot be combined with ``--irene-compare`` and would not change main's run file."""
    write_tiny(pytester, width=64)
    run(pytester, "--irene-json=main.json").assert_outcomes(passed=1)
    doc = json.loads((pytester.path / "main.json").read_text())
    doc["records"][0]["profile"] = "other-rig"
    doc["records"][0]["energy_model"] = "0" * 16  # another profile is another model file
    (pytester.path / "main.json").write_text(json.dumps(doc))
    result = run(pytester, "--irene-compare=main.json")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["irene: 1 of 1 call(s) not gated: baseline was made with profile 'other-rig'*; "
                                 "make *main.json with this profile, energy model and feature set, --irene-strict*"])
    assert "--irene-save refreshes" not in result.stdout.str()


def test_a_comparison_of_1500_calls_fits_a_comment_and_leads_with_the_regression() -> None:
    """Before: the totals table of ``irene compare --markdown`` was one block too; past ~650 calls
    the comment was a single truncation line and named no regression."""
    from pytest_irene.compare.baselines import entry_from_tree
    from pytest_irene.compare.runs import RunSide, compare_runs
    from pytest_irene.report.markdown import compare_markdown

    def side(wide: int | None) -> RunSide:
        recs = [bert_record(4096 if i == wide else 1024, nodeid=f"t.py::test_{i}") for i in range(1500)]
        entries = {r.key: entry_from_tree(r.tree, profile=r.profile, features=r.features) for r in recs}
        return RunSide("run.json", "run", entries, trees={r.key: r.tree for r in recs}, version="0.1.0")

    text = compare_markdown(compare_runs(side(None), side(900)))
    assert len(text) <= COMMENT_LIMIT_CHARS and "calls are not listed" in text
    rows = table_rows(text)
    assert "`t.py::test_900`" in rows[2] and "**regression**" in rows[2] and len(rows) > 400


def test_runs_without_a_common_call_say_nothing_was_compared(runs, capsys, tmp_path: Path) -> None:
    """Before: an empty run (pytest-irene disabled, tests deselected) exported ``[]`` with exit 0,
    which github-action-benchmark then rejects ("No benchmark result was found"), and two runs
    with no call in common compared as "0 failing" without a word."""
    empty = write_run(tmp_path / "empty.json", [])
    assert main(["export", str(empty), "--format", "github-action-benchmark"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and f"irene export: error: {empty}: no wrapped call in the run file(s), nothing to export" in err
    code_, out = irene(capsys, "compare", empty, empty)
    assert code_ == 0 and "warning: neither side holds a wrapped call: nothing was compared" in out
    other = write_run(tmp_path / "other.json", [bert_record(4096, nodeid="t.py::test_other")])
    code_, out = irene(capsys, "compare", runs["base"], other)
    assert code_ == 0 and "warning: no call is on both sides: nothing was compared" in out
    assert "looks renamed" not in out  # other energies: not a renamed test


def test_markdown_cells_escape_emphasis_links_and_mentions() -> None:
    """A label like ``*fast* @ml-team [see](x)`` rendered bold, as a link, and notified the team
    from every PR comment; now it renders as written and mentions nobody."""
    from pytest_irene.report.markdown import cell

    assert cell("*fast* @ml-team [see](x) ~old~ a_b `c`") == (
        "\\*fast\\* @\u200bml-team \\[see\\](x) \\~old\\~ a\\_b \\`c\\`"
    )
    text = session_markdown([over_budget("t.py::test_a", label="@ml-team")])
    assert "@ml-team" not in text and "@\u200bml-team" in text
