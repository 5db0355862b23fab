"""Run the sweep: per arm, one server; per cell, one benchmark client run; every result appended at once.

Failure policy (kept per cell, never losing finished ones): a server that dies or never becomes healthy
is started once more (the cell it died in is retried on the new server); a second failure marks the arm
failed with the reason, and each of its remaining cells gets a failed line naming that reason. A client
that fails while its server stays healthy fails only its cell.
"""

from __future__ import annotations

import datetime as _dt
import os
import platform
import shlex
import sys
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TextIO

from ..patching.device import device_from_args
from .arms import ArmPlan, client_environment, server_environment
from .client import ClientInfo, client_argv, run_client
from .grid import Cell
from .server import HOST, ServerError, ServerProcess, free_port, log_tail
from .store import RESULTS_FILE, ResultStore, fingerprint

SGLANG_SERVER = "sglang.launch_server"
TEST_SERVER = "cc_runtime.sweep.testserver"
#: Starts per arm: the first, and one restart.
MAX_SERVER_STARTS = 2
TEST_SERVER_LABEL = "loopback TEST SERVER (a stand-in for a GPU server; these are not SGLang measurements)"


@dataclass
class SweepConfig:
    out_dir: str
    cells: Sequence[Cell]
    arms: Sequence[ArmPlan]
    server_args: Sequence[str]
    client: ClientInfo
    python: str = sys.executable
    test_server: bool = False
    gpus: int = 1
    tokenizer: str | None = None
    client_extra: Sequence[str] = ()
    health_timeout_s: float = 1800.0
    cell_timeout_s: float = 7200.0
    resume: bool = True
    offline: bool = False
    base_env: Mapping[str, str] = field(default_factory=lambda: dict(os.environ))
    environment: dict[str, Any] = field(default_factory=dict)

    @property
    def results_path(self) -> str:
        return os.path.join(self.out_dir, RESULTS_FILE)

    @property
    def results_from(self) -> str:
        return "test-server" if self.test_server else "sglang"

    def server_argv(self, port: int | str) -> list[str]:
        module = TEST_SERVER if self.test_server else SGLANG_SERVER
        return [self.python, "-m", module, "--host", HOST, "--port", str(port), *self.server_args]

    def client_argv(self, cell: Cell, port: int | str, arm: str) -> list[str]:
        return client_argv(self.python, self.client.module, cell, host=HOST, port=port,
                           output_file=self.cell_file(arm, cell, "client.jsonl"), tokenizer=self.tokenizer,
                           extra=self.client_extra)

    def arm_dir(self, arm: str) -> str:
        return os.path.join(self.out_dir, arm)

    def cell_file(self, arm: str, cell: Cell, name: str) -> str:
        return os.path.join(self.arm_dir(arm), cell.name, name)

    def cell_config(self, plan: ArmPlan, cell: Cell) -> str:
        """What must match for a saved cell to count as this cell (ports and paths excluded)."""
        return fingerprint({"server_args": list(self.server_args), "arm_env": dict(plan.env), "cc": plan.cc,
                            "cell": [cell.num_prompts, cell.warmup_requests, cell.seed],
                            "client_extra": list(self.client_extra), "results_from": self.results_from,
                            "client": self.client.module})


class ArmFailed(Exception):
    pass


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def environment_record(python: str, client: ClientInfo) -> dict[str, Any]:
    """GPUs, driver, the hardware's CC state and versions, every probe guarded (as in doctor)."""
    from ..detect import probe_nvml
    from ..doctor import _gpu, _versions

    gpu = _gpu()
    hw = probe_nvml()
    return {"host": platform.node(), "gpus": gpu.get("devices"), "driver": gpu.get("driver"),
            "nvml": gpu.get("nvml"), "cc_hardware": hw.label, "cc_hardware_source": hw.source,
            "cc_hardware_real": hw.real,
            "cc_hardware_reason": hw.reason, "versions": {**_versions(), "sglang (server python)":
                                                          client.sglang_version},
            "server_python": python}


