"""The second way to read %globaltimer: Triton kernels using ``triton.language.extra.cuda.globaltimer``
(Triton 3.4+). Needs Triton's launcher build on first use (Triton compiles a small C stub with the
system C compiler), which is why the cuda-python path is tried first. Imported only when chosen.
"""

from __future__ import annotations

from typing import Any

import triton
import triton.language as tl
from triton.language.extra.cuda import globaltimer


@triton.jit(do_not_specialize=["index"])
def _stamp_kernel(buf_ptr, index):
    tl.store(buf_ptr + index, globaltimer())


@triton.jit(do_not_specialize=["reads"])
def _granularity_kernel(out_ptr, reads):
    prev = globaltimer()
    best = prev * 0 + 0x7FFFFFFFFFFFFFFF
    for _ in range(reads):
        now = globaltimer()
        step = now - prev
        best = tl.where((step > 0) & (step < best), step, best)
        prev = now
    tl.store(out_ptr, best)


@triton.jit(do_not_specialize=["cycles"])
def _spin_kernel(out_ptr, cycles):
    start = tl.inline_asm_elementwise("mov.u64 $0, %clock64;", "=l", [], dtype=tl.int64, is_pure=False, pack=1)
    now = start
    while now - start < cycles:
        now = tl.inline_asm_elementwise("mov.u64 $0, %clock64;", "=l", [], dtype=tl.int64, is_pure=False, pack=1)
    tl.store(out_ptr, now - start)


class TritonStampKernels:
    """Same interface as ``cuda_driver.DriverStampKernels``, launching through Triton on a torch stream."""

    backend = "triton"

    def __init__(self, device_index: int) -> None:
        import torch

        self.device_index = device_index
        self._scratch = torch.zeros(1, dtype=torch.int64, device=f"cuda:{device_index}")

    def stamp(self, buf: Any, index: int, stream: Any) -> None:
        import torch

        with torch.cuda.stream(stream):
            _stamp_kernel[(1,)](buf, index, num_warps=1)

    def granularity(self, out: Any, reads: int, stream: Any) -> None:
        import torch

        with torch.cuda.stream(stream):
            _granularity_kernel[(1,)](out, reads, num_warps=1)

    def spin(self, cycles: int, stream: Any) -> None:
        import torch

        with torch.cuda.stream(stream):
            _spin_kernel[(1,)](self._scratch, cycles, num_warps=1)
