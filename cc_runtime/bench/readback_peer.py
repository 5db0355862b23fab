"""SGLang's own readback worker as a peer arm of ``cc-runtime bench readback``.

When ``sglang`` 0.5.23 or later is importable, the readback benchmark adds two arms beside cc_runtime's
worker, in the same repetitions, on the same (emulated or simulated) CC device:

* ``sglang_worker``: SGLang's ``AsyncD2HCopyWorker`` exactly as shipped (``sglang.srt.managers.
  async_d2h_copy_worker``: a default event recorded per step, its thread waiting with
  ``Event.synchronize()`` and then ``stream.synchronize()``), reading back each output tensor with its
  own copy, as upstream's ``copy_to_cpu`` does on its worker (no coalescing);
* ``sglang_worker_blocking``: the same class with cc_runtime's ``sglang.d2h_worker_blocking_waits``
  applied while the worker is built (blocking-sync event and stream waits), then reverted.

Each reports decode steps/s and the worker thread's CPU per step (the kernel's per-thread CPU clock),
measured like cc_runtime's own worker. On a GPU the first shows upstream's spin: its thread's CPU per
step is about the whole step. On the simulated device (CPU) the waits are the emulator's and never
spin, so there the arms check the wiring against the real class, not the spin. Without SGLang 0.5.23+
the arms are skipped and the benchmark's notes say why.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.metadata
import statistics
from collections.abc import Iterator
from typing import Any

from .common import BenchContext, ratio_spread, spread
from .readback_arms import Arm, register
from .readback_env import Env, arm_env

UPSTREAM = "sglang_worker"
UPSTREAM_BLOCKING = "sglang_worker_blocking"
PEER_ARMS = (UPSTREAM, UPSTREAM_BLOCKING)
WORKER_MODULE = "sglang.srt.managers.async_d2h_copy_worker"


def upstream_worker() -> tuple[Any, str]:
    """(SGLang's worker module, its version) or (None, why the peer arms cannot run)."""
    from packaging.version import Version

    try:
        version = importlib.metadata.version("sglang")
    except importlib.metadata.PackageNotFoundError:
        return None, "sglang is not installed (the peer arms need SGLang 0.5.23 or later)"
    if Version(version) < Version("0.5.23"):
        return None, f"sglang {version} has no AsyncD2HCopyWorker (added in 0.5.23)"
    try:
        return importlib.import_module(WORKER_MODULE), version
    except Exception as exc:  # noqa: BLE001 - a broken SGLang install skips the arm, with its reason
        return None, f"sglang {version}: {WORKER_MODULE} cannot be imported ({type(exc).__name__}: {exc})"


class _SimModule:
    """The simulated device as the device module upstream's worker expects (it calls set_device)."""

    __name__ = "cc_runtime.emulator.simdevice"

    def __init__(self, sim: Any) -> None:
        self.sim = sim

    def __getattr__(self, name: str) -> Any:
        return getattr(self.sim, name)

    def set_device(self, device: int) -> None:
        pass


def _original_init(cls: type) -> Any:
    """``cls.__init__`` as upstream wrote it, even if a cc_runtime patch wraps it in this process."""
    init = cls.__dict__["__init__"]
    while hasattr(init, "__wrapped__"):
        init = init.__wrapped__
    return init


def build_worker(mod: Any, device_module: Any, blocking: bool) -> Any:
    """An ``AsyncD2HCopyWorker`` as shipped, or built with cc_runtime's blocking-waits patch applied."""
    cls = mod.AsyncD2HCopyWorker
    if not blocking:
        worker = cls.__new__(cls)
        _original_init(cls)(worker, device_module)
        return worker
    from ..patches.sglang_d2h_worker_waits import PATCHES, BlockingWaits, is_cuda_module
    from ..patching import PatchContext

    patch = PATCHES[0]
    ctx = PatchContext(patch)
    try:
        patch.apply(ctx)
        if is_cuda_module(device_module):
            return cls(device_module)
        # The simulated device's waits never spin; build it through the patched class all the same,
        # with the blocking view forced, so the arm runs the code a GPU would run.
        return cls(BlockingWaits(device_module))
    finally:
        ctx.revert()


class PeerEnv(Env):
    """One peer arm: the CC device of the ``cc_inline`` arm, with SGLang's worker doing the readback."""

    def __init__(self, base: Env, worker: Any, sim: Any) -> None:
        self.base, self.worker, self.sim = base, worker, sim
        self.copies = 0

    def outputs(self, bs: int) -> list[Any]:
        return self.base.outputs(bs)

    def forward(self, outs: list[Any], step: int) -> None:
        self.base.forward(outs, step)

    def forward_stream(self) -> contextlib.AbstractContextManager[Any]:
        return self.base.forward_stream()

    def inline_readback(self, outs: list[Any]) -> tuple[list[Any], Any]:
        """What 0.5.23's scheduler does: submit upstream's per-tensor copies to the worker."""
        import torch

        hosts: list[Any] = [None] * len(outs)

        def copy_fn() -> None:
            for i, t in enumerate(outs):
                if self.sim is not None:
                    hosts[i] = torch.empty_like(t)
                    self.sim.copy_(hosts[i], t, non_blocking=True)
                else:
                    hosts[i] = t.to("cpu", non_blocking=True)

        self.copies += len(outs)
        return hosts, self.worker.submit(copy_fn)

    def transfers(self) -> int:
        return self.copies


@contextlib.contextmanager
def env_for(ctx: BenchContext, arm: str, step_s: float, mm_reps: dict[float, int]) -> Iterator[Env]:
    """``readback_env.arm_env`` for cc_runtime's arms; the peer arms built on its ``cc_inline`` device."""
    if arm not in PEER_ARMS:
        with arm_env(ctx, arm, step_s, mm_reps) as env:
            yield env
        return
    mod, _ = upstream_worker()
    with arm_env(ctx, "cc_inline", step_s, mm_reps) as base:
        sim = getattr(base, "sim", None)
        if sim is not None:
            module: Any = _SimModule(sim)
        else:
            import torch

            module = torch.cuda
        worker = build_worker(mod, module, blocking=arm == UPSTREAM_BLOCKING)
        try:
            yield PeerEnv(base, worker, sim)
        finally:
            worker.shutdown(timeout=10.0)


class PeerArms:
    """The peer arms this run can have, and their part of the result."""

    def __init__(self, ctx: BenchContext) -> None:
        mod, self.version = upstream_worker()
        self.arms: tuple[str, ...] = PEER_ARMS if mod is not None else ()

    def report(self, runs: dict[tuple[int, str], list[Any]], batch_sizes: list[int], rows: list[dict[str, Any]],
               summary: dict[str, Any], notes: list[str]) -> None:
        if not self.arms:
            notes.append(f"peer arms ({', '.join(PEER_ARMS)}) skipped: {self.version}")
            return
        for arm in self.arms:
            ratio: dict[int, dict[str, Any]] = {}
            cpu: dict[int, dict[str, Any]] = {}
            for bs, row in zip(batch_sizes, rows, strict=True):
                mine, off = runs[(bs, arm)], runs.get((bs, "cc_off"))
                row[f"{arm}_steps_s"] = statistics.median(r.steps_s for r in mine)
                wcpu = [r.worker_cpu_us for r in mine if r.worker_cpu_us is not None]
                if wcpu:
                    cpu[bs] = spread(wcpu)
                    row[f"{arm}_cpu_us"] = cpu[bs]
                if off:
                    ratio[bs] = ratio_spread(m.steps_s / o.steps_s for m, o in zip(mine, off, strict=True))
                    row[f"{arm}_ratio"] = ratio[bs]
            if ratio:
                summary[f"{arm}_ratio_vs_cc_off"] = _worst(ratio, highest=False)
            if cpu:
                summary[f"{arm}_cpu_us_per_step"] = _worst(cpu, highest=True)
        notes.append(f"peer arms: SGLang {self.version}'s AsyncD2HCopyWorker as shipped ({UPSTREAM}) and with "
                     f"cc_runtime's sglang.d2h_worker_blocking_waits ({UPSTREAM_BLOCKING}), per-tensor copies "
                     "as upstream's copy_to_cpu issues them, same repetitions as cc_runtime's worker; "
                     "sglang_worker*_cpu_us_per_step is that worker thread's whole CPU")


def _worst(per_batch: dict[int, dict[str, Any]], highest: bool) -> dict[str, Any]:
    pick = max if highest else min
    bs = pick(per_batch, key=lambda b: per_batch[b]["median"])
    return {**per_batch[bs], "batch": bs}


def _upstream_readback(env: Any, outs: list[Any]) -> Any:
    return env.inline_readback(outs)  # PeerEnv: upstream's per-tensor copies, submitted to SGLang's worker


# In the readback arms' registry for their submit; not default arms: PeerArms adds them where they run.
register(Arm(UPSTREAM, cc=True, worker=False, submit=_upstream_readback,
             description="CC, SGLang 0.5.23's AsyncD2HCopyWorker as shipped, per-tensor copies"), default=False)
register(Arm(UPSTREAM_BLOCKING, cc=True, worker=False, submit=_upstream_readback,
             description="CC, the same worker with cc_runtime's blocking waits"), default=False)

__all__ = ["PEER_ARMS", "PeerArms", "PeerEnv", "build_worker", "env_for", "upstream_worker"]
