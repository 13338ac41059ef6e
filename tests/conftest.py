"""Shared fixtures: in-process inner pytest sessions that keep torch loaded, and the emonPi emulator.

Inner sessions themselves are run with :func:`inner.run`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from pytest_irene.rig.emulator import EmonPiEmulator
from pytest_irene.rig.meters.emonpi import EmonPiReader

#: Modules that in-process inner sessions must not unload: pytester removes every
#: module an inner run imported; re-importing torch's extension modules crashes,
#: and re-importing (and assertion-rewriting) the installed pytest plugins costs seconds.
HEAVY_MODULES = (
    "torch", "transformers", "sklearn", "numpy", "scipy", "safetensors", "tokenizers", "pytest_irene",
    "hypothesis", "_hypothesis", "pytest_benchmark", "anyio", "xdist", "execnet",
)

#: Emulator period for tests: fast enough that a reading arrives within milliseconds.
FAST_PERIOD_S = 0.05


@pytest.fixture(autouse=True)
def keep_heavy_modules(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """Let pytester's sys.modules snapshots keep torch & co. loaded between inner sessions.

    Autouse fixtures are set up before ``pytester``, which takes its snapshot when it starts."""
    if "pytester" not in request.fixturenames:
        return
    import _pytest.pytester as pytester_module

    base = pytester_module.SysModulesSnapshot

    class KeepHeavy(base):  # type: ignore[misc, valid-type]
        def __init__(self, preserve=None):  # type: ignore[no-untyped-def]
            super().__init__(preserve=lambda name: name.startswith(HEAVY_MODULES) or bool(preserve and preserve(name)))

    monkeypatch.setattr(pytester_module, "SysModulesSnapshot", KeepHeavy)


@pytest.fixture
def emonpi_emulator() -> Iterator[Callable[..., EmonPiEmulator]]:
    """A factory: ``emonpi_emulator(fmt="kv", period_s=0.05, **kw)`` starts an emulator, stopped at teardown."""
    started: list[EmonPiEmulator] = []

    def start(fmt: str = "kv", *, period_s: float = FAST_PERIOD_S, **kwargs) -> EmonPiEmulator:
        emulator = EmonPiEmulator(fmt, period_s=period_s, **kwargs)
        emulator.start()
        started.append(emulator)
        return emulator

    yield start
    for emulator in started:
        emulator.stop()


@pytest.fixture
def emonpi_reader() -> Iterator[Callable[..., EmonPiReader]]:
    """A factory: ``emonpi_reader(emulator, **kw)`` opens a reader on an emulator's pty, closed at teardown."""
    opened: list[EmonPiReader] = []

    def open_reader(emulator: EmonPiEmulator, **kwargs) -> EmonPiReader:
        kwargs.setdefault("period_s", emulator.period_s)
        reader = EmonPiReader(emulator.path, kwargs.pop("baud", emulator.baud), **kwargs)
        reader.start()
        opened.append(reader)
        return reader

    yield open_reader
    for reader in opened:
        reader.close()
