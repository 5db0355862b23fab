"""Event-timing corruption: reproducible by seed, sometimes negative, absent when CC is off."""

from __future__ import annotations

from cc_runtime.emulator import OFF, EventCorruption, load_profile


def test_same_seed_same_readings_and_some_negative() -> None:
    p = load_profile("h100")
    first, second = EventCorruption(p, seed=7), EventCorruption(p, seed=7)
    a = [first.corrupt(1.0) for _ in range(500)]
    b = [second.corrupt(1.0) for _ in range(500)]
    assert a == b
    assert any(v < 0 for v in a), "CC event timings must sometimes be negative"
    assert any(v == 1.0 for v in a) and any(v != 1.0 for v in a)
    assert first.corrupted == sum(v != 1.0 for v in a)


def test_other_seed_other_readings_and_reset() -> None:
    p = load_profile("b300")
    ec = EventCorruption(p, seed=1)
    a = [ec.corrupt(2.0) for _ in range(200)]
    assert a != [EventCorruption(p, seed=2).corrupt(2.0) for _ in range(200)]
    ec.reset()
    assert [ec.corrupt(2.0) for _ in range(200)] == a


def test_cc_off_leaves_timings_alone() -> None:
    ec = EventCorruption(OFF, seed=0)
    assert [ec.corrupt(0.5) for _ in range(100)] == [0.5] * 100
