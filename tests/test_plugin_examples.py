"""The examples suite: its committed baselines pass, and the README's walkthrough
(widen BERT's feed-forward layer) makes the gate fail and name the module."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from inner import run


EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


@pytest.fixture
def examples(pytester: pytest.Pytester) -> Path:
    shutil.copytree(EXAMPLES, pytester.path, dirs_exist_ok=True, ignore=shutil.ignore_patterns("__pycache__"))
    return pytester.path


def test_committed_baselines_pass_strictly_within_the_readme_budget(pytester: pytest.Pytester, examples: Path) -> None:
    before = {p: p.read_text() for p in (examples / ".irene").rglob("*.json")}
    assert before, "examples/.irene/ holds the committed baselines"
    result = run(pytester, "--irene-budget=12J", "--irene-strict")
    result.assert_outcomes(passed=9)
    assert "fail" not in result.stdout.str().split("irene energy summary")[1].split("irene:")[0]
    assert {p: p.read_text() for p in before} == before  # a normal run writes nothing


def test_wider_feed_forward_fails_and_names_the_module(pytester: pytest.Pytester, examples: Path) -> None:
    run(pytester, "--irene-save").assert_outcomes(passed=9)  # fresh baselines: this test is about the change
    conftest = examples / "conftest.py"
    conftest.write_text(conftest.read_text().replace("BERT_INTERMEDIATE_SIZE = 3072", "BERT_INTERMEDIATE_SIZE = 4096"))
    result = run(pytester, "--irene-budget=12J")
    result.assert_outcomes(passed=7, failed=2)  # the two BERT tests
    out = result.stdout.str()
    assert "energy regression against the baseline" in out and "starting at encoder.layer." in out
    result.stdout.fnmatch_lines(["*encoder.layer.0.intermediate*BertIntermediate*J*J*+*%*"])
    result.stdout.fnmatch_lines(["FAILED test_transformers.py::test_bert_encoder*"])
