"""A change of what the apex publishes (NS, glue, SOA fields, TTLs) with no journal
entry: the next `controparte serve` serves a new serial, and an IXFR from the old one is
answered with the whole zone (AXFR-style), so secondaries pick the change up."""

from __future__ import annotations

import asyncio
from pathlib import Path

import dns.message
import dns.query
import dns.rdatatype
import dns.rrset
import dns.tsig
import pytest

from controparte.dns.server import DnsServer
from controparte.service.services import open_services
from controparte.settings import Settings, load_settings

pytestmark = pytest.mark.integration

ZONE = "bp.controparte.test."
KEY = "xfr.example.test."


def settings_for(data: Path, ttl: int) -> Settings:
    return load_settings(
        env={
            "CONTROPARTE_DATA": str(data),
            "CONTROPARTE_DNS": "127.0.0.1:0",
            "CONTROPARTE_ALLOW_NON_GLOBAL": "1",
            "CONTROPARTE_TTL": str(ttl),
            "CONTROPARTE_TRANSFER_ALLOW": f"key={KEY}",
        }
    )


def ixfr(port: int, serial: int, key: dns.tsig.Key) -> list[dns.rrset.RRset]:
    """The answer records of an IXFR from `serial` (one message: the zone is small)."""
    query = dns.message.make_query(ZONE, dns.rdatatype.IXFR)
    query.authority.append(dns.rrset.from_text(ZONE, 0, "IN", "SOA", f". . {serial} 0 0 0 0"))
    query.use_tsig(key)
    response = dns.query.tcp(query, "127.0.0.1", port=port, timeout=5, one_rr_per_rrset=True)
    return [r for r in response.answer]


def test_a_new_ttl_moves_the_serial_and_ixfr_sends_the_whole_zone(tmp_path: Path) -> None:
    first = settings_for(tmp_path, 60)
    services = open_services(first)
    services.registry.add("ALPHA-1", "alpha", ipv4="192.0.2.1")
    made = services.access.create_transfer_key(KEY)
    key = dns.tsig.Key(made.name, made.secret)

    async def serve(settings: Settings) -> tuple[int, list[dns.rrset.RRset]]:
        async with DnsServer(settings, services.store, services=services) as server:
            serial = server.engine.zone.serial
            return serial, await asyncio.to_thread(ixfr, server.port, old, key)

    try:
        old = services.store.serial()
        served, answer = asyncio.run(serve(first))
        assert served == old
        assert [r.rdtype for r in answer] == [dns.rdatatype.SOA]  # up to date
        again, answer = asyncio.run(serve(settings_for(tmp_path, 60)))
        assert again == old  # the same configuration: nothing moves
        moved, answer = asyncio.run(serve(settings_for(tmp_path, 120)))
        assert moved == old + 1
        soa_serials = [r[0].serial for r in answer if r.rdtype == dns.rdatatype.SOA]
        assert soa_serials == [moved, moved]  # AXFR-style: the new SOA first and last
        assert {r.ttl for r in answer} == {120}
        assert any(r.rdtype == dns.rdatatype.A for r in answer)
    finally:
        services.close()
