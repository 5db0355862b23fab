"""CC-safe kernel timing: %globaltimer stamps instead of CUDA events.

Under NVIDIA Confidential Computing ``cudaEventElapsedTime`` can be wrong or negative, so autotuners
that keep ``min(time)`` pick near-random configurations. This package reads the GPU's %globaltimer
register with a one-thread stamp kernel (PTX through cuda-python, or Triton), offers timer objects
with the ``torch.cuda.Event`` surface, and ``do_bench`` / ``do_bench_cudagraph`` drop-ins for Triton's.
No torch import at package import time.
"""

from __future__ import annotations

from .benchmark import TimingResult, do_bench, do_bench_cudagraph, measure, measure_cudagraph
from .events import CudaEventTimer, SelfTest, StampArena, StampEvent, Timer, TimerError, WallClockTimer
from .fake import FakeClock, FakeTimer
from .kernel_files import read_kernel
from .select import failures, get_timer, reset, use_timer
from .stats import TimingStats, plan_repeats, quantile

__all__ = [
    "CudaEventTimer", "FakeClock", "FakeTimer", "SelfTest", "StampArena", "StampEvent", "Timer", "TimerError",
    "TimingResult", "TimingStats", "WallClockTimer", "do_bench", "do_bench_cudagraph", "failures", "get_timer",
    "measure", "measure_cudagraph", "plan_repeats", "quantile", "read_kernel", "reset", "use_timer",
]
