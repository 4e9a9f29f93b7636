"""The UPDATE handler (`controparte.dns.updater`): request bytes in, response bytes out,
TSIG (RFC 8945) and the registry write in between, over a real store on each engine
(SQLite in a temporary directory, a fresh PostgreSQL database). No sockets.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import dns.message
import dns.name
import dns.opcode
import dns.rcode
import dns.rdtypes.ANY.TSIG
import dns.rrset
import dns.tsig
import dns.update
import pytest
from dns.rcode import Rcode
from dns.rdataclass import RdataClass
from dns.rdatatype import RdataType

from controparte.dns.engine import Engine
from controparte.dns.updater import Updater, UpdateResult, is_update
from controparte.dns.zone import load_zone
from controparte.errors import StorageError, ValidationError
from controparte.model import InstallationChange, ZoneConfig
from controparte.service.registry import RegistryReader
from controparte.service.services import Services, open_services
from controparte.settings import load_settings

ZONE = "bp.controparte.test."
PEER = "192.0.2.50"


@pytest.fixture
def services(tmp_path: Path, database: str) -> Iterator[Services]:
    settings = load_settings(
        env={
            "CONTROPARTE_DATA": str(tmp_path),
            "CONTROPARTE_DATABASE": database,
            "CONTROPARTE_ALLOW_NON_GLOBAL": "1",
        }
    )
    opened = open_services(settings)
    opened.registry.add("ALPHA-1", "alpha", ipv4="192.0.2.1", port=4443)
    opened.registry.add("BETA-2", "beta", ipv4="198.51.100.2")
    yield opened
    opened.close()


@pytest.fixture
def updater(services: Services) -> Updater:
    return Updater(services, ZoneConfig.from_settings(services.settings))


def key_of(services: Services, code: str | None) -> dns.tsig.Key:
    made = services.access.create_tsig_key(code)
    return dns.tsig.Key(made.name, made.secret, made.algorithm)


def handle(updater: Updater, services: Services, wire: bytes) -> UpdateResult:
    zone = load_zone(services.store, updater.config)
    return updater.handle(wire, PEER, zone)


def update(*steps: tuple[str, ...], zone: str = ZONE) -> dns.update.UpdateMessage:
    """An UPDATE: ("add", name, type, data), ("delete", name[, type[, data]]),
    ("present", name[, type]) or ("absent", name[, type])."""
    message = dns.update.UpdateMessage(zone)
    for op, *args in steps:
        if op == "add":
            message.add(args[0], 60, args[1], args[2])
        else:
            getattr(message, op)(*args)
    return message


def tsig_template(key: dns.tsig.Key, at: int, qid: int) -> dns.rdtypes.ANY.TSIG.TSIG:
    """An unsigned TSIG record for `key`, Time Signed `at`, fudge 300."""
    return dns.rdtypes.ANY.TSIG.TSIG(  # type: ignore[no-untyped-call]
        RdataClass.ANY, RdataType.TSIG, key.algorithm, at, 300, b"", qid, 0, b""
    )


def sign(
    wire: bytes, key: dns.tsig.Key, template: dns.rdtypes.ANY.TSIG.TSIG, at: int, mac: bytes
) -> dns.rdtypes.ANY.TSIG.TSIG:
    """The TSIG record of `wire` (without TSIG) signed with `key` at `at`."""
    rdata, _ = dns.tsig.sign(wire, key, template, at, mac)  # type: ignore[no-untyped-call]
    assert isinstance(rdata, dns.rdtypes.ANY.TSIG.TSIG)
    return rdata


def signed(message: dns.message.Message, key: dns.tsig.Key, at: int | None = None) -> bytes:
    """`message` signed with `key`, at time `at` (default: now)."""
    if at is None:
        message.use_tsig(key)
        return message.to_wire()
    unsigned = message.to_wire()
    rdata = sign(unsigned, key, tsig_template(key, at, message.id), at, b"")
    message.tsig = dns.rrset.from_rdata(key.name, 0, rdata)
    return message.to_wire()


def request_mac(wire: bytes) -> bytes:
    mac = dns.message.from_wire(wire, keyring=False).mac
    assert mac is not None
    return mac


def verified(response: bytes | None, key: dns.tsig.Key, wire: bytes) -> dns.message.Message:
    """The response, its TSIG checked with `key` over the request's MAC."""
    assert response is not None
    return dns.message.from_wire(response, keyring=key, request_mac=request_mac(wire))


