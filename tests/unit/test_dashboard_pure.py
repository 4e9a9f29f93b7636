"""The dashboard's pure parts: rates from counters, the history as a timeline, an
installation's counterparts with the pair view's path."""

from __future__ import annotations

from typing import Any

import pytest

from controparte.model import Link
from controparte.web.installation import counterparts_of, timeline
from controparte.web.rates import Rates


@pytest.mark.parametrize(
    ("samples", "expected"),
    [
        ([(0.0, 10.0)], None),  # one sample: no rate yet
        ([(0.0, 10.0), (0.5, 20.0)], None),  # too close together
        ([(0.0, 10.0), (2.0, 20.0)], 5.0),
        ([(0.0, 10.0), (30.0, 40.0), (60.0, 70.0)], 1.0),  # over the oldest in the window
        ([(0.0, 0.0), (50.0, 100.0), (100.0, 150.0)], 1.0),  # the first fell out
        ([(0.0, 50.0), (2.0, 10.0)], None),  # went down: a restart
    ],
)
def test_rates(samples: list[tuple[float, float]], expected: float | None) -> None:
    rates = Rates(window=60.0)
    found: dict[str, float | None] = {}
    for at, value in samples:
        found = rates.observe(at, {"x": value})
    assert found["x"] == expected


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
