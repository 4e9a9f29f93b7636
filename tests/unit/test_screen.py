"""The screen (`dns/screen.py`): each kind of garbage is rejected for its reason with
the answer RFC 1035 calls for; well-formed requests of every shape go on. Each test runs
on both walks, the Python one and the compiled one (`_screen.c`), which must also agree
on every datagram (mutations of well-formed requests, random bytes)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable

import dns.edns
import dns.message
import dns.rcode
import dns.tsig
import dns.tsigkeyring
import dns.update
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from controparte.dns import screen as module
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
    python_screen,
    rejection,
)
from tests.malformed import BAD_OPTION, KINDS, OPT, packets, query, with_header

Screen = Callable[[bytes, bool], str | None]

try:
    from controparte.dns._screen import screen as compiled_screen
except ImportError:  # test_the_compiled_walk_is_built says so
    WALKS: list[Screen] = [python_screen]
else:
    WALKS = [python_screen, compiled_screen]


@pytest.fixture(params=WALKS, ids=lambda walk: "python" if walk is python_screen else "compiled")
def screen(request: pytest.FixtureRequest) -> Screen:
    walk: Screen = request.param
    return walk


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
def test_garbage_is_rejected_for_its_reason(screen: Screen, wire: bytes, reason: str) -> None:
    assert screen(wire, reason != OPCODE) == reason
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
def test_well_formed_requests_go_on(screen: Screen, wire: bytes) -> None:
    assert screen(wire, False) is None


def test_an_update_goes_on_only_where_updates_are_served(screen: Screen) -> None:
    assert screen(_update(), True) is None
    assert screen(_update(), False) == OPCODE


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
def test_a_malformed_update_is_rejected_where_updates_are_served(
    screen: Screen, wire: bytes, reason: str
) -> None:
    assert screen(wire, True) == reason


@pytest.mark.parametrize("kind", sorted(set(KINDS) - {"random"}))
def test_every_kind_of_the_flood_is_rejected_for_its_reason(screen: Screen, kind: str) -> None:
    assert {screen(wire, False) for wire in packets(kind, 200, Z)} == {kind}


def test_random_bytes_are_rejected_or_answered_without_a_parse_error(screen: Screen) -> None:
    """Random bytes are nearly all rejected (QR, opcode, counts or framing)."""
    reasons = [screen(wire, False) for wire in packets("random", 2000, Z)]
    assert set(reasons) <= {*REASONS, None}
    assert reasons.count(None) < 20


def test_the_compiled_walk_is_built() -> None:
    """`make test` builds the package with a C compiler: the server runs the compiled walk."""
    assert module.COMPILED, "controparte.dns._screen was not built (gcc, Python headers?)"
    assert module.screen is compiled_screen


def _mutations(seed: bytes, rng_bytes: bytes) -> bytes:
    """`seed` with bytes overwritten, cut or appended as `rng_bytes` says."""
    wire = bytearray(seed)
    for at in range(0, len(rng_bytes) - 2, 3):
        op, where, value = rng_bytes[at : at + 3]
        if op < 170 and wire:
            wire[where % len(wire)] = value
        elif op < 200:
            del wire[where % (len(wire) + 1) :]
        else:
            wire += bytes([value]) * (where % 5 + 1)
    return bytes(wire)


SEEDS = [GOOD, *PASSED.values(), _update(), *(wire for wire, _ in REJECTED.values())]


@pytest.mark.skipif(len(WALKS) < 2, reason="the compiled walk was not built")
@settings(max_examples=3000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.sampled_from(SEEDS), changes=st.binary(max_size=30), updates=st.booleans())
def test_the_walks_agree_on_mutated_requests(seed: bytes, changes: bytes, updates: bool) -> None:
    wire = _mutations(seed, changes)
    assert compiled_screen(wire, updates) == python_screen(wire, updates)


@pytest.mark.skipif(len(WALKS) < 2, reason="the compiled walk was not built")
@settings(max_examples=2000, deadline=None)
@given(wire=st.binary(max_size=600), updates=st.booleans())
def test_the_walks_agree_on_random_bytes(wire: bytes, updates: bool) -> None:
    assert compiled_screen(wire, updates) == python_screen(wire, updates)


@pytest.mark.skipif(len(WALKS) < 2, reason="the compiled walk was not built")
def test_the_walks_agree_on_every_kind_of_the_flood() -> None:
    for kind in KINDS:
        for wire in packets(kind, 2000, Z, seed=7):
            for updates in (False, True):
                assert compiled_screen(wire, updates) == python_screen(wire, updates), (kind, wire)


@pytest.mark.skipif(len(WALKS) < 2, reason="the compiled walk was not built")
def test_the_compiled_walk_refuses_what_is_not_bytes() -> None:
    with pytest.raises(TypeError):
        compiled_screen(bytearray(GOOD), False)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        compiled_screen(GOOD)  # type: ignore[call-arg]


PURE = """
import sys
sys.modules["controparte.dns._screen"] = None  # as if never built: the import fails
from controparte.dns import screen
from controparte.dns.engine import Engine
assert not screen.COMPILED and screen.screen is screen.python_screen
print(screen.screen(bytes(12), False), screen.screen(b"\\x00\\x00\\x80" + bytes(9), False))
"""


def test_without_the_compiled_walk_the_python_walk_serves() -> None:
    """A pure install (no C compiler, or CONTROPARTE_PURE=1) imports and screens."""
    done = subprocess.run(
        [sys.executable, "-c", PURE], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [QDCOUNT, RESPONSE]
