"""The device side of ``cc-runtime bench readback``: one decode step and its readback, per platform.

On CPU the emulator's simulated device (CPU threads with CC's blocking copies and costs); on a GPU
real matmuls, with CC from ``cc_runtime.emulator.cuda.emulate`` unless the GPU is in real CC mode.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from .common import BenchContext
from .device_step import TOPK, CudaForward, sim_outputs
from .readback_arms import ARMS, FLOOR_ARM, Arm

__all__ = ["FLOOR_ARM", "TOPK", "Env", "arm_env", "real_cc"]

#: What counts the crossings, per device: the emulator's own copy counters, never the code under test.
SIM_COUNTER = "simulated device SimDevice.stats['copies_d2h'] (the device's own copy counter)"
CUDA_COUNTER = "GPU emulator Emulator.stats['d2h'] (cc_runtime.emulator.cuda: every torch copy it charges)"


class Env:
    """One arm on one device: allocate outputs, run a step, start a readback, count crossings."""

    worker: Any = None
    #: What :meth:`transfers` reads (named in the result JSON).
    counter = ""

    def outputs(self, bs: int) -> list[Any]:
        raise NotImplementedError

    def forward(self, outs: list[Any], step: int) -> None:
        raise NotImplementedError

    def forward_stream(self) -> contextlib.AbstractContextManager[Any]:
        raise NotImplementedError

    def inline_readback(self, outs: list[Any]) -> tuple[list[Any], Any]:
        raise NotImplementedError

    def transfers(self) -> int | None:
        """Device-to-host copies so far, by the device's own (or the emulator's) counter; None where
        nothing independent of the code under test counts them."""
        raise NotImplementedError


class _SimEnv(Env):
    counter = SIM_COUNTER

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

    def transfers(self) -> int | None:
        return int(self.sim.stats["copies_d2h"])


class _CudaEnv(Env):
    counter = CUDA_COUNTER

    def __init__(self, step_s: float, mm_reps: dict[float, int]) -> None:
        self.dev = CudaForward(mm_reps)
        self.torch = self.dev.torch
        self.step_s = step_s
        self.dev.reps(step_s)  # measured before any timed step

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
        # Upstream uses a default (spinning) event; every arm here waits on a blocking one, so the
        # scheduler's CPU time per step compares the readback paths, not two ways of waiting.
        done = self.torch.cuda.Event(blocking=True)
        done.record()
        return hosts, done

    def transfers(self) -> int | None:
        from ..emulator import cuda as emu

        em = emu.active()  # CC off and real CC run without the emulator: nothing independent counts
        return None if em is None else int(em.stats["d2h"])


@contextlib.contextmanager
def arm_env(ctx: BenchContext, arm: str | Arm, step_s: float, mm_reps: dict[float, int]) -> Iterator[Env]:
    """The device for one arm: CC off, or CC (emulated on a GPU, simulated on CPU); a worker if it runs one."""
    from ..readback import ReadbackWorker

    spec = ARMS[arm] if isinstance(arm, str) else arm
    with contextlib.ExitStack() as stack:
        if ctx.device == "cuda":
            import torch

            from ..emulator import cuda as emu

            # Under real CC there is nothing to emulate (and no CC-off arm): the GPU is measured as it is.
            if spec.cc and not real_cc(ctx):
                stack.enter_context(emu.emulate(ctx.emulate, seed=ctx.seed))
            stack.callback(torch.cuda.synchronize)
            env: Env = _CudaEnv(step_s, mm_reps)
            backend: Any = "cuda"
        else:
            from ..emulator import SimDevice

            sim = stack.enter_context(SimDevice(ctx.emulate if spec.cc else None, name=f"sim-{spec.name}",
                                                seed=ctx.seed))
            env = _SimEnv(sim, step_s)
            backend = sim
        if spec.worker:  # started inside emulation so its thread pays CC launch costs too
            env.worker = ReadbackWorker(backend)
            stack.callback(env.worker.shutdown)
        if spec.setup is not None:
            stack.enter_context(spec.setup(env))
        yield env


def real_cc(ctx: BenchContext) -> bool:
    from ..detect import cc_state

    return ctx.device == "cuda" and cc_state().real


