"""The real server, asked by the real `dig` and `kdig` over UDP and TCP (data: see
conftest.py). What the tools print is what a resolver or an operator would see."""

from __future__ import annotations

import pytest

from tests.conftest import StartServer
from tests.integration.conftest import ZONE
from tests.integration.digtools import TOOLS, Record, ToolOutput, run
from tests.realserver import ServerProcess

pytestmark = pytest.mark.integration

TRANSPORTS = ("udp", "tcp")


def ask(
    server: ServerProcess, tool: str, transport: str, qname: str, qtype: str, *opts: str
) -> ToolOutput:
    """`tool` asks `server` for qname/qtype over `transport` (RD set, as tools do)."""
    via = "+tcp" if transport == "tcp" else "+notcp"
    out = run(tool, server.host, server.port, *opts, via, qname, qtype)
    assert out.transport == transport.upper(), out.text
    return out


def rr(name: str, ttl: int, rdtype: str, rdata: str) -> tuple[str, str, str, str]:
    return Record(name, ttl, "IN", rdtype, rdata).key()


def assert_negative_soa(out: ToolOutput, server: ServerProcess) -> None:
    """One SOA in authority, with the negative TTL min(300, MINIMUM 60) = 60 (RFC 2308)."""
    assert [r.rdtype for r in out.authority] == ["SOA"], out.text
    soa = out.authority[0]
    assert soa.name.lower() == ZONE
    assert soa.ttl == 60
    fields = soa.rdata.split()
    assert fields[:2] == [f"ns1.{ZONE}", f"hostmaster.{ZONE}"]
    assert int(fields[2]) == server.serial()
    assert fields[3:] == ["3600", "600", "1209600", "60"]


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("tool", TOOLS)
def test_a_and_aaaa(dns_server: ServerProcess, tool: str, transport: str) -> None:
    out = ask(dns_server, tool, transport, f"alpha.{ZONE}", "A")
    assert out.status == "NOERROR"
    assert out.flags == {"qr", "aa", "rd"}  # authoritative, RD copied, RA clear
    assert out.keys("answer") == {rr(f"alpha.{ZONE}", 300, "A", "192.0.2.1")}
    assert [r.ttl for r in out.answer] == [300]
    assert not out.authority

    out = ask(dns_server, tool, transport, f"alpha.{ZONE}", "AAAA")
    assert out.status == "NOERROR"
    assert out.keys("answer") == {rr(f"alpha.{ZONE}", 300, "AAAA", "2001:db8::1")}

    out = ask(dns_server, tool, transport, f"beta.{ZONE}", "A", "+norec")
    assert out.flags == {"qr", "aa"}  # RD clear in, clear out
    assert out.keys("answer") == {rr(f"beta.{ZONE}", 300, "A", "198.51.100.2")}


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("tool", TOOLS)
def test_srv_with_target_addresses(dns_server: ServerProcess, tool: str, transport: str) -> None:
    out = ask(dns_server, tool, transport, f"_mxserver._tcp.alpha.{ZONE}", "SRV")
    assert out.status == "NOERROR"
    assert "aa" in out.flags
    assert out.keys("answer") == {
        rr(f"_mxserver._tcp.alpha.{ZONE}", 300, "SRV", f"0 0 4443 alpha.{ZONE}")
    }
    assert out.keys("additional") == {
        rr(f"alpha.{ZONE}", 300, "A", "192.0.2.1"),
        rr(f"alpha.{ZONE}", 300, "AAAA", "2001:db8::1"),
    }
    out = ask(dns_server, tool, transport, f"_mxserver._tcp.delta.{ZONE}", "SRV")
    assert out.keys("answer") == {
        rr(f"_mxserver._tcp.delta.{ZONE}", 300, "SRV", f"0 0 8443 delta.{ZONE}")
    }
    assert out.keys("additional") == {rr(f"delta.{ZONE}", 300, "A", "203.0.113.4")}


