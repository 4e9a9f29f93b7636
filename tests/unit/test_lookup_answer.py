"""The general answer path as tables: (qname, qtype) -> rcode, flags and sections, over a
zone built in memory; dnspython makes the queries and reads the responses. No sockets.

The zone: bp.controparte.test., TTL 300, negative TTL (SOA MINIMUM) 60, serial 42,
name servers ns1 (in the zone, glue 192.0.2.53 and 2001:db8::53) and ns2.example.net.

    label  ipv4          ipv6          port
    alpha  192.0.2.1     2001:db8::1   4443
    beta   198.51.100.2  -             -
    gamma  -             2001:db8::3   -
    delta  203.0.113.4   -             8443
    eps    -             -             9000
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import dns.edns
import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset
import dns.update
import pytest

from controparte.dns.answer import answer
from controparte.dns.zone import Zone
from controparte.model import DnsRecord, ZoneConfig
from controparte.settings import load_settings

Z = "bp.controparte.test."
SERIAL = 42
ROWS = [
    DnsRecord("alpha", "192.0.2.1", "2001:db8::1", 4443),
    DnsRecord("beta", "198.51.100.2", None, None),
    DnsRecord("gamma", None, "2001:db8::3", None),
    DnsRecord("delta", "203.0.113.4", None, 8443),
    DnsRecord("eps", None, None, 9000),
]
NS = "ns1=192.0.2.53,2001:db8::53;ns2.example.net."


def make_zone(rows: list[DnsRecord] = ROWS, **flags: object) -> Zone:
    settings = load_settings(flags={"ns": NS, "ttl": 300, "negative_ttl": 60, **flags}, env={})
    return Zone.build(ZoneConfig.from_settings(settings), SERIAL, 0, rows)


ZONE = make_zone()

SOA = f"{Z} 300 IN SOA ns1.{Z} hostmaster.{Z} {SERIAL} 3600 600 1209600 60"
NEG_SOA = f"{Z} 60 IN SOA ns1.{Z} hostmaster.{Z} {SERIAL} 3600 600 1209600 60"
GLUE = (f"ns1.{Z} 300 IN A 192.0.2.53", f"ns1.{Z} 300 IN AAAA 2001:db8::53")
NS_RRS = (f"{Z} 300 IN NS ns1.{Z}", f"{Z} 300 IN NS ns2.example.net.")


@dataclass(frozen=True, slots=True)
class Case:
    qname: str  # relative to the zone ("@": the apex) or absolute (ends in ".")
    qtype: str = "A"
    rcode: str = "NOERROR"
    answer: tuple[str, ...] = ()
    authority: tuple[str, ...] = ()
    additional: tuple[str, ...] = ()
    flags: str = "QR AA RD"
    tcp: bool = False
    qclass: str = "IN"

    @property
    def name(self) -> str:
        if self.qname == "@":
            return Z
        return self.qname if self.qname.endswith(".") else f"{self.qname}.{Z}"


def rrs(section: list[dns.rrset.RRset]) -> list[str]:
    """Every RR of a section as one normalised line, in order (RRs of an RRset sorted:
    dnspython shuffles them)."""
    lines: list[str] = []
    for rrset in section:
        lines += sorted(" ".join(line.split()) for line in rrset.to_text().splitlines())
    return lines


def ask(zone: Zone, message: dns.message.Message, *, tcp: bool = False) -> dns.message.Message:
    wire = answer(zone, message.to_wire(), tcp=tcp)
    assert wire is not None, "no response"
    response = dns.message.from_wire(wire)
    assert response.id == message.id
    assert response.flags & dns.flags.QR
    return response


CASES = {
    # installations
    "A": Case("alpha", "A", answer=(f"alpha.{Z} 300 IN A 192.0.2.1",)),
    "AAAA": Case("alpha", "AAAA", answer=(f"alpha.{Z} 300 IN AAAA 2001:db8::1",)),
    "A, IPv4 only": Case("beta", "A", answer=(f"beta.{Z} 300 IN A 198.51.100.2",)),
    "SRV with A and AAAA": Case(
        "_mxserver._tcp.alpha",
        "SRV",
        answer=(f"_mxserver._tcp.alpha.{Z} 300 IN SRV 0 0 4443 alpha.{Z}",),
        additional=(f"alpha.{Z} 300 IN A 192.0.2.1", f"alpha.{Z} 300 IN AAAA 2001:db8::1"),
    ),
    "SRV with A only": Case(
        "_mxserver._tcp.delta",
        "SRV",
        answer=(f"_mxserver._tcp.delta.{Z} 300 IN SRV 0 0 8443 delta.{Z}",),
        additional=(f"delta.{Z} 300 IN A 203.0.113.4",),
    ),
    "SRV, target without address": Case(
        "_mxserver._tcp.eps",
        "SRV",
        answer=(f"_mxserver._tcp.eps.{Z} 300 IN SRV 0 0 9000 eps.{Z}",),
    ),
    "SRV over TCP": Case(
        "_mxserver._tcp.alpha",
        "SRV",
        tcp=True,
        answer=(f"_mxserver._tcp.alpha.{Z} 300 IN SRV 0 0 4443 alpha.{Z}",),
        additional=(f"alpha.{Z} 300 IN A 192.0.2.1", f"alpha.{Z} 300 IN AAAA 2001:db8::1"),
    ),
    # NODATA: the name exists, the type does not (RFC 2308 2.2)
    "NODATA, A of IPv6-only": Case("gamma", "A", authority=(NEG_SOA,)),
    "NODATA, AAAA of IPv4-only": Case("beta", "AAAA", authority=(NEG_SOA,)),
    "NODATA, port only": Case("eps", "A", authority=(NEG_SOA,)),
    "NODATA, TXT": Case("alpha", "TXT", authority=(NEG_SOA,)),
    "NODATA, MX": Case("alpha", "MX", authority=(NEG_SOA,)),
    "NODATA, SRV at the label": Case("alpha", "SRV", authority=(NEG_SOA,)),
    "NODATA, A at the SRV name": Case("_mxserver._tcp.alpha", "A", authority=(NEG_SOA,)),
    "NODATA, _tcp empty non-terminal": Case("_tcp.alpha", "A", authority=(NEG_SOA,)),
    "NODATA, _tcp ENT, SRV": Case("_tcp.delta", "SRV", authority=(NEG_SOA,)),
    "NODATA, _tcp ENT, ANY": Case("_tcp.alpha", "ANY", authority=(NEG_SOA,)),
    "NODATA, apex A": Case("@", "A", authority=(NEG_SOA,)),
    "NODATA, apex MX": Case("@", "MX", authority=(NEG_SOA,)),
    "NODATA, glue name MX": Case("ns1", "MX", authority=(NEG_SOA,)),
    # NXDOMAIN (RFC 2308 2.1)
    "NXDOMAIN": Case("missing", "A", rcode="NXDOMAIN", authority=(NEG_SOA,)),
    "NXDOMAIN, AAAA": Case("missing", "AAAA", rcode="NXDOMAIN", authority=(NEG_SOA,)),
    "NXDOMAIN, below a label": Case("x.alpha", "A", rcode="NXDOMAIN", authority=(NEG_SOA,)),
    "NXDOMAIN, SRV without port": Case(
        "_mxserver._tcp.beta", "SRV", rcode="NXDOMAIN", authority=(NEG_SOA,)
    ),
    "NXDOMAIN, _tcp without port": Case("_tcp.beta", "A", rcode="NXDOMAIN", authority=(NEG_SOA,)),
    "NXDOMAIN, other service": Case(
        "_http._tcp.alpha", "SRV", rcode="NXDOMAIN", authority=(NEG_SOA,)
    ),
    "NXDOMAIN, below the SRV name": Case(
        "x._mxserver._tcp.alpha", "SRV", rcode="NXDOMAIN", authority=(NEG_SOA,)
    ),
    "NXDOMAIN, _udp": Case("_mxserver._udp.alpha", "SRV", rcode="NXDOMAIN", authority=(NEG_SOA,)),
    "NXDOMAIN, below glue": Case("x.ns1", "A", rcode="NXDOMAIN", authority=(NEG_SOA,)),
    "NXDOMAIN, SRV of missing": Case(
        "_mxserver._tcp.missing", "SRV", rcode="NXDOMAIN", authority=(NEG_SOA,)
    ),
    "NXDOMAIN, ANY": Case("missing", "ANY", rcode="NXDOMAIN", authority=(NEG_SOA,)),
    "NXDOMAIN over TCP": Case("missing", "A", tcp=True, rcode="NXDOMAIN", authority=(NEG_SOA,)),
    # apex and name servers
    "SOA": Case("@", "SOA", answer=(SOA,)),
    "NS with glue": Case("@", "NS", answer=NS_RRS, additional=GLUE),
    "glue A": Case("ns1", "A", answer=(GLUE[0],)),
    "glue AAAA": Case("ns1", "AAAA", answer=(GLUE[1],)),
    # ANY (RFC 8482): one RRset over UDP, all over TCP
    "ANY over UDP, apex": Case("@", "ANY", answer=(SOA,)),
    "ANY over TCP, apex": Case("@", "ANY", tcp=True, answer=(SOA, *NS_RRS), additional=GLUE),
    "ANY over UDP": Case("alpha", "ANY", answer=(f"alpha.{Z} 300 IN A 192.0.2.1",)),
    "ANY over TCP": Case(
        "alpha",
        "ANY",
        tcp=True,
        answer=(f"alpha.{Z} 300 IN A 192.0.2.1", f"alpha.{Z} 300 IN AAAA 2001:db8::1"),
    ),
    "ANY over TCP, SRV name": Case(
        "_mxserver._tcp.alpha",
        "ANY",
        tcp=True,
        answer=(f"_mxserver._tcp.alpha.{Z} 300 IN SRV 0 0 4443 alpha.{Z}",),
        additional=(f"alpha.{Z} 300 IN A 192.0.2.1", f"alpha.{Z} 300 IN AAAA 2001:db8::1"),
    ),
    # refused: not ours, not class IN, or a transfer
    "REFUSED, outside": Case("example.com.", "A", rcode="REFUSED", flags="QR RD"),
    "REFUSED, parent": Case("controparte.test.", "SOA", rcode="REFUSED", flags="QR RD"),
    "REFUSED, root": Case(".", "NS", rcode="REFUSED", flags="QR RD"),
    "REFUSED, sibling suffix": Case("xbp.controparte.test.", "A", rcode="REFUSED", flags="QR RD"),
    "REFUSED, class CH": Case("alpha", "A", qclass="CH", rcode="REFUSED", flags="QR RD"),
    "REFUSED, class ANY": Case("alpha", "A", qclass="ANY", rcode="REFUSED", flags="QR RD"),
    "REFUSED, AXFR": Case("@", "AXFR", tcp=True, rcode="REFUSED", flags="QR RD"),
    "REFUSED, IXFR": Case("@", "IXFR", rcode="REFUSED", flags="QR RD"),
    # questions that are no questions
    "FORMERR, qtype OPT": Case("alpha", "OPT", rcode="FORMERR", flags="QR RD"),
    "NOTIMP, MAILB": Case("alpha", "MAILB", rcode="NOTIMP", flags="QR RD"),
}


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_answer_table(case: Case) -> None:
    query = dns.message.make_query(case.name, case.qtype, rdclass=case.qclass)
    response = ask(ZONE, query, tcp=case.tcp)
    assert dns.rcode.to_text(response.rcode()) == case.rcode
    assert set(dns.flags.to_text(response.flags).split()) == set(case.flags.split())
    assert response.question == query.question
    assert response.edns < 0  # no OPT asked, none given
    assert rrs(response.answer) == [" ".join(r.split()) for r in case.answer]
    assert rrs(response.authority) == list(case.authority)
    assert rrs(response.additional) == list(case.additional)


# -- flags, case, EDNS ---------------------------------------------------------------------


@pytest.mark.parametrize("qname", [f"alpha.{Z}", f"missing.{Z}", "example.com."])
def test_rd_and_cd_are_copied_ra_ad_never_set(qname: str) -> None:
    for flags in (0, dns.flags.RD, dns.flags.CD, dns.flags.RD | dns.flags.CD | dns.flags.AD):
        query = dns.message.make_query(qname, "A")
        query.flags = flags
        response = ask(ZONE, query)
        assert response.flags & (dns.flags.RD | dns.flags.CD) == flags & (
            dns.flags.RD | dns.flags.CD
        )
        assert not response.flags & (dns.flags.RA | dns.flags.AD | dns.flags.TC)


@pytest.mark.parametrize(
    ("qname", "qtype"),
    [
        ("AlPhA.Bp.CONTROPARTE.test.", "A"),
        ("_MxServer._TCP.ALPHA.bp.controparte.TEST.", "SRV"),
        ("NoSuch.BP.controparte.test.", "AAAA"),
        ("BP.Controparte.Test.", "NS"),
    ],
)
def test_names_are_case_insensitive_and_the_question_keeps_its_case(qname: str, qtype: str) -> None:
    upper = ask(ZONE, dns.message.make_query(qname, qtype))
    lower = ask(ZONE, dns.message.make_query(qname.lower(), qtype))
    assert upper.rcode() == lower.rcode()
    for section in ("answer", "authority", "additional"):
        in_upper = [line.lower() for line in rrs(getattr(upper, section))]
        assert in_upper == [line.lower() for line in rrs(getattr(lower, section))]
    assert upper.question[0].name.to_text() == qname  # exactly as sent
    for rrset in upper.answer:  # owners point at the question: the client's case again
        assert rrset.name.to_text() == qname


@pytest.mark.parametrize("do", [False, True])
@pytest.mark.parametrize("payload", [0, 512, 1232, 4096])
def test_edns_is_echoed_with_our_size_and_do(do: bool, payload: int) -> None:
    for qname in (f"alpha.{Z}", f"missing.{Z}", "example.com."):
        query = dns.message.make_query(qname, "A", use_edns=0, payload=payload, want_dnssec=do)
        response = ask(ZONE, query)
        assert response.edns == 0
        assert response.payload == 1232
        assert bool(response.ednsflags & dns.flags.DO) == do
        assert not response.options


def test_edns_udp_size_comes_from_settings() -> None:
    zone = make_zone(edns_udp_size=4000)
    response = ask(zone, dns.message.make_query(f"alpha.{Z}", "A", use_edns=0))
    assert response.payload == 4000


@pytest.mark.parametrize("version", [1, 2, 255])
def test_badvers(version: int) -> None:
    query = dns.message.make_query(f"alpha.{Z}", "A", use_edns=version)
    response = ask(ZONE, query)
    assert response.rcode() == dns.rcode.BADVERS
    assert response.edns == 0  # the version we speak
    assert not response.answer
    assert not response.flags & dns.flags.AA


def test_edns_options_are_ignored() -> None:
    """An unknown option and a cookie (not implemented: RFC 7873 5.2, ignore it)."""
    options: list[dns.edns.Option] = [
        dns.edns.GenericOption(dns.edns.OptionType.make(65001), b"xyz"),
        dns.edns.GenericOption(dns.edns.OptionType.COOKIE, b"12345678"),
    ]
    query = dns.message.make_query(f"alpha.{Z}", "A", use_edns=0, options=options)
    response = ask(ZONE, query)
    assert response.rcode() == dns.rcode.NOERROR
    assert rrs(response.answer) == [f"alpha.{Z} 300 IN A 192.0.2.1"]
    assert not response.options


# -- negative TTL --------------------------------------------------------------------------


@pytest.mark.parametrize(("ttl", "minimum", "expected"), [(300, 60, 60), (30, 60, 30)])
def test_negative_answers_carry_min_of_soa_ttl_and_minimum(
    ttl: int, minimum: int, expected: int
) -> None:
    zone = make_zone(ttl=ttl, negative_ttl=minimum)
    for qname, qtype in ((f"missing.{Z}", "A"), (f"gamma.{Z}", "A")):
        response = ask(zone, dns.message.make_query(qname, qtype))
        (soa,) = response.authority
        assert soa.ttl == expected
        assert soa[0].minimum == minimum
    (soa,) = ask(zone, dns.message.make_query(Z, "SOA")).answer
    assert soa.ttl == ttl


def test_serial_is_the_snapshots() -> None:
    zone = Zone.build(ZONE.config, 4_294_967_295, 0, ROWS)
    (soa,) = ask(zone, dns.message.make_query(Z, "SOA")).answer
    assert soa[0].serial == 4_294_967_295


# -- opcodes, malformed queries, responses -------------------------------------------------


@pytest.mark.parametrize(
    "opcode", [dns.opcode.IQUERY, dns.opcode.STATUS, dns.opcode.NOTIFY, dns.opcode.UPDATE, 3, 15]
)
def test_other_opcodes_get_notimp(opcode: int) -> None:
    query = dns.message.make_query(Z, "SOA")
    query.set_opcode(opcode)  # type: ignore[arg-type]
    response = ask(ZONE, query)
    assert response.rcode() == dns.rcode.NOTIMP
    assert response.opcode() == opcode
    assert not response.flags & dns.flags.AA


def test_update_gets_notimp() -> None:
    update = dns.update.UpdateMessage(Z)
    update.add(f"new.{Z}", 60, "A", "192.0.2.9")
    wire = answer(ZONE, update.to_wire(), tcp=False)
    assert wire is not None
    response = dns.message.from_wire(wire)
    assert response.opcode() == dns.opcode.UPDATE
    assert response.rcode() == dns.rcode.NOTIMP


def _query(qname: str = f"alpha.{Z}") -> bytes:
    message = dns.message.make_query(qname, "A")
    message.id = 0xBEEF
    return message.to_wire()


def _header(wire: bytes, **fields: int) -> bytes:
    names = ("qid", "flags", "qd", "an", "ns", "ar")
    values = dict(zip(names, struct.unpack("!6H", wire[:12]), strict=True))
    values.update(fields)
    return struct.pack("!6H", *(values[n] for n in names)) + wire[12:]


OPT = b"\x00\x00\x29\x04\xd0\x00\x00\x00\x00\x00\x00"

MALFORMED = {
    "two OPT": _header(_query(), ar=2) + OPT + OPT,
    "OPT with a non-root owner": _header(_query(), ar=1) + b"\x01x" + OPT[1:],
    "OPT in the answer section": _header(_query(), an=1) + OPT,
    "OPT in authority": _header(_query(), ns=1) + OPT,
    "no question": _header(_query()[:12], qd=0),
    "two questions": _header(_query() + _query(f"beta.{Z}")[12:], qd=2),
    "question cut short": _query()[:-3],
    "header only": _query()[:12],
    "trailing bytes": _query() + b"\x00",
    "pointer loop": _query()[:12] + b"\xc0\x0c\x00\x01\x00\x01",
    "answer RR in a query": _header(_query(), an=1)
    + b"\xc0\x0c\x00\x01\x00\x01\x00\x00\x00\x3c\x00\x04\xc0\x00\x02\x01",
}


@pytest.mark.parametrize("tcp", [False, True])
@pytest.mark.parametrize("wire", MALFORMED.values(), ids=MALFORMED.keys())
def test_malformed_queries_get_formerr(wire: bytes, tcp: bool) -> None:
    out = answer(ZONE, wire, tcp=tcp)
    assert out is not None
    qid, flags = struct.unpack("!HH", out[:4])
    assert qid == 0xBEEF
    assert flags & dns.flags.QR
    assert flags & 0xF == dns.rcode.FORMERR
    assert not flags & dns.flags.AA
    dns.message.from_wire(out)


@pytest.mark.parametrize(
    "wire",
    [b"", b"\x00" * 11, _header(_query(), flags=0x8100), _header(_query(), flags=0x8400 | 0x3)],
    ids=["empty", "short", "response", "response with rcode"],
)
def test_not_queries_are_dropped(wire: bytes) -> None:
    assert answer(ZONE, wire, tcp=False) is None
    assert answer(ZONE, wire, tcp=True) is None


# -- truncation ----------------------------------------------------------------------------

LONG_NS = ";".join(f"ns{i}-{'x' * 50}.{'y' * 40}.example.net." for i in range(8))
BIG = make_zone(ns="ns1=192.0.2.53;" + LONG_NS)


def test_over_512_without_edns_is_truncated_over_udp() -> None:
    query = dns.message.make_query(Z, "NS")
    response = ask(BIG, query)
    assert response.flags & dns.flags.TC
    assert response.flags & dns.flags.AA
    assert response.rcode() == dns.rcode.NOERROR
    assert response.question == query.question
    assert not response.answer
    assert not response.authority
    assert len(answer(BIG, query.to_wire(), tcp=False) or b"") <= 512


def test_over_512_is_complete_over_tcp_and_with_edns() -> None:
    for tcp, edns in ((True, -1), (False, 0)):
        query = dns.message.make_query(Z, "NS", use_edns=edns, payload=1232)
        response = ask(BIG, query, tcp=tcp)
        assert not response.flags & dns.flags.TC
        assert len(response.answer[0]) == 9
        assert rrs(response.additional) == [f"ns1.{Z} 300 IN A 192.0.2.53"]


def test_client_size_below_512_counts_as_512() -> None:
    query = dns.message.make_query(Z, "NS", use_edns=0, payload=100)
    assert ask(BIG, query).flags & dns.flags.TC
    small = dns.message.make_query(f"alpha.{Z}", "A", use_edns=0, payload=100)
    assert not ask(ZONE, small).flags & dns.flags.TC


def test_additional_that_does_not_fit_is_left_out_without_tc() -> None:
    """RFC 2181 9: TC only when the answer itself does not fit."""
    long_zone = ".".join(["z" * 50] * 3) + "."
    label = "a" * 63
    rows = [DnsRecord(label, "192.0.2.1", "2001:db8::1", 443)]
    zone = make_zone(rows, zone=long_zone, ns="ns.example.net.")
    query = dns.message.make_query(f"_mxserver._tcp.{label}.{long_zone}", "SRV")
    response = ask(zone, query)
    assert not response.flags & dns.flags.TC
    assert len(response.answer) == 1
    assert rrs(response.additional) == [f"{label}.{long_zone} 300 IN A 192.0.2.1"]
    full = ask(zone, query, tcp=True)
    assert len(full.additional) == 2


def test_a_name_server_listed_twice_is_served_with_the_addresses_of_both() -> None:
    """The zone file always published both; DNS kept only the last entry's (fixed: one
    `ZoneConfig` for both)."""
    zone = make_zone(ns="ns1=192.0.2.53;ns1=192.0.2.54,2001:db8::54")
    response = ask(zone, dns.message.make_query(f"ns1.{Z}", "A"))
    assert rrs(response.answer) == [f"ns1.{Z} 300 IN A 192.0.2.53", f"ns1.{Z} 300 IN A 192.0.2.54"]
    response = ask(zone, dns.message.make_query(Z, "NS"))
    assert rrs(response.answer) == [f"{Z} 300 IN NS ns1.{Z}"]
