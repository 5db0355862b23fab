"""Test-only stand-in for ``sgl_kernel.kvcacheio`` (see the package docstring)."""

from __future__ import annotations

from typing import Any

from sgl_kernel import _placeholder


def __getattr__(name: str) -> Any:
    if name.startswith("_"):
        raise AttributeError(name)
    return _placeholder(f"sgl_kernel.kvcacheio.{name}")
