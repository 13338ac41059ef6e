"""Fixtures for tests that need an emonPi: the emulator on a real pty, and a reader on it.

Import the fixtures into a test module (``from emonpi_fixtures import emonpi_emulator``);
the lead owns ``conftest.py``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

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
