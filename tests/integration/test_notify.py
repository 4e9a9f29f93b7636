"""NOTIFY out over real UDP sockets on loopback: the DNS server (in this process, or a
real `controparte serve`) notifies a dnspython "secondary" (`tests/notifylisten.py`)
of every serial, made through the real registry: the NOTIFY's format and TSIG, one
NOTIFY for a burst of changes, retries until answered with the serial current at each
try, failure answers logged and counted, configuration errors reported at start."""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import dns.flags
import dns.opcode
import dns.rdataclass
import dns.rdatatype
import dns.tsig
import httpx
import pytest

from controparte.dns.notify import Timing
from controparte.dns.server import DnsServer
from controparte.errors import ConfigError
from controparte.model import InstallationChange
from controparte.service.services import Services, open_services
from controparte.settings import Settings, load_settings
from tests.notifylisten import (
    WAIT,
    NotifyListener,
    Received,
    acked,
    bad_signature,
    counted,
    reached,
    refuse,
    silent_first,
    until,
    values,
)
from tests.processes import HOST
from tests.realserver import ServerProcess

pytestmark = pytest.mark.integration

KEY_NAME = "xfr.example.test."
WINDOW = Timing().window


def settings_for(data: Path, notify: str, **env: str) -> Settings:
    return load_settings(
        env={
            "CONTROPARTE_DATA": str(data),
            "CONTROPARTE_DNS": f"{HOST}:0",
            "CONTROPARTE_ALLOW_NON_GLOBAL": "1",
            "CONTROPARTE_NOTIFY": notify,
            **{f"CONTROPARTE_{k.upper()}": v for k, v in env.items()},
        }
    )


@pytest.fixture
def services(tmp_path: Path) -> Iterator[Services]:
    """The service layer over a fresh data directory, with one installation."""
    opened = open_services(settings_for(tmp_path, ""))
    opened.registry.add("NOTE-1", "note", ipv4="192.0.2.1")
    yield opened
    opened.close()


def transfer_key(services: Services) -> dns.tsig.Key:
    made = services.access.create_transfer_key(KEY_NAME)
    return dns.tsig.Key(made.name, made.secret, made.algorithm)


def serve(
    services: Services, notify: str, scenario: Callable[[DnsServer], Awaitable[None]]
) -> None:
    """Run `scenario` with a DnsServer (this process, a free port) notifying `notify`."""
    settings = settings_for(services.settings.data, notify)

    async def main() -> None:
        async with DnsServer(settings, services.store, services=services) as server:
            await scenario(server)

    asyncio.run(main())


def change(services: Services, n: int) -> int:
    """One change to the registry (its own transaction); the serial it made."""
    services.registry.update("NOTE-1", InstallationChange(ipv4=f"10.0.{n // 256}.{n % 256}"))
    return services.store.serial()


def test_each_serial_is_notified_signed_and_as_rfc_1996_says(services: Services) -> None:
    key = transfer_key(services)
    first = services.store.serial()
    with NotifyListener(key) as secondary:

        async def scenario(server: DnsServer) -> None:
            await asyncio.to_thread(secondary.wait_serial, first)  # at start
            second = await asyncio.to_thread(change, services, 1)
            got = await asyncio.to_thread(secondary.wait_serial, second)
            notify = next(r for r in got if r.serial == second)
            check_format(notify, server.config.origin.to_text())
            assert notify.message.had_tsig and notify.message.keyname == key.name  # verified
            assert notify.source[0] == HOST
            answered = counted(secondary.address, "answered")
            await until(reached(server, answered, len(got)), "every NOTIFY answered")
            seen = values(server.metric_families())
            assert seen[acked(secondary.address)] == second
            assert seen[counted(secondary.address, "sent")] == len(got)
            # one NOTIFY per serial; any other was a retry after an answer came too late
            assert seen[counted(secondary.address, "failed")] == len(got) - 2

        serve(services, f"{secondary.address} key={KEY_NAME}", scenario)