def unverified(response: bytes | None) -> dns.message.Message:
    assert response is not None
    return dns.message.from_wire(response, keyring=False)


def tsig_of(message: dns.message.Message) -> dns.rdtypes.ANY.TSIG.TSIG:
    assert message.tsig is not None
    rdata = message.tsig[0]
    assert isinstance(rdata, dns.rdtypes.ANY.TSIG.TSIG)
    return rdata


# -- success ------------------------------------------------------------------------------


def test_own_update_is_applied_and_the_response_signed(
    updater: Updater, services: Services
) -> None:
    key = key_of(services, "ALPHA-1")
    wire = signed(update(("add", "alpha", "A", "192.0.2.9")), key)
    result = handle(updater, services, wire)
    response = verified(result.response, key, wire)
    assert response.rcode() == Rcode.NOERROR
    assert response.opcode() == dns.opcode.UPDATE
    assert response.id == dns.message.from_wire(wire, keyring=False).id
    assert isinstance(response, dns.update.UpdateMessage)
    assert [(r.name.to_text(), r.rdtype) for r in response.zone] == [(ZONE, RdataType.SOA)]
    assert not response.prerequisite and not response.update
    assert result.changed
    assert services.registry.get("ALPHA-1").ipv4 == "192.0.2.9"
    last = services.store.history("ALPHA-1")[-1]
    assert (last["actor"], last["via"], last["source"]) == ("ALPHA-1", "rfc2136", PEER)


def test_admin_key_changes_any_installation(updater: Updater, services: Services) -> None:
    key = key_of(services, None)
    wire = signed(update(("delete", "alpha", "A"), ("add", "beta", "AAAA", "2001:db8::2")), key)
    result = handle(updater, services, wire)
    assert verified(result.response, key, wire).rcode() == Rcode.NOERROR
    assert services.registry.get("ALPHA-1").ipv4 is None
    assert services.registry.get("BETA-2").ipv6 == "2001:db8::2"
    assert services.store.history("BETA-2")[-1]["actor"] == f"admin.tsig.{ZONE}"


def test_a_transfer_key_cannot_update(updater: Updater, services: Services) -> None:
    made = services.access.create_transfer_key("xfr.example.test")
    key = dns.tsig.Key(made.name, made.secret, made.algorithm)
    serial = services.store.serial()
    wire = signed(update(("add", "alpha", "A", "192.0.2.9")), key)
    result = handle(updater, services, wire)
    assert verified(result.response, key, wire).rcode() == Rcode.REFUSED  # signed
    assert not result.changed
    assert services.store.serial() == serial
    assert services.registry.get("ALPHA-1").ipv4 == "192.0.2.1"


def test_nothing_to_change_is_noerror_without_a_write(updater: Updater, services: Services) -> None:
    key = key_of(services, "ALPHA-1")
    serial = services.store.serial()
    wire = signed(update(("add", "alpha", "A", "192.0.2.1")), key)
    result = handle(updater, services, wire)
    assert verified(result.response, key, wire).rcode() == Rcode.NOERROR
    assert not result.changed
    assert services.store.serial() == serial


# -- refused and failed updates: signed, nothing changed ----------------------------------


