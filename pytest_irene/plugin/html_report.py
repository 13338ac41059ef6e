"""pytest-html integration: each wrapped test's row shows its predicted energy and links to its explorer view.

Registered by the main plugin only when pytest-html is installed and active
(``--html=PATH``); pytest-html is never imported otherwise, so it stays an
optional dependency. The energy column is filled from the JUnit properties
:mod:`.ci` puts on the report (``irene.<label>.predicted_j``/``.change``), so
it is the same under xdist. The explorer view of a test's calls is written next
to the HTML report (``<report dir>/irene/<test>.html``) by the process that ran
the test, and linked from the row's links column.
"""

from __future__ import annotations

import hashlib
import re
from html import escape
from pathlib import Path
from typing import Any

import pytest

from pytest_irene.units import format_change, format_energy

#: Folder next to the pytest-html report that holds the explorer views.
VIEWS_DIR = "irene"


def active(config: pytest.Config) -> bool:
    """Whether pytest-html is installed, loaded and writing a report in this session."""
    return config.pluginmanager.hasplugin("html") and bool(config.getoption("htmlpath", None))


def energy_cell(user_properties: list[tuple[str, Any]]) -> str:
    """``35.7 mJ (+4.5%)`` per call (labels shown when a test has several), from the report's properties."""
    calls: dict[str, dict[str, str]] = {}
    for name, value in user_properties:
        match = re.fullmatch(r"irene\.(.+)\.(predicted_j|change|status)", str(name))
        if match:
            calls.setdefault(match.group(1), {})[match.group(2)] = str(value)
    parts = []
    for label, props in calls.items():
        if "predicted_j" not in props:
            continue
        text = format_energy(float(props["predicted_j"]))
        if props.get("change"):
            text += f" ({format_change(float(props['change']))})"
        if props.get("status") == "fail":
            text += " FAIL"
        parts.append(text if len(calls) == 1 else f"{label}: {text}")
    return "<br>".join(escape(p) for p in parts)


def view_name(nodeid: str) -> str:
    """A file name for a test's explorer view: the node id made file-safe, plus 8 hex digits of its hash.

    Node ids hold ``/``, ``::``, brackets, spaces and any unicode a parameter id has, and
    the readable part maps them all to ``_`` (and is cut at 150 characters), so
    ``test_x[a b]`` and ``test_x[a/b]`` (or two long ids sharing 150 characters) got the
    same file: one test's link showed the other test's calls. The hash keeps them apart,
    the same in every xdist worker."""
    readable = re.sub(r"[^A-Za-z0-9._-]+", "_", nodeid).strip("_")[:150]
    digest = hashlib.sha1(nodeid.encode("utf-8")).hexdigest()[:8]
    return f"{readable}-{digest}.html"


class HtmlReportGlue:
    """The pytest-html hooks; registered as the plugin ``irene_html_report``."""

    def __init__(self, manager: Any, report_path: str):
        self.manager = manager
        self.views = Path(report_path).expanduser().resolve().parent / VIEWS_DIR

    @pytest.hookimpl(optionalhook=True)
    def pytest_html_results_table_header(self, cells: list[str]) -> None:
        cells.insert(3, '<th class="sortable" data-column-type="energy">Energy</th>')

    @pytest.hookimpl(optionalhook=True)
    def pytest_html_results_table_row(self, report: pytest.TestReport, cells: list[str]) -> None:
        cells.insert(3, f'<td class="col-energy">{energy_cell(list(report.user_properties))}</td>')

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_makereport(self, item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
        report = yield
        from pytest_irene.plugin.session import baseline_nodeid

        records = self.manager.item_records.get(baseline_nodeid(item), []) if call.when == "call" else []
        if records:
            from pytest_html import extras

            from pytest_irene.explorer.html import write_report

            name = view_name(item.nodeid)
            write_report(self.views / name, list(records), title=f"pytest-irene: {item.nodeid}")
            report.extras = [*getattr(report, "extras", []), extras.url(f"{VIEWS_DIR}/{name}", name="energy explorer")]
        return report
