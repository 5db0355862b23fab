"""Preflight: refuse to serve on a GPU whose confidentiality is not established.

CC is worth its cost only when the GPU really protects the data: CC mode on every GPU, DevTools mode off
(DevTools runs CC's data paths but protects nothing), the GPUs' ready state set (the driver accepts no
work until attestation set it), a driver that has CC at all, and SGLang's and FlashInfer's own CC
detectors agreeing with cc_runtime (otherwise their CC paths stay off while cc_runtime's are on, e.g.
FlashInfer 0.7.2 misses protected PCIe). Optionally, the GPU's attestation report is collected with a
fresh nonce and verified by NVIDIA's verifier.

Each check answers ``pass``, ``fail``, ``not applicable`` or ``unknown`` with a reason and evidence.
Evidence never holds secrets, serial numbers or UUIDs.

Where it runs: ``cc-runtime preflight`` (on demand), ``cc-runtime launch --preflight require`` (before
the command starts), and automatically, once per process, in every process where cc_runtime activates
under real, forced or emulated CC (the SGLang plugin in each scheduler rank, the start-up bootstrap), as
``CC_RUNTIME_PREFLIGHT`` says: ``off``; ``warn`` (one WARNING line per failed check); ``require`` (a
failed or unknown check ends the process with one line). Unset means ``warn`` on real CC, ``off``
otherwise. The automatic runs never attest (attestation is slow and may contact NVIDIA's services):
run ``cc-runtime preflight --attest local`` for that.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from typing import Any

RESULTS = ("pass", "fail", "not applicable", "unknown")


class Check:
    """One check's answer: ``name``, ``result`` (one of :data:`RESULTS`), ``reason``, ``evidence``."""

    __slots__ = ("name", "result", "reason", "evidence")

    def __init__(self, name: str, result: str, reason: str, evidence: dict[str, Any] | None = None) -> None:
        if result not in RESULTS:
            raise ValueError(f"check result {result!r} is not one of {RESULTS}")
        self.name, self.result, self.reason, self.evidence = name, result, reason, dict(evidence or {})

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "result": self.result, "reason": self.reason, "evidence": self.evidence}

    def __repr__(self) -> str:
        return f"Check({self.name!r}, {self.result!r}, {self.reason!r})"


class Report:
    """Every check of one preflight run, and what ``require`` makes of them."""

    def __init__(self, cc: dict[str, Any], checks: Iterable[Check], mode: str, where: str) -> None:
        self.cc, self.checks, self.mode, self.where = cc, list(checks), mode, where

    def blocking(self, mode: str | None = None) -> list[Check]:
        """The checks that stop a run: ``fail`` always, ``unknown`` too under ``require``."""
        mode = mode or self.mode
        bad = ("fail", "unknown") if mode == "require" else ("fail",)
        return [c for c in self.checks if c.result in bad]

    def refusal(self) -> str | None:
        """The one line ``require`` prints when it refuses, or None."""
        bad = self.blocking("require")
        if not bad:
            return None
        grouped: dict[tuple[str, str], list[str]] = {}
        for c in bad:  # checks that failed for one reason are named together
            grouped.setdefault((c.result, c.reason), []).append(c.name)
        parts = "; ".join(f"{', '.join(names)} {result}: {reason}" for (result, reason), names in grouped.items())
        return f"cc_runtime preflight (CC_RUNTIME_PREFLIGHT=require) refused: {parts}"

    def as_dict(self) -> dict[str, Any]:
        return {"cc": self.cc, "mode": self.mode, "where": self.where,
                "ok": not self.blocking(), "checks": [c.as_dict() for c in self.checks]}


def effective_mode(setting: str, state: Any) -> str:
    """``auto`` (unset) is ``warn`` on real CC and ``off`` otherwise."""
    if setting != "auto":
        return setting
    return "warn" if getattr(state, "real", False) else "off"


def run(*, attest: str = "off", timeout_s: float = 60.0, mode: str = "warn", where: str = "cli",
        state: Any = None, pynvml: Any = None, import_detectors: bool = True,
        which: Callable[[str], str | None] | None = None, host_only: bool = False) -> Report:
    """Run every check once and return the report (never raises for what it checks).

    ``state``: the CC decision (default: this process's). ``pynvml``: an NVML module (default:
    nvidia-ml-py when its library loads). ``import_detectors``: import SGLang's and FlashInfer's
    detector modules when installed (else only those already imported are asked). ``timeout_s`` bounds
    the attestation verifier; the host checks are NVML queries. ``host_only``: the NVML checks alone
    (``cc-runtime launch --preflight``: the detectors live in the processes it starts)."""
    from ..detect import cc_state
    from . import attestation, detectors, host

    state = state if state is not None else cc_state()
    checks = host.checks(state, pynvml)
    if not host_only:
        checks.append(detectors.check(state, import_modules=import_detectors))
        checks.append(attestation.check(state, attest, timeout_s, pynvml, which=which))
    return Report(cc={"label": state.label, "enabled": state.enabled, "real": state.real,
                      "source": state.source, "mode": state.mode}, checks=checks, mode=mode, where=where)


class PreflightRefused(RuntimeError):
    """``CC_RUNTIME_PREFLIGHT=require`` and a check failed or is unknown (activation rolled back first).

    Carries ``cc_runtime_strict`` so the start-up bootstrap ends the process with the one line, as it
    does for strict mode."""

    cc_runtime_strict = True
    cc_runtime_refused = True


_lock = threading.Lock()
_last: Report | None = None
_ran: set[str] = set()


def last() -> dict[str, Any] | None:
    """The last preflight report of this process (automatic or CLI), for status() and doctor."""
    with _lock:
        return _last.as_dict() if _last is not None else None


def remember(report: Report) -> None:
    global _last
    with _lock:
        _last = report


def gate(state: Any, setting: str, where: str) -> Report | None:
    """The automatic preflight: once per process and place (``startup`` or ``sglang``).

    ``warn``: one WARNING line per failed check (on stderr too when no logging is configured).
    ``require``: raises :class:`PreflightRefused` with the one line. Returns the report, or None when
    the preflight is off here (CC off, or the setting says so, or it already ran here)."""
    mode = effective_mode(setting, state)
    if mode == "off" or not state.enabled:
        return None
    with _lock:
        if where in _ran:
            return None
        _ran.add(where)
    report = run(mode=mode, where=where, state=state, import_detectors=(where == "sglang"))
    remember(report)
    if mode == "require":
        line = report.refusal()
        if line:
            raise PreflightRefused(line)
        return report
    from ..runtime import warn_once

    for c in report.blocking("warn"):
        warn_once(f"cc_runtime preflight: {c.name} failed: {c.reason}")
    return report


def _reset_for_tests() -> None:
    global _last
    with _lock:
        _last = None
        _ran.clear()
