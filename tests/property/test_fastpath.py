"""Properties of the answer engine over random registries and random queries:

- the fast path, whenever it answers, gives the very bytes of the general path;
- it does answer the common case (so the first property is not vacuous);
- the engine's cache gives what the general path gives, whatever the query ID;
- garbage and mutated queries never raise, and every response is a well-formed reply;
- a registry written through `Registry` and followed through the journal is served
  exactly, with the serial growing by one per change (RFC 1982).
"""

from __future__ import annotations

import struct
import tempfile
from dataclasses import dataclass
from pathlib import Path

import dns.edns
import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import pytest
from hypothesis import HealthCheck, event, given, reject, settings
from hypothesis import strategies as st

from controparte.dns.answer import answer as general_answer
from controparte.dns.engine import CACHE_MAX_QUERY, Engine
from controparte.dns.fastpath import FastPath
from controparte.dns.screen import rejection, screen
from controparte.dns.server import follow
from controparte.dns.zone import Zone, load_zone
from controparte.errors import ConfigError, ControparteError
from controparte.model import DnsRecord, InstallationChange, ZoneConfig
from controparte.service import Registry
from controparte.settings import load_settings
from controparte.store import open_store
from controparte.store.rows import next_serial

SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# -- registries and zones ------------------------------------------------------------------

LABEL_POOL = ["alpha", "beta", "gamma", "a", "z9", "x-y", "ns1", "hostmaster", "_tcp", "a" * 63]
"""Labels queries and registries share, so that names exist often; "ns1" and
"hostmaster" collide with the zone's own names; "_tcp" is no valid label but a query may
ask for it."""

