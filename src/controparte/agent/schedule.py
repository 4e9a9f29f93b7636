"""When the agent beats next: pure functions of the interval, the failure count and
a random source (injected, so tests fix it).

- After a success the next beat comes after the interval, jittered by +-10% so that
  agents started together (a power cut, a mass reboot) drift apart.
- After a failure the agent retries with exponential backoff and "equal jitter": the
  n-th consecutive failure waits between half and all of `base * 2**(n-1)`, capped at
  the interval (never slower than beating normally) and at `MAX_BACKOFF`.
- A `Retry-After` from the server (429, 503) is a floor: the agent waits at least that.
"""

from __future__ import annotations

import math
import random
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

DEFAULT_INTERVAL = 300.0
"""Seconds between heartbeats when neither the flag nor the server says."""
MIN_INTERVAL = 1.0
MAX_INTERVAL = 86_400.0
JITTER = 0.10
"""The next beat comes after the interval times a factor in [1 - JITTER, 1 + JITTER]."""
BACKOFF_BASE = 1.0
MAX_BACKOFF = 300.0
MAX_RETRY_AFTER = 3_600.0
"""A Retry-After longer than this is taken as this (a misconfigured server must not
silence an agent for days)."""


def choose_interval(flag: float | None, server: float | None) -> float:
    """The interval in force: the `--interval` flag, else what the server asked for in
    `heartbeat_interval`, else `DEFAULT_INTERVAL`; a server value that is not a sane
    number of seconds is ignored."""
    if flag is not None:
        return flag
    if server is not None and math.isfinite(server) and MIN_INTERVAL <= server <= MAX_INTERVAL:
        return server
    return DEFAULT_INTERVAL


def next_beat_delay(interval: float, rng: random.Random) -> float:
    """Seconds until the next heartbeat after a success: the interval +-10%."""
    return interval * rng.uniform(1.0 - JITTER, 1.0 + JITTER)


def backoff_cap(interval: float) -> float:
    """The longest backoff between retries: the interval, at most `MAX_BACKOFF`."""
    return max(BACKOFF_BASE, min(interval, MAX_BACKOFF))


def backoff_delay(
    failures: int, rng: random.Random, *, base: float = BACKOFF_BASE, cap: float = MAX_BACKOFF
) -> float:
    """Seconds to wait after the `failures`-th consecutive failure (1 for the first):
    between half and all of min(cap, base * 2**(failures - 1))."""
    if failures < 1:
        raise ValueError("failures counts from 1")
    ceiling = min(cap, base * 2.0 ** min(failures - 1, 62))
    return ceiling / 2 + rng.uniform(0.0, ceiling / 2)


def retry_delay(
    failures: int,
    rng: random.Random,
    *,
    interval: float,
    retry_after: float | None = None,
) -> float:
    """Seconds to wait before retrying: the backoff, but at least the server's
    Retry-After (itself capped at `MAX_RETRY_AFTER`)."""
    delay = backoff_delay(failures, rng, cap=backoff_cap(interval))
    if retry_after is not None:
        delay = max(delay, min(retry_after, MAX_RETRY_AFTER))
    return delay


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """A `Retry-After` header in seconds from `now`: delay-seconds or an HTTP-date
    (RFC 9110 10.2.3). None when absent or unreadable; a date in the past is 0."""
    if value is None:
        return None
    text = value.strip()
    if text.isdigit():
        return float(int(text))
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # "-0000": UTC by RFC 5322
        when = when.replace(tzinfo=UTC)
    seconds = (when - (now or datetime.now(UTC))).total_seconds()
    return max(0.0, seconds)