def check_format(notify: Received, zone: str) -> None:
    message = notify.message
    assert message.opcode() == dns.opcode.NOTIFY
    assert message.flags & dns.flags.AA
    assert not message.flags & (dns.flags.QR | dns.flags.RD)
    assert [(q.name.to_text(), q.rdtype, q.rdclass) for q in message.question] == [
        (zone, dns.rdatatype.SOA, dns.rdataclass.IN)
    ]
    (soa,) = message.answer
    assert (soa.name.to_text(), soa.rdtype) == (zone, dns.rdatatype.SOA)


def test_one_socket_per_address_family_from_the_source_address(services: Services) -> None:
    """Secondaries on 127.0.0.1 and ::1: each is notified from its family's socket, the
    IPv4 one bound to `notify_source`."""
    with NotifyListener() as four, NotifyListener(host="::1") as six:
        settings = settings_for(
            services.settings.data, f"{four.address}; {six.address}", notify_source=HOST
        )

        async def scenario() -> None:
            async with DnsServer(settings, services.store, services=services) as server:
                for secondary in (four, six):
                    name = counted(secondary.address, "answered")
                    await until(reached(server, name, 1), f"{secondary.address} answering")

        asyncio.run(scenario())
    assert {r.source[0] for r in four.received} == {HOST}
    assert {r.source[0] for r in six.received} == {"::1"}
    serials = {r.serial for r in four.received + six.received}
    assert serials == {services.store.serial()}


def test_a_burst_of_changes_is_coalesced(services: Services) -> None:
    """1,000 changes, each its own transaction (1,000 serials) through the registry:
    at most one NOTIFY per coalescing window, every one with the serial of its time
    (never an older one), the last one with the final serial."""
    with NotifyListener() as secondary:

        async def scenario(_server: DnsServer) -> None:
            start = await asyncio.to_thread(secondary.wait_for, lambda got: len(got) == 1)
            began = time.monotonic()
            last = 0
            for n in range(1000):
                last = await asyncio.to_thread(change, services, n)
            got = await asyncio.to_thread(secondary.wait_serial, last)
            burst = got[len(start) :]
            serials = [r.serial or 0 for r in burst]
            assert serials == sorted(serials) and len(set(serials)) == len(serials)
            assert serials[-1] == last
            span = burst[-1].at - began
            assert len(burst) <= span / WINDOW + 1, (len(burst), span)
            assert len(burst) < 1000

        serve(services, secondary.address, scenario)


def test_an_unanswered_notify_is_retried_with_the_current_serial(services: Services) -> None:
    """Silent for two NOTIFYs: the second (about 1 s later) already carries the serial
    made after the first; the third (about 2 s after the second) is answered."""
    with NotifyListener(reply=silent_first(2)) as secondary:

        async def scenario(server: DnsServer) -> None:
            await asyncio.to_thread(secondary.wait_for, lambda got: len(got) == 1)
            newer = await asyncio.to_thread(change, services, 7)
            got = await asyncio.to_thread(secondary.wait_for, lambda got: len(got) == 3)
            assert [r.serial for r in got[1:]] == [newer, newer]
            assert len({r.message.id for r in got}) == 3  # a new ID for each try
            jitter = 1 - Timing().jitter
            assert got[1].at - got[0].at >= jitter * 1.0 - 0.05
            assert got[2].at - got[1].at >= jitter * 2.0 - 0.05
            await until(
                lambda: values(server.metric_families()).get(acked(secondary.address)) == newer,
                "the acknowledged serial",
            )
            seen = values(server.metric_families())
            assert (
                seen[counted(secondary.address, "sent")],
                seen[counted(secondary.address, "failed")],
            ) == (3, 2)
            assert seen[counted(secondary.address, "answered")] == 1

        serve(services, secondary.address, scenario)
        assert len(secondary.received) == 3  # answered: no more tries


