"""What the readback and step benchmarks share on the device side: one decode step's outputs, and on a GPU
a forward of a chosen length made of matmuls on its own stream.

The outputs have the shape of SGLang's per-step readback: token ids (int64), logprobs (float32), and the
top-``TOPK`` logprob values (float32) and ids (int64).
"""

from __future__ import annotations

import contextlib
import time
from typing import Any

TOPK = 5


def sim_outputs(sim: Any, bs: int) -> list[Any]:
    """One step's output tensors on the simulated device."""
    import torch

    return [sim.zeros((bs,), dtype=torch.int64), sim.zeros((bs,), dtype=torch.float32),
            sim.zeros((bs, TOPK), dtype=torch.float32), sim.zeros((bs, TOPK), dtype=torch.int64)]


class CudaForward:
    """A forward of ``seconds`` of device time on a private stream: repeated 2048x2048 matmuls.

    The repetitions per length are measured once and kept in ``reps_cache`` (shared across arms, so
    every arm runs the same device work).
    """

    N = 2048

    def __init__(self, reps_cache: dict[float, int]) -> None:
        import torch

        self.torch = torch
        self.fwd = torch.cuda.Stream()
        self.a = torch.randn(self.N, self.N, device="cuda")
        self.b = torch.randn(self.N, self.N, device="cuda") / self.N
        self.c = torch.empty(self.N, self.N, device="cuda")
        self.reps_cache = reps_cache

    def reps(self, seconds: float) -> int:
        torch = self.torch
        if seconds not in self.reps_cache:
            torch.mm(self.a, self.b, out=self.c)  # warm-up: cuBLAS picks its kernel first
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            for _ in range(20):
                torch.mm(self.a, self.b, out=self.c)
            torch.cuda.synchronize()
            self.reps_cache[seconds] = max(1, round(seconds / ((time.perf_counter() - t0) / 20)))
        return self.reps_cache[seconds]

    def run(self, seconds: float) -> None:
        """Enqueue the forward on the current stream (callers enter :meth:`stream` first)."""
        for _ in range(self.reps(seconds)):
            self.torch.mm(self.a, self.b, out=self.c)

    def stream(self) -> contextlib.AbstractContextManager[Any]:
        return self.torch.cuda.stream(self.fwd)  # type: ignore[no-any-return]

    def outputs(self, bs: int) -> list[Any]:
        torch = self.torch
        outs = [torch.zeros(bs, dtype=torch.int64, device="cuda"), torch.zeros(bs, device="cuda"),
                torch.zeros(bs, TOPK, device="cuda"), torch.zeros(bs, TOPK, dtype=torch.int64, device="cuda")]
        torch.cuda.synchronize()  # zeroed on the default stream; the forward stream writes them next
        return outs