class Sweep:
    def __init__(self, cfg: SweepConfig, *, out: TextIO | None = None) -> None:
        self.cfg = cfg
        self.out = out or sys.stdout
        self.store = ResultStore(cfg.results_path)
        self.run_id = uuid.uuid4().hex[:12]

    # -- dry run -------------------------------------------------------------------------------------
    def dry_run(self) -> None:
        cfg = self.cfg
        p = self.out
        print(f"# cc-runtime sweep --dry-run: {len(cfg.arms)} arm(s) x {len(cfg.cells)} cell(s); "
              f"results -> {cfg.results_path}", file=p)
        if cfg.test_server:
            print(f"# server: {TEST_SERVER_LABEL}", file=p)
        if cfg.client.note:
            print(f"# note: {cfg.client.note}", file=p)
        for plan in cfg.arms:
            print(f"\n## arm {plan.name}: {plan.title} (cc={plan.cc})", file=p)
            if plan.skip_reason:
                print(f"# skipped: {plan.skip_reason}", file=p)
                continue
            env = " ".join(f"{k}={shlex.quote(v)}" for k, v in sorted(plan.env.items()))
            offline = "HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 " if cfg.offline else ""
            print("# server (in its own process group, on a free local port, as `cc-runtime launch` "
                  "runs it: CC_RUNTIME_BOOTSTRAP=1 patches every Python child):", file=p)
            print(f"{offline}{env} cc-runtime launch -- {shlex.join(cfg.server_argv('PORT'))}", file=p)
            print("# benchmark client, one run per cell (after GET /health answers 200):", file=p)
            for cell in cfg.cells:
                print(f"# cell {cell.label}, {cell.num_prompts} prompts, {cell.warmup_requests} warmup", file=p)
                print(f"CC_RUNTIME_DISABLE=1 {shlex.join(cfg.client_argv(cell, 'PORT', plan.name))}", file=p)

    # -- the sweep -----------------------------------------------------------------------------------
    def run(self) -> int:
        """Runs every arm; returns the number of cells that failed in this run."""
        cfg = self.cfg
        total = len(cfg.arms) * len(cfg.cells)
        failed = 0
        bar = _progress_bar(total)
        try:
            for plan in cfg.arms:
                failed += self._run_arm(plan, bar)
        finally:
            bar.close()
        return failed

    def _record(self, plan: ArmPlan, cell: Cell, status: str, reason: str = "", **extra: Any) -> dict[str, Any]:
        cfg = self.cfg
        rec = {
            "kind": "cell", "status": status, "reason": reason, "run_id": self.run_id, "timestamp": _now(),
            "arm": plan.name, "arm_title": plan.title, "cc": plan.cc, "emulated": plan.emulated,
            # Where the arm's CC state comes from: the emulator, or the hardware as NVML reports it.
            "cc_source": "emulated" if plan.emulated else cfg.environment.get("cc_hardware_source"),
            "results_from": cfg.results_from,
            "results_label": TEST_SERVER_LABEL if cfg.test_server else server_label(cfg.server_args),
            "device": device_from_args(list(cfg.server_args)),
            "isl": cell.isl, "osl": cell.osl, "concurrency": cell.concurrency, "num_prompts": cell.num_prompts,
            "warmup_requests": cell.warmup_requests, "seed": cell.seed, "config": cfg.cell_config(plan, cell),
            "gpus_used": cfg.gpus, "arm_env": dict(plan.env), "server_args": list(cfg.server_args),
            "client_module": cfg.client.module, "environment": cfg.environment, **extra,
        }
        self.store.append(rec)
        return rec

    def _say(self, plan: ArmPlan, cell: Cell, text: str) -> None:
        # Every line says what it measured: an emulated arm and a test server are never left implicit.
        tags = ([plan.cc] if plan.emulated else []) + (["TEST SERVER"] if self.cfg.test_server else [])
        tag = f" ({', '.join(tags)})" if tags else ""
        print(f"[{plan.name}{tag}] {cell.label}: {text}", file=self.out, flush=True)

    def _run_arm(self, plan: ArmPlan, bar: Any) -> int:
        cfg = self.cfg
        todo = []
        for cell in cfg.cells:
            if cfg.resume and self.store.finished((plan.name, cell.isl, cell.osl, cell.concurrency,
                                                   cfg.cell_config(plan, cell))):
                bar.update(1)
            else:
                todo.append(cell)
        if not todo:
            print(f"[{plan.name}] every cell already finished in {cfg.results_path}", file=self.out)
            return 0
        if plan.skip_reason:
            for cell in todo:
                self._record(plan, cell, "skipped", plan.skip_reason)
                bar.update(1)
            print(f"[{plan.name}] skipped: {plan.skip_reason}", file=self.out)
            return 0
        os.makedirs(cfg.arm_dir(plan.name), exist_ok=True)
        server_env = server_environment(cfg.base_env, plan)
        if cfg.offline:
            server_env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
        client_env = client_environment(cfg.base_env)
        if cfg.offline:
            client_env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
        state: dict[str, Any] = {"server": None, "starts": 0, "reason": ""}
        failed = 0
        arm_failed: str | None = None
        log_path = os.path.join(cfg.arm_dir(plan.name), "server.log")

        def ensure_server() -> ServerProcess:
            server = state["server"]
            while server is None or not server.alive():
                if server is not None:
                    server.stop()
                if state["starts"] >= MAX_SERVER_STARTS:
                    raise ArmFailed(state["reason"])
                state["starts"] += 1
                port = free_port()
                with open(log_path, "a") as log:
                    log.write(f"\n=== cc-runtime sweep {self.run_id}: start {state['starts']} of arm "
                              f"{plan.name} on port {port}: {shlex.join(cfg.server_argv(port))}\n")
                server = ServerProcess(cfg.server_argv(port), server_env, port, log_path)
                state["server"] = server
                try:
                    server.start()
                    server.wait_ready(cfg.health_timeout_s)
                except ServerError as exc:
                    state["reason"] = f"server start {state['starts']}: {exc}"
                    server.stop()
            return server  # type: ignore[no-any-return]

        try:
            for cell in todo:
                bar.set_description(f"{plan.name} | {cell.name}")
                if arm_failed is not None:
                    self._record(plan, cell, "failed", f"arm failed: {arm_failed}")
                    failed += 1
                    bar.update(1)
                    continue
                try:
                    rec = self._run_cell(plan, cell, ensure_server, client_env, state)
                except ArmFailed as exc:
                    arm_failed = str(exc)
                    self._say(plan, cell, f"ARM FAILED after {state['starts']} server start(s): "
                              + indent_tail(arm_failed))
                    self._record(plan, cell, "failed", f"arm failed: {arm_failed}")
                    failed += 1
                    bar.update(1)
                    continue
                failed += rec["status"] != "ok"
                bar.update(1)
        finally:
            if state["server"] is not None:
                state["server"].stop()
        return failed

    def _run_cell(self, plan: ArmPlan, cell: Cell, ensure_server: Callable[[], ServerProcess],
                  client_env: Mapping[str, str], state: dict[str, Any]) -> dict[str, Any]:
        cfg = self.cfg
        os.makedirs(os.path.dirname(cfg.cell_file(plan.name, cell, "x")), exist_ok=True)
        out_file = cfg.cell_file(plan.name, cell, "client.jsonl")
        log_file = cfg.cell_file(plan.name, cell, "client.log")
        for attempt in (1, 2):
            server = ensure_server()
            argv = cfg.client_argv(cell, server.port, plan.name)
            run = run_client(argv, client_env, out_file, log_file, cfg.cell_timeout_s)
            common = {"attempt": attempt, "server_start": state["starts"], "server_argv": server.argv,
                      "client_argv": argv}
            if run.ok and run.result is not None:
                metrics = cell_metrics(run.result, cfg.gpus)
                completed = int(run.result.get("completed") or 0)
                if completed < cell.num_prompts:
                    reason = f"{cell.num_prompts - completed} of {cell.num_prompts} requests failed"
                    self._say(plan, cell, f"FAILED: {reason}")
                    return self._record(plan, cell, "failed", reason, metrics=metrics, client=run.result, **common)
                self._say(plan, cell, f"ok, {metrics['output_throughput_per_gpu']:.1f} output tok/s/GPU, median "
                          f"TTFT {metrics['median_ttft_ms']:.1f} ms, median TPOT {metrics['median_tpot_ms']:.2f} ms")
                return self._record(plan, cell, "ok", metrics=metrics, client=run.result, **common)
            if server.alive():
                reason = f"{run.reason}; client log tail ({log_file}):\n{log_tail(log_file, 2000)}"
                self._say(plan, cell, f"FAILED: {run.reason}")
                return self._record(plan, cell, "failed", reason, client=run.result, **common)
            state["reason"] = (f"server {server.exit_reason()} during {cell.label}; log tail "
                               f"({server.log_path}):\n{log_tail(server.log_path)}")
            self._say(plan, cell, f"server {server.exit_reason()}; "
                      + ("restarting it once" if state["starts"] < MAX_SERVER_STARTS else "no restart left"))
        # Both attempts lost their server: ensure_server raises ArmFailed on the next call.
        ensure_server()
        raise AssertionError("unreachable: a third server start was allowed")


