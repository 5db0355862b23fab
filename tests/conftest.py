"""Shared test setup: GPU-only tests skip without CUDA; every test leaves cc_runtime and os.environ as found."""

from __future__ import annotations

import os

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