@pytest.mark.parametrize(
    ("steps", "rcode"),
    [
        pytest.param((("add", "beta", "A", "192.0.2.9"),), Rcode.REFUSED, id="another's name"),
        pytest.param((("add", "alpha", "TXT", '"x"'),), Rcode.REFUSED, id="another type"),
        pytest.param(
            (("present", "beta", "AAAA"), ("add", "alpha", "A", "192.0.2.9")),
            Rcode.NXRRSET,
            id="prerequisite fails",
        ),
        pytest.param(
            (("absent", "alpha"), ("add", "alpha", "A", "192.0.2.9")),
            Rcode.YXDOMAIN,
            id="name in use",
        ),
        pytest.param(
            (("add", "alpha", "A", "192.0.2.9"), ("add", "beta", "A", "192.0.2.9")),
            Rcode.REFUSED,
            id="all or nothing",
        ),
    ],
)
def test_refused_or_failed_is_signed_and_changes_nothing(
    updater: Updater, services: Services, steps: tuple[tuple[str, ...], ...], rcode: Rcode
) -> None:
    key = key_of(services, "ALPHA-1")
    serial = services.store.serial()
    wire = signed(update(*steps), key)
    result = handle(updater, services, wire)
    assert verified(result.response, key, wire).rcode() == rcode
    assert not result.changed
    assert services.store.serial() == serial
    assert services.registry.get("ALPHA-1").ipv4 == "192.0.2.1"


def test_another_zone_is_notauth_signed_with_no_tsig_error(
    updater: Updater, services: Services
) -> None:
    key = key_of(services, None)
    wire = signed(update(("add", "alpha", "A", "192.0.2.9"), zone="example.net."), key)
    response = verified(handle(updater, services, wire).response, key, wire)
    assert response.rcode() == Rcode.NOTAUTH
    assert tsig_of(response).error == 0


def signed_raw(wire: bytes, key: dns.tsig.Key) -> bytes:
    """Raw message bytes with a TSIG record (signed now) appended."""
    now = int(time.time())
    rdata = sign(wire, key, tsig_template(key, now, int.from_bytes(wire[:2], "big")), now, b"")
    owner = key.name.to_wire()
    assert owner is not None
    body = rdata.to_wire()
    assert body is not None
    arcount = int.from_bytes(wire[10:12], "big") + 1
    rr = owner + b"\x00\xfa\x00\xff\x00\x00\x00\x00" + len(body).to_bytes(2, "big") + body
    return wire[:10] + arcount.to_bytes(2, "big") + wire[12:] + rr


def test_malformed_but_signed_is_formerr_signed(updater: Updater, services: Services) -> None:
    """An RRset deletion with a TTL (RFC 2136 3.4.1.2): FORMERR, signed."""
    key = key_of(services, "ALPHA-1")
    origin = dns.name.from_text(ZONE)
    zone_rr = origin.to_wire() or b""
    alpha = dns.name.from_text("alpha", origin).to_wire() or b""
    header = b"\x12\x34\x28\x00\x00\x01\x00\x00\x00\x01\x00\x00"
    delete_a_ttl_60 = alpha + b"\x00\x01\x00\xff\x00\x00\x00\x3c\x00\x00"
    wire = signed_raw(header + zone_rr + b"\x00\x06\x00\x01" + delete_a_ttl_60, key)
    response = verified(handle(updater, services, wire).response, key, wire)
    assert response.rcode() == Rcode.FORMERR
    assert services.registry.get("ALPHA-1").ipv4 == "192.0.2.1"


def test_store_failure_is_servfail_signed(
    updater: Updater, services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*_: object, **__: object) -> object:
        raise StorageError("the disk is full")

    monkeypatch.setattr(services.registry, "update_many", broken)
    key = key_of(services, "ALPHA-1")
    wire = signed(update(("add", "alpha", "A", "192.0.2.9")), key)
    assert verified(handle(updater, services, wire).response, key, wire).rcode() == (Rcode.SERVFAIL)


# -- TSIG ---------------------------------------------------------------------------------


def test_unsigned_is_refused_unsigned(updater: Updater, services: Services) -> None:
    result = handle(updater, services, update(("add", "alpha", "A", "192.0.2.9")).to_wire())
    response = unverified(result.response)
    assert response.rcode() == Rcode.REFUSED
    assert not response.had_tsig
    assert services.registry.get("ALPHA-1").ipv4 == "192.0.2.1"


