"""NOTIFY to real secondaries: NSD and Knot (tests/secondaries.py), secondaries of
controparte's DNS server, take its signed NOTIFYs (each logs the serial it was notified
of) and answer them (the notifier counts the answers and the serial each acknowledged),
at start and after a change. A minimal accept check: the transfers they then ask for
are tests/integration/test_secondaries.py's business, and so is BIND (it logs no
serial for a NOTIFY before it has the zone: `Secondary.notified`)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from controparte.dns.server import DnsServer
from controparte.model import InstallationChange
from controparte.service.services import Services, open_services
from controparte.settings import Settings, load_settings
from tests.notifylisten import acked, counted, reached, until, values
from tests.processes import HOST, free_port
from tests.secondaries import SECONDARIES, TsigKey

pytestmark = [pytest.mark.integration, pytest.mark.secondaries]

KEY_NAME = "xfr.example.test."
WAIT = 30.0  # seconds: a bound on waiting for an event, never a speed assertion


@dataclass(frozen=True)
class Primary:
    settings: Settings
    services: Services
    key: TsigKey


@pytest.fixture
def primary(tmp_path: Path) -> Iterator[Primary]:
    """The service layer on a free DNS port, one installation, one transfer key."""
    settings = load_settings(
        env={
            "CONTROPARTE_DATA": str(tmp_path / "data"),
            "CONTROPARTE_DNS": f"{HOST}:{free_port()}",
            "CONTROPARTE_ALLOW_NON_GLOBAL": "1",
        }
    )
    services = open_services(settings)
    try:
        services.registry.add("NOTE-1", "note", ipv4="192.0.2.1")
        made = services.access.create_transfer_key(KEY_NAME)
        yield Primary(settings, services, TsigKey(made.name, made.secret, made.algorithm))
    finally:
        services.close()


@pytest.mark.parametrize("kind", ["nsd", "knot"])
def test_a_secondary_accepts_the_notifies(tmp_path: Path, primary: Primary, kind: str) -> None:
    dns = primary.settings.dns
    secondary = SECONDARIES[kind](
        tmp_path / kind, primary.settings.zone, (dns.host, dns.port), primary.key
    )
    address = f"{secondary.host}:{secondary.port}"
    settings = load_settings(
        env={
            "CONTROPARTE_DATA": str(primary.settings.data),
            "CONTROPARTE_DNS": str(dns),
            "CONTROPARTE_ALLOW_NON_GLOBAL": "1",
            "CONTROPARTE_NOTIFY": f"{address} key={KEY_NAME}",
        }
    )
    services = primary.services

    async def accepted(server: DnsServer, serial: int) -> None:
        await asyncio.to_thread(secondary.wait_log, secondary.notified(serial), 1, WAIT)
        await until(reached(server, acked(address), serial), f"{address} acknowledging {serial}")

    async def scenario() -> None:
        async with DnsServer(settings, services.store, services=services) as server:
            await accepted(server, services.store.serial())  # at start
            change = InstallationChange(ipv4="198.51.100.1")
            await asyncio.to_thread(services.registry.update, "NOTE-1", change)
            await accepted(server, services.store.serial())
            seen = values(server.metric_families())
            assert seen[counted(address, "failed")] == 0
            assert seen[counted(address, "answered")] >= 2

    with secondary:
        asyncio.run(scenario())