NEGATIVE = [  # (qname, qtype, status): NXDOMAIN, then NODATA (NOERROR, no answer)
    (f"missing.{ZONE}", "A", "NXDOMAIN"),
    (f"x.alpha.{ZONE}", "A", "NXDOMAIN"),
    (f"_mxserver._tcp.beta.{ZONE}", "A", "NXDOMAIN"),  # beta has no port
    (f"_tcp.beta.{ZONE}", "A", "NXDOMAIN"),
    (f"_other._tcp.alpha.{ZONE}", "A", "NXDOMAIN"),
    (f"gamma.{ZONE}", "A", "NOERROR"),  # IPv6 only
    (f"beta.{ZONE}", "AAAA", "NOERROR"),  # IPv4 only
    (f"alpha.{ZONE}", "TXT", "NOERROR"),
    (f"alpha.{ZONE}", "SRV", "NOERROR"),  # the SRV is one level down
    (f"_tcp.alpha.{ZONE}", "A", "NOERROR"),  # an empty non-terminal: alpha has a port
    (f"_mxserver._tcp.alpha.{ZONE}", "A", "NOERROR"),
    (ZONE, "A", "NOERROR"),
]


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("tool", TOOLS)
@pytest.mark.parametrize(("qname", "qtype", "status"), NEGATIVE)
def test_nxdomain_and_nodata_with_soa(
    dns_server: ServerProcess, tool: str, transport: str, qname: str, qtype: str, status: str
) -> None:
    out = ask(dns_server, tool, transport, qname, qtype)
    assert out.status == status
    assert out.flags == {"qr", "aa", "rd"}
    assert not out.answer
    assert_negative_soa(out, dns_server)


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("tool", TOOLS)
def test_apex_soa_and_ns_with_glue(dns_server: ServerProcess, tool: str, transport: str) -> None:
    out = ask(dns_server, tool, transport, ZONE, "SOA")
    assert out.status == "NOERROR"
    assert [(r.rdtype, r.ttl) for r in out.answer] == [("SOA", 300)]
    assert out.answer[0].rdata.split()[:2] == [f"ns1.{ZONE}", f"hostmaster.{ZONE}"]
    out = ask(dns_server, tool, transport, ZONE, "NS")
    assert out.keys("answer") == {
        rr(ZONE, 300, "NS", f"ns1.{ZONE}"),
        rr(ZONE, 300, "NS", "ns2.example.net."),
    }
    assert out.keys("additional") == {  # glue for the in-zone name server only
        rr(f"ns1.{ZONE}", 300, "A", "127.0.0.1"),
        rr(f"ns1.{ZONE}", 300, "AAAA", "::1"),
    }
    out = ask(dns_server, tool, transport, f"ns1.{ZONE}", "A")
    assert out.keys("answer") == {rr(f"ns1.{ZONE}", 300, "A", "127.0.0.1")}


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("tool", TOOLS)
@pytest.mark.parametrize(
    ("qname", "qclass"),
    [("example.com.", "IN"), ("controparte.test.", "IN"), (f"alpha.{ZONE}", "CH")],
)
def test_refused(
    dns_server: ServerProcess, tool: str, transport: str, qname: str, qclass: str
) -> None:
    out = ask(dns_server, tool, transport, qname, "A", "-c", qclass)
    assert out.status == "REFUSED"
    assert out.flags == {"qr", "rd"}  # not authoritative, no recursion available
    assert not out.answer
    assert not out.authority


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_question_case_is_echoed(dns_server: ServerProcess, transport: str) -> None:
    """dig sends the name as typed (kdig lower-cases it, so it cannot tell)."""
    qname = "AlPhA.Bp.ControParte.TEST."
    out = ask(dns_server, "dig", transport, qname, "A")
    assert out.question == [f"{qname} IN A"]
    assert [r.name for r in out.answer] == [qname]
    assert out.keys("answer") == {rr(f"alpha.{ZONE}", 300, "A", "192.0.2.1")}
    out = ask(dns_server, "dig", transport, f"NoSuch.{ZONE.upper()}", "A")
    assert out.question == [f"NoSuch.{ZONE.upper()} IN A"]
    assert out.status == "NXDOMAIN"


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("tool", TOOLS)
def test_edns_is_echoed(dns_server: ServerProcess, tool: str, transport: str) -> None:
    out = ask(dns_server, tool, transport, f"alpha.{ZONE}", "A", "+edns=0", "+bufsize=4096")
    assert (out.edns_version, out.edns_flags, out.udp_size) == (0, frozenset(), 1232)
    out = ask(dns_server, tool, transport, f"alpha.{ZONE}", "A", "+dnssec")
    assert (out.edns_version, out.edns_flags, out.udp_size) == (0, frozenset({"do"}), 1232)
    out = ask(dns_server, tool, transport, f"missing.{ZONE}", "A", "+dnssec")
    assert out.status == "NXDOMAIN"
    assert out.edns_flags == {"do"}
    out = ask(dns_server, tool, transport, f"alpha.{ZONE}", "A", "+noedns")
    assert out.edns_version is None  # no OPT in, none out


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("tool", TOOLS)
def test_badvers(dns_server: ServerProcess, tool: str, transport: str) -> None:
    """EDNS version 1 gets BADVERS with our version, 0 (RFC 6891 6.1.3)."""
    no_retry = ("+noednsnegotiation",) if tool == "dig" else ()
    out = ask(dns_server, tool, transport, f"alpha.{ZONE}", "A", "+edns=1", *no_retry)
    assert out.status == "BADVERS"
    assert out.edns_version == 0
    assert not out.answer
    assert "aa" not in out.flags
    if tool == "dig":  # by default dig steps down to version 0 and gets the answer
        out = ask(dns_server, tool, transport, f"alpha.{ZONE}", "A", "+edns=1")
        assert any("BADVERS, retrying with EDNS version 0" in n for n in out.notes), out.text
        assert out.status == "NOERROR"
        assert out.keys("answer") == {rr(f"alpha.{ZONE}", 300, "A", "192.0.2.1")}


