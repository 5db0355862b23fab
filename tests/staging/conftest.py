"""Fixtures for the staging tests: the emulator's simulated device, CC on or off, and a gate."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

torch = pytest.importorskip("torch")


@pytest.fixture
def sim_cc() -> Iterator[object]:
    from cc_runtime.emulator import SimDevice

    dev = SimDevice("h100", name="sim-cc")
    yield dev
    dev.shutdown(timeout=5)


@pytest.fixture
def sim_off() -> Iterator[object]:
    from cc_runtime.emulator import SimDevice

    dev = SimDevice(None, name="sim-off")
    yield dev
    dev.shutdown(timeout=5)


class Gate:
    """Device work that cannot finish until the test opens the gate: ordering without timing."""

    def __init__(self) -> None:
        self.event = threading.Event()

    def wait(self) -> None:
        if not self.event.wait(30):
            raise TimeoutError("gate never opened")

    def open(self) -> None:
        self.event.set()


@pytest.fixture
def gate() -> Iterator[Gate]:
    g = Gate()
    yield g
    g.open()
