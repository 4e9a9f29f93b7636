"""The screen (`dns/screen.py`): each kind of garbage is rejected for its reason with
the answer RFC 1035 calls for; well-formed requests of every shape go on."""

from __future__ import annotations

import dns.edns
import dns.message
import dns.rcode
import dns.tsig
import dns.tsigkeyring
import dns.update
import pytest

from controparte.dns.screen import (
    ANSWER,
    OPCODE,
    QDCOUNT,
    QTYPE,
    QUESTION,
    REASONS,
    RECORDS,
    RESPONSE,
    SHORT,
    rejection,
    screen,
)
from tests.malformed import BAD_OPTION, KINDS, OPT, packets, query, with_header

Z = "bp.controparte.test."
GOOD = query(f"alpha.{Z}", qid=0x1234)

REJECTED = {
    "empty": (b"", SHORT),
    "eleven bytes": (GOOD[:11], SHORT),
    "a response": (with_header(GOOD, flags=0x8400), RESPONSE),
    "STATUS": (with_header(GOOD, flags=2 << 11), OPCODE),
    "NOTIFY": (with_header(GOOD, flags=4 << 11), OPCODE),
    "UPDATE, not served": (with_header(GOOD, flags=5 << 11), OPCODE),
    "no question": (with_header(GOOD[:12], qd=0), QDCOUNT),
    "two questions": (with_header(GOOD + GOOD[12:], qd=2), QDCOUNT),
    "an answer record": (with_header(GOOD, an=1) + OPT, ANSWER),
    "header only, one question announced": (GOOD[:12], QUESTION),
    "question cut short": (GOOD[:20], QUESTION),
    "no type and class": (GOOD[:-4], QUESTION),
    "label type 0x40": (GOOD[:12] + b"\x40abc\x00\x00\x01\x00\x01", QUESTION),
    "compressed question": (GOOD[:12] + b"\xc0\x0c\x00\x01\x00\x01", QUESTION),
    "name over 255 octets": (GOOD[:12] + b"\x3f" + b"a" * 63 + b"\x3f" + b"b" * 63 * 4, QUESTION),
    "qtype OPT": (query(f"alpha.{Z}", "OPT"), QTYPE),
    "qtype TSIG": (query(f"alpha.{Z}", "TSIG"), QTYPE),
    "trailing bytes": (GOOD + b"\xde\xad", RECORDS),
    "records announced, none there": (with_header(GOOD, ar=0xFFFF), RECORDS),
    "two OPT records": (with_header(GOOD, ar=2) + OPT + OPT, RECORDS),
    "OPT owned by a name": (with_header(GOOD, ar=1) + b"\x01x" + OPT[1:], RECORDS),
    "OPT in the authority section": (with_header(GOOD, ns=1) + OPT, RECORDS),
    "an option past its OPT": (with_header(GOOD, ar=1) + BAD_OPTION, RECORDS),
    "an option cut short": (with_header(GOOD, ar=1) + OPT[:-2] + b"\x00\x02\x00\x0a", RECORDS),
    "a forward pointer": (with_header(GOOD, ar=1) + b"\xc0\xff" + OPT[3:], RECORDS),
    "a record cut short": (with_header(GOOD, ar=1) + OPT[:8], RECORDS),
}


@pytest.mark.parametrize(("wire", "reason"), REJECTED.values(), ids=REJECTED.keys())
def test_garbage_is_rejected_for_its_reason(wire: bytes, reason: str) -> None:
    assert screen(wire, updates=reason != OPCODE) == reason
    response = rejection(wire, reason)
    if reason in (SHORT, RESPONSE):
        assert response is None
        return
    assert response is not None
    expected = dns.rcode.NOTIMP if reason == OPCODE else dns.rcode.FORMERR
    assert response[:2] == wire[:2]  # the ID echoed
    assert response[2] & 0x80  # QR
    assert response[2] & 0x78 == wire[2] & 0x78  # the opcode echoed
    assert response[3] & 0x0F == expected
    assert response[4:] == bytes(8)  # header only
    dns.message.from_wire(response)


def _signed() -> bytes:
    keyring = dns.tsigkeyring.from_text({"k.": "c2VjcmV0c2VjcmV0c2VjcmV0"})
    message = dns.message.make_query(f"alpha.{Z}", "A", use_edns=0)
    message.use_tsig(keyring, "k.", algorithm=dns.tsig.HMAC_SHA256)
    return message.to_wire()


def _ixfr() -> bytes:
    message = dns.message.make_query(Z, "IXFR")
    message.authority.append(
        dns.rrset.from_text(Z, 0, "IN", "SOA", f"ns1.{Z} hostmaster.{Z} 7 3600 600 86400 60")
    )
    return message.to_wire()


def _cookie() -> bytes:
    cookie = dns.edns.GenericOption(dns.edns.OptionType.COOKIE, b"\x01" * 8)
    return query_with_options(cookie)


def query_with_options(*options: dns.edns.Option) -> bytes:
    message = dns.message.make_query(f"alpha.{Z}", "A", use_edns=0, options=list(options))
    return message.to_wire()


def _update() -> bytes:
    update = dns.update.UpdateMessage(Z)
    update.add(f"new.{Z}", 60, "A", "192.0.2.9")
    return update.to_wire()


PASSED = {
    "plain": GOOD,
    "EDNS": query(f"alpha.{Z}", edns=0),
    "EDNS version 1 (the general path says BADVERS)": query(f"alpha.{Z}", edns=1),
    "EDNS with a cookie": _cookie(),
    "the root": query("."),
    "outside the zone": query("example.net.", "TXT"),
    "signed (TSIG)": _signed(),
    "IXFR with its SOA": _ixfr(),
}


@pytest.mark.parametrize("wire", PASSED.values(), ids=PASSED.keys())
def test_well_formed_requests_go_on(wire: bytes) -> None:
    assert screen(wire, updates=False) is None


def test_an_update_goes_on_only_where_updates_are_served() -> None:
    assert screen(_update(), updates=True) is None
    assert screen(_update(), updates=False) == OPCODE


@pytest.mark.parametrize(
    ("wire", "reason"),
    [
        (_update()[:-3], RECORDS),
        (_update() + b"\x00", RECORDS),
        (with_header(_update(), qd=2), QDCOUNT),
        (_update()[:14], QUESTION),
    ],
    ids=["an update cut short", "trailing bytes", "two zones", "zone cut short"],
)
def test_a_malformed_update_is_rejected_where_updates_are_served(wire: bytes, reason: str) -> None:
    assert screen(wire, updates=True) == reason


@pytest.mark.parametrize("kind", sorted(set(KINDS) - {"random"}))
def test_every_kind_of_the_flood_is_rejected_for_its_reason(kind: str) -> None:
    assert {screen(wire, updates=False) for wire in packets(kind, 200, Z)} == {kind}


def test_random_bytes_are_rejected_or_answered_without_a_parse_error() -> None:
    """Random bytes are nearly all rejected (QR, opcode, counts or framing)."""
    reasons = [screen(wire, updates=False) for wire in packets("random", 2000, Z)]
    assert set(reasons) <= {*REASONS, None}
    assert reasons.count(None) < 20