def test_failure_answers_are_counted_and_logged_without_secrets(
    services: Services, caplog: pytest.LogCaptureFixture
) -> None:
    key = transfer_key(services)
    with (
        NotifyListener(key, reply=refuse) as refusing,
        NotifyListener(key, reply=bad_signature) as other_secret,
    ):

        async def scenario(server: DnsServer) -> None:
            for secondary in (refusing, other_secret):
                await until(reached(server, counted(secondary.address, "failed"), 1), "a failure")
            seen = values(server.metric_families())
            for secondary in (refusing, other_secret):
                assert seen[counted(secondary.address, "answered")] == 0
                assert acked(secondary.address) not in seen

        notify = f"{refusing.address} key={KEY_NAME}; {other_secret.address} key={KEY_NAME}"
        caplog.set_level("INFO", logger="controparte")
        serve(services, notify, scenario)
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert any(refusing.address in w and "answered REFUSED" in w for w in warnings), warnings
    assert any(other_secret.address in w and "BADSIG" in w for w in warnings), warnings
    secret = base64.b64encode(key.secret).decode()
    assert all(secret not in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize(
    ("notify", "make_key", "message"),
    [
        (f"{HOST}:5300 key=nope.example.test", False, "nope.example.test., which does not exist"),
        (f"{HOST}:5300 key=admin.tsig.bp.controparte.test", True, "is an update key"),
        (f"{HOST}:5300; {HOST}:5300", False, "named twice"),
    ],
    ids=["missing", "update-key", "twice"],
)
def test_a_bad_secondary_is_a_configuration_error_at_start(
    services: Services, notify: str, make_key: bool, message: str
) -> None:
    if make_key:
        services.access.create_tsig_key(None)  # admin.tsig.<zone>, an update key
    settings = settings_for(services.settings.data, notify)
    with pytest.raises(ConfigError, match=message):
        DnsServer(settings, services.store, services=services)


def test_a_source_address_not_of_this_host_is_a_configuration_error(services: Services) -> None:
    settings = settings_for(services.settings.data, f"{HOST}:5300", notify_source="192.0.2.77")
    server = DnsServer(settings, services.store, services=services)
    with pytest.raises(ConfigError, match=r"notify_source: cannot send NOTIFYs from 192\.0\.2\.77"):
        asyncio.run(server.start())


# -- a real `controparte serve` --------------------------------------------------------------


def test_serve_notifies_serials_made_by_other_processes(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """The serve process hears of changes made by this process through the journal
    and notifies them, signed; its /metrics count them."""
    data = tmp_path_factory.mktemp("data")
    made = open_services(settings_for(data, ""))
    try:
        made.registry.add("NOTE-1", "note", ipv4="192.0.2.1")
        key = transfer_key(made)
    finally:
        made.close()
    with NotifyListener(key) as secondary:
        server = ServerProcess(data, {"CONTROPARTE_NOTIFY": f"{secondary.address} key={KEY_NAME}"})
        with server:
            first = server.serial()
            secondary.wait_serial(first)
            with server.registry() as registry:
                registry.update("NOTE-1", InstallationChange(ipv4="198.51.100.9"))
                second = registry.store.serial()
            assert second != first
            got = secondary.wait_serial(second)
            assert all(r.message.had_tsig for r in got)
            server.wait_http()
            deadline = time.monotonic() + WAIT
            while True:
                text = httpx.get(server.http_url + "/metrics", timeout=10).text
                if f"{acked(secondary.address)} {second}" in text or time.monotonic() > deadline:
                    break
                time.sleep(0.05)
            assert f"{acked(secondary.address)} {second}" in text, text
            assert f"{counted(secondary.address, 'answered')} {len(got)}" in text, text


def test_serve_with_a_missing_notify_key_stops_with_the_error(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    server = ServerProcess(
        tmp_path_factory.mktemp("data"), {"CONTROPARTE_NOTIFY": f"{HOST}:5300 key=nope.test"}
    )
    child = server.spawn()
    try:
        code = child.popen.wait(WAIT)
    finally:
        server.stop()
    assert code != 0
    assert (
        "error: notify: the secondary 127.0.0.1:5300 names the key nope.test., which does not"
        " exist: make one with `controparte tsig-key --transfer nope.test. --out FILE`"
    ) in server.log_text()
