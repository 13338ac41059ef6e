"""``--irene-html=PATH``: write the explorer report at the end of a pytest session.

A separate pytest plugin (entry point ``irene_html``) that consumes the main
plugin's ``pytest_irene_session_records`` hook: the gate does not know about
HTML, and this module only renders what the gate handed over (on the xdist
controller, after the workers' records are merged). Importing it does not
import torch, because pytest imports every plugin in every session.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from pytest_irene.compare.records import CallRecord

OPTION = "--irene-html"
INI = "irene_html"

_PATH = pytest.StashKey[Path]()
_WRITTEN = pytest.StashKey[tuple[Path, int, int]]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("irene", "energy gate (pytest-irene)")
    group.addoption(
        OPTION,
        dest="irene_html",
        metavar="PATH",
        default=None,
        help="write an interactive, self-contained HTML energy report of every wrapped call to PATH",
    )
    parser.addini(INI, "path of the HTML energy report, relative to the ini file (like --irene-html)", default="")


def report_path(config: pytest.Config) -> Path | None:
    """Where to write the report: the option (relative to the invocation directory), else
    the ini value (relative to the ini file's directory); ``None`` when not asked for."""
    option = config.getoption("irene_html", default=None)
    value = option or config.getini(INI)
    if not value:
        return None
    path = Path(str(value)).expanduser()
    if not path.is_absolute():
        if option:
            base = config.invocation_params.dir
        else:
            base = config.inipath.parent if config.inipath else config.rootpath
        path = Path(base) / path
    if path.is_dir():
        source = OPTION if option else f"{INI} (ini)"
        raise pytest.UsageError(f"{source}={value}: is a directory; expected a file path such as report.html")
    return path


def pytest_configure(config: pytest.Config) -> None:
    path = report_path(config)
    if path is not None:
        config.stash[_PATH] = path


@pytest.hookimpl(optionalhook=True)
def pytest_irene_session_records(config: pytest.Config, records: list[CallRecord]) -> None:
    """Render the session's merged call records into the report (atomically)."""
    path = config.stash.get(_PATH, None)
    if path is None:
        return
    from pytest_irene.explorer.html import write_report

    write_report(path, list(records), title="pytest-irene energy report")
    config.stash[_WRITTEN] = (path, len(records), sum(1 for r in records if r.failed))


@pytest.hookimpl(trylast=True)
def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    written = config.stash.get(_WRITTEN, None)
    if written is None:
        return
    path, n, failing = written
    extra = f", {failing} failing" if failing else ""
    terminalreporter.write_line(f"irene: HTML energy report ({n} call{'s' if n != 1 else ''}{extra}) written to {path}")
