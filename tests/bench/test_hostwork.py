"""HostWork stands in for a scheduler's per-step Python: it must burn this thread's CPU (hold the GIL),
not sleep, and its size must follow the batch."""

from __future__ import annotations

import time

from cc_runtime.bench.hostwork import HostWork


def test_units_follow_base_and_batch():
    hw = HostWork(base_us=100.0, us_per_request=2.0)
    assert 0 < hw.units(1) < hw.units(64) < hw.units(256)
    assert HostWork(0.0, 0.0).units(256) == 0


def test_run_spends_this_threads_cpu_not_a_sleep():
    hw = HostWork(base_us=20_000.0, us_per_request=0.0)  # ~20 ms, long enough to see on a busy machine
    wall0, cpu0 = time.perf_counter(), time.thread_time()
    hw.run(1)
    wall, cpu = time.perf_counter() - wall0, time.thread_time() - cpu0
    # A sleep (or a GIL-releasing wait) would leave the thread's CPU time near zero. Compared with the
    # work asked for, not with the wall time: on a loaded machine the burning thread is preempted too.
    assert cpu > 0.5 * 0.020, (cpu, wall)
