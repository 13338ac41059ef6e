"""Fixtures for calibration tests: the emonPi emulator on a real pty, a reader on it, inner pytest sessions.

Import the fixtures into a test module (``from emonpi_fixtures import emonpi_emulator``);
the lead owns ``conftest.py``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from importlib.metadata import entry_points

import pytest

from pytest_irene.emonpi_emulator import EmonPiEmulator
from pytest_irene.meters.emonpi import EmonPiReader

FAST_PERIOD_S = 0.05


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


HEAVY_MODULES = ("torch", "transformers", "sklearn", "numpy", "scipy", "safetensors", "tokenizers", "pytest_irene")


def plugin_args() -> list[str]:
    """Load the calibration plugin unless its entry point is installed (then pytest loads it)."""
    installed = any(ep.value == "pytest_irene.calibration_plugin" for ep in entry_points(group="pytest11"))
    return [] if installed else ["-p", "pytest_irene.calibration_plugin"]


@pytest.fixture(autouse=True)
def keep_heavy_modules(monkeypatch: pytest.MonkeyPatch) -> None:
    """In-process inner sessions must not unload torch & co. (re-importing torch crashes)."""
    import _pytest.pytester as pytester_module

    base = pytester_module.SysModulesSnapshot

    class KeepHeavy(base):  # type: ignore[misc, valid-type]
        def __init__(self, preserve=None):  # type: ignore[no-untyped-def]
            super().__init__(preserve=lambda name: name.startswith(HEAVY_MODULES) or bool(preserve and preserve(name)))

    monkeypatch.setattr(pytester_module, "SysModulesSnapshot", KeepHeavy)
