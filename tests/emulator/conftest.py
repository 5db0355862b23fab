"""Fixtures of the emulator tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest


@pytest.fixture
def sim() -> Iterator[object]:
    """A simulated device without CC costs (test_simdevice.py overrides it with a parametrized one)."""
    from cc_runtime.emulator import SimDevice

    dev = SimDevice(None)
    yield dev
    dev.shutdown()
