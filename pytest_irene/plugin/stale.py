"""pytest glue for stale baselines: which tests exist this session, and which passed.

Registered by the main plugin as ``irene_stale``. It only watches collection
and reports; the decision is :func:`pytest_irene.compare.stale.find_stale`.
Under xdist the controller collects nothing, so each worker hands its
collected and deselected node ids over through ``workeroutput``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from pytest_irene.compare.baselines import BaselineError
from pytest_irene.compare.baseline_store import BaselineStore
from pytest_irene.compare.records import CallRecord
from pytest_irene.compare.stale import StaleBaseline, find_stale

KNOWN_KEY = "pytest_irene_known"


class StaleTracker:
    """Node ids collected or deselected, and tests whose call phase passed."""

    def __init__(self) -> None:
        self.known: set[str] = set()
        self._passed: set[str] = set()
        self._failed: set[str] = set()  # a subtest's passing call report is not its test's verdict

    @property
    def passed(self) -> set[str]:
        """Tests with a passing call-phase report and no failing one (a subtest's or the test's)."""
        return self._passed - self._failed

    @pytest.hookimpl
    def pytest_itemcollected(self, item: pytest.Item) -> None:
        self.known.add(item.nodeid)  # before any conftest or plugin drops items from the run

    @pytest.hookimpl
    def pytest_deselected(self, items: list[pytest.Item]) -> None:
        self.known.update(item.nodeid for item in items)

    @pytest.hookimpl
    def pytest_collection_finish(self, session: pytest.Session) -> None:
        self.known.update(item.nodeid for item in session.items)

    @pytest.hookimpl
    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if report.when == "call" and report.passed:
            self._passed.add(report.nodeid)
        elif report.when == "call" and report.failed:
            self._failed.add(report.nodeid)

    @pytest.hookimpl
    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        workeroutput = getattr(session.config, "workeroutput", None)
        if workeroutput is not None:
            workeroutput[KNOWN_KEY] = sorted(self.known)

    @pytest.hookimpl(optionalhook=True)
    def pytest_testnodedown(self, node: Any, error: Any) -> None:
        self.known.update(getattr(node, "workeroutput", {}).get(KNOWN_KEY, []))

    def settle(
        self, store: BaselineStore, config: pytest.Config, records: list[CallRecord], prune: bool
    ) -> tuple[list[StaleBaseline], list[Path], str]:
        """At session end: the stale baselines, the files pruned (when ``prune``), and an error line or ``""``."""
        passed: dict[str, set[str]] = {}
        for record in records:
            if record.nodeid in self.passed:
                passed.setdefault(record.nodeid, set()).add(record.label)
        narrowed = narrowed_modules(config)
        if config.getoption("lf", False):  # pytest drops last time's passed tests from collection
            narrowed |= {nodeid.split("::", 1)[0] for nodeid in self.known}
        stale = find_stale(store, config.rootpath, self.known, passed, narrowed)
        if not (stale and prune):
            return stale, [], ""
        try:
            return stale, store.prune({(s.nodeid, s.label) for s in stale}), ""
        except (BaselineError, OSError) as exc:
            return [], [], f"stale baselines NOT pruned: {exc}"


def narrowed_modules(config: pytest.Config) -> set[str]:
    """Test modules named with ``::`` node ids on the command line, relative to the rootdir."""
    out: set[str] = set()
    for arg in config.args:
        if "::" not in arg:
            continue
        path = Path(arg.split("::", 1)[0])
        if not path.is_absolute():
            path = Path(config.invocation_params.dir) / path
        try:
            out.add(path.resolve().relative_to(config.rootpath.resolve()).as_posix())
        except ValueError:
            continue
    return out
