"""`DnsServer` in this process, on a free 127.0.0.1 port: UPDATE leaves the UDP thread
and the TCP handler for the executor and comes back signed; without services, NOTIMP."""

from __future__ import annotations

import asyncio
from pathlib import Path

import dns.message
import dns.query
import dns.tsig
import dns.update
import pytest
from dns.rcode import Rcode

from controparte.dns.server import DnsServer
from controparte.service.services import open_services
from controparte.settings import Settings, load_settings

pytestmark = pytest.mark.integration

ZONE = "bp.controparte.test."


def settings_for(data: Path, database: str = "") -> Settings:
    return load_settings(
        env={
            "CONTROPARTE_DATA": str(data),
            "CONTROPARTE_DATABASE": database,
            "CONTROPARTE_DNS": "127.0.0.1:0",
            "CONTROPARTE_ALLOW_NON_GLOBAL": "1",
            "CONTROPARTE_JOURNAL_POLL_INTERVAL": "60",  # only the UPDATE path catches up
        }
    )


def change(key: dns.tsig.Key | None, address: str) -> dns.update.UpdateMessage:
    message = dns.update.UpdateMessage(ZONE)
    message.add("alpha", 60, "A", address)
    if key is not None:
        message.use_tsig(key)
    return message


def served(port: int, tcp: bool) -> set[str]:
    query = dns.message.make_query(f"alpha.{ZONE}", "A")
    send = dns.query.tcp if tcp else dns.query.udp
    response = send(query, "127.0.0.1", port=port, timeout=5)
    return {rd.to_text() for rrset in response.answer for rd in rrset}


def test_update_over_udp_and_tcp_with_services(tmp_path: Path, database: str) -> None:
    settings = settings_for(tmp_path, database)
    services = open_services(settings)
    services.registry.add("ALPHA-1", "alpha", ipv4="192.0.2.1")
    made = services.access.create_tsig_key("ALPHA-1")
    key = dns.tsig.Key(made.name, made.secret)

    async def scenario() -> None:
        async with DnsServer(settings, services.store, services=services) as server:
            for tcp, address in ((False, "192.0.2.21"), (True, "192.0.2.22")):
                send = dns.query.tcp if tcp else dns.query.udp
                response = await asyncio.to_thread(
                    send, change(key, address), "127.0.0.1", port=server.port, timeout=5
                )
                assert response.rcode() == Rcode.NOERROR
                # The journal poll is a minute: the UPDATE path itself swapped the zone.
                assert await asyncio.to_thread(served, server.port, tcp) == {address}
            assert server.updater is not None
            assert server.updater.counts["NOERROR"] == 2
            assert server.updates_dropped == 0

    try:
        asyncio.run(scenario())
    finally:
        services.close()


def test_update_without_services_is_notimp(tmp_path: Path) -> None:
    settings = settings_for(tmp_path)

    async def scenario() -> None:
        async with DnsServer(settings) as server:
            for send in (dns.query.udp, dns.query.tcp):
                response = await asyncio.to_thread(
                    send, change(None, "192.0.2.9"), "127.0.0.1", port=server.port, timeout=5
                )
                assert response.rcode() == Rcode.NOTIMP

    asyncio.run(scenario())
