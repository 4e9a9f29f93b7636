"""Zone transfer out without sockets (`controparte.dns.transfer`, `xfrwire`, `ixfr`):
who may (`TransferPolicy`), which requests leave the hot paths (`is_keyed`), the answers
to refused, malformed and signed requests, IXFR's choices (up to date, incremental,
AXFR-style, over UDP), the pause a transfer takes for the UDP thread, the metrics.
Over a real SQLite store (the journal) in a temporary directory; dnspython reads every
response, as a secondary would (tests/xfrtools.py)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path

import dns.flags
import dns.message
import dns.name
import dns.rdataclass
import dns.rdatatype
import dns.rdtypes.ANY.TSIG
import dns.rrset
import dns.tsig
import dns.update
import dns.xfr
import dns.zone
import pytest
from dns.rcode import Rcode

from controparte.dns.server import MAX_YIELD, YIELD_RATE, transfer_families, transfer_pause
from controparte.dns.transfer import TransferPolicy, Transfers, is_keyed
from controparte.dns.zone import Zone, load_zone
from controparte.model import InstallationChange, ZoneConfig
from controparte.service import Registry
from controparte.service.access import ResolvedKey
from controparte.service.metrics import exposition
from controparte.settings import TransferRule, load_settings, settings_from
from controparte.store import KeyRole, open_store
from controparte.store.base import JournalEntry, Store
from tests.dns_update.test_updater import request_mac, signed
from tests.xfrtools import axfr_query, receive, snapshot_records, zone_records

ZONE = "bp.controparte.test."
PEER = "192.0.2.7"
SECRET = "W1XsNW1udMTYNLTIB5HF4X5cyFxpV1Z051zgdam4eJ4="
TRANSFER_KEY = dns.tsig.Key("xfr.example.test.", SECRET)
OTHER_TRANSFER_KEY = dns.tsig.Key("other.example.test.", SECRET)
UPDATE_KEY = dns.tsig.Key(f"alpha-1.tsig.{ZONE}", SECRET)
UNKNOWN_KEY = dns.tsig.Key("nobody.example.test.", SECRET)
KEYS = {
    TRANSFER_KEY.name: ResolvedKey(None, TRANSFER_KEY, KeyRole.TRANSFER),
    OTHER_TRANSFER_KEY.name: ResolvedKey(None, OTHER_TRANSFER_KEY, KeyRole.TRANSFER),
    UPDATE_KEY.name: ResolvedKey("ALPHA-1", UPDATE_KEY, KeyRole.UPDATE),
}
FILLERS = 20
RULES = (TransferRule(TRANSFER_KEY.name.to_text()), TransferRule(None, ("198.51.100.0/24",)))


# -- who may -------------------------------------------------------------------------------


def rules(*texts: str) -> tuple[TransferRule, ...]:
    return settings_from({}, {"CONTROPARTE_TRANSFER_ALLOW": ";".join(texts)}).transfer_allow


XFR = dns.name.from_text("xfr.example.test.")
OTHER = dns.name.from_text("other.example.test.")


@pytest.mark.parametrize(
    ("allow", "key", "address", "allowed"),
    [
        pytest.param((), None, "127.0.0.1", False, id="nobody by default"),
        pytest.param((), XFR, "127.0.0.1", False, id="nobody, even signed"),
        pytest.param(("key=xfr.example.test",), XFR, "203.0.113.9", True, id="the key"),
        pytest.param(("key=XFR.example.test.",), XFR, "::1", True, id="key name in any case"),
        pytest.param(("key=xfr.example.test",), OTHER, "127.0.0.1", False, id="another key"),
        pytest.param(("key=xfr.example.test",), None, "127.0.0.1", False, id="unsigned"),
        pytest.param(("from=192.0.2.0/24",), None, "192.0.2.200", True, id="prefix"),
        pytest.param(("from=192.0.2.0/24",), XFR, "192.0.2.200", True, id="prefix, signed"),
        pytest.param(("from=192.0.2.0/24",), None, "192.0.3.1", False, id="outside"),
        pytest.param(("from=192.0.2.0/24",), None, "::ffff:192.0.2.1", True, id="v4-mapped"),
        pytest.param(("from=2001:db8::/32",), None, "2001:db8::5", True, id="IPv6 prefix"),
        pytest.param(("from=2001:db8::/32",), None, "fe80::1%eth0", False, id="scoped"),
        pytest.param(("from=10.0.0.0/8,192.0.2.1",), None, "192.0.2.1", True, id="two"),
        pytest.param(
            ("key=xfr.example.test from=192.0.2.0/24",), XFR, "192.0.2.1", True, id="both"
        ),
        pytest.param(
            ("key=xfr.example.test from=192.0.2.0/24",), XFR, "203.0.113.1", False, id="both, far"
        ),
        pytest.param(
            ("key=xfr.example.test from=192.0.2.0/24",), None, "192.0.2.1", False, id="both, bare"
        ),
        pytest.param(
            ("key=xfr.example.test from=192.0.2.0/24", "from=203.0.113.0/24"),
            None,
            "203.0.113.1",
            True,
            id="second rule",
        ),
        pytest.param(("from=192.0.2.0/24",), None, "not an address", False, id="garbage peer"),
    ],
)
def test_who_may_transfer(
    allow: Sequence[str], key: dns.name.Name | None, address: str, allowed: bool
) -> None:
    assert TransferPolicy(rules(*allow)).allows(key, address) is allowed


# -- which requests are keyed --------------------------------------------------------------


def query(qtype: str = "SOA", *, key: dns.tsig.Key | None = None, edns: int = -1) -> bytes:
    message = dns.message.make_query(ZONE, qtype, use_edns=edns)
    if key is not None:
        message.use_tsig(key)
    return message.to_wire()


def ixfr_query(serial: int, *, key: dns.tsig.Key | None = None, edns: int = -1) -> bytes:
    message = dns.message.make_query(ZONE, "IXFR", use_edns=edns)
    message.authority.append(dns.rrset.from_text(ZONE, 0, "IN", "SOA", f". . {serial} 0 0 0 0"))
    if key is not None:
        message.use_tsig(key)
    return message.to_wire()


def update_wire() -> bytes:
    message = dns.update.UpdateMessage(ZONE)
    message.add("alpha", 60, "A", "192.0.2.1")
    message.use_tsig(UPDATE_KEY)
    return message.to_wire()


@pytest.mark.parametrize(
    ("wire", "udp", "tcp"),
    [
        pytest.param(query(), False, False, id="plain query"),
        pytest.param(query(edns=0), False, False, id="EDNS query"),
        pytest.param(query(key=TRANSFER_KEY), True, True, id="signed query"),
        pytest.param(query(key=TRANSFER_KEY, edns=0), True, True, id="signed EDNS query"),
        pytest.param(query("AXFR"), False, True, id="AXFR"),
        pytest.param(query("AXFR", key=TRANSFER_KEY), True, True, id="signed AXFR"),
        pytest.param(ixfr_query(1), True, True, id="IXFR"),
        pytest.param(update_wire(), True, True, id="signed UPDATE"),
        pytest.param(query()[:-3], False, False, id="cut short"),
        pytest.param(query(key=TRANSFER_KEY)[: len(query())], False, False, id="TSIG cut off"),
        pytest.param(b"\x00" * 5, False, False, id="shorter than a header"),
        pytest.param(b"\x12\x34\x84\x00" + query()[4:], False, False, id="a response"),
    ],
)
def test_is_keyed(wire: bytes, udp: bool, tcp: bool) -> None:
    assert (is_keyed(wire, tcp=False), is_keyed(wire, tcp=True)) == (udp, tcp)


# -- answers ---------------------------------------------------------------------------------


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    settings = load_settings(
        env={
            "CONTROPARTE_DATA": str(tmp_path),
            "CONTROPARTE_NS": "ns1=192.0.2.53;ns2.example.net.",
            "CONTROPARTE_ALLOW_NON_GLOBAL": "1",
        }
    )
    opened = open_store(tmp_path)
    registry = Registry(opened, settings)
    registry.add("ALPHA-1", "alpha", ipv4="192.0.2.1", ipv6="2001:db8::1", port=4443)
    registry.add("BETA-2", "beta", ipv4="198.51.100.2")
    for n in range(FILLERS):  # so that a few changes are smaller than the zone
        registry.add(f"FILL-{n}", f"fill-{n}", ipv4=f"203.0.113.{n + 1}")
    yield opened
    opened.close()


@pytest.fixture
def config(tmp_path: Path) -> ZoneConfig:
    return ZoneConfig.from_settings(
        load_settings(env={"CONTROPARTE_DATA": str(tmp_path), "CONTROPARTE_NS": "ns1=192.0.2.53"})
    )


def serving(store: Store, allow: Sequence[TransferRule] = RULES) -> Transfers:
    return Transfers(allow, store, KEYS.get)


def registry_of(store: Store, tmp_path: Path) -> Registry:
    settings = load_settings(
        env={"CONTROPARTE_DATA": str(tmp_path), "CONTROPARTE_ALLOW_NON_GLOBAL": "1"}
    )
    return Registry(store, settings)


def one(out: Iterator[bytes]) -> bytes:
    [wire] = list(out)
    return wire


def read(wire: bytes, request: bytes, key: dns.tsig.Key | None) -> dns.message.Message:
    """The response, its TSIG verified with `key` over the request's MAC (None: no key:
    the response must be unsigned)."""
    mac = dns.message.from_wire(request, keyring=False).mac if key is not None else None
    response = dns.message.from_wire(wire, keyring=key, request_mac=mac or b"")
    assert response.had_tsig == (key is not None)
    return response


def tsig_error(wire: bytes) -> tuple[int, bytes]:
    """(TSIG error, MAC) of a response, read without a key."""
    message = dns.message.from_wire(wire, keyring=False)
    assert message.tsig is not None
    rdata = message.tsig[0]
    assert isinstance(rdata, dns.rdtypes.ANY.TSIG.TSIG)
    return rdata.error, rdata.mac


ELSEWHERE = "198.51.100.9"  # an address the second rule allows
REFUSALS: dict[str, tuple[Callable[[], bytes], str, dns.tsig.Key | None, Rcode, str]] = {
    # the requests are made when the test runs: a TSIG is good for five minutes
    "unsigned AXFR": (lambda: query("AXFR"), PEER, None, Rcode.REFUSED, "not_allowed"),
    "unsigned IXFR": (lambda: ixfr_query(1), PEER, None, Rcode.REFUSED, "not_allowed"),
    "a transfer key no rule names": (
        lambda: query("AXFR", key=OTHER_TRANSFER_KEY),
        PEER,
        OTHER_TRANSFER_KEY,
        Rcode.REFUSED,
        "not_allowed",
    ),
    "an update key, even from an allowed prefix": (
        lambda: query("AXFR", key=UPDATE_KEY),
        ELSEWHERE,
        UPDATE_KEY,
        Rcode.REFUSED,
        "update_key",
    ),
    "a query signed with an update key": (
        lambda: query("SOA", key=UPDATE_KEY),
        PEER,
        UPDATE_KEY,
        Rcode.REFUSED,
        "update_key",
    ),
    "a query signed with a key no rule names": (
        lambda: query("SOA", key=OTHER_TRANSFER_KEY),
        PEER,
        OTHER_TRANSFER_KEY,
        Rcode.REFUSED,
        "not_allowed",
    ),
    "another zone": (
        lambda: dns.message.make_query("example.net.", "AXFR").to_wire(),
        ELSEWHERE,
        None,
        Rcode.NOTAUTH,
        "notauth",
    ),
    "class CH": (
        lambda: dns.message.make_query(ZONE, "AXFR", rdclass="CH").to_wire(),
        ELSEWHERE,
        None,
        Rcode.NOTAUTH,
        "notauth",
    ),
    "IXFR without the client's SOA": (
        lambda: query("IXFR", key=TRANSFER_KEY),
        PEER,
        TRANSFER_KEY,
        Rcode.FORMERR,
        "formerr",
    ),
}


@pytest.mark.parametrize(
    ("make", "peer", "key", "rcode", "reason"), list(REFUSALS.values()), ids=list(REFUSALS)
)
def test_refused_with_the_question_signed_when_the_request_was(
    store: Store,
    config: ZoneConfig,
    make: Callable[[], bytes],
    peer: str,
    key: dns.tsig.Key | None,
    rcode: Rcode,
    reason: str,
) -> None:
    wire = make()
    transfers = serving(store)
    response = read(
        one(transfers.respond(wire, peer, load_zone(store, config), tcp=True)), wire, key
    )
    assert response.rcode() == rcode
    assert response.id == dns.message.from_wire(wire, keyring=False).id
    assert response.question == dns.message.from_wire(wire, keyring=False).question
    assert not response.answer and not response.flags & dns.flags.AA
    done, refused, serials = transfers.stats.snapshot()
    assert (done, refused, serials) == ({}, {reason: 1}, {})


def test_axfr_over_udp_is_refused_signed(store: Store, config: ZoneConfig) -> None:
    wire = query("AXFR", key=TRANSFER_KEY)
    transfers = serving(store)
    response = read(
        one(transfers.respond(wire, PEER, load_zone(store, config), tcp=False)), wire, TRANSFER_KEY
    )
    assert response.rcode() == Rcode.REFUSED
    assert transfers.stats.snapshot()[1] == {"axfr_over_udp": 1}


@pytest.mark.parametrize(
    ("key", "error"),
    [
        (UNKNOWN_KEY, dns.rcode.BADKEY),
        (dns.tsig.Key(TRANSFER_KEY.name, "AAAA" * 11), dns.rcode.BADSIG),
    ],
    ids=["unknown key: BADKEY", "wrong MAC: BADSIG"],
)
def test_tsig_failures_are_notauth_unsigned(
    store: Store, config: ZoneConfig, key: dns.tsig.Key, error: int
) -> None:
    """RFC 8945 5.2.1, 5.2.2, 5.3.2: NOTAUTH, the TSIG error, an empty MAC."""
    transfers = serving(store)
    wire = query("AXFR", key=key)
    response = one(transfers.respond(wire, PEER, load_zone(store, config), tcp=True))
    assert dns.message.from_wire(response, keyring=False).rcode() == Rcode.NOTAUTH
    assert tsig_error(response) == (error, b"")
    reason = dns.rcode.to_text(dns.rcode.Rcode.make(error), tsig=True).lower()
    assert transfers.stats.snapshot()[1] == {reason: 1}


def test_bad_time_is_notauth_signed(store: Store, config: ZoneConfig) -> None:
    """RFC 8945 5.2.3: signed with the key over the request's MAC, our time in Other."""
    wire = signed(dns.message.make_query(ZONE, "AXFR"), TRANSFER_KEY, int(time.time()) - 3600)
    response = one(serving(store).respond(wire, PEER, load_zone(store, config), tcp=True))
    with pytest.raises(dns.tsig.PeerBadTime):  # the MAC checks out first
        dns.message.from_wire(response, keyring=TRANSFER_KEY, request_mac=request_mac(wire))
    error, mac = tsig_error(response)
    assert error == dns.rcode.BADTIME and mac


