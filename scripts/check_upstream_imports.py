#!/usr/bin/env python
"""Check that the upstream modules cc_runtime patches import on this (CPU-only) machine.

Usage: python scripts/check_upstream_imports.py [0.5.23|0.5.12]
(default: $CC_RUNTIME_TEST_SGLANG). Prints OK/FAIL per module and exits 1 if any fails.
A spec ``module:attr`` also checks that the attribute exists.
"""

from __future__ import annotations

import importlib
import os
import sys
import time
import traceback

COMMON = [
    "sglang.srt.server_args",
    "sglang.srt.managers.scheduler:Scheduler",
    "sglang.srt.model_executor.model_runner:ModelRunner",
    "flashinfer.autotuner:AutoTuner",
]

MODULES = {
    "0.5.23": COMMON
    + [
        "sglang.srt.model_executor.runner.prefill_cuda_graph_runner:PrefillCudaGraphRunner",
        "sglang.srt.managers.async_d2h_copy_worker",
    ],
    "0.5.12": COMMON
    + [
        "sglang.srt.model_executor.piecewise_cuda_graph_runner:PiecewiseCudaGraphRunner",
        "sglang.srt.managers.utils:GenerationBatchResult",
    ],
}


def _check(spec: str) -> str | None:
    mod_name, _, attr = spec.partition(":")
    try:
        mod = importlib.import_module(mod_name)
        if attr:
            getattr(mod, attr)
    except BaseException as exc:  # noqa: BLE001 - report everything, incl. SystemExit
        tb = traceback.format_exception(type(exc), exc, exc.__traceback__)
        return f"{type(exc).__name__}: {exc}\n" + "".join(tb[-6:])
    return None


def main(argv: list[str]) -> int:
    version = argv[1] if len(argv) > 1 else os.environ.get("CC_RUNTIME_TEST_SGLANG", "")
    if version not in MODULES:
        print(f"unknown sglang version {version!r}; expected one of {sorted(MODULES)}")
        return 2
    failed = 0
    for spec in MODULES[version]:
        t0 = time.perf_counter()
        err = _check(spec)
        dt = time.perf_counter() - t0
        if err is None:
            print(f"OK    {spec}  ({dt:.1f}s)", flush=True)
        else:
            failed += 1
            print(f"FAIL  {spec}  ({dt:.1f}s)\n      " + err.replace("\n", "\n      "), flush=True)
    for name in ("sglang", "flashinfer", "torch", "triton", "transformers"):
        mod = sys.modules.get(name)
        if mod is not None:
            print(
                f"      {name} {getattr(mod, '__version__', '?')} from {os.path.dirname(mod.__file__ or '')}"
            )
    expected = version
    got = getattr(sys.modules.get("sglang"), "__version__", None)
    if got is not None and got != expected:
        print(f"FAIL  sglang version {got} != expected {expected}")
        failed += 1
    print(f"upstream import check: {failed} problem(s)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
