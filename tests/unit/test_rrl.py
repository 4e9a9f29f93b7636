"""Response rate limiting (`dns/rrl.py`): the bucket logic as tables over an injected
clock, and the slip's bytes read back with dnspython. No sockets.

Each schedule is a list of responses sent at a time from an address; the outcome of
each is one letter: `A` sent as it was, `T` truncated (a slip), `D` dropped."""

from __future__ import annotations

from dataclasses import replace

import dns.flags
import dns.message
import dns.rcode
import dns.rrset
import pytest

from controparte.dns.rrl import Limiter, RrlConfig, families, limiter_for, truncated
from controparte.errors import ConfigError
from controparte.settings import settings_from

ZONE = "bp.example.test."


class Clock:
    """The limiter's clock, moved by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def response(kind: str, name: str = "shop-1", rdtype: str = "A") -> bytes:
    """A response of `kind`: answer, nodata, nxdomain, refused, or formerr (no question)."""
    query = dns.message.make_query(f"{name}.{ZONE}", rdtype)
    query.id = 4242
    message = dns.message.make_response(query)
    if kind == "answer":
        message.answer.append(dns.rrset.from_text(f"{name}.{ZONE}", 60, "IN", "A", "192.0.2.7"))
    elif kind == "nxdomain":
        message.set_rcode(dns.rcode.NXDOMAIN)
    elif kind == "refused":
        message.set_rcode(dns.rcode.REFUSED)
    elif kind == "formerr":
        message.set_rcode(dns.rcode.FORMERR)
        message.question = []
    if kind != "nodata":
        return message.to_wire()
    message.authority.append(
        dns.rrset.from_text(ZONE, 60, "IN", "SOA", f"ns1.{ZONE} h.{ZONE} 1 2 3 4 5")
    )
    return message.to_wire()


TAILS: dict[bytes, bytes] = {}
"""One tail object per response, as the answer cache holds one per question."""


def outcome(limiter: Limiter, wire: bytes, host: str, *, cached: bool = False) -> str:
    """What the limiter makes of `wire` to `host`; `cached`: as an answer from the cache
    (with its tail)."""
    peer = (host, 5353, 0, 0) if ":" in host else (host, 5353)
    tail = TAILS.setdefault(wire, wire[2:]) if cached else None
    sent = limiter.check(wire, peer, tail)
    if sent is None:
        return "D"
    if sent == wire:
        return "A"
    assert sent == truncated(wire)
    return "T"


Schedule = list[tuple[float, str, bytes]]
"""Responses sent: (seconds from the start, the peer's address, the response)."""


def run(config: RrlConfig, schedule: Schedule, *, cached: bool = False) -> str:
    clock = Clock()
    limiter = Limiter(config, clock)
    out = []
    for at, host, wire in schedule:
        clock.now = 1000.0 + at
        out.append(outcome(limiter, wire, host, cached=cached))
    return "".join(out)


ANSWER = response("answer")
HOST = "192.0.2.1"


def burst(n: int, wire: bytes = ANSWER, host: str = HOST, at: float = 0.0) -> Schedule:
    return [(at, host, wire)] * n


@pytest.mark.parametrize(
    ("config", "schedule", "expected"),
    [
        # A burst gets `rate` answers, then every second limited one slips (slip 2).
        (RrlConfig(rate=5), burst(10), "AAAAADTDTD"),
        (RrlConfig(rate=5, slip=1), burst(8), "AAAAATTT"),
        (RrlConfig(rate=5, slip=0), burst(8), "AAAAADDD"),
        (RrlConfig(rate=2, slip=3), burst(8), "AADDTDDT"),
        # The account fills at `rate` a second, up to one second's worth.
        (RrlConfig(rate=2), [*burst(3), (1.0, HOST, ANSWER)], "AADA"),
        (RrlConfig(rate=2), [*burst(2), *burst(2, at=0.5)], "AAAD"),
        (RrlConfig(rate=2), [*burst(2), *burst(3, at=60.0)], "AAAAD"),
        # Within budget, a steady client is never limited.
        (RrlConfig(rate=4), [(i * 0.25, HOST, ANSWER) for i in range(40)], "A" * 40),
        # A flood owes at most `window` seconds' worth: it ends, and after about `window`
        # seconds the source is answered again (2/s, window 3: a debt of 6).
        (RrlConfig(rate=2, window=3, slip=0), [*burst(100), (3.4, HOST, ANSWER)], "AA" + "D" * 99),
        (
            RrlConfig(rate=2, window=3, slip=0),
            [*burst(100), (3.6, HOST, ANSWER)],
            "AA" + "D" * 98 + "A",
        ),
        (RrlConfig(rate=2, window=30, slip=0), [*burst(100), (3.6, HOST, ANSWER)], "AA" + "D" * 99),
        # A rate of 0 limits nothing of its kind.
        (RrlConfig(rate=0), burst(50), "A" * 50),
        (RrlConfig(rate=1, errors_rate=0), burst(5, response("nxdomain")), "AAAAA"),
    ],
)
@pytest.mark.parametrize("cached", [False, True], ids=["made", "cached"])
def test_budget_window_and_slip(
    config: RrlConfig, schedule: Schedule, expected: str, cached: bool
) -> None:
    assert run(config, schedule, cached=cached) == expected


NX_A, NX_B = response("nxdomain", "nope-a"), response("nxdomain", "nope-b")
REFUSED, FORMERR = response("refused", "x.other.test"), response("formerr")


@pytest.mark.parametrize(
    ("schedule", "expected"),
    [
        # Answers: one bucket per question (name and type), the name in any case.
        ([*burst(4), *burst(4, response("answer", "shop-2"))], "AAADAAAD"),
        ([*burst(3), *burst(3, response("answer", "SHOP-1"))], "AAADTD"),
        ([*burst(4), *burst(4, response("answer", "shop-1", "AAAA"))], "AAADAAAD"),
        # NODATA: per question too, at the answers' rate.
        (burst(4, response("nodata", "shop-1", "AAAA")), "AAAD"),
        # NXDOMAIN: every name together, at the errors' rate (1/s here).
        ([(0, HOST, NX_A), (0, HOST, NX_B), (0, HOST, NX_A), (0, HOST, NX_B)], "ADTD"),
        # Errors: every one together, apart from NXDOMAIN, at the errors' rate.
        ([(0, HOST, REFUSED), (0, HOST, FORMERR), (0, HOST, NX_A), (0, HOST, REFUSED)], "ADAT"),
        # An error does not spend the answers' budget.
        ([*burst(3, REFUSED), *burst(3)], "ADTAAA"),
    ],
)
@pytest.mark.parametrize("cached", [False, True], ids=["made", "cached"])
def test_what_shares_a_bucket(schedule: Schedule, expected: str, cached: bool) -> None:
    """Answers from the cache (a tail each) are keyed as those made afresh: the name in
    any case (two tails) is one bucket."""
    assert run(RrlConfig(rate=3, errors_rate=1), schedule, cached=cached) == expected


@pytest.mark.parametrize(
    ("config", "first", "second", "shared"),
    [
        (RrlConfig(), "192.0.2.1", "192.0.2.254", True),
        (RrlConfig(), "192.0.2.1", "192.0.3.1", False),
        (RrlConfig(ipv4_prefix=16), "192.0.2.1", "192.0.3.1", True),
        (RrlConfig(ipv4_prefix=32), "192.0.2.1", "192.0.2.2", False),
        (RrlConfig(), "2001:db8:0:ff::1", "2001:db8:0:1:2:3:4:5", True),  # one /56
        (RrlConfig(), "2001:db8:0:ff::1", "2001:db8:0:100::1", False),
        (RrlConfig(ipv6_prefix=64), "2001:db8:0:ff::1", "2001:db8:0:fe::1", False),
        (RrlConfig(), "::ffff:192.0.2.9", "192.0.2.1", True),  # a dual-stack socket's peer
        (RrlConfig(ipv4_prefix=32, ipv6_prefix=96), "::c000:201", "192.0.2.1", False),
        (RrlConfig(ipv4_prefix=32, ipv6_prefix=128), "::1", "0.0.0.1", False),
        (RrlConfig(), "fe80::1%lo", "fe80::2", True),
    ],
)
def test_sources_share_a_bucket_by_prefix(
    config: RrlConfig, first: str, second: str, shared: bool
) -> None:
    limited = run(replace(config, rate=2), [*burst(2, host=first), (0, second, ANSWER)])
    assert limited == ("AAD" if shared else "AAA")


@pytest.mark.parametrize(
    ("whitelist", "host", "expected"),
    [
        (("192.0.2.0/25",), "192.0.2.1", "A" * 6),
        (("192.0.2.0/25",), "192.0.2.200", "AADTDT"),  # same /24, not whitelisted
        (("192.0.2.7",), "192.0.2.7", "A" * 6),
        (("192.0.2.7",), "::ffff:192.0.2.7", "A" * 6),
        (("2001:db8::/32", "198.51.100.0/24"), "2001:db8:1::5", "A" * 6),
        (("2001:db8::/32",), "2001:db9::5", "AADTDT"),
        (("::/0",), "192.0.2.1", "AADTDT"),  # an IPv6 network holds no IPv4 source
    ],
)
def test_whitelisted_sources_are_never_limited(
    whitelist: tuple[str, ...], host: str, expected: str
) -> None:
    assert run(RrlConfig(rate=2, whitelist=whitelist), burst(6, host=host)) == expected


def test_the_table_is_capped_forgetting_idle_buckets_first() -> None:
    clock = Clock()
    limiter = Limiter(RrlConfig(rate=1, table_size=8, slip=0), clock)
    flooders = [f"203.0.{113 + n}.1" for n in range(3)]
    for host in flooders:  # three sources over budget: limiting buckets
        assert [outcome(limiter, ANSWER, host) for _ in range(3)] == ["A", "D", "D"]
    for i in range(5):  # and five within budget fill the table
        assert outcome(limiter, ANSWER, f"192.0.{i}.1") == "A"
    assert len(limiter) == 8
    clock.now += 0.1
    assert outcome(limiter, ANSWER, "192.0.99.1") == "A"  # the cap was reached: room made
    assert len(limiter) == 4  # the three limiting buckets, and the new one
    for host in flooders:  # still limited: their buckets were kept
        assert outcome(limiter, ANSWER, host) == "D"


def test_the_table_is_capped_when_every_bucket_is_limiting() -> None:
    clock = Clock()
    limiter = Limiter(RrlConfig(rate=1, table_size=8, slip=0), clock)
    for i in range(40):
        host = f"192.0.{i}.1"
        assert [outcome(limiter, ANSWER, host) for _ in range(2)] == ["A", "D"]
        assert len(limiter) <= 8
    assert len(limiter) >= 6  # the oldest went, down to three quarters of the cap at most
    assert outcome(limiter, ANSWER, "192.0.39.1") == "D"  # the newest kept its debt


def test_a_source_whose_buckets_were_forgotten_starts_afresh_and_is_counted() -> None:
    """Addresses are remembered with their source's buckets: when those go to make room,
    the address finds new ones, counted against the cap (not a table no longer held)."""
    clock = Clock()
    limiter = Limiter(RrlConfig(rate=1, table_size=8, slip=0), clock)
    first = "198.51.100.1"
    assert [outcome(limiter, ANSWER, first) for _ in range(2)] == ["A", "D"]
    for i in range(7):
        assert [outcome(limiter, ANSWER, f"192.0.{i}.1") for _ in range(2)] == ["A", "D"]
    assert len(limiter) == 8
    assert outcome(limiter, ANSWER, "203.0.113.1") == "A"  # the two seen first go
    assert len(limiter) == 7
    assert outcome(limiter, ANSWER, first) == "A"  # its debt went with its buckets
    assert len(limiter) == 8
    assert outcome(limiter, ANSWER, first) == "D"  # and its new bucket is the one in use
    assert outcome(limiter, ANSWER, "192.0.6.1") == "D"  # the newest kept theirs


def test_sources_that_never_get_a_bucket_are_not_kept_without_bound() -> None:
    """A rate of 0 makes no bucket: the sources seen stay within the cap all the same."""
    limiter = Limiter(RrlConfig(rate=0, table_size=100), Clock())
    for i in range(1_000):
        assert outcome(limiter, ANSWER, f"2001:db8:{i:x}::1") == "A"
    assert len(limiter) == 0
    assert len(limiter._by_source) <= 100


def test_a_slip_is_the_header_with_tc_and_the_question_only() -> None:
    wire = response("answer", "Shop-1")  # the client's case is kept
    slip = dns.message.from_wire(truncated(wire))
    original = dns.message.from_wire(wire)
    assert slip.id == original.id == 4242
    assert slip.flags & dns.flags.TC
    assert slip.flags & ~dns.flags.TC == original.flags
    assert slip.question == original.question
    assert str(slip.question[0].name) == f"Shop-1.{ZONE}"
    assert (slip.answer, slip.authority, slip.additional) == ([], [], [])
    assert slip.rcode() == dns.rcode.NOERROR
    nx = dns.message.from_wire(truncated(NX_A))
    assert nx.rcode() == dns.rcode.NXDOMAIN and nx.flags & dns.flags.TC and nx.question


@pytest.mark.parametrize(
    "wire",
    [
        FORMERR,
        b"\x00\x01\x80\x01",  # a header cut short
        b"\x00\x01\x80\x01\x00\x01\x00\x00\x00\x00\x00\x00\x05abc",  # a question cut short
        b"\x00\x01\x80\x01\x00\x01\x00\x00\x00\x00\x00\x00\xc0\x0c\x00\x01\x00\x01",  # a pointer
    ],
)
def test_a_slip_without_a_well_formed_question_is_a_header_only(wire: bytes) -> None:
    slip = truncated(wire)
    assert len(slip) == 12 and slip[:2] == wire[:2] and slip[2] & 0x02
    assert slip[4:] == bytes(8)


def test_the_counters_and_their_metrics() -> None:
    limiter = Limiter(RrlConfig(rate=1), Clock())
    outcomes = [outcome(limiter, ANSWER, HOST) for _ in range(6)]
    assert outcomes == ["A", "D", "T", "D", "T", "D"]
    assert (limiter.counters.dropped, limiter.counters.slipped) == (3, 2)
    values = {f.name: f.samples[0].value for f in families(limiter.counters)}
    assert values == {
        "controparte_dns_rrl_dropped_total": 3,
        "controparte_dns_rrl_slipped_total": 2,
    }


@pytest.mark.parametrize(
    ("env", "on"),
    [
        ({}, False),  # the default listens on 127.0.0.1: off
        ({"CONTROPARTE_DNS": "[::1]:53"}, False),
        ({"CONTROPARTE_DNS": "192.0.2.53:53"}, True),
        ({"CONTROPARTE_DNS": "0.0.0.0:53", "CONTROPARTE_NS": "ns1.example.test."}, True),
        ({"CONTROPARTE_RRL": "on"}, True),
        ({"CONTROPARTE_RRL": "yes"}, True),
        ({"CONTROPARTE_DNS": "192.0.2.53:53", "CONTROPARTE_RRL": "off"}, False),
        ({"CONTROPARTE_DNS": "192.0.2.53:53", "CONTROPARTE_RRL": "Auto"}, True),
    ],
)
def test_on_by_default_unless_dns_listens_on_loopback(env: dict[str, str], on: bool) -> None:
    assert (limiter_for(settings_from({}, env)) is not None) is on


def test_the_settings_reach_the_limiter() -> None:
    env = {
        "CONTROPARTE_RRL": "on",
        "CONTROPARTE_RRL_RATE": "7",
        "CONTROPARTE_RRL_ERRORS_RATE": "3",
        "CONTROPARTE_RRL_SLIP": "0",
        "CONTROPARTE_RRL_WINDOW": "5",
        "CONTROPARTE_RRL_IPV4_PREFIX": "20",
        "CONTROPARTE_RRL_IPV6_PREFIX": "48",
        "CONTROPARTE_RRL_TABLE_SIZE": "500",
        "CONTROPARTE_RRL_WHITELIST": "192.0.2.0/24, 2001:db8::1",
    }
    limiter = limiter_for(settings_from({}, env))
    assert limiter is not None
    assert limiter.config == RrlConfig(7, 3, 0, 5, 20, 48, 500, ("192.0.2.0/24", "2001:db8::1/128"))


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"CONTROPARTE_RRL": "sometimes"}, "CONTROPARTE_RRL: expected true or false"),
        ({"CONTROPARTE_RRL_SLIP": "11"}, "CONTROPARTE_RRL_SLIP: 11 is outside 0-10"),
        ({"CONTROPARTE_RRL_IPV4_PREFIX": "33"}, "is outside 1-32"),
        ({"CONTROPARTE_RRL_WHITELIST": "my-office"}, "not an address or network"),
    ],
)
def test_a_bad_rrl_setting_names_its_source(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        settings_from({}, env)
