"""Rates from counters (heartbeats/s, DNS answers/s for the overview): the counters are
sampled whenever the overview is read, and a rate is the difference between now and the
oldest sample of the last `window` seconds. Pure; the clock is the caller's."""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Mapping

WINDOW = 60.0
"""Seconds of samples a rate is taken over, at most."""
SHORTEST = 1.0
"""A rate needs two samples this many seconds apart at least."""


class Rates:
    """Counters' samples; safe to share between threads."""

    def __init__(self, window: float = WINDOW) -> None:
        self.window = window
        self._samples: deque[tuple[float, Mapping[str, float]]] = deque()
        self._lock = threading.Lock()

    def observe(self, now: float, counters: Mapping[str, float]) -> dict[str, float | None]:
        """Record `counters` at `now`; the rate per second of each, None when no sample
        is old enough yet, or when the counter was not there then (or went down: a
        restart)."""
        with self._lock:
            while self._samples and now - self._samples[0][0] > self.window:
                self._samples.popleft()
            oldest = self._samples[0] if self._samples else None
            self._samples.append((now, dict(counters)))
        rates: dict[str, float | None] = {}
        for name, value in counters.items():
            rates[name] = None
            if oldest is None or now - oldest[0] < SHORTEST:
                continue
            before = oldest[1].get(name)
            if before is not None and value >= before:
                rates[name] = (value - before) / (now - oldest[0])
        return rates