def test_not_replay_checked(store: Store, config: ZoneConfig) -> None:
    """A request signed a second before one already served is still served: secondaries
    sharing a key sign concurrently (RFC 8945's replay rule is kept for UPDATE)."""
    transfers = serving(store)
    zone = load_zone(store, config)
    now = int(time.time())
    for at in (now, now - 1):
        wire = signed(dns.message.make_query(ZONE, "SOA"), TRANSFER_KEY, at)
        response = read(one(transfers.respond(wire, PEER, zone, tcp=False)), wire, TRANSFER_KEY)
        assert response.rcode() == Rcode.NOERROR


@pytest.mark.parametrize("tcp", [False, True], ids=["udp", "tcp"])
@pytest.mark.parametrize("edns", [-1, 0], ids=["plain", "edns"])
def test_signed_soa_query_is_answered_signed(
    store: Store, config: ZoneConfig, tcp: bool, edns: int
) -> None:
    """What Knot (over TCP) and BIND (over UDP) ask before an IXFR."""
    transfers = serving(store)
    zone = load_zone(store, config)
    wire = query("SOA", key=TRANSFER_KEY, edns=edns)
    response = read(one(transfers.respond(wire, PEER, zone, tcp=tcp)), wire, TRANSFER_KEY)
    assert response.rcode() == Rcode.NOERROR and response.flags & dns.flags.AA
    [soa] = response.answer
    assert soa.rdtype == dns.rdatatype.SOA and soa[0].serial == zone.serial
    assert (response.edns >= 0) == (edns >= 0)
    assert transfers.stats.snapshot() == ({}, {}, {})  # no transfer, no refusal


