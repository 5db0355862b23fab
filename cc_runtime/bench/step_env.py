"""The device side of ``cc-runtime bench step``: the arms, a device per platform, and how each arm's inputs
reach the device.

An arm's inputs go one of two ways:

* inline (``cc_off``, ``cc_upstream``, ``cc_readback``): a ``non_blocking`` copy per input tensor on the
  forward stream, as SGLang's builders make them (pinned with CC off, pageable under CC as 0.5.23 makes
  them);
* deferred (``cc_off_runtime``, ``cc_runtime``): the path SGLang runs with ``sglang.h2d_staging``: the
  builder runs inside :func:`cc_runtime.staging.deferred.deferred_h2d`, each ``host.to(device)`` is
  intercepted and answered with a placeholder, and the scope's end flushes them through the stager: one
  packed crossing on its side stream, then a device-to-device copy into the placeholders on the
  forward stream.

Crossings are counted by the device's own copy counters, never by the code under test: the simulated
device's ``stats`` on CPU, the GPU emulator's ``stats`` on a GPU (CC arms only: the CC-off arms run
without the emulator, so nothing independent counts theirs and they report none).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from .common import BenchContext
from .device_step import CudaForward, sim_outputs

SIM_COUNTER = "simulated device SimDevice.stats['copies_h2d'] / ['copies_d2h'] (the device's own copy counters)"
CUDA_COUNTER = "GPU emulator Emulator.stats['h2d'] / ['d2h'] (cc_runtime.emulator.cuda; CC arms only)"


@dataclass(frozen=True)
class StepArm:
    name: str
    cc: bool
    worker: bool  # the readback worker (else inline readback)
    deferred: bool  # inputs through the deferred scope + stager (else inline copies)
    description: str


ARM_SPECS: dict[str, StepArm] = {a.name: a for a in (
    StepArm("cc_off", False, False, False, "CC off, upstream: pinned non_blocking inputs, inline readback"),
    StepArm("cc_off_runtime", False, True, True, "CC off, cc_runtime's path: deferred inputs, readback worker"),
    StepArm("cc_upstream", True, False, False, "CC, SGLang 0.5.23 as it is: pageable inline inputs and readback"),
    StepArm("cc_readback", True, True, False, "CC, readback worker only (inputs inline)"),
    StepArm("cc_runtime", True, True, True, "CC, deferred inputs (interception + stager + D2D) and readback worker"),
)}
ARMS = tuple(ARM_SPECS)


class _Sim:
    kind = "simulated"
    counter = SIM_COUNTER

    def __init__(self, sim: Any) -> None:
        self.sim = sim
        self.fwd = sim.Stream(name="forward")

    def stream(self) -> contextlib.AbstractContextManager[Any]:
        return self.sim.stream(self.fwd)  # type: ignore[no-any-return]

    def outputs(self, bs: int) -> list[Any]:
        return sim_outputs(self.sim, bs)

    target = "cpu"  # the simulated device's tensors live on torch's cpu device

    def is_target(self, dev: Any) -> bool:
        return str(dev) == "cpu"

    def inline_inputs(self, hosts: list[Any], pinned: bool) -> list[Any]:
        if not pinned:  # SGLang 0.5.23 turns pinning off under CC
            for h in hosts:
                self.sim.mark_pageable(h)
        return [self.sim.to_device(h, non_blocking=True) for h in hosts]  # upstream: .to(dev, non_blocking)

    def forward(self, inputs: list[Any], outs: list[Any], step: int, device_s: float, errors: list[int]) -> None:
        # An input that is not device memory (an interception that handed back the host tensor) is wrong
        # too, even if its values are right.
        errors[0] += sum(1 for t in inputs if not self.sim.is_device(t))

        def kernel() -> None:
            if any(int(t.min()) != step or int(t.max()) != step for t in inputs if t.numel()):
                errors[0] += 1
            outs[0].fill_(step)
            outs[1].fill_(-0.25)
            outs[2].fill_(-1.5)
            outs[3].fill_(step)

        self.sim.launch(kernel, device_s, label="step")

    def inline_readback(self, outs: list[Any]) -> tuple[list[Any], Any]:
        import torch

        hosts = [torch.empty_like(t) for t in outs]
        for h, t in zip(hosts, outs, strict=True):
            self.sim.copy_(h, t, non_blocking=True)
        done = self.sim.Event()
        done.record()
        return hosts, done

    def counts(self) -> tuple[int | None, int | None]:
        return int(self.sim.stats["copies_h2d"]), int(self.sim.stats["copies_d2h"])


class _Cuda:
    kind = "cuda"
    counter = CUDA_COUNTER
    target = "cuda"

    def __init__(self, mm_reps: dict[float, int]) -> None:
        self.dev = CudaForward(mm_reps)
        self.torch = torch = self.dev.torch
        self.flag = torch.zeros(1, dtype=torch.int64, device="cuda")

    def stream(self) -> contextlib.AbstractContextManager[Any]:
        return self.dev.stream()

    def outputs(self, bs: int) -> list[Any]:
        return self.dev.outputs(bs)

    def is_target(self, dev: Any) -> bool:
        return self.torch.device(dev).type == "cuda"

    def inline_inputs(self, hosts: list[Any], pinned: bool) -> list[Any]:
        if pinned:  # CC off, SGLang stages inputs in pinned memory
            hosts = [h.pin_memory() for h in hosts]
        return [h.to("cuda", non_blocking=True) for h in hosts]

    def forward(self, inputs: list[Any], outs: list[Any], step: int, device_s: float, errors: list[int]) -> None:
        torch = self.torch
        errors[0] += sum(1 for t in inputs if not t.is_cuda)
        self.dev.run(device_s)
        for t in inputs:  # a device-side check, read back with the outputs
            if t.numel():
                self.flag += ((t.min() != step) | (t.max() != step)).to(torch.int64)
        outs[1].fill_(-0.25)
        outs[2].fill_(-1.5)
        outs[3].fill_(step)
        outs[0].fill_(step)

    def inline_readback(self, outs: list[Any]) -> tuple[list[Any], Any]:
        hosts = [t.to("cpu", non_blocking=True) for t in outs]
        done = self.torch.cuda.Event(blocking=True)  # the scheduler sleeps on it: its CPU time is measured
        done.record()
        return hosts, done

    def counts(self) -> tuple[int | None, int | None]:
        from ..emulator import cuda as emu

        em = emu.active()
        return (None, None) if em is None else (int(em.stats["h2d"]), int(em.stats["d2h"]))


def deferred_inputs(dev: Any, stager: Any, hosts: list[Any]) -> list[Any]:
    """The inputs as SGLang's patched builders make them: ``.to(device)`` inside a deferred scope, flushed
    at the scope's end (one packed crossing, then a device-to-device copy on the current stream)."""
    from ..staging.deferred import deferred_h2d

    with deferred_h2d(stager, dev.is_target):
        inputs = [h.to(dev.target, non_blocking=True) for h in hosts]
    return inputs


@contextlib.contextmanager
def arm_device(ctx: BenchContext, arm: str, mm_reps: dict[float, int]) -> Iterator[tuple[Any, Any, Any]]:
    """(device, readback worker or None, stager or None) for one arm's run."""
    from ..readback import ReadbackWorker
    from ..staging import H2DStager

    spec = ARM_SPECS[arm]
    with contextlib.ExitStack() as stack:
        if ctx.device == "cuda":
            import torch

            from ..emulator import cuda as emu

            if spec.cc:
                stack.enter_context(emu.emulate(ctx.emulate, seed=ctx.seed))
            stack.callback(torch.cuda.synchronize)
            dev: Any = _Cuda(mm_reps)
            backend: Any = "cuda"
        else:
            from ..emulator import SimDevice

            sim = stack.enter_context(SimDevice(ctx.emulate if spec.cc else None, name=f"sim-{arm}", seed=ctx.seed))
            dev = _Sim(sim)
            backend = sim
        worker = stager = None
        if spec.worker:
            worker = ReadbackWorker(backend)
            stack.callback(worker.shutdown)
        if spec.deferred:
            # cc=True also with CC off: the same path as under CC (what the same-path ratio compares).
            stager = H2DStager(backend, cc=True)
        yield dev, worker, stager
