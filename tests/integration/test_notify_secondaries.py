"""NOTIFY to real secondaries: NSD and Knot, started by the test on free loopback ports
in temporary directories, take controparte's signed NOTIFYs (each logs the serial it
was notified of) and answer them (the notifier counts the answers and the serial each
acknowledged), at start and after a change. A minimal accept check: the shared harness
for NSD and Knot as secondaries (tests/secondaries.py) is another part of issue 8; the
transfers they then ask for are not this test's business."""

from __future__ import annotations

import asyncio
import base64
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import dns.tsig
import pytest

from controparte.dns.server import DnsServer
from controparte.model import InstallationChange
from controparte.service.services import Services, open_services
from controparte.settings import Settings, load_settings
from tests.debtools import tool
from tests.notifylisten import acked, counted, reached, until, values
from tests.processes import HOST, LoggedProcess, free_port

pytestmark = pytest.mark.integration

KEY_NAME = "xfr.example.test."
WAIT = 30.0  # seconds: a bound on waiting for an event, never a speed assertion


@dataclass(frozen=True)
class Secondary:
    process: LoggedProcess
    port: int
    notified: str
    """A regular expression (with `{serial}`) for the log line of a NOTIFY accepted."""

    @property
    def address(self) -> str:
        return f"{HOST}:{self.port}"


@dataclass(frozen=True)
class Primary:
    settings: Settings
    services: Services
    key: dns.tsig.Key


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
        yield Primary(settings, services, dns.tsig.Key(made.name, made.secret, made.algorithm))
    finally:
        services.close()


def nsd_conf(home: Path, port: int, primary: Primary) -> str:
    """NSD as a secondary of the zone from the primary, everything under `home`."""
    key = primary.key
    return f"""server:
    ip-address: {HOST}@{port}
    do-ip6: no
    username: ""
    chroot: ""
    zonesdir: "{home}"
    database: ""
    zonelistfile: "{home}/zone.list"
    xfrdfile: "{home}/xfrd.state"
    xfrdir: "{home}"
    pidfile: "{home}/nsd.pid"
    verbosity: 2
    zonefiles-write: 0
key:
    name: "{key.name}"
    algorithm: hmac-sha256
    secret: "{base64.b64encode(key.secret).decode()}"
zone:
    name: "{primary.settings.zone}"
    zonefile: "zone.db"
    request-xfr: {primary.settings.dns.host}@{primary.settings.dns.port} {key.name}
    allow-notify: {HOST} {key.name}
"""


def knot_conf(home: Path, port: int, primary: Primary) -> str:
    """Knot as a secondary of the zone from the primary, everything under `home`."""
    key = primary.key
    return f"""server:
    rundir: "{home}"
    listen: {HOST}@{port}
log:
  - target: stderr
    any: info
database:
    storage: "{home}"
key:
  - id: {key.name}
    algorithm: hmac-sha256
    secret: {base64.b64encode(key.secret).decode()}
remote:
  - id: primary
    address: {primary.settings.dns.host}@{primary.settings.dns.port}
    key: {key.name}
acl:
  - id: from-primary
    address: {HOST}
    key: {key.name}
    action: notify
template:
  - id: default
    storage: "{home}"
zone:
  - domain: {primary.settings.zone}
    master: primary
    acl: [from-primary]
    file: zone.db
    zonefile-sync: -1
    zonefile-load: none
"""


def running(
    home: Path,
    primary: Primary,
    conf: Callable[[Path, int, Primary], str],
    command: list[str],
    ready: str,
    notified: str,
) -> Iterator[Secondary]:
    """`command` + its configuration file (written by `conf` into `home`) on a free
    port, in the foreground, logging to its stderr; once it logs `ready`, the
    secondary; stopped afterwards. `notified` as `Secondary.notified`, `{zone}` in it
    the zone's name."""
    home.mkdir()
    port = free_port()
    path = home / "secondary.conf"
    path.write_text(conf(home, port, primary))
    process = LoggedProcess(
        [*command, str(path)], home / "log", {"PATH": "/usr/sbin:/usr/bin"}, name=command[0]
    )
    try:
        process.wait_log(ready, timeout=WAIT)
        zone = re.escape(primary.settings.zone)
        yield Secondary(process, port, notified.replace("{zone}", zone))
    finally:
        process.stop()


@pytest.fixture
def nsd(tmp_path: Path, primary: Primary) -> Iterator[Secondary]:
    yield from running(
        tmp_path / "nsd",
        primary,
        nsd_conf,
        [tool("nsd"), "-d", "-c"],
        r"nsd started",
        rf"notify for {{zone}} from {HOST} serial {{serial}}$",
    )


@pytest.fixture
def knot(tmp_path: Path, primary: Primary) -> Iterator[Secondary]:
    yield from running(
        tmp_path / "knot",
        primary,
        knot_conf,
        [tool("knotd"), "-c"],
        r"server started",
        rf"\[{{zone}}\] notify, incoming, remote {HOST}@\d+, serial {{serial}}$",
    )


def test_nsd_and_knot_accept_the_notifies(
    primary: Primary, nsd: Secondary, knot: Secondary
) -> None:
    secondaries = (nsd, knot)
    notify = "; ".join(f"{s.address} key={KEY_NAME}" for s in secondaries)
    settings = load_settings(
        env={
            "CONTROPARTE_DATA": str(primary.settings.data),
            "CONTROPARTE_DNS": str(primary.settings.dns),
            "CONTROPARTE_ALLOW_NON_GLOBAL": "1",
            "CONTROPARTE_NOTIFY": notify,
        }
    )
    services = primary.services

    async def accepted(server: DnsServer, serial: int) -> None:
        for s in secondaries:
            await asyncio.to_thread(s.process.wait_log, s.notified.format(serial=serial), 1, WAIT)
            name = acked(s.address)
            await until(reached(server, name, serial), f"{s.address} acknowledging {serial}")

    async def scenario() -> None:
        async with DnsServer(settings, services.store, services=services) as server:
            await accepted(server, services.store.serial())  # at start
            change = InstallationChange(ipv4="198.51.100.1")
            await asyncio.to_thread(services.registry.update, "NOTE-1", change)
            await accepted(server, services.store.serial())
            seen = values(server.metric_families())
            for s in secondaries:
                assert seen[counted(s.address, "failed")] == 0
                assert seen[counted(s.address, "answered")] >= 2

    asyncio.run(scenario())
