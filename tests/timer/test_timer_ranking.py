"""With event timings corrupted the way the CC emulator corrupts them, an event-timed tuner picks a
wrong configuration; the globaltimer-timed one picks the fastest every time.

On CPU the fake clock stands in for the GPU and its %globaltimer register ("running" a configuration
advances it by that configuration's time, with 1% seeded jitter); the event-timed tuner reads the
same clock through ``EventCorruption(load_profile("h100"), seed).corrupt`` (cc_runtime.emulator).
"""

from __future__ import annotations

import random

import pytest

from cc_runtime.timer import FakeClock, FakeTimer
from cc_runtime.timer.ranking import accuracy, cc_style_time, event_style_time, pick

TRUE_MS = {"a": 0.100, "b": 0.090, "c": 0.095, "d": 0.110}
FASTEST = "b"
TRIALS = 50


def _configs(clock: FakeClock, rng: random.Random):
    def make(ms: float):
        return lambda: clock.advance(ms * 1e6 * (1 + rng.uniform(-0.01, 0.01)))

    return {name: make(ms) for name, ms in TRUE_MS.items()}


def _event_trial(i: int) -> str:
    from cc_runtime.emulator.events import EventCorruption
    from cc_runtime.emulator.profiles import load_profile

    clock, rng = FakeClock(), random.Random(i)
    timer = FakeTimer(clock, corrupt=EventCorruption(load_profile("h100"), seed=i).corrupt)
    return pick(_configs(clock, rng), lambda fn: event_style_time(timer, fn))


def _globaltimer_trial(i: int) -> str:
    clock, rng = FakeClock(), random.Random(i)
    timer = FakeTimer(clock, granularity_ns=32, stamp_cost_ns=1500)
    return pick(_configs(clock, rng), lambda fn: cc_style_time(timer, fn))


@pytest.mark.timeout(120)
def test_corrupted_events_mislead_the_tuner():
    pytest.importorskip("cc_runtime.emulator.events")
    acc = accuracy(TRIALS, _event_trial, FASTEST)
    assert acc < 0.6, f"event-timed tuner was right in {acc:.0%} of trials despite corruption"


@pytest.mark.timeout(120)
def test_globaltimer_tuner_picks_the_fastest_every_time():
    assert accuracy(TRIALS, _globaltimer_trial, FASTEST) == 1.0


def test_uncorrupted_events_would_have_been_right():
    """Control: the same event tuner without corruption is right, so the corruption is the cause."""
    def trial(i: int) -> str:
        clock, rng = FakeClock(), random.Random(i)
        timer = FakeTimer(clock, corrupt=lambda ms: ms)
        return pick(_configs(clock, rng), lambda fn: event_style_time(timer, fn))

    assert accuracy(10, trial, FASTEST) == 1.0
