"""Seeded, reproducible corruption of CUDA event timings, as CC produces it.

Under CC ``cudaEventElapsedTime`` is unreliable and can return negative values (TensorRT PR 4740,
NVIDIA bug 5598617; FlashInfer PRs 3638/3870). Nobody has published the distribution, so the one here
is a guess, parameterised by the profile's ``event_*`` fields: with probability ``event_corrupt_prob``
a reading becomes ``ms * (1 + N(0, event_rel_sigma)) + N(0, event_abs_sigma_ms)``, and with
probability ``event_negative_prob`` a corrupted reading's sign is flipped (forced negative). What
matters for the fixes that depend on it is only that event timings are wrong often enough, and
sometimes negative, to make ``min(time)`` autotuning pick near-random configurations.
"""

from __future__ import annotations

import random
import threading

from .profiles import Profile


class EventCorruption:
    """``corrupt(ms)`` returns the reading an application would see. Same seed, same sequence."""

    def __init__(self, profile: Profile, seed: int = 0) -> None:
        self.profile = profile
        self.seed = seed
        self._rng = random.Random(seed)
        self._lock = threading.Lock()  # readings from many threads still form one reproducible sequence
        self.readings = 0
        self.corrupted = 0

    def corrupt(self, ms: float) -> float:
        p = self.profile
        with self._lock:
            self.readings += 1
            if not p.cc or self._rng.random() >= p.event_corrupt_prob:
                return ms
            self.corrupted += 1
            value = ms * (1.0 + self._rng.gauss(0.0, p.event_rel_sigma)) + self._rng.gauss(0.0, p.event_abs_sigma_ms)
            if self._rng.random() < p.event_negative_prob:
                value = -abs(value) if value != 0 else -p.event_abs_sigma_ms
            return value

    def reset(self, seed: int | None = None) -> None:
        with self._lock:
            self.seed = self.seed if seed is None else seed
            self._rng = random.Random(self.seed)
            self.readings = self.corrupted = 0