def test_signed_query_of_an_installation(store: Store, config: ZoneConfig) -> None:
    wire = signed(dns.message.make_query(f"alpha.{ZONE}", "A"), TRANSFER_KEY)
    response = read(
        one(serving(store).respond(wire, PEER, load_zone(store, config), tcp=False)),
        wire,
        TRANSFER_KEY,
    )
    assert [rd.to_text() for rrset in response.answer for rd in rrset] == ["192.0.2.1"]


def test_edns_version_1_is_badvers_signed(store: Store, config: ZoneConfig) -> None:
    wire = query("AXFR", key=TRANSFER_KEY, edns=1)
    response = read(
        one(serving(store).respond(wire, PEER, load_zone(store, config), tcp=True)),
        wire,
        TRANSFER_KEY,
    )
    assert response.rcode() == Rcode.BADVERS


def test_garbage_and_responses(store: Store, config: ZoneConfig) -> None:
    transfers = serving(store)
    zone = load_zone(store, config)
    assert list(transfers.respond(b"\x00\x01", PEER, zone, tcp=True)) == []
    response = query("AXFR")
    flipped = response[:2] + bytes([response[2] | 0x80]) + response[3:]
    assert list(transfers.respond(flipped, PEER, zone, tcp=True)) == []
    [formerr] = list(transfers.respond(query("AXFR")[:-2], PEER, zone, tcp=True))
    assert formerr[3] & 0x0F == Rcode.FORMERR
    assert transfers.stats.snapshot()[1] == {"formerr": 1}