@pytest.mark.parametrize("tool", TOOLS)
def test_any_is_one_rrset_over_udp_and_all_over_tcp(dns_server: ServerProcess, tool: str) -> None:
    """RFC 8482: over UDP one RRset of the name; over TCP every one."""
    out = ask(dns_server, tool, "udp", f"alpha.{ZONE}", "ANY")
    assert out.status == "NOERROR"
    assert len(set(out.types("answer"))) == 1
    assert out.keys("answer") <= {
        rr(f"alpha.{ZONE}", 300, "A", "192.0.2.1"),
        rr(f"alpha.{ZONE}", 300, "AAAA", "2001:db8::1"),
    }
    out = ask(dns_server, tool, "tcp", f"alpha.{ZONE}", "ANY")
    assert out.keys("answer") == {
        rr(f"alpha.{ZONE}", 300, "A", "192.0.2.1"),
        rr(f"alpha.{ZONE}", 300, "AAAA", "2001:db8::1"),
    }
    out = ask(dns_server, tool, "udp", ZONE, "ANY")
    assert out.types("answer") == ["SOA"]
    out = ask(dns_server, tool, "tcp", ZONE, "ANY")
    assert sorted(out.types("answer")) == ["NS", "NS", "SOA"]
    out = ask(dns_server, tool, "tcp", f"missing.{ZONE}", "ANY")
    assert out.status == "NXDOMAIN"


LONG_NS = [f"ns{i}-{'x' * 50}.{'y' * 40}.example.net." for i in range(8)]


@pytest.mark.parametrize("tool", TOOLS)
def test_truncated_over_udp_then_full_over_tcp(start_server: StartServer, tool: str) -> None:
    """Nine NS names make the apex NS answer ~700 bytes: over 512 (no EDNS), so UDP gets
    TC and an empty answer; the tool retries over TCP and gets every NS."""
    server = start_server({"CONTROPARTE_NS": ";".join(["ns1=127.0.0.1", *LONG_NS])})
    expected = {rr(ZONE, 60, "NS", name) for name in [f"ns1.{ZONE}", *LONG_NS]}

    no_retry = "+ignore" if tool == "dig" else "+notcp"
    out = run(tool, server.host, server.port, "+noedns", no_retry, ZONE, "NS")
    assert out.transport == "UDP"
    assert out.flags == {"qr", "aa", "tc", "rd"}
    assert out.status == "NOERROR"
    assert not out.answer

    out = run(tool, server.host, server.port, "+noedns", ZONE, "NS")
    assert out.transport == "TCP"  # retried
    assert "tc" not in out.flags
    assert out.keys("answer") == expected
    assert out.keys("additional") == {rr(f"ns1.{ZONE}", 60, "A", "127.0.0.1")}

    out = run(tool, server.host, server.port, "+bufsize=1232", "+notcp", ZONE, "NS")
    assert out.transport == "UDP"  # fits in the EDNS size: no TC
    assert "tc" not in out.flags
    assert out.keys("answer") == expected
