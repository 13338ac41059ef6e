"""Extension points of pytest-irene, registered with ``pytest_addhooks``.

Implement any of these in a ``conftest.py`` or a plugin to change what the
plugin does without forking it (the same idea as pytest-benchmark's
``pytest_benchmark_generate_machine_info``). Hooks marked *firstresult* stop at
the first implementation that returns something other than ``None``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from pytest_irene.compare.records import CallRecord


@pytest.hookspec(firstresult=True)
def pytest_irene_host_fingerprint(config: pytest.Config) -> dict[str, Any] | None:
    """Describe the machine the tests run on.

    ``--irene-features=auto`` uses resource features only when this fingerprint
    matches the energy model's hardware (``runtime.fingerprint_matches``).
    Return ``None`` to use ``pytest_irene.rig.runtime.host_fingerprint()``; return a
    dict to pin it, e.g. on a CI runner that is known to be the profiled rig.
    """


@pytest.hookspec(firstresult=True)
def pytest_irene_fixture(request: pytest.FixtureRequest) -> Any | None:
    """Replace what the ``irene`` fixture gives a test: a callable taking ``(model, inputs, **options)``.

    Return ``None`` to keep the gate (trace, predict, compare, budget). The
    calibration plugin implements it under ``--irene-calibrate`` so that every
    ``irene(model, inputs, label=...)`` call of an existing suite is measured
    on the rig instead of predicted. Implementations in plugins that may run
    without pytest-irene's gate should be marked ``@pytest.hookimpl(optionalhook=True)``.
    """


@pytest.hookspec(firstresult=True)
def pytest_irene_select_profile(item: pytest.Item, default: str) -> str | None:
    """Choose the energy model profile (bundled name or a path) for one test.

    ``default`` is what the ``irene`` marker or ``--irene-profile`` selected.
    Return ``None`` to keep it.
    """


@pytest.hookspec(firstresult=True)
def pytest_irene_select_tolerance(item: pytest.Item, default: float) -> float | str | None:
    """Choose the module-level tolerance for one test: a fraction up to 1 (0.05 = 5 %) or a
    percentage string (``"5%"``, ``"150%"``), as the marker takes it.

    ``default`` is what the ``irene`` marker or ``--irene-tolerance`` selected (a fraction).
    Return ``None`` to keep it. A value of another kind fails the test, naming the hook.
    """


def pytest_irene_register_formulas(config: pytest.Config) -> None:
    """Register flops/bytes formulas for your own primitives.

    Call ``pytest_irene.engine.features.register_formula(type_name, fn)`` here. It is
    called once per process, right before the first traced call, so that
    ``--collect-only`` never imports the tracer.
    """


def pytest_irene_tree_predicted(item: pytest.Item, record: CallRecord) -> None:
    """See every predicted tree as soon as the gate has judged it (on the process that ran the test).

    ``record.tree`` is the predicted :class:`~pytest_irene.engine.tree.EnergyTree`;
    ``record.comparison`` the baseline comparison. Use it to export trees
    elsewhere (a dashboard, a database).
    """


def pytest_irene_session_records(config: pytest.Config, records: list[CallRecord]) -> None:
    """Receive every call record of the session once, at the end, on the controller.

    Under pytest-xdist the records of all workers are merged first. The
    ``--irene-json`` and ``--irene-html`` writers are implementations of this hook.
    """
