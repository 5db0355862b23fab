"""With event timings corrupted the way the CC emulator corrupts them, an event-timed tuner picks a
wrong configuration; the globaltimer-timed one picks the fastest.

On CPU the fake clock stands in for the GPU and its %globaltimer register ("running" a configuration
advances it by that configuration's time). The four configurations are 2% apart and every run is
noisy (+-4% jitter, 10% of runs 30% slower: ``cc_runtime.timer.ranking.fake_configs``), so a tuner
is right only if it measures robustly: a single reading per configuration is not enough (the control
below shows it), and the median over many stamped samples is. The event-timed tuner reads the same
clock through ``EventCorruption(load_profile("h100"), seed).corrupt`` (cc_runtime.emulator).
"""

from __future__ import annotations

import random

import pytest

from cc_runtime.timer import FakeClock, FakeTimer
from cc_runtime.timer.ranking import (
    FAKE_FASTEST,
    accuracy,
    cc_style_time,
    event_style_time,
    fake_configs,
    pick,
)

TRIALS = 40


def _event_trial(i: int) -> str:
    from cc_runtime.emulator.events import EventCorruption
    from cc_runtime.emulator.profiles import load_profile

    clock, rng = FakeClock(), random.Random(i)
    timer = FakeTimer(clock, corrupt=EventCorruption(load_profile("h100"), seed=i).corrupt)
    return pick(fake_configs(clock, rng), lambda fn: event_style_time(timer, fn))


def _globaltimer_trial(i: int) -> str:
    clock, rng = FakeClock(), random.Random(i)
    timer = FakeTimer(clock, granularity_ns=32, stamp_cost_ns=1500)
    return pick(fake_configs(clock, rng), lambda fn: cc_style_time(timer, fn))


@pytest.mark.timeout(120)
def test_corrupted_events_mislead_the_tuner():
    pytest.importorskip("cc_runtime.emulator.events")
    acc = accuracy(TRIALS, _event_trial, FASTEST := FAKE_FASTEST)
    assert acc < 0.6, f"event-timed tuner was right in {acc:.0%} of trials ({FASTEST}) despite corruption"


@pytest.mark.timeout(120)
def test_globaltimer_tuner_picks_the_fastest_through_the_noise():
    acc = accuracy(TRIALS, _globaltimer_trial, FAKE_FASTEST)
    assert acc >= 0.95, f"globaltimer tuner right in only {acc:.0%} of trials"


def test_the_noise_defeats_a_single_reading():
    """Control: one stamped reading per configuration is often wrong here, so the accuracy above
    comes from how ``measure`` samples and summarises, not from an easy clock."""

    def trial(i: int) -> str:
        clock, rng = FakeClock(), random.Random(i)
        timer = FakeTimer(clock, granularity_ns=32, stamp_cost_ns=1500)
        return pick(fake_configs(clock, rng), lambda fn: event_style_time(timer, fn, iters=1))

    assert accuracy(TRIALS, trial, FAKE_FASTEST) < 0.85


def test_uncorrupted_events_would_have_been_right():
    """Control: the same event tuner without corruption is right, so the corruption is the cause."""
    def trial(i: int) -> str:
        clock, rng = FakeClock(), random.Random(i)
        timer = FakeTimer(clock, corrupt=lambda ms: ms)
        return pick(fake_configs(clock, rng), lambda fn: event_style_time(timer, fn))

    assert accuracy(10, trial, FAKE_FASTEST) >= 0.9