# -- AXFR, IXFR --------------------------------------------------------------------------------


def secondary(transfers: Transfers, zone: Zone, peer: str = PEER) -> dns.zone.Zone:
    """A secondary's copy of `zone`, by AXFR."""
    target = dns.zone.Zone(ZONE, relativize=False)
    request = axfr_query(ZONE, TRANSFER_KEY)
    receive(transfers.respond(request.to_wire(), peer, zone, tcp=True), request, target)
    return target


def test_axfr_signed_and_counted(store: Store, config: ZoneConfig) -> None:
    transfers = serving(store)
    zone = load_zone(store, config)
    copy = secondary(transfers, zone)
    assert zone_records(copy) == snapshot_records(zone)
    assert transfers.stats.snapshot() == (
        {("axfr", "xfr.example.test."): 1},
        {},
        {"xfr.example.test.": zone.serial},
    )


def test_axfr_by_address(store: Store, config: ZoneConfig) -> None:
    transfers = serving(store)
    zone = load_zone(store, config)
    request = axfr_query(ZONE)
    target = dns.zone.Zone(ZONE, relativize=False)
    receive(transfers.respond(request.to_wire(), "198.51.100.9", zone, tcp=True), request, target)
    assert zone_records(target) == snapshot_records(zone)
    assert transfers.stats.snapshot()[0] == {("axfr", "198.51.100.9"): 1}


