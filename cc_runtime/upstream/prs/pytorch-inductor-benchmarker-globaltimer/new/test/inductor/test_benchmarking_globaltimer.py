# Owner(s): ["module: inductor"]
"""InductorBenchmarker with TORCHINDUCTOR_BENCHMARK_TIMER=globaltimer must not depend on
CUDA event timings, which are unreliable under NVIDIA Confidential Computing.

These tests run without a GPU. Stand-ins, only for what a CPU cannot provide: a device
interface (a 1 KiB L2) whose events report a corrupted (negative) elapsed time, as CC can; a
%globaltimer stamp that reads the host's nanosecond clock; and torch.empty ignoring
device="cuda".
"""

import os
import time
from unittest import mock

import torch
from torch._inductor.runtime import benchmarking
from torch._inductor.runtime.benchmarking import InductorBenchmarker


try:
    from torch._inductor.test_case import run_tests, TestCase
except ImportError:  # torch's test requirements (expecttest) are not installed
    from unittest import main as run_tests, TestCase


class _CorruptedEvent:
    def __init__(self, enable_timing=False):
        pass

    def record(self):
        pass

    def elapsed_time(self, end_event):
        return -0.5


class _DeviceProperties:
    L2_cache_size = 1024


class _DeviceInterface:
    Event = _CorruptedEvent

    @staticmethod
    def synchronize():
        pass

    @staticmethod
    def current_device():
        return 0

    @staticmethod
    def get_device_properties(device):
        return _DeviceProperties


class _HostStamp:
    def __init__(self):
        self.ns = time.perf_counter_ns()

    def item(self):
        return self.ns


def _sleep_2ms():
    time.sleep(0.002)


class TestBenchmarkingGlobalTimer(TestCase):
    def setUp(self):
        super().setUp()
        real_empty = torch.empty

        def empty(*args, device=None, **kwargs):
            return real_empty(*args, **kwargs)

        for patcher in (
            mock.patch.dict(os.environ, {"TORCHINDUCTOR_BENCHMARK_TIMER": "globaltimer"}),
            mock.patch.object(
                benchmarking, "get_interface_for_device", lambda *a: _DeviceInterface
            ),
            mock.patch.object(
                benchmarking, "_globaltimer_stamp", _HostStamp, create=True
            ),
            mock.patch.object(torch, "empty", empty),
        ):
            patcher.start()
            self.addCleanup(patcher.stop)

    def _benchmark(self, return_mode):
        return InductorBenchmarker().benchmark_gpu(
            _sleep_2ms,
            estimation_iters=2,
            memory_warmup_iters=1,
            benchmark_iters=5,
            return_mode=return_mode,
            is_vetted_benchmarking=True,
            device_type="cuda",
        )

    def test_min_timing_ignores_event_timings(self):
        ms = self._benchmark("min")
        # time.sleep(0.002) takes at least 2 ms; the upper bound only rules out a wrong unit.
        self.assertGreaterEqual(ms, 2.0)
        self.assertLess(ms, 200.0)

    def test_all_timings_ignore_event_timings(self):
        timings = self._benchmark("all")
        self.assertGreater(len(timings), 0)
        for ms in timings:
            self.assertGreaterEqual(ms, 2.0)
            self.assertLess(ms, 200.0)


if __name__ == "__main__":
    run_tests()
