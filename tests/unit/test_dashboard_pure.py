"""The dashboard's pure parts: rates from counters, the history as a timeline, an
installation's counterparts with the pair view's path."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest

from controparte.model import Link
from controparte.web.installation import counterparts_of, timeline
from controparte.web.rates import Rate, Rates, Sampler


@pytest.mark.parametrize(
    ("samples", "now", "value", "expected"),
    [
        ([], 0.5, 5.0, None),  # started less than a second ago
        ([], 10.0, 50.0, Rate(5.0, 10.0, since_start=True)),  # no sample: since the start
        ([(9.5, 10.0)], 10.0, 20.0, Rate(2.0, 10.0, since_start=True)),  # too recent
        ([(0.0, 10.0)], 2.0, 20.0, Rate(5.0, 2.0, since_start=False)),
        ([(0.0, 10.0), (30.0, 40.0)], 60.0, 70.0, Rate(1.0, 60.0, since_start=False)),
        ([(0.0, 0.0), (50.0, 100.0)], 100.0, 150.0, Rate(1.0, 50.0, since_start=False)),
        ([(0.0, 50.0)], 2.0, 10.0, None),  # went down: another process's
    ],
)
def test_rates(
    samples: list[tuple[float, float]], now: float, value: float, expected: Rate | None
) -> None:
    rates = Rates(started=0.0, window=60.0)
    for at, seen in samples:
        rates.observe(at, {"x": seen})
    assert rates.rates(now, {"x": value}) == {"x": expected}


def test_rates_keep_a_bounded_ring_and_a_counter_new_since_the_sample() -> None:
    rates = Rates(started=0.0, window=60.0, every=5.0)
    for at in range(1000):
        rates.observe(float(at), {"x": float(at)})
    assert len(rates._samples) == 14  # a minute of samples five seconds apart, and two
    found = rates.rates(1000.0, {"x": 1000.0, "y": 500.0})
    assert found == {"x": Rate(1.0, 14.0, since_start=False), "y": Rate(0.5, 1000.0, True)}


def test_the_sampler_samples_on_the_running_loop() -> None:
    reads: list[int] = []
    fifth = threading.Event()

    def read() -> dict[str, float]:
        reads.append(1)
        if len(reads) == 5:
            fifth.set()
        return {"x": 10.0 * len(reads)}

    async def sample() -> None:
        sampler = Sampler(Rates(started=0.0), read, every=0.01, clock=lambda: float(len(reads)))
        sampler.ensure()
        task = sampler._task
        sampler.ensure()
        assert sampler._task is task  # one task, not two
        assert await asyncio.to_thread(fifth.wait, 10)
        assert 4 <= len(sampler.rates._samples) <= len(reads)

    asyncio.run(sample())


def test_timeline_newest_first_with_what_changed() -> None:
    entries: list[dict[str, Any]] = [
        {"at": "t1", "action": "add", "actor": "cli", "via": "cli", "source": None,
         "old": None, "new": {"label": "a", "kind": "onprem", "ip": "192.0.2.1", "ipv6": None,
                               "port": 1}},
        {"at": "t2", "action": "update", "actor": "ops", "via": "ui", "source": "192.0.2.9",
         "old": {"label": "a", "kind": "onprem", "ip": "192.0.2.1", "ipv6": None, "port": 1},
         "new": {"label": "b", "kind": "onprem", "ip": "192.0.2.1", "ipv6": None, "port": 1}},
        {"at": "t3", "action": "link", "actor": "cli", "via": "cli", "source": None,
         "old": None, "new": {"a": "A", "b": "B", "feature": "einvoice"}},
    ]  # fmt: skip
    events = timeline(entries)
    assert [e.at for e in events] == ["t3", "t2", "t1"]
    assert events[0].link == {"a": "A", "b": "B", "feature": "einvoice"}
    assert events[1].changes == (("label", "a", "b"),) and not events[1].moved
    assert events[2].moved and ("ip", None, "192.0.2.1") in events[2].changes


def test_counterparts_link_to_the_pair_view_caller_first() -> None:
    links = [Link.create("A-1", "B-2", "einvoice"), Link.create("C-3", "A-1", "sprix")]
    found = counterparts_of("a-1", links, "/ui")
    assert [(c.code, c.feature, c.calls, c.pair) for c in found] == [
        ("B-2", "einvoice", True, "/ui/pair/A-1/B-2/einvoice"),
        ("C-3", "sprix", False, "/ui/pair/C-3/A-1/sprix"),
    ]