def test_a_transfer_counts_once_every_message_was_taken(store: Store, config: ZoneConfig) -> None:
    transfers = serving(store)
    out = transfers.respond(
        axfr_query(ZONE, TRANSFER_KEY).to_wire(), PEER, load_zone(store, config), tcp=True
    )
    next(out)
    assert transfers.stats.snapshot()[0] == {}  # the connection may yet fail
    assert list(out) == []
    assert transfers.stats.snapshot()[0] == {("axfr", "xfr.example.test."): 1}


def ixfr_from(
    transfers: Transfers, copy: dns.zone.Zone, zone: Zone, *, tcp: bool = True
) -> list[dns.message.Message]:
    request, _ = dns.xfr.make_query(copy, keyring=TRANSFER_KEY)
    return receive(transfers.respond(request.to_wire(), PEER, zone, tcp=tcp), request, copy)


def kinds(transfers: Transfers) -> dict[str, int]:
    return {kind: n for (kind, _), n in transfers.stats.snapshot()[0].items()}


def test_ixfr_up_to_date_is_the_soa_alone(store: Store, config: ZoneConfig) -> None:
    transfers = serving(store)
    zone = load_zone(store, config)
    copy = secondary(transfers, zone)
    [message] = ixfr_from(transfers, copy, zone)
    assert [rrset.rdtype for rrset in message.answer] == [dns.rdatatype.SOA]
    assert kinds(transfers)["ixfr_up_to_date"] == 1


