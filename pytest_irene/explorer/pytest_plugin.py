"""``--irene-html=PATH``: write the explorer report at the end of a pytest session.

A separate pytest plugin (entry point ``irene_html``) that consumes the main
plugin's ``pytest_irene_session_records`` hook: the gate does not know about
HTML, and this module only renders what the gate handed over. Importing it
does not import torch, because pytest imports every plugin in every session.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from ..comparison import CallRecord
from ..errors import UsageError

OPTION = "--irene-html"
INI = "irene_html"


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("irene", "energy prediction and gating (pytest-irene)")
    group.addoption(
        OPTION,
        dest="irene_html",
        metavar="PATH",
        default=None,
        help="write an interactive, self-contained HTML energy report of every wrapped call to PATH.",
    )
    parser.addini(INI, "default path of the HTML energy report (like --irene-html)", default="")


def report_path(config: pytest.Config) -> Path | None:
    """Where to write the report: the option, else the ini value, relative to the invocation dir."""
    value = config.getoption("irene_html", default=None) or config.getini(INI)
    if not value:
        return None
    path = Path(str(value)).expanduser()
    if not path.is_absolute():
        base = config.invocation_params.dir if config.getoption("irene_html", default=None) else config.rootpath
        path = Path(base) / path
    if path.is_dir():
        raise UsageError(f"{OPTION}={value}: is a directory; expected a file path such as report.html")
    return path


@pytest.hookimpl(optionalhook=True)
def pytest_irene_session_records(config: pytest.Config, records: list[CallRecord]) -> None:
    """Render the merged call records of the session (controller side) into the report."""
    path = report_path(config)
    if path is None:
        return
    from .html import write_report

    failing = sum(1 for r in records if r.failed)
    write_report(path, list(records), title="pytest-irene energy report")
    config.stash[_WRITTEN] = (path, len(records), failing)


_WRITTEN = pytest.StashKey[tuple]()


@pytest.hookimpl(trylast=True)
def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    written = config.stash.get(_WRITTEN, None)
    if written is None:
        return
    path, n, failing = written
    extra = f", {failing} failing" if failing else ""
    terminalreporter.write_line(f"irene: HTML energy report ({n} call{'s' if n != 1 else ''}{extra}) written to {path}")
