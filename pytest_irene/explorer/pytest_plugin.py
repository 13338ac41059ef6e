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
from pytest_irene.errors import UsageError
from pytest_irene.outputs import check_output_path, output_error

OPTION = "--irene-html"
INI = "irene_html"

_PATH = pytest.StashKey[Path]()
_WRITTEN = pytest.StashKey[tuple[Path, int, int]]()
_FAILED = pytest.StashKey[str]()


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
    if option is not None and not str(option).strip():
        raise pytest.UsageError(f"{OPTION}: expected a file path, got an empty value")
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
    source = OPTION if option else f"{INI} (ini)"
    try:
        return check_output_path(path, source, str(value), kind="html")
    except UsageError as exc:
        raise pytest.UsageError(str(exc)) from None


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

    try:
        write_report(path, list(records), title="pytest-irene energy report")
    except OSError as exc:
        config.stash[_FAILED] = str(output_error(OPTION if config.getoption("irene_html", None) else INI, path, exc))
        return
    config.stash[_WRITTEN] = (path, len(records), sum(1 for r in records if r.failed))


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """A report that could not be written fails the run (after the records hook has run)."""
    if session.config.stash.get(_FAILED, None) and session.exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


@pytest.hookimpl(trylast=True)
def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    failed = config.stash.get(_FAILED, None)
    if failed:
        terminalreporter.write_line(f"irene: {failed}", red=True, bold=True)
    written = config.stash.get(_WRITTEN, None)
    if written is None:
        return
    path, n, failing = written
    extra = f", {failing} failing" if failing else ""
    terminalreporter.write_line(f"irene: HTML energy report ({n} call{'s' if n != 1 else ''}{extra}) written to {path}")