@pytest.mark.parametrize("ahead", [1, 2**31 - 1], ids=["one ahead", "far ahead"])
def test_ixfr_from_a_newer_serial_is_the_soa_alone(
    store: Store, config: ZoneConfig, ahead: int
) -> None:
    """RFC 1982: newer, even across the wrap (RFC 1995 2: the SOA alone)."""
    transfers = serving(store)
    zone = load_zone(store, config)
    wire = ixfr_query((zone.serial + ahead) % 2**32, key=TRANSFER_KEY)
    response = read(one(transfers.respond(wire, PEER, zone, tcp=True)), wire, TRANSFER_KEY)
    [soa] = response.answer
    assert soa[0].serial == zone.serial
    assert kinds(transfers) == {"ixfr_up_to_date": 1}


def change(registry: Registry) -> None:
    """A few serials of changes: an address, a rename, a removal, an addition."""
    registry.update("ALPHA-1", InstallationChange(ipv4="192.0.2.11"))
    registry.update("BETA-2", InstallationChange(label="beta2"))
    registry.remove("ALPHA-1")
    registry.add("GAMMA-3", "gamma", ipv6="2001:db8::3", port=8443)


def test_ixfr_is_incremental(store: Store, config: ZoneConfig, tmp_path: Path) -> None:
    transfers = serving(store)
    copy = secondary(transfers, load_zone(store, config))
    change(registry_of(store, tmp_path))
    zone = load_zone(store, config)
    messages = ixfr_from(transfers, copy, zone)
    assert zone_records(copy) == snapshot_records(zone)
    answer = [rrset for message in messages for rrset in message.answer]
    assert [r.rdtype for r in answer].count(dns.rdatatype.SOA) == 4  # one sequence
    assert kinds(transfers)["ixfr"] == 1


def test_ixfr_axfr_style_when_the_journal_does_not_reach_back(
    store: Store, config: ZoneConfig, tmp_path: Path
) -> None:
    transfers = serving(store)
    copy = secondary(transfers, load_zone(store, config))
    change(registry_of(store, tmp_path))
    store.prune_journal(1, 0, datetime.now(UTC))
    zone = load_zone(store, config)
    messages = ixfr_from(transfers, copy, zone)
    assert zone_records(copy) == snapshot_records(zone)
    answer = [rrset for message in messages for rrset in message.answer]
    assert [r.rdtype for r in answer].count(dns.rdatatype.SOA) == 2  # an AXFR's body
    assert kinds(transfers)["ixfr_axfr_style"] == 1