def test_refusals_cost_no_log_line_at_the_default_level(
    updater: Updater, services: Services, caplog: pytest.LogCaptureFixture
) -> None:
    """Unsigned and unreadable UPDATEs (what a flood sends) are logged at debug only,
    and counted; an applied one is logged at info."""
    caplog.set_level("INFO", logger="controparte.dns.update")
    unsigned = update(("add", "alpha", "A", "192.0.2.9")).to_wire()
    for wire in (unsigned, unsigned[:20]):
        handle(updater, services, wire)
    assert [r.getMessage() for r in caplog.records] == []
    assert updater.counts["REFUSED"] == 1 and updater.counts["FORMERR"] == 1
    key = key_of(services, "ALPHA-1")
    handle(updater, services, signed(update(("add", "alpha", "A", "192.0.2.9")), key))
    assert [r.levelname for r in caplog.records] == ["INFO"]
    assert "NOERROR" in caplog.records[0].getMessage()


@pytest.mark.parametrize(
    ("forge", "error"),
    [
        pytest.param(
            lambda k: dns.tsig.Key(f"nobody.tsig.{ZONE}", k.secret),
            dns.rcode.BADKEY,
            id="unknown key",
        ),
        pytest.param(
            lambda k: dns.tsig.Key(k.name, b"\x01" * 32), dns.rcode.BADSIG, id="wrong secret"
        ),
        pytest.param(
            lambda k: dns.tsig.Key(k.name, k.secret, dns.tsig.HMAC_SHA512),
            dns.rcode.BADKEY,
            id="another algorithm",
        ),
    ],
)
def test_key_and_mac_failures_are_notauth_unsigned(
    updater: Updater, services: Services, forge: object, error: int
) -> None:
    """RFC 8945 5.2.1, 5.2.2, 5.3.2: NOTAUTH, the TSIG error, an empty MAC."""
    assert callable(forge)
    key: dns.tsig.Key = forge(key_of(services, "ALPHA-1"))
    wire = signed(update(("add", "alpha", "A", "192.0.2.9")), key)
    raw = handle(updater, services, wire).response
    response = unverified(raw)
    assert response.rcode() == Rcode.NOTAUTH
    tsig = tsig_of(response)
    assert (tsig.error, tsig.mac) == (error, b"")
    assert response.tsig is not None and response.tsig.name == key.name
    assert abs(tsig.time_signed - time.time()) < 10
    with pytest.raises(dns.tsig.PeerError):  # what a dnspython client sees
        verified(raw, key, wire)
    assert services.registry.get("ALPHA-1").ipv4 == "192.0.2.1"


def test_bad_time_is_notauth_signed_with_our_time(updater: Updater, services: Services) -> None:
    """RFC 8945 5.2.3: BADTIME, signed over the request's MAC, Time Signed copied from the
    request, our time in Other Data."""
    key = key_of(services, "ALPHA-1")
    then = int(time.time()) - 1000
    wire = signed(update(("add", "alpha", "A", "192.0.2.9")), key, at=then)
    raw = handle(updater, services, wire).response
    with pytest.raises(dns.tsig.PeerBadTime):
        verified(raw, key, wire)
    response = unverified(raw)
    assert response.rcode() == Rcode.NOTAUTH
    tsig = tsig_of(response)
    assert (tsig.error, tsig.time_signed) == (dns.rcode.BADTIME, then)
    assert abs(int.from_bytes(tsig.other, "big") - time.time()) < 10
    # The MAC is the key's over the request MAC and the response without its TSIG.
    response.tsig = None
    template = tsig.replace(mac=b"")
    assert isinstance(template, dns.rdtypes.ANY.TSIG.TSIG)
    expected = sign(response.to_wire(), key, template, then, request_mac(wire))
    assert tsig.mac == expected.mac
    assert services.registry.get("ALPHA-1").ipv4 == "192.0.2.1"


def test_a_time_earlier_than_one_accepted_is_bad_time(updater: Updater, services: Services) -> None:
    """RFC 8945 5.2.3: Time Signed earlier than the latest accepted with the key."""
    key = key_of(services, "ALPHA-1")
    now = int(time.time())
    first = signed(update(("add", "alpha", "A", "192.0.2.9")), key, at=now)
    assert verified(handle(updater, services, first).response, key, first).rcode() == 0
    same = signed(update(("add", "alpha", "A", "192.0.2.10")), key, at=now)
    assert verified(handle(updater, services, same).response, key, same).rcode() == 0
    earlier = signed(update(("add", "alpha", "A", "192.0.2.11")), key, at=now - 5)
    with pytest.raises(dns.tsig.PeerBadTime):
        verified(handle(updater, services, earlier).response, key, earlier)
    assert services.registry.get("ALPHA-1").ipv4 == "192.0.2.10"


