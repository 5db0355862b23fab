"""The benchmarks' goals, in one table: ``cc-runtime bench`` marks each met or missed, the README shows it.

A goal names a benchmark, a summary key, a comparison, a target and the kind of device it is set for
(``cuda``: a real GPU, CC emulated or real; ``simulated``: the CPU's simulated device; ``any``). A
summary value with a spread is judged by its median; the spread is printed beside it.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .common import fmt_spread, headline

_OPS: dict[str, Callable[[float, float], bool]] = {">=": operator.ge, "<=": operator.le, "==": operator.eq}


@dataclass(frozen=True)
class Goal:
    benchmark: str
    key: str
    op: str
    target: float
    device: str  # "cuda" | "simulated" | "any"
    why: str

    def applies_to(self, device_kind: str) -> bool:
        return self.device in ("any", device_kind)

    def judge(self, summary: dict[str, Any]) -> str:
        """``met``, ``MISSED`` or ``n/a`` (the run did not produce the key)."""
        value = headline(summary.get(self.key))
        if value is None:
            return "n/a"
        return "met" if _OPS[self.op](value, self.target) else "MISSED"

    def describe(self) -> str:
        return f"{self.key} {self.op} {self.target:g}"


GOALS: tuple[Goal, ...] = (
    Goal("readback", "ratio_vs_cc_off", ">=", 0.98, "cuda",
         "decode steps/s under (emulated) CC with cc_runtime, over CC off, worst batch size"),
    Goal("readback", "ratio_vs_cc_off", ">=", 0.95, "simulated",
         "the same on the CPU's simulated device (noisier: threads stand in for the GPU)"),
    Goal("readback", "host_cpu_us_per_step_added", "<=", 30.0, "simulated",
         "scheduler-thread CPU per step that cc_runtime adds over CC off (batch 1 to 256)"),
    Goal("readback", "worker_own_cpu_us_per_step", "<=", 30.0, "simulated",
         "CPU per step of the readback worker thread, batch 1 to 256, less the emulated CC charge measured on "
         "that thread (worker_cc_charge_cpu_us_per_step: the AES-GCM work real CC puts on whichever thread "
         "copies, ~25-31 us per step by the h100 profile, paid by any readback, so not cc_runtime's to cut); "
         "the whole measured CPU stays in worker_cpu_us_per_step"),
    Goal("readback", "transfers_per_step", "<=", 1.0, "any", "one device-to-host crossing per decode step"),
    Goal("readback", "readback_errors", "==", 0.0, "any", "every read-back token id belongs to its step"),
    Goal("timer", "max_rel_diff_vs_events", "<=", 0.02, "cuda",
         "%globaltimer vs CUDA events with CC off (peers accept 0.05)"),
    Goal("timer", "fake_clock_ranking_accuracy", ">=", 0.95, "simulated",
         "the globaltimer tuner finds the fastest of 4 noisy fake configurations 2% apart"),
    Goal("prefill", "max_abs_diff_vs_eager", "<=", 1e-4, "any", "piecewise graphs compute what eager does"),
    Goal("emulator", "max_rel_error_vs_profile", "<=", 0.10, "cuda",
         "with --against a profile calibrated on real CC hardware: every parameter calibrate measures under "
         "emulation, within 10% of it"),
    Goal("emulator", "max_rel_error_vs_published_fit", "<=", 0.10, "any",
         "--against-published: each published CC hardware figure a built-in profile was fit to, re-run under "
         "emulation, within 10%"),
    Goal("emulator", "max_rel_error_vs_published_holdout", "<=", 0.10, "any",
         "--against-published: the published figures no profile was fit to, within 10%"),
    Goal("emulator", "charge_error_us", "<=", 0.5, "simulated",
         "how far the emulator's clock misses a 2-50 us charge as its caller sees it (median over charges; "
         "the cost of timing an empty call subtracted)"),
    Goal("step", "ratio_vs_cc_off", ">=", 0.98, "cuda",
         "scheduler steps/s under emulated CC with readback + H2D staging, over CC off, worst cell"),
    Goal("step", "ratio_vs_cc_off", ">=", 0.95, "simulated",
         "the same on the CPU's simulated device (noisier: threads stand in for the GPU)"),
    Goal("step", "h2d_transfers_per_step", "<=", 1.0, "any", "one host-to-device crossing per decode step"),
    Goal("step", "errors", "==", 0.0, "any", "every input and read-back value belongs to its step"),
    Goal("startup", "bootstrap_added_ms", "<=", 15.0, "any",
         "what the .pth bootstrap adds to `python -c pass` in a child off CC (SGLang and inductor start many)"),
    Goal("startup", "import_ms_cc_off", "<=", 40.0, "any", "`import cc_runtime` with CC off, in-process"),
)


def goals_for(benchmark: str, device_kind: str) -> list[Goal]:
    return [g for g in GOALS if g.benchmark == benchmark and g.applies_to(device_kind)]


def judged(benchmark: str, device_kind: str, summary: dict[str, Any]) -> list[dict[str, str]]:
    """One row per applicable goal: the goal, the measured value (median [min-max]) and met/MISSED/n/a."""
    return [{"goal": g.describe(), "value": fmt_spread(summary.get(g.key)) if g.key in summary else "-",
             "result": g.judge(summary)} for g in goals_for(benchmark, device_kind)]


def markdown_table() -> str:
    rows = ["| benchmark | summary key | goal | device | why |", "|---|---|---|---|---|"]
    for g in GOALS:
        rows.append(f"| `{g.benchmark}` | `{g.key}` | `{g.op} {g.target:g}` | {g.device} | {g.why} |")
    return "\n".join(rows)
