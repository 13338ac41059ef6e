"""pytest-html integration: the row of a wrapped test gets its energy and a link to its explorer view."""

from __future__ import annotations

import html
import json
import re

import pytest

from inner import run
from pytest_irene.plugin.html_report import energy_cell, view_name
from test_plugin import write_tiny


def test_energy_cell_from_the_reports_properties() -> None:
    props = [("irene.tiny.predicted_j", "0.0357"), ("irene.tiny.change", "+0.0450"), ("irene.tiny.status", "pass")]
    assert energy_cell(props) == "35.7 mJ (+4.5%)"
    two = props + [("irene.big.predicted_j", "1.5"), ("irene.big.change", ""), ("irene.big.status", "fail")]
    assert energy_cell(two) == "tiny: 35.7 mJ (+4.5%)<br>big: 1.5 J FAIL"
    assert energy_cell([("other", 1)]) == ""
    assert re.fullmatch(r"tests_test_a.py_test_x_1-a-[0-9a-f]{8}\.html", view_name("tests/test_a.py::test_x[1-a]"))


def test_pytest_html_row_gets_energy_and_explorer_link(pytester: pytest.Pytester) -> None:
    pytest.importorskip("pytest_html", reason="pytest-html is not installed (optional): pip install pytest-html")
    write_tiny(pytester, width=64)
    run(pytester, "--html=out/report.html").assert_outcomes(passed=1)
    page = (pytester.path / "out" / "report.html").read_text()
    blob = json.loads(html.unescape(re.search(r'data-jsonblob="([^"]*)"', page).group(1)))
    (test,) = [t for runs in blob["tests"].values() for t in runs]
    row = "".join(test["resultsTableRow"])
    energy = re.search(r'<td class="col-energy">([^<]*)</td>', row).group(1)
    assert re.fullmatch(r"\d+(\.\d+)? mJ", energy)
    (link,) = [e for e in test["extras"] if e["name"] == "energy explorer"]
    assert link["format_type"] == "url" and link["content"] == f"irene/{view_name('test_tiny.py::test_tiny')}"
    view = (pytester.path / "out" / link["content"]).read_text()
    assert "test_tiny.py::test_tiny" in view and "<script>" in view
    assert '<th class="sortable" data-column-type="energy">Energy</th>' in page


def test_without_html_nothing_is_registered(pytester: pytest.Pytester) -> None:
    write_tiny(pytester, width=64)
    pytester.makeconftest(
        "def pytest_configure(config):\n"
        "    config._irene_glue = config.pluginmanager.get_plugin('irene_html_report')\n"
        "def pytest_unconfigure(config):\n"
        "    assert config._irene_glue is None\n"
    )
    run(pytester).assert_outcomes(passed=1)