class PrunedWhileRead:
    """A journal that is pruned between `journal_reach` and the first read."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def journal_reach(self, serial: int) -> int | None:
        return self.store.journal_reach(serial)

    def journal_since(self, seq: int, limit: int = 10_000) -> Sequence[JournalEntry]:
        return self.store.journal_since(seq + 1, limit)


def test_ixfr_axfr_style_when_pruned_while_read(
    store: Store, config: ZoneConfig, tmp_path: Path
) -> None:
    copy = secondary(serving(store), load_zone(store, config))
    change(registry_of(store, tmp_path))
    transfers = Transfers(RULES, PrunedWhileRead(store), KEYS.get)
    zone = load_zone(store, config)
    ixfr_from(transfers, copy, zone)
    assert zone_records(copy) == snapshot_records(zone)
    assert kinds(transfers) == {"ixfr_axfr_style": 1}


def test_ixfr_axfr_style_when_the_difference_outgrows_the_zone(
    store: Store, config: ZoneConfig, tmp_path: Path
) -> None:
    transfers = serving(store)
    copy = secondary(transfers, load_zone(store, config))
    registry = registry_of(store, tmp_path)
    for n in range(FILLERS):
        registry.remove(f"FILL-{n}")
    zone = load_zone(store, config)
    ixfr_from(transfers, copy, zone)
    assert zone_records(copy) == snapshot_records(zone)
    assert kinds(transfers)["ixfr_axfr_style"] == 1


def test_ixfr_stops_at_the_snapshot(store: Store, config: ZoneConfig, tmp_path: Path) -> None:
    """Journal entries newer than the snapshot being served are not in its answer."""
    transfers = serving(store)
    copy = secondary(transfers, load_zone(store, config))
    registry = registry_of(store, tmp_path)
    registry.update("ALPHA-1", InstallationChange(ipv4="192.0.2.11"))
    zone = load_zone(store, config)
    registry.update("BETA-2", InstallationChange(ipv4="198.51.100.22"))
    ixfr_from(transfers, copy, zone)
    assert zone_records(copy) == snapshot_records(zone)
    assert kinds(transfers)["ixfr"] == 1


@pytest.mark.parametrize(("edns", "fits"), [(0, True), (-1, False)], ids=["fits", "too big"])
def test_ixfr_over_udp(
    store: Store, config: ZoneConfig, tmp_path: Path, edns: int, fits: bool
) -> None:
    """RFC 1995 2: the whole answer in one datagram when it fits the client's size (512
    without EDNS, else its own), else the current SOA alone (the client then uses TCP)."""
    transfers = serving(store)
    copy = secondary(transfers, load_zone(store, config))
    registry = registry_of(store, tmp_path)
    for n in range(8):  # about 600 bytes of difference
        registry.add(f"N-{n}", f"new-{n}", ipv4=f"192.0.2.{100 + n}", port=1000 + n)
    zone = load_zone(store, config)
    request, serial = dns.xfr.make_query(copy, keyring=TRANSFER_KEY, use_edns=edns)
    [wire] = list(transfers.respond(request.to_wire(), PEER, zone, tcp=False))
    assert len(wire) <= (1232 if edns == 0 else 512)
    message = dns.message.from_wire(
        wire,
        keyring=TRANSFER_KEY,
        request_mac=request.mac,
        xfr=True,
        origin=copy.from_wire_origin(),
        one_rr_per_rrset=True,
    )
    with dns.xfr.Inbound(copy, dns.rdatatype.IXFR, serial, is_udp=True) as inbound:
        if fits:
            assert inbound.process_message(message)
            assert zone_records(copy) == snapshot_records(zone)
            assert kinds(transfers) == {"axfr": 1, "ixfr": 1}
        else:
            with pytest.raises(dns.xfr.UseTCP):
                inbound.process_message(message)
            assert kinds(transfers) == {"axfr": 1}  # not a transfer: "use TCP"


# -- the server's part ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rate", "pause"),
    [
        (0.0, 0.0),
        (YIELD_RATE / 2, 0.5),
        (YIELD_RATE, 1.0),
        (YIELD_RATE * 8, 8.0),
        (YIELD_RATE * 1000, MAX_YIELD),
    ],
    ids=["idle", "light", "busy", "busier", "flooded"],
)
def test_transfer_pause(rate: float, pause: float) -> None:
    """In times the work: none when idle, growing with the rate, bounded."""
    assert transfer_pause(0.002, rate) == pytest.approx(0.002 * pause)


def test_metric_families(store: Store, config: ZoneConfig) -> None:
    transfers = serving(store)
    zone = load_zone(store, config)
    secondary(transfers, zone)
    list(transfers.respond(query("AXFR"), PEER, zone, tcp=True))
    text = exposition(transfer_families(transfers))
    assert 'controparte_transfers_total{type="axfr",peer="xfr.example.test."} 1\n' in text
    assert 'controparte_transfers_refused_total{reason="not_allowed"} 1\n' in text
    assert f'controparte_secondary_serial{{peer="xfr.example.test."}} {zone.serial}\n' in text