labels = st.one_of(
    st.sampled_from([lab for lab in LABEL_POOL if lab != "_tcp"]),
    st.from_regex(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?", fullmatch=True),
)
ipv4s = st.ip_addresses(v=4).map(str)
ipv6s = st.ip_addresses(v=6).map(str)
ports = st.integers(1, 65535)

rows_strategy: st.SearchStrategy[list[DnsRecord]] = st.lists(
    st.builds(DnsRecord, labels, st.none() | ipv4s, st.none() | ipv6s, st.none() | ports),
    unique_by=lambda row: row[0],
    max_size=8,
)

ZONES = [
    "bp.controparte.test.",
    "Example.TEST.",
    "a.b.c.d.e.f.",
    "test.",
    ".".join(["z" * 50, "y" * 50, "x" * 50]) + ".",  # long: answers near 512 bytes
]
NS_CHOICES = [
    None,  # the default: ns1.<zone> with 127.0.0.1
    "ns1=192.0.2.53",
    "ns1=192.0.2.53,2001:db8::53;ns2.example.net.",
    "ns.other.test.",
    "deep.ns=192.0.2.1",  # glue two levels down: "ns" an empty non-terminal
]
MNAMES = [None, "ns.controparte.test.", "primary.example.net.", "test."]
RNAMES = [None, "admin.example.net.", "hostmaster.controparte.test.", "h.test."]


@st.composite
def zones(draw: st.DrawFn, rows: st.SearchStrategy[list[DnsRecord]] = rows_strategy) -> Zone:
    flags: dict[str, object] = {
        "zone": draw(st.sampled_from(ZONES)),
        "ns": draw(st.sampled_from(NS_CHOICES)),
        "soa_mname": draw(st.sampled_from(MNAMES)),
        "soa_rname": draw(st.sampled_from(RNAMES)),
        "ttl": draw(st.integers(0, 2**31 - 1)),
        "negative_ttl": draw(st.integers(0, 2**31 - 1)),
        "edns_udp_size": draw(st.sampled_from([512, 1232, 4096, 65535])),
    }
    try:
        config = ZoneConfig.from_settings(load_settings(flags=flags, env={}))
    except ConfigError:  # e.g. a name server in the zone without glue: not a zone
        reject()
    serial = draw(st.integers(0, 2**32 - 1))
    return Zone.build(config, serial, 0, draw(rows))


# -- queries -------------------------------------------------------------------------------

QTYPES = ["A", "AAAA", "SRV", "TXT", "MX", "NS", "SOA", "ANY", "CNAME", "PTR", "AXFR", "IXFR"]
QTYPES_NUMERIC = [0, 41, 65280, 65535, 253, 254, 249, 250]
ALL_QTYPES: list[str | int] = [*QTYPES, "ANY", *QTYPES_NUMERIC]  # ANY twice: it matters


def random_case(draw: st.DrawFn, text: str) -> str:
    flips = draw(st.lists(st.booleans(), min_size=len(text), max_size=len(text)))
    return "".join(c.upper() if flip else c for c, flip in zip(text, flips, strict=True))


@dataclass(frozen=True, slots=True)
class Query:
    wire: bytes
    tcp: bool
    text: str  # for failure reports


@st.composite
def qnames(draw: st.DrawFn, zone: Zone, common: bool) -> str:
    """A name in random case: mostly an installation's (or its SRV name), else anything
    near the zone's names, or outside the zone."""
    origin = zone.config.origin.to_text()
    existing = [label.decode() for label in zone.nodes]
    pool = [*existing, "surely-missing"] if common else existing + LABEL_POOL
    label = draw(st.sampled_from(pool))
    forms = [label, f"_mxserver._tcp.{label}"]
    if not common:
        forms += [f"_tcp.{label}", f"x.{label}", f"_mxserver._udp.{label}", "@", "deep.ns", "ns"]
    relative = draw(st.sampled_from(forms))
    if not common and draw(st.integers(0, 20)) == 0:
        name = "example.com."
    elif relative == "@":
        name = origin
    else:
        name = f"{relative}.{origin}"
    try:
        dns.name.from_text(name)
    except dns.name.NameTooLong:
        name = origin
    return random_case(draw, name)


@st.composite
def queries(draw: st.DrawFn, zone: Zone) -> Query:
    """Half of them the common query (class IN, QUERY, data type, EDNS 0 or none), half
    anything a client may send."""
    common = draw(st.booleans())
    qname = draw(qnames(zone, common))
    if common:
        qtype: str | int = draw(st.sampled_from(["A", "AAAA", "SRV", "TXT", "MX"]))
        qclass = "IN"
        edns = draw(st.sampled_from([-1, 0]))
    else:
        qtype = draw(st.sampled_from(ALL_QTYPES))
        qclass = draw(st.sampled_from(["IN"] * 8 + ["CH", "ANY"]))
        edns = draw(st.sampled_from([-1, -1, 0, 0, 0, 1]))
    payload = draw(st.sampled_from([0, 100, 512, 1232, 4096, 65535]))
    message = dns.message.make_query(
        qname,
        dns.rdatatype.RdataType.make(qtype),
        rdclass=qclass,
        use_edns=edns,
        payload=payload,
        want_dnssec=edns >= 0 and draw(st.booleans()),
    )
    if not common and edns >= 0 and draw(st.integers(0, 9)) == 0:
        option = dns.edns.GenericOption(dns.edns.OptionType.make(65001), b"opt")
        message.use_edns(edns, message.ednsflags, payload, options=[option])
    if edns == 0 and draw(st.integers(0, 2)) == 0:
        # What resolvers send: a COOKIE (RFC 7873), maybe PADDING; or a malformed one.
        cookie_length = draw(st.sampled_from([8, 16, 24, 40, 5, 12, 41]))
        options: list[dns.edns.Option] = [
            dns.edns.GenericOption(dns.edns.OptionType.COOKIE, b"c" * cookie_length)
        ]
        if draw(st.booleans()):
            options.append(dns.edns.GenericOption(dns.edns.OptionType.PADDING, b"\0" * 7))
        message.use_edns(edns, message.ednsflags, payload, options=options)
    wire = bytearray(message.to_wire())
    # ID and the flag bits a query may carry (AA, TC, RD, Z, AD, CD, even an rcode);
    # now and then another opcode.
    flags = draw(
        st.sampled_from([0, dns.flags.RD, dns.flags.RD | dns.flags.CD])
        | st.integers(0, 0xFFFF).map(lambda f: f & 0x07FF)
    )
    if not common and draw(st.integers(0, 15)) == 0:
        flags |= draw(st.integers(1, 15)) << 11
    struct.pack_into("!HH", wire, 0, draw(st.integers(0, 0xFFFF)), flags)
    tcp = draw(st.booleans())
    return Query(bytes(wire), tcp, f"{qname} {qtype} {qclass} edns={edns} tcp={tcp}")


@st.composite
def zone_and_queries(draw: st.DrawFn) -> tuple[Zone, list[Query]]:
    zone = draw(zones())
    return zone, draw(st.lists(queries(zone), min_size=1, max_size=8))


# -- helpers -------------------------------------------------------------------------------


def has_multi_rr_rrset(wire: bytes) -> bool:
    message = dns.message.from_wire(wire)
    return any(len(r) > 1 for s in message.sections for r in s)


def same_response(got: bytes | None, reference: bytes | None) -> bool:
    """Byte-equal, or equal as messages when an RRset has several RRs (dnspython shuffles
    those when rendering, so two renderings differ in order only)."""
    if got == reference:
        return True
    if got is None or reference is None:
        return False
    return (
        has_multi_rr_rrset(reference)
        and dns.message.from_wire(got) == dns.message.from_wire(reference)
        and dns.message.from_wire(got).flags == dns.message.from_wire(reference).flags
    )


def engine_reference(zone: Zone, wire: bytes, *, tcp: bool) -> bytes | None:
    """What the engine must answer: the general path's answer, or, for what the screen
    rejects, its header-only rejection. The screen takes no answer away: it sends
    nothing exactly when the general path sends nothing, and rejects only what the
    general path answers with an error (no AA, no answer records; the error may
    differ, e.g. FORMERR here for what the general path finds BADVERS first)."""
    general = general_answer(zone, wire, tcp=tcp)
    reason = screen(wire, False)
    if reason is None:
        return general
    rejected = rejection(wire, reason)
    if general is None or rejected is None:
        assert general is None and rejected is None, reason
    else:
        assert not general[2] & 0x04 and general[6:8] == b"\x00\x00", reason
    return rejected


def with_id(wire: bytes, qid: int) -> bytes:
    return struct.pack("!H", qid) + wire[2:]


def plain_query(qname: str, qtype: str, *, edns: int = -1, do: bool = False) -> bytes:
    return dns.message.make_query(qname, qtype, use_edns=edns, want_dnssec=do).to_wire()


# -- the fast path -------------------------------------------------------------------------


@SETTINGS
@given(zone_and_queries())
def test_fast_path_bytes_equal_general_path(case: tuple[Zone, list[Query]]) -> None:
    zone, qs = case
    fast = FastPath(zone)
    for q in qs:
        got = fast.answer(q.wire, q.tcp)
        event("some query answered by the fast path" if got is not None else "some not")
        if got is not None:
            assert got == general_answer(zone, q.wire, tcp=q.tcp), q.text


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(zones())
def test_fast_path_answers_the_common_queries(zone: Zone) -> None:
    """Every installation's A, AAAA and SRV, and a missing name, plain or EDNS(0),
    are answered by the fast path: the property above is not vacuous."""
    fast = FastPath(zone)
    origin = zone.config.origin.to_text()
    # The zone's own names (its name servers, SOA names) go the general way.
    own = [label.decode() for label in zone.nodes if label not in zone.config.reserved]
    names = [f"{label}.{origin}" for label in own]
    names += [f"_mxserver._tcp.{label}.{origin}" for label in own]
    names.append(f"surely-missing.{origin}")
    for name in names:
        for qtype in ("A", "AAAA", "SRV", "TXT"):
            for edns, do in ((-1, False), (0, False), (0, True)):
                wire = plain_query(name, qtype, edns=edns, do=do)
                reference = general_answer(zone, wire, tcp=True)
                assert reference is not None
                assert fast.answer(wire, True) == reference, (name, qtype, edns, do)
                udp = general_answer(zone, wire, tcp=False)
                got = fast.answer(wire, False)
                if udp == reference:  # it fits the client's UDP size: answered fast
                    assert got == reference, (name, qtype, edns)
                else:  # too big: the general path leaves additional data out or sets TC
                    assert got is None, (name, qtype, edns)


@pytest.mark.parametrize(
    ("cookie", "fast"),
    [(8, True), (16, True), (40, True), (5, False), (12, False), (41, False)],
)
def test_fast_path_ignores_a_well_formed_cookie_like_the_general_path(
    cookie: int, fast: bool
) -> None:
    """Resolvers send COOKIE options (RFC 7873); a server without cookies ignores a
    well-formed one, so the fast path answers it, and leaves a malformed one (FORMERR)
    to the general path."""
    zone = Zone.build(
        ZoneConfig.from_settings(load_settings(flags={}, env={})),
        7,
        0,
        [DnsRecord("acme", "192.0.2.1", None, 9001)],
    )
    option = dns.edns.GenericOption(dns.edns.OptionType.COOKIE, b"k" * cookie)
    wire = dns.message.make_query(
        "acme.bp.controparte.test.", "A", use_edns=0, options=[option]
    ).to_wire()
    reference = general_answer(zone, wire, tcp=False)
    assert reference is not None
    got = FastPath(zone).answer(wire, False)
    if fast:
        assert got == reference
        assert dns.message.from_wire(got).answer  # an answer, with no options echoed
    else:
        assert got is None
        assert dns.message.from_wire(reference).rcode() == dns.rcode.FORMERR


@pytest.mark.parametrize("edns", [-1, 0])
def test_fast_path_leaves_what_is_over_the_udp_size_to_the_general_path(edns: int) -> None:
    """SRV answers of growing size in a zone with a long name cross 512 bytes: below, the
    fast path answers; above, it leaves the answer to the general path, which drops
    additional data."""
    flags = {"zone": ".".join(["z" * 50, "y" * 50, "x" * 50]) + ".", "ns": "ns.example.net."}
    config = ZoneConfig.from_settings(load_settings(flags=flags, env={}))
    answered = deferred = 0
    for size in range(1, 64):
        label = "a" * size
        zone = Zone.build(config, 1, 0, [DnsRecord(label, "192.0.2.1", "2001:db8::1", 443)])
        qname = f"_mxserver._tcp.{label}.{flags['zone']}"
        wire = dns.message.make_query(qname, "SRV", use_edns=edns, payload=512).to_wire()
        reference = general_answer(zone, wire, tcp=False)
        assert reference is not None
        got = FastPath(zone).answer(wire, False)
        if got is None:
            deferred += 1
            assert len(dns.message.from_wire(reference).additional) < 2
        else:
            answered += 1
            assert got == reference
    assert answered and deferred


def test_engine_keeps_udp_and_tcp_answers_apart() -> None:
    """ANY gets one RRset over UDP and all over TCP (RFC 8482), for the same query bytes:
    a cache shared by the transports would serve one for the other."""
    config = ZoneConfig.from_settings(load_settings(flags={"ns": "ns1=192.0.2.53"}, env={}))
    zone = Zone.build(config, 1, 0, [DnsRecord("alpha", "192.0.2.1", "2001:db8::1", 443)])
    engine = Engine(zone)
    for qname in ("alpha.bp.controparte.test.", "bp.controparte.test."):
        wire = plain_query(qname, "ANY")
        for tcp in (False, True, False, True):
            got = engine.answer(wire, tcp)
            assert got == general_answer(zone, wire, tcp=tcp), (qname, tcp)
        udp, tcp_ = (dns.message.from_wire(engine.answer(wire, t) or b"") for t in (False, True))
        assert len(udp.answer) == 1
        assert len(tcp_.answer) == 2


def test_fast_path_answers_a_fixed_example() -> None:
    """A fixed example, in case hypothesis draws only empty registries one day."""
    config = ZoneConfig.from_settings(load_settings(env={}))
    zone = Zone.build(config, 1, 0, [DnsRecord("alpha", "192.0.2.1", "2001:db8::1", 443)])
    fast = FastPath(zone)
    for qname, qtype in (
        ("alpha.bp.controparte.test.", "A"),
        ("ALPHA.bp.controparte.test.", "AAAA"),
        ("_mxserver._tcp.alpha.bp.controparte.test.", "SRV"),
        ("missing.bp.controparte.test.", "A"),
    ):
        wire = plain_query(qname, qtype, edns=0)
        got = fast.answer(wire, False)
        assert got is not None
        assert got == general_answer(zone, wire, tcp=False)


# -- the engine and its cache --------------------------------------------------------------


@SETTINGS
@given(zone_and_queries(), st.lists(st.integers(0, 0xFFFF), min_size=2, max_size=4))
def test_engine_answers_as_the_general_path_for_any_id(
    case: tuple[Zone, list[Query]], ids: list[int]
) -> None:
    zone, qs = case
    engine = Engine(zone)
    for q in qs:
        for tcp in (q.tcp, not q.tcp):  # one cache per transport: they must not mix
            for n, qid in enumerate(ids):
                wire = with_id(q.wire, qid)
                work = engine.counters.fast + engine.counters.general
                got = engine.answer(wire, tcp)
                assert same_response(got, engine_reference(zone, wire, tcp=tcp)), q.text
                cacheable = (
                    got is not None
                    and len(wire) - 2 <= CACHE_MAX_QUERY
                    and not wire[2] & 0x78  # opcode QUERY
                    and got[3] & 0xF in (dns.rcode.NOERROR, dns.rcode.NXDOMAIN)
                )
                if cacheable and n > 0:  # asked before with another ID: from the cache
                    assert engine.counters.fast + engine.counters.general == work
    assert engine.counters.internal_errors == 0


# -- garbage -------------------------------------------------------------------------------


def check_reply(wire: bytes, reply: bytes | None) -> None:
    """The contract of `answer`: shorter than a header or a response: nothing; anything
    else: a well-formed response with the same ID."""
    if len(wire) < 12 or wire[2] & 0x80:
        assert reply is None
        return
    assert reply is not None
    assert reply[:2] == wire[:2]
    assert reply[2] & 0x80
    message = dns.message.from_wire(reply)
    assert message.flags & dns.flags.QR


def answer_everywhere(zone: Zone, wire: bytes) -> None:
    """Every path, both transports: none raises, all agree, every reply is well formed."""
    engine = Engine(zone)
    for tcp in (False, True):
        fast = FastPath(zone).answer(wire, tcp)  # must not raise either
        general = general_answer(zone, wire, tcp=tcp)
        if fast is not None:
            assert fast == general
        check_reply(wire, general)
        got = engine.answer(wire, tcp)
        assert same_response(got, engine_reference(zone, wire, tcp=tcp))
        again = engine.answer(wire, tcp)  # from the cache, when cached
        assert same_response(again, got)
    assert engine.counters.internal_errors == 0


@SETTINGS
@given(zones(), st.binary(max_size=700))
def test_random_bytes_never_raise(zone: Zone, wire: bytes) -> None:
    answer_everywhere(zone, wire)


@SETTINGS
@given(zones(), st.binary(min_size=12, max_size=300))
def test_random_queries_with_a_query_header_get_a_reply(zone: Zone, body: bytes) -> None:
    """Random bytes after a plausible header (QR clear, one question)."""
    answer_everywhere(zone, b"\xab\xcd\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00" + body[12:])
    answer_everywhere(zone, b"\xab\xcd\x01\x00\x00\x01\x00\x00\x00\x00\x00\x01" + body)


Edit = tuple[str, int, int]


def mutate(wire: bytes, edits: list[Edit], cut: int | None) -> bytes:
    data = bytearray(wire)
    for kind, where, value in edits:
        at = where % (len(data) + 1)
        if kind == "set" and at < len(data):
            data[at] = value
        elif kind == "insert":
            data.insert(at, value)
        elif kind == "delete" and at < len(data):
            del data[at]
        elif kind == "xor" and at < len(data):
            data[at] ^= 1 << (value % 8)
    return bytes(data if cut is None else data[:cut])


edits_strategy: st.SearchStrategy[list[Edit]] = st.lists(
    st.tuples(
        st.sampled_from(["set", "insert", "delete", "xor"]),
        st.integers(0, 400),
        st.integers(0, 255),
    ),
    min_size=1,
    max_size=6,
)


@SETTINGS
@given(
    zone_and_queries(),
    edits_strategy,
    st.none() | st.integers(0, 300),
)
def test_mutated_queries_never_raise(
    case: tuple[Zone, list[Query]], edits: list[Edit], cut: int | None
) -> None:
    zone, qs = case
    answer_everywhere(zone, mutate(qs[0].wire, edits, cut))


@SETTINGS
@given(zone_and_queries())
def test_responses_are_never_answered(case: tuple[Zone, list[Query]]) -> None:
    zone, qs = case
    engine = Engine(zone)
    for q in qs:
        wire = bytes([q.wire[0], q.wire[1], q.wire[2] | 0x80]) + q.wire[3:]
        assert engine.answer(wire, q.tcp) is None
        assert FastPath(zone).answer(wire, q.tcp) is None


# -- a registry is served exactly ----------------------------------------------------------

ADDRESS_V4 = st.integers(1, 254).map(lambda n: f"192.0.2.{n}")
ADDRESS_V6 = st.integers(1, 0xFFFF).map(lambda n: f"2001:db8::{n:x}")
REG_LABELS = st.sampled_from(["alpha", "beta", "gamma", "delta", "ns1", "x" * 63, "b-2"])

Op = tuple[str, int, dict[str, object]]

ops_strategy: st.SearchStrategy[list[Op]] = st.lists(
    st.tuples(
        st.sampled_from(["add", "add", "update", "update", "remove"]),
        st.integers(0, 6),
        st.fixed_dictionaries(
            {},
            optional={
                "label": REG_LABELS,
                "ipv4": st.just("") | ADDRESS_V4,
                "ipv6": st.just("") | ADDRESS_V6,
                "port": st.just("") | ports,
            },
        ),
    ),
    max_size=12,
)


def expected_answers(registry: Registry, zone: Zone) -> list[tuple[str, str, int, set[str]]]:
    """(qname, qtype, rcode, rdata texts) the registry says DNS must serve."""
    origin = zone.config.origin.to_text()
    out: list[tuple[str, str, int, set[str]]] = []
    for inst in registry.list():
        name = f"{inst.label}.{origin}"
        srv = f"_mxserver._tcp.{name}"
        if inst.ipv4 is None and inst.ipv6 is None and inst.port is None:
            out.append((name, "A", dns.rcode.NXDOMAIN, set()))
            continue
        out.append((name, "A", dns.rcode.NOERROR, {inst.ipv4} if inst.ipv4 else set()))
        out.append((name, "AAAA", dns.rcode.NOERROR, {inst.ipv6} if inst.ipv6 else set()))
        if inst.port is None:
            out.append((srv, "SRV", dns.rcode.NXDOMAIN, set()))
        else:
            out.append((srv, "SRV", dns.rcode.NOERROR, {f"0 0 {inst.port} {name}"}))
    return out


def served(engine: Engine, qname: str, qtype: str, tcp: bool) -> tuple[int, set[str], int]:
    wire = plain_query(random_case_fixed(qname), qtype, edns=0)
    reply = engine.answer(wire, tcp)
    assert reply is not None
    message = dns.message.from_wire(reply)
    rdtype = dns.rdatatype.from_text(qtype)
    values = {rd.to_text() for r in message.answer if r.rdtype == rdtype for rd in r}
    soa = [r[0].serial for r in message.authority if r.rdtype == dns.rdatatype.SOA]
    return message.rcode(), values, soa[0] if soa else -1


def random_case_fixed(name: str) -> str:
    return "".join(c.upper() if i % 3 == 0 else c for i, c in enumerate(name))


def apply_op(registry: Registry, op: Op, codes: list[str]) -> bool:
    """Apply one operation; True when it committed a change."""
    kind, index, fields = op
    try:
        if kind == "add":
            code = f"C{len(codes)}"
            registry.add(
                code,
                str(fields.get("label", f"l{len(codes)}")),
                ipv4=str(fields.get("ipv4") or "") or None,
                ipv6=str(fields.get("ipv6") or "") or None,
                port=str(fields.get("port") or "") or None,
            )
            codes.append(code)
            return True
        if not codes:
            return False
        code = codes[index % len(codes)]
        if kind == "remove":
            registry.remove(code)
            codes.remove(code)
            return True
        before = registry.get(code)
        change = InstallationChange(**{k: str(v) for k, v in fields.items()})
        after = registry.update(code, change)
        return after.dns_view() != before.dns_view()
    except ControparteError:  # a duplicate label, a reserved one, nothing to change
        return False


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops_strategy, st.booleans())
def test_registry_changes_are_served_exactly(ops: list[Op], tcp: bool) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        env = {"CONTROPARTE_ALLOW_NON_GLOBAL": "1", "CONTROPARTE_TTL": "120"}
        settings_ = load_settings(flags={"data": Path(tmp)}, env=env)
        store = open_store(Path(tmp))
        try:
            registry = Registry(store, settings_)
            config = ZoneConfig.from_settings(settings_)
            zone = load_zone(store, config)
            engine = Engine(zone)
            codes: list[str] = []
            for op in ops:
                serial = zone.serial
                changed = apply_op(registry, op, codes)
                zone = follow(store, zone)
                engine.swap(zone)
                if changed:
                    assert zone.serial == (serial + 1) % 2**32 or zone.serial == 1
                else:
                    assert zone.serial == serial
                assert zone.serial == store.serial()
                for qname, qtype, rcode, values in expected_answers(registry, zone):
                    got = served(engine, qname, qtype, tcp)
                    assert got[:2] == (rcode, values), (qname, qtype, got)
                    if not values:
                        assert got[2] == zone.serial  # negative SOA: the current serial
            # Labels no installation has (any more) are NXDOMAIN.
            present = {inst.label for inst in registry.list()}
            origin = config.origin.to_text()
            for label in ("alpha", "beta", "gamma", "delta", "x" * 63, "b-2"):
                if label not in present:
                    assert served(engine, f"{label}.{origin}", "A", tcp)[0] == dns.rcode.NXDOMAIN
            # Following the journal gives what a fresh load gives.
            fresh = load_zone(store, config)
            assert fresh.nodes == zone.nodes
            assert (fresh.serial, fresh.seq) == (zone.serial, zone.seq)
        finally:
            store.close()


@pytest.mark.parametrize(("serial", "following"), [(2**32 - 1, 1), (2**31, 2**31 + 1), (7, 8)])
def test_serial_wraps_per_rfc_1982(serial: int, following: int) -> None:
    """The next serial is one more, mod 2**32, skipping 0 (a "no serial" to some)."""
    assert next_serial(serial) == following