def test_key_of_a_removed_installation_is_unknown(updater: Updater, services: Services) -> None:
    key = key_of(services, "BETA-2")
    services.registry.remove("BETA-2")
    wire = signed(update(("add", "beta", "A", "192.0.2.9")), key)
    assert tsig_of(unverified(handle(updater, services, wire).response)).error == (dns.rcode.BADKEY)


def test_a_new_key_replaces_the_old(updater: Updater, services: Services) -> None:
    old = key_of(services, "ALPHA-1")
    new = key_of(services, "ALPHA-1")
    wire = signed(update(("add", "alpha", "A", "192.0.2.9")), old)
    assert tsig_of(unverified(handle(updater, services, wire).response)).error == (dns.rcode.BADSIG)
    wire = signed(update(("add", "alpha", "A", "192.0.2.9")), new)
    assert verified(handle(updater, services, wire).response, new, wire).rcode() == 0


# -- what is not an UPDATE ---------------------------------------------------------------


def test_garbage_and_responses(updater: Updater, services: Services) -> None:
    assert handle(updater, services, b"\x12\x34\x28").response is None  # shorter than a header
    response = update(("add", "alpha", "A", "192.0.2.9")).to_wire()
    as_response = response[:2] + bytes((response[2] | 0x80,)) + response[3:]
    assert handle(updater, services, as_response).response is None
    garbage = handle(updater, services, response[:2] + b"\x28\x00" + b"\xff" * 20).response
    assert garbage is not None and garbage[3] & 0x0F == Rcode.FORMERR
    query = dns.message.make_query(f"alpha.{ZONE}", "A").to_wire()
    answered = handle(updater, services, query).response
    assert answered is not None and answered[3] & 0x0F == Rcode.NOTIMP


def test_is_update() -> None:
    assert is_update(update().to_wire())
    assert not is_update(dns.message.make_query(ZONE, "SOA").to_wire())
    assert not is_update(b"\x00\x00\xa8\x00")  # an UPDATE response
    assert not is_update(b"\x00")


def test_engine_never_caches_an_update(services: Services) -> None:
    """Without services the answer path says NOTIMP (its screen, counted as an opcode
    it does not serve), and never from its cache."""
    engine = Engine(load_zone(services.store, ZoneConfig.from_settings(services.settings)))
    wire = update(("add", "alpha", "A", "192.0.2.9")).to_wire()
    for _ in range(2):
        response = engine.answer(wire, False)
        assert response is not None and response[3] & 0x0F == Rcode.NOTIMP
    assert wire[2:] not in engine.zone.udp_cache
    assert {r: n for r, n in engine.counters.malformed.items() if n} == {"opcode": 2}
    assert engine.counters.general == 0


# -- Registry.update_many: the one transaction an UPDATE is applied in -------------------


def test_update_many_commits_together_under_one_serial(services: Services) -> None:
    serial = services.store.serial()

    def decide(reader: RegistryReader) -> tuple[str, dict[str, InstallationChange]]:
        assert reader.get_by_label("beta") is not None
        return "done", {
            "ALPHA-1": InstallationChange(ipv4="192.0.2.9"),
            "BETA-2": InstallationChange(ipv4=""),
        }

    assert services.registry.update_many(decide) == "done"
    assert services.registry.get("ALPHA-1").ipv4 == "192.0.2.9"
    assert services.registry.get("BETA-2").ipv4 is None
    assert services.store.serial() == serial + 1


def test_update_many_is_all_or_nothing(services: Services) -> None:
    serial = services.store.serial()

    def decide(_reader: RegistryReader) -> tuple[None, dict[str, InstallationChange]]:
        return None, {
            "ALPHA-1": InstallationChange(ipv4="192.0.2.9"),
            "BETA-2": InstallationChange(ipv4="not an address"),
        }

    with pytest.raises(ValidationError):
        services.registry.update_many(decide)
    assert services.registry.get("ALPHA-1").ipv4 == "192.0.2.1"
    assert services.store.serial() == serial
