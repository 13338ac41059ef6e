"""pytest-irene's pytest plugin (entry point ``pytest11: irene``): options, hooks, forwarding.

Thin on purpose: options live in :mod:`.options`, the marker in :mod:`.marks`,
the run's state in :class:`.session.IreneSession`, the gate in :mod:`.gate`,
storage in :mod:`.baselines` and rendering in :mod:`.terminal`. pytest imports
this module in every session, so it must not import torch: tracing and energy
models are imported on the first wrapped call.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

import pytest

from pytest_irene.errors import IreneError
from pytest_irene.plugin import html_report
from pytest_irene.plugin.ci import CiReporter
from pytest_irene.outputs import output_error
from pytest_irene.plugin.marks import MARKER_HELP, is_energy_test
from pytest_irene.plugin.options import add_options, check_profile, load_settings
from pytest_irene.compare.runfile import write_run_file
from pytest_irene.plugin.fixture import IreneFixture
from pytest_irene.plugin.reports import run_file, summary_text
from pytest_irene.plugin.session import WORKEROUTPUT_KEY, IreneSession, WorkerCallsIntake, worker_id

_MANAGER = pytest.StashKey[IreneSession]()


def _manager(config: pytest.Config) -> IreneSession | None:
    return config.stash.get(_MANAGER, None)


def pytest_addhooks(pluginmanager: pytest.PytestPluginManager) -> None:
    from pytest_irene.plugin import hookspecs

    pluginmanager.add_hookspecs(hookspecs)


def pytest_addoption(parser: pytest.Parser) -> None:
    add_options(parser)


@pytest.hookimpl(trylast=True)
def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", MARKER_HELP)
    try:
        settings = load_settings(config)
        if not settings.disabled:
            manager = IreneSession(config, settings)
            check_profile(settings, manager.host_fingerprint)
            config.stash[_MANAGER] = manager
            config.pluginmanager.register(CiReporter(manager), "irene_ci")
            config.pluginmanager.register(manager.stale_tracker, "irene_stale")
            config.pluginmanager.register(WorkerCallsIntake(manager), "irene_xdist_calls")
            if html_report.active(config):
                glue = html_report.HtmlReportGlue(manager, config.getoption("htmlpath"))
                config.pluginmanager.register(glue, "irene_html_report")
    except IreneError as exc:
        raise pytest.UsageError(str(exc)) from None


def pytest_unconfigure(config: pytest.Config) -> None:
    manager = _manager(config)
    if manager is not None:
        manager.close()


def pytest_report_header(config: pytest.Config) -> list[str] | None:
    manager = _manager(config)
    if manager is None:
        return ["irene: disabled (--irene-disable)"]
    return manager.header_lines()


@pytest.fixture
def irene(request: pytest.FixtureRequest) -> Any:
    """Trace, predict and gate a model call: ``tree = irene(model, inputs, label="encoder")``.

    Returns the predicted :class:`~pytest_irene.engine.tree.EnergyTree` (``tree.total_j``,
    ``tree["encoder.layer.0"]``, ``tree.breakdown()``). The call is compared with
    its baseline and held to the budget; a failure fails this test. Several
    calls per test are told apart by ``label``. With ``--irene-disable`` a call
    skips the test. A ``pytest_irene_fixture`` hook may provide another callable
    (``--irene-calibrate`` measures the calls instead).
    """
    replacement = request.config.hook.pytest_irene_fixture(request=request)
    if replacement is not None:
        return replacement
    manager = _manager(request.config)
    if manager is None:

        def disabled(*args: Any, **kwargs: Any) -> Any:
            pytest.skip("pytest-irene is disabled (--irene-disable)")

        return disabled
    return IreneFixture(manager, request.node)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """``--irene-only``: deselect the tests that are not energy tests (:func:`is_energy_test`)."""
    manager = _manager(config)
    if manager is None or not manager.settings.only:
        return
    dropped = [item for item in items if not is_energy_test(item)]
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = [item for item in items if is_energy_test(item)]


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    """Before the test's fixtures: a rerun (pytest-rerunfailures, flaky) starts with no calls."""
    manager = _manager(item.config)
    if manager is not None:
        manager.start_attempt(item)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, Any, Any]:
    report = yield
    manager = _manager(item.config)
    if manager is not None:
        manager.update_report(item, call, report)
    return report


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: Any, error: Any) -> None:
    """xdist controller: merge a finished worker's records and baseline entries."""
    manager = _manager(node.config)
    output = getattr(node, "workeroutput", {}).get(WORKEROUTPUT_KEY)
    if manager is not None and output:
        manager.merge_worker_output(output, worker_id(node))


@pytest.hookimpl(tryfirst=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    manager = _manager(session.config)
    if manager is not None:
        manager.finish(session)


def pytest_irene_session_records(config: pytest.Config, records: list[Any]) -> None:
    """``--irene-json``: a consumer of the merged records, like ``--irene-html``."""
    manager = _manager(config)
    if manager is not None and manager.settings.json_path is not None:
        try:
            write_run_file(manager.settings.json_path, run_file(manager, records))
        except OSError as exc:
            manager.report_errors.append(str(output_error("--irene-json", manager.settings.json_path, exc)))


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    manager = _manager(config)
    if manager is None:
        return
    writer = config.get_terminal_writer()
    # -v/-q as a number: config.get_verbosity() (pytest 8.0+) returns the same for no verbosity type,
    # and this package supports pytest 7.4
    verbosity: int = config.getoption("verbose")
    text = summary_text(manager, width=writer.fullwidth, markup=writer.hasmarkup, verbosity=verbosity)
    if text is None:
        return
    terminalreporter.write_sep("=", "irene energy summary")
    terminalreporter.write(text)
