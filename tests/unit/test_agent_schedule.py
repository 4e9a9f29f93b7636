"""The agent's schedule: pure functions of interval, failure count and a seeded random
source (no clock, no sockets)."""

from __future__ import annotations

import random
from datetime import UTC, datetime

import pytest

from controparte.agent.schedule import (
    BACKOFF_BASE,
    DEFAULT_INTERVAL,
    MAX_BACKOFF,
    MAX_RETRY_AFTER,
    backoff_cap,
    backoff_delay,
    choose_interval,
    next_beat_delay,
    parse_retry_after,
    retry_delay,
)


class Fixed(random.Random):
    """A random source whose uniform(a, b) is always the point `t` of the way."""

    def __init__(self, t: float) -> None:
        super().__init__(0)
        self.t = t

    def uniform(self, a: float, b: float) -> float:
        return a + (b - a) * self.t


@pytest.mark.parametrize(
    ("flag", "server", "expected"),
    [
        (None, None, DEFAULT_INTERVAL),
        (None, 60.0, 60.0),
        (30.0, 60.0, 30.0),  # the flag wins
        (None, 0.0, DEFAULT_INTERVAL),  # nonsense from the server is ignored
        (None, -5.0, DEFAULT_INTERVAL),
        (None, float("nan"), DEFAULT_INTERVAL),
        (None, float("inf"), DEFAULT_INTERVAL),
        (None, 10 * 86_400.0, DEFAULT_INTERVAL),
    ],
)
def test_choose_interval(flag: float | None, server: float | None, expected: float) -> None:
    assert choose_interval(flag, server) == expected


@pytest.mark.parametrize(("t", "expected"), [(0.0, 270.0), (0.5, 300.0), (1.0, 330.0)])
def test_next_beat_is_the_interval_within_ten_percent(t: float, expected: float) -> None:
    assert next_beat_delay(300.0, Fixed(t)) == pytest.approx(expected)


def test_next_beat_jitter_spreads_agents_apart() -> None:
    rng = random.Random(7)
    delays = [next_beat_delay(100.0, rng) for _ in range(2000)]
    assert min(delays) >= 90.0
    assert max(delays) <= 110.0
    assert max(delays) - min(delays) > 15.0  # spread over (nearly) the whole band


@pytest.mark.parametrize(
    ("failures", "low", "high"),
    [(1, 0.5, 1.0), (2, 1.0, 2.0), (3, 2.0, 4.0), (4, 4.0, 8.0), (9, 128.0, 256.0)],
)
def test_backoff_doubles_with_equal_jitter(failures: int, low: float, high: float) -> None:
    assert backoff_delay(failures, Fixed(0.0)) == pytest.approx(low)
    assert backoff_delay(failures, Fixed(1.0)) == pytest.approx(high)


def test_backoff_is_capped_even_after_very_many_failures() -> None:
    for failures in (10, 20, 100, 10_000):
        assert MAX_BACKOFF / 2 <= backoff_delay(failures, Fixed(0.3)) <= MAX_BACKOFF
    assert backoff_delay(50, Fixed(1.0), cap=10.0) == pytest.approx(10.0)


def test_backoff_counts_failures_from_one() -> None:
    with pytest.raises(ValueError, match="from 1"):
        backoff_delay(0, Fixed(0.5))


@pytest.mark.parametrize(
    ("interval", "cap"), [(300.0, 300.0), (3600.0, MAX_BACKOFF), (5.0, 5.0), (0.2, BACKOFF_BASE)]
)
def test_backoff_never_waits_longer_than_the_interval(interval: float, cap: float) -> None:
    assert backoff_cap(interval) == cap


def test_retry_delay_is_at_least_retry_after() -> None:
    assert retry_delay(1, Fixed(0.5), interval=300.0, retry_after=120.0) == 120.0
    # a Retry-After shorter than the backoff does not shorten it
    assert retry_delay(8, Fixed(1.0), interval=300.0, retry_after=1.0) == pytest.approx(128.0)
    # an absurd Retry-After is capped
    assert retry_delay(1, Fixed(0.5), interval=300.0, retry_after=1e9) == MAX_RETRY_AFTER
    assert retry_delay(1, Fixed(1.0), interval=300.0) == pytest.approx(1.0)


NOW = datetime(2025, 3, 1, 12, 0, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, None),
        ("120", 120.0),
        (" 0 ", 0.0),
        ("Sat, 01 Mar 2025 12:00:30 GMT", 30.0),
        ("Sat, 01 Mar 2025 11:00:00 GMT", 0.0),  # in the past: now
        ("Sat, 01 Mar 2025 12:01:00 -0000", 60.0),
        ("-5", None),
        ("soon", None),
        ("", None),
        ("1.5", None),
    ],
)
def test_parse_retry_after(header: str | None, expected: float | None) -> None:
    assert parse_retry_after(header, NOW) == expected
