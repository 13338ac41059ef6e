"""``--irene-html`` end to end through pytester, with the real irene plugin and predictor."""

from __future__ import annotations

import json
import re

import pytest

from inner import run


TEST_FILE = '''
import torch
from transformers import BertConfig, BertModel

def tiny(layers):
    cfg = BertConfig(num_hidden_layers=layers, hidden_size=128, num_attention_heads=2,
                     intermediate_size=INTERMEDIATE, vocab_size=128, attn_implementation="eager")
    with torch.device("meta"):
        return BertModel(cfg)

def test_tiny_bert(irene):
    model = tiny(2)
    ids = torch.zeros(4, 64, dtype=torch.long, device="meta")
    irene(model, {"input_ids": ids})
'''


def report_data(path) -> dict:
    page = path.read_text()
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", page, re.I)
    return json.loads(re.search(r'id="irene-data">(.*?)</script>', page, re.S).group(1))


def test_irene_html_writes_the_report_and_highlights_failures(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_model=TEST_FILE.replace("INTERMEDIATE", "256"))
    saved = run(pytester, "--irene-save")
    saved.assert_outcomes(passed=1)

    # first: an unchanged model passes, and the report shows the call
    result = run(pytester, "--irene-html=out/report.html")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["*irene: HTML energy report (1 call) written to *report.html"])
    data = report_data(pytester.path / "out" / "report.html")
    (call,) = data["calls"]
    assert call["nodeid"] == "test_model.py::test_tiny_bert"
    assert call["status"] == "pass" and not call["failed"]
    assert call["source"] == "predicted" and call["total_j"] > 0
    assert call["tree"]["root"]["type"] == "BertModel"

    # then: a wider feed-forward fails the gate, and the report marks the failing modules
    pytester.makepyfile(test_model=TEST_FILE.replace("INTERMEDIATE", "4096"))
    result = run(pytester, "--irene-html=out/report.html")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*irene: HTML energy report (1 call, 1 failing) written to *"])
    (call,) = report_data(pytester.path / "out" / "report.html")["calls"]
    assert call["status"] == "fail" and call["failed"]
    failing = [scope for scope, d in call["deltas"].items() if d["failed"]]
    assert any("intermediate" in scope for scope in failing), failing


def test_ini_option_and_no_report_without_it(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_model=TEST_FILE.replace("INTERMEDIATE", "256"))
    result = run(pytester)
    result.assert_outcomes(passed=1)
    assert not list(pytester.path.glob("*.html"))
    pytester.makeini("[pytest]\nirene_html = reports/energy.html\n")
    result = run(pytester)
    result.assert_outcomes(passed=1)
    assert report_data(pytester.path / "reports" / "energy.html")["calls"][0]["status"] == "new"


def test_directory_path_is_a_usage_error(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_model="def test_ok():\n    pass\n")
    pytester.mkdir("adir")
    result = run(pytester, "--irene-html=adir")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--irene-html=adir: is a directory*"])
