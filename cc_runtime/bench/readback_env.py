"""The device side of ``cc-runtime bench readback``: one decode step and its readback, per platform.

On CPU the emulator's simulated device (CPU threads with CC's blocking copies and costs); on a GPU
real matmuls, with CC from ``cc_runtime.emulator.cuda.emulate`` unless the GPU is in real CC mode.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

from .common import BenchContext
from .device_step import TOPK, CudaForward, sim_outputs

#: Not a way to read back: the cc_runtime arm's worker thread with nothing to copy (it waits for each
#: step's readiness event and signals the step, as the real worker does, and nothing else), to measure
#: what one device wait and one hand-off cost a thread on this machine: the floor under any worker.
FLOOR_ARM = "worker_floor"
WORKER_ARMS = ("cc_runtime", FLOOR_ARM)  # the arms that run a ReadbackWorker


class Env:
    """One arm on one device: allocate outputs, run a step, start a readback, count crossings."""

    worker: Any = None

    def outputs(self, bs: int) -> list[Any]:
        raise NotImplementedError

    def forward(self, outs: list[Any], step: int) -> None:
        raise NotImplementedError

    def forward_stream(self) -> contextlib.AbstractContextManager[Any]:
        raise NotImplementedError

    def inline_readback(self, outs: list[Any]) -> tuple[list[Any], Any]:
        raise NotImplementedError

    def transfers(self) -> int:
        raise NotImplementedError

    def charge_clock(self) -> Callable[[], float] | None:
        """CPU seconds the worker thread has spent in the emulator's CC charges (the simulated device and
        the GPU emulator charge every cost through ``clock.charge_until``, which counts the paying
        thread's CPU inside the wait); None without a worker."""
        if self.worker is None:
            return None
        from ..emulator.clock import charged_cpu_s

        thread = self.worker._thread
        return lambda: charged_cpu_s(thread)


class _SimEnv(Env):
    def __init__(self, sim: Any, step_s: float) -> None:
        self.sim = sim
        self.step_s = step_s
        self.fwd = sim.Stream(name="forward")

    def outputs(self, bs: int) -> list[Any]:
        return sim_outputs(self.sim, bs)

    def forward(self, outs: list[Any], step: int) -> None:
        def kernel() -> None:
            outs[0].fill_(step)
            outs[1].fill_(-0.25)
            outs[2].fill_(-1.5)
            outs[3].fill_(step)

        self.sim.launch(kernel, self.step_s, label="decode step")

    def forward_stream(self) -> contextlib.AbstractContextManager[Any]:
        return self.sim.stream(self.fwd)  # type: ignore[no-any-return]

    def inline_readback(self, outs: list[Any]) -> tuple[list[Any], Any]:
        import torch

        hosts = [torch.empty_like(t) for t in outs]
        for h, t in zip(hosts, outs, strict=True):
            self.sim.copy_(h, t, non_blocking=True)  # upstream: .to("cpu", non_blocking=True)
        done = self.sim.Event()
        done.record()
        return hosts, done

    def transfers(self) -> int:
        return int(self.sim.stats["copies_d2h"])



class _CudaEnv(Env):
    def __init__(self, step_s: float, mm_reps: dict[float, int]) -> None:
        self.dev = CudaForward(mm_reps)
        self.torch = self.dev.torch
        self.step_s = step_s
        self.dev.reps(step_s)  # measured before any timed step
        self._inline = 0

    def outputs(self, bs: int) -> list[Any]:
        return self.dev.outputs(bs)

    def forward(self, outs: list[Any], step: int) -> None:
        torch = self.torch
        self.dev.run(self.step_s)
        bs = outs[0].shape[0]
        vals, idx = torch.topk(self.dev.c[:bs, :64], TOPK, dim=-1)
        outs[2].copy_(vals)
        outs[3].copy_(idx)
        outs[1].copy_(vals[:, 0])
        outs[0].fill_(step)  # the value the host checks: written last, on the forward stream

    def forward_stream(self) -> contextlib.AbstractContextManager[Any]:
        return self.dev.stream()

    def inline_readback(self, outs: list[Any]) -> tuple[list[Any], Any]:
        hosts = [t.to("cpu", non_blocking=True) for t in outs]
        self._inline += len(outs)
        # Upstream uses a default (spinning) event; every arm here waits on a blocking one, so the
        # scheduler's CPU time per step compares the readback paths, not two ways of waiting.
        done = self.torch.cuda.Event(blocking=True)
        done.record()
        return hosts, done

    def transfers(self) -> int:
        return self._inline + (self.worker.backend.transfers if self.worker is not None else 0)


@contextlib.contextmanager
def arm_env(ctx: BenchContext, arm: str, step_s: float, mm_reps: dict[float, int]) -> Iterator[Env]:
    """The device for one arm: CC off, or CC (emulated on a GPU, simulated on CPU); a worker for cc_runtime."""
    from ..readback import ReadbackWorker

    if ctx.device == "cuda":
        from ..emulator import cuda as emu

        # Under real CC there is nothing to emulate (and no CC-off arm): the GPU is measured as it is.
        cm: contextlib.AbstractContextManager[Any] = (
            contextlib.nullcontext() if arm == "cc_off" or real_cc(ctx)
            else emu.emulate(ctx.emulate, seed=ctx.seed))
        with cm:
            env: Env = _CudaEnv(step_s, mm_reps)
            if arm in WORKER_ARMS:  # started inside emulation so its thread pays CC launch costs too
                env.worker = ReadbackWorker("cuda")
            try:
                yield env
            finally:
                if env.worker is not None:
                    env.worker.shutdown()
                import torch

                torch.cuda.synchronize()
        return
    from ..emulator import SimDevice

    with SimDevice(None if arm == "cc_off" else ctx.emulate, name=f"sim-{arm}", seed=ctx.seed) as sim:
        env = _SimEnv(sim, step_s)
        if arm in WORKER_ARMS:
            env.worker = ReadbackWorker(sim)
        try:
            yield env
        finally:
            if env.worker is not None:
                env.worker.shutdown()


def real_cc(ctx: BenchContext) -> bool:
    from ..detect import cc_state

    return ctx.device == "cuda" and cc_state().real


