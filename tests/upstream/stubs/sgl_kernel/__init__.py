"""Test-only CPU stand-in for the ``sgl_kernel`` package (SGLang 0.5.12 upstream tests).

The real ``sglang-kernel`` wheel loads CUDA kernels at import time, so it needs libcuda (a
driver) and the exact torch it was built for (2.11); neither exists on the CPU-only test
machines. SGLang 0.5.12 imports some ``sgl_kernel`` submodules unconditionally on non-NPU
platforms (e.g. ``sglang/srt/mem_cache/memory_pool_host.py`` -> ``sgl_kernel.kvcacheio``), which
blocks ``import sglang.srt.managers.scheduler``.

This stub only makes those imports succeed. Every attribute is a placeholder that raises if
*called*. It is put on ``sys.path`` only by the ``upstream-0.5.12`` nox session (via PYTHONPATH,
``tests/upstream/stubs``); it must never be installed or used outside tests.
"""

from __future__ import annotations

from typing import Any, NoReturn

__version__ = "0.0.0+cc-runtime-test-stub"
CC_RUNTIME_TEST_STUB = True


def _placeholder(qualname: str) -> Any:
    def _unavailable(*args: Any, **kwargs: Any) -> NoReturn:
        raise RuntimeError(f"{qualname} is a cc_runtime test stub; the real sgl_kernel needs libcuda")

    _unavailable.__name__ = qualname.rpartition(".")[2]
    _unavailable.__qualname__ = qualname
    return _unavailable


def __getattr__(name: str) -> Any:
    if name.startswith("_"):
        raise AttributeError(name)
    return _placeholder(f"sgl_kernel.{name}")
