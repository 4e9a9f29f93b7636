"""The overview: installations by kind, how many are stale, the changes to what DNS
serves in the last hour (the journal's entries), heartbeats/s and DNS answers/s of this
process (`rates.py`: over the last minute of its counters' samples, or since it
started), and each secondary's serial (what it last
transferred completely, when the DNS server runs in this process)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import timedelta

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from controparte.model.installation import utcnow
from controparte.service.metrics import ZONE_SERIAL, Family
from controparte.store.base import RegistrySummary
from controparte.web.pages import render, web_of
from controparte.web.rates import Rate
from controparte.web.session import signed_in

HEARTBEATS = "controparte_heartbeats_total"
DNS_QUERIES = "controparte_dns_queries_total"
SECONDARY_SERIAL = "controparte_secondary_serial"
CHANGES_OVER = timedelta(hours=1)


@dataclass(frozen=True, slots=True)
class Overview:
    summary: RegistrySummary
    heartbeats: Rate | None
    answers: Rate | None
    zone_serial: int | None
    secondaries: tuple[tuple[str, int], ...]
    """(peer, serial) of each secondary that transferred the zone."""

    @property
    def total(self) -> int:
        return sum(self.summary.by_kind.values())


def totals(families: list[Family]) -> dict[str, float]:
    """Each family's samples summed, by name."""
    return {f.name: sum(s.value for s in f.samples) for f in families}


def counters(families: list[Family]) -> dict[str, float]:
    """The counters the overview shows the rates of (those this process has)."""
    found = totals(families)
    return {name: found[name] for name in (HEARTBEATS, DNS_QUERIES) if name in found}


def secondaries(families: list[Family]) -> tuple[tuple[str, int], ...]:
    """(peer, serial) from the secondaries' serial gauge, by peer."""
    found = [
        (dict(s.labels).get("peer", "?"), int(s.value))
        for f in families
        if f.name == SECONDARY_SERIAL
        for s in f.samples
    ]
    return tuple(sorted(found))


def overview(request: Request) -> Response:
    session = signed_in(request)
    web = web_of(request)
    settings = web.services.settings
    now = utcnow()
    summary = web.services.store.summary(
        now - timedelta(seconds=settings.stale_after), now - CHANGES_OVER
    )
    families = web.families()
    rates = web.rates.rates(time.monotonic(), counters(families))
    serial = totals(families).get(ZONE_SERIAL)
    shown = Overview(
        summary,
        rates.get(HEARTBEATS),
        rates.get(DNS_QUERIES),
        None if serial is None else int(serial),
        secondaries(families),
    )
    return render(request, "overview.html", session, view=shown, settings=settings)


routes = [Route("/", overview, methods=["GET"])]
