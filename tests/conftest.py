"""Shared test setup: GPU-only tests skip without CUDA; every test leaves cc_runtime and os.environ as found.

Fixtures shared by several folders live here, importing torch and cc_runtime's emulator only inside the
fixture (a folder that needs torch skips itself in its own conftest): ``sglang_version`` for the
upstream-* nox sessions, ``sim_cc`` / ``sim_off`` (the emulator's simulated device, CC on or off) and
``gate`` (device work that waits for the test).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from typing import Any

import pytest


def _cuda_available() -> bool:
    try:
        import torch

        return bool(torch.cuda.is_available())
    except Exception:  # noqa: BLE001
        return False


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if _cuda_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _isolate_cc_runtime():
    """cc_runtime state is process-wide (patches, cached CC state, exported env): reset it around each test."""
    saved = dict(os.environ)
    yield
    from cc_runtime import runtime

    runtime._reset_for_tests()
    os.environ.clear()
    os.environ.update(saved)


@pytest.fixture
def sglang_version() -> str:
    """The SGLang release of this upstream-* nox session (``CC_RUNTIME_TEST_SGLANG``); skips elsewhere."""
    from cc_runtime.patching import installed_version

    wanted = os.environ.get("CC_RUNTIME_TEST_SGLANG")
    if not wanted:
        pytest.skip("not in an upstream-* nox session (CC_RUNTIME_TEST_SGLANG unset)")
    got = installed_version("sglang")
    assert got == wanted, f"session promised SGLang {wanted}, found {got}"
    pytest.importorskip("sglang")
    return got


@pytest.fixture
def sim_cc() -> Iterator[Any]:
    from cc_runtime.emulator import SimDevice

    dev = SimDevice("h100", name="sim-cc")
    yield dev
    dev.shutdown(timeout=5)


@pytest.fixture
def sim_off() -> Iterator[Any]:
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
    g.open()  # never leave device threads blocked behind a failed test