def server_label(server_args: Sequence[str]) -> str:
    device = device_from_args(list(server_args))
    if device is not None and device != "cuda":
        return f"SGLang server on {device.upper()} (--device {device}): not a CC measurement"
    return "SGLang server"


def indent_tail(reason: str, max_lines: int = 40) -> str:
    """A failure reason for the console: its first line, then the rest (a log tail: the last
    ``max_lines`` lines) indented on lines of their own, so a traceback reads as one."""
    first, *rest = reason.strip().splitlines() or [""]
    if len(rest) > max_lines:
        rest = [f"... ({len(rest) - max_lines} earlier lines in the log)", *rest[-max_lines:]]
    return "\n".join([first, *(f"    {ln}" for ln in rest)])


def cell_metrics(result: Mapping[str, Any], gpus: int) -> dict[str, Any]:
    """The table's numbers from the client's own JSON line (all measured by the client in this run)."""
    def num(key: str) -> float | None:
        v = result.get(key)
        return float(v) if isinstance(v, (int, float)) else None

    tput = num("output_throughput")
    tpot = num("median_tpot_ms")
    return {
        "output_throughput": tput,
        "output_throughput_per_gpu": tput / gpus if tput is not None else None,
        "median_ttft_ms": num("median_ttft_ms"),
        "median_tpot_ms": tpot,
        "median_itl_ms": num("median_itl_ms"),
        "p99_ttft_ms": num("p99_ttft_ms"),
        "p99_tpot_ms": num("p99_tpot_ms"),
        # Interactivity as InferenceX plots it: one user's decode rate from the median TPOT.
        "tokens_per_s_per_user": 1000.0 / tpot if tpot else None,
        "completed": result.get("completed"),
        "duration_s": num("duration"),
    }


class _NoBar:
    def update(self, n: int = 1) -> None:
        pass

    def set_description(self, desc: str) -> None:
        pass

    def close(self) -> None:
        pass


def _progress_bar(total: int) -> Any:
    try:
        from tqdm import tqdm
    except ImportError:
        return _NoBar()
    # disable=None: a bar on a terminal, silence in CI logs (the per-cell lines still print).
    return tqdm(total=total, unit="cell", disable=None, file=sys.stderr, leave=True)
