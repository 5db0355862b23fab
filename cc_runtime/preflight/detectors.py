"""Do SGLang's and FlashInfer's own CC detectors agree with cc_runtime's decision?

Each upstream gates its CC paths on its own detector: SGLang 0.5.23's
``sglang.srt.utils.common.is_confidential_compute`` (the D2H worker, pageable staging) and FlashInfer
0.7.2's ``flashinfer.utils.is_confidential_compute`` (the autotuner's ``%globaltimer``, the multicast-free
allreduce workspace). Both are cached after their first answer (``functools.lru_cache``), so what they
say here is what their code paths use. FlashInfer 0.7.2 reads only ``ccFeature`` and misses protected
PCIe; cc_runtime exports ``FLASHINFER_CONFIDENTIAL_COMPUTE=1`` / ``SGLANG_FORCE_CONFIDENTIAL_COMPUTE=1``
under CC so they agree, unless the user set those variables otherwise. Releases without a detector
(SGLang 0.5.12, FlashInfer 0.6.11) have nothing to disagree with.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from typing import Any

from . import Check

#: (name, distribution, module, function)
DETECTORS = (
    ("sglang", "sglang", "sglang.srt.utils.common", "is_confidential_compute"),
    ("flashinfer", "flashinfer-python", "flashinfer.utils", "is_confidential_compute"),
)
_FIX = {"sglang": "SGLANG_FORCE_CONFIDENTIAL_COMPUTE", "flashinfer": "FLASHINFER_CONFIDENTIAL_COMPUTE"}


def _version(dist: str) -> str | None:
    import importlib.metadata

    try:
        return importlib.metadata.version(dist)
    except Exception:  # noqa: BLE001
        return None


def ask(name: str, dist: str, module: str, func: str, import_modules: bool) -> dict[str, Any]:
    """One detector's answer: ``{"answer": bool}``, or ``{"skipped": why}`` / ``{"error": what}``."""
    top = module.split(".")[0]
    if module not in sys.modules:
        if not import_modules:
            return {"skipped": "not imported in this process"}
        try:
            if importlib.util.find_spec(top) is None:
                return {"skipped": "not installed"}
        except Exception:  # noqa: BLE001
            return {"skipped": "not installed"}
    try:
        mod = importlib.import_module(module)
    except Exception as exc:  # noqa: BLE001
        return {"error": f"cannot import {module}: {type(exc).__name__}: {exc}"}
    fn = getattr(mod, func, None)
    version = _version(dist)
    if fn is None:
        return {"skipped": f"{name} {version} has no CC detector", "version": version}
    try:
        return {"answer": bool(fn()), "version": version}
    except Exception as exc:  # noqa: BLE001
        return {"error": f"{module}.{func}() raised {type(exc).__name__}: {exc}", "version": version}


def check(state: Any, import_modules: bool = True) -> Check:
    if not state.enabled:
        return Check("detectors", "not applicable", "CC is off: the detectors' CC paths stay off as cc_runtime's do")
    answers = {name: ask(name, dist, mod, fn, import_modules) for name, dist, mod, fn in DETECTORS}
    evidence: dict[str, Any] = {"cc_runtime": True, **answers}
    disagree = [n for n, a in answers.items() if a.get("answer") is False]
    if disagree:
        fixes = ", ".join(f"{_FIX[n]}=1" for n in disagree)
        return Check("detectors", "fail", f"cc_runtime says CC is on ({state.source}) but "
                     f"{' and '.join(disagree)} say(s) off, so their CC paths stay off (unset a user override "
                     f"or set {fixes})", evidence)
    errors = [f"{n}: {a['error']}" for n, a in answers.items() if "error" in a]
    if errors:
        return Check("detectors", "unknown", "; ".join(errors), evidence)
    agreed = [n for n, a in answers.items() if a.get("answer") is True]
    if not agreed:
        why = "; ".join(f"{n}: {a['skipped']}" for n, a in answers.items())
        return Check("detectors", "not applicable", f"no upstream detector to compare ({why})", evidence)
    return Check("detectors", "pass", f"{' and '.join(agreed)} agree(s) that CC is on", evidence)
