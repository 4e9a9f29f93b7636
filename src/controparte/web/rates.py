"""Rates from counters (heartbeats/s, DNS answers/s for the overview).

`Rates` keeps a ring of samples of the counters (at most a `window` of them, one each
`every` seconds: bounded memory); a rate is the difference between the counters now
and the oldest sample of the last `window` seconds. Until a sample is old enough (the
process has just started, or nothing has sampled yet), the rate is taken since the
process started: a process's counters start at zero. Pure; the clock is the caller's.

`Sampler` takes the samples: a task on the serving event loop, started by the first
request to the dashboard (the HTTP server runs no lifespan), that reads the counters
every `every` seconds."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass

log = logging.getLogger("controparte.web")

WINDOW = 60.0
"""Seconds of samples a rate is taken over, at most."""
EVERY = 5.0
"""Seconds between two samples."""
SHORTEST = 1.0
"""A rate is taken over this many seconds at least."""


@dataclass(frozen=True, slots=True)
class Rate:
    """A counter's rate: `per_s` over the last `over` seconds, or since the process
    started (`since_start`)."""

    per_s: float
    over: float
    since_start: bool


class Rates:
    """Counters' samples (a ring); safe to share between threads. `started`: when the
    process started, on the caller's clock (its counters were zero then)."""

    def __init__(self, started: float, window: float = WINDOW, every: float = EVERY) -> None:
        self.started = started
        self.window = window
        self._samples: deque[tuple[float, dict[str, float]]] = deque(maxlen=int(window / every) + 2)
        self._lock = threading.Lock()

    def observe(self, now: float, counters: Mapping[str, float]) -> None:
        """Record `counters` at `now` (the oldest sample goes when the ring is full)."""
        with self._lock:
            self._samples.append((now, dict(counters)))

    def rates(self, now: float, counters: Mapping[str, float]) -> dict[str, Rate | None]:
        """The rate per second of each of `counters` (read at `now`): over the oldest
        sample of the last `window` seconds that is `SHORTEST` old at least and has the
        counter, else since the process started; None when neither is `SHORTEST` old,
        or the counter went down (another process's)."""
        with self._lock:
            kept = [s for s in self._samples if SHORTEST <= now - s[0] <= self.window]
        found: dict[str, Rate | None] = {}
        for name, value in counters.items():
            since = next(((at, seen[name]) for at, seen in kept if name in seen), None)
            since_start = since is None
            at, before = (self.started, 0.0) if since is None else since
            over = now - at
            ok = over >= SHORTEST and value >= before
            found[name] = Rate((value - before) / over, over, since_start) if ok else None
        return found


class Sampler:
    """Reads the counters (`read`, in a worker thread) into `rates` every `every`
    seconds, on the event loop of the first `ensure` (again on another loop's, once
    that one's task has ended)."""

    def __init__(
        self,
        rates: Rates,
        read: Callable[[], Mapping[str, float]],
        every: float = EVERY,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.rates = rates
        self.read = read
        self.every = every
        self.clock = clock
        self._task: asyncio.Task[None] | None = None

    def ensure(self) -> None:
        """Start sampling on the running loop, unless a sampling task is alive."""
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        while True:
            try:
                counters = await asyncio.to_thread(self.read)
            except Exception:  # the next sample may do: the overview says what it has
                log.exception("the dashboard's rates: reading the counters failed")
            else:
                self.rates.observe(self.clock(), counters)
            await asyncio.sleep(self.every)
