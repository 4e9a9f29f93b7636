"""The real server on the wire, driven with dnspython and raw sockets: TCP per RFC 7766
(several queries per connection, pipelining, idle timeout), error rcodes (FORMERR,
NOTIMP, REFUSED), unsigned UPDATE refused, garbage that must not stop the server,
responses never answered."""

from __future__ import annotations

import random
import socket
import struct
import time

import dns.flags
import dns.message
import dns.opcode
import dns.rcode
import dns.rdatatype
import dns.update
import pytest

from tests.conftest import StartServer
from tests.integration.conftest import ZONE
from tests.realserver import ServerProcess

pytestmark = pytest.mark.integration

IO_TIMEOUT = 3.0


# -- raw wire helpers ----------------------------------------------------------------------


def udp_exchange(server: ServerProcess, wire: bytes, wait: float = IO_TIMEOUT) -> bytes | None:
    """Send one datagram; the reply, or None when none came within `wait`."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(wait)
        sock.sendto(wire, (server.host, server.port))
        try:
            return sock.recv(65535)
        except TimeoutError:
            return None


def tcp_connect(server: ServerProcess) -> socket.socket:
    return socket.create_connection((server.host, server.port), timeout=IO_TIMEOUT)


def tcp_send(sock: socket.socket, *messages: bytes) -> None:
    """Every message, each with its 2-byte length, in one write (pipelined)."""
    sock.sendall(b"".join(struct.pack("!H", len(m)) + m for m in messages))


def _read_exactly(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise ConnectionError(f"connection closed after {len(data)} of {size} bytes")
        data += chunk
    return data


def tcp_receive(sock: socket.socket) -> bytes:
    (size,) = struct.unpack("!H", _read_exactly(sock, 2))
    return _read_exactly(sock, size)


def exchange(server: ServerProcess, wire: bytes, *, tcp: bool) -> bytes:
    """One message over TCP (on a connection of its own) or UDP; the reply, which must
    come."""
    if tcp:
        with tcp_connect(server) as sock:
            tcp_send(sock, wire)
            return tcp_receive(sock)
    reply = udp_exchange(server, wire)
    assert reply is not None, "no reply over UDP"
    return reply


def query_wire(qname: str, qtype: str = "A", qid: int = 0x1234, **make: object) -> bytes:
    message = dns.message.make_query(qname, qtype, **make)  # type: ignore[arg-type]
    message.id = qid
    return message.to_wire()


def with_header(wire: bytes, **fields: int) -> bytes:
    """`wire` with header fields replaced (qid, flags, qd, an, ns, ar)."""
    names = ("qid", "flags", "qd", "an", "ns", "ar")
    values = dict(zip(names, struct.unpack("!6H", wire[:12]), strict=True))
    values.update(fields)
    return struct.pack("!6H", *(values[n] for n in names)) + wire[12:]


def rcode_of(wire: bytes) -> int:
    return dns.message.from_wire(wire).rcode()


def assert_serves_alpha(server: ServerProcess, *, tcp: bool = False) -> None:
    response = server.query(f"alpha.{ZONE}", "A", tcp=tcp)
    assert response.rcode() == dns.rcode.NOERROR
    assert [rd.address for rd in response.answer[0]] == ["192.0.2.1"]


OPT = b"\x00\x00\x29\x04\xd0\x00\x00\x00\x00\x00\x00"  # root, OPT, 1232, v0, no flags


# -- TCP (RFC 7766) ------------------------------------------------------------------------


def test_several_queries_on_one_tcp_connection(dns_server: ServerProcess) -> None:
    names = ["alpha", "beta", "missing", "delta", "alpha"]
    with tcp_connect(dns_server) as sock:
        for qid, label in enumerate(names, start=100):
            tcp_send(sock, query_wire(f"{label}.{ZONE}", qid=qid))
            response = dns.message.from_wire(tcp_receive(sock))
            assert response.id == qid
            expected = dns.rcode.NXDOMAIN if label == "missing" else dns.rcode.NOERROR
            assert response.rcode() == expected


def test_pipelined_queries_are_all_answered_in_order(dns_server: ServerProcess) -> None:
    queries = [
        query_wire(f"alpha.{ZONE}", "A", qid=1),
        query_wire(f"_mxserver._tcp.alpha.{ZONE}", "SRV", qid=2, use_edns=0),
        query_wire(f"gamma.{ZONE}", "AAAA", qid=3),
    ]
    with tcp_connect(dns_server) as sock:
        tcp_send(sock, *queries)  # back to back, before reading anything
        responses = [dns.message.from_wire(tcp_receive(sock)) for _ in queries]
    assert [r.id for r in responses] == [1, 2, 3]
    assert [str(r.answer[0][0]) for r in responses] == [
        "192.0.2.1",
        f"0 0 4443 alpha.{ZONE}",
        "2001:db8::3",
    ]
    assert len(responses[1].additional) == 2


def test_idle_tcp_connection_is_closed(start_server: StartServer) -> None:
    """RFC 7766 6.2.3: idle connections are closed; busy ones are not."""
    server = start_server({"CONTROPARTE_TCP_IDLE_TIMEOUT": "0.5"})
    with tcp_connect(server) as sock:
        started = time.monotonic()
        for qid in range(8):  # 1.4 s of use, never idle for 0.5 s: kept open
            if qid:
                time.sleep(0.2)
            tcp_send(sock, query_wire(server.name("missing"), qid=qid))
            assert dns.message.from_wire(tcp_receive(sock)).id == qid
        assert time.monotonic() - started > 1.0
        idle_since = time.monotonic()
        assert sock.recv(1) == b""  # closed by the server (the socket timeout is 3 s)
        idle = time.monotonic() - idle_since
    assert 0.4 <= idle < 2.5, idle
    with tcp_connect(server) as sock:  # a connection that never sends is closed too
        idle_since = time.monotonic()
        assert sock.recv(1) == b""
        assert time.monotonic() - idle_since < 2.5
    assert server.query(server.name("missing"), tcp=True).rcode() == dns.rcode.NXDOMAIN


# -- error rcodes --------------------------------------------------------------------------

FORMERR_QUERIES = {
    "two OPT RRs": with_header(query_wire(f"alpha.{ZONE}"), ar=2) + OPT + OPT,
    "OPT with a non-root owner": with_header(query_wire(f"alpha.{ZONE}"), ar=1)
    + b"\x01x"
    + OPT[1:],
    "OPT in the answer section": with_header(query_wire(f"alpha.{ZONE}"), an=1) + OPT,
    "no question": with_header(query_wire(f"alpha.{ZONE}")[:12], qd=0),
    "two questions": with_header(
        query_wire(f"alpha.{ZONE}") + query_wire(f"beta.{ZONE}")[12:], qd=2
    ),
    "question cut short": query_wire(f"alpha.{ZONE}")[:20],
    "header only, one question announced": query_wire(f"alpha.{ZONE}")[:12],
    "compression loop": with_header(query_wire(f"alpha.{ZONE}")[:12]) + b"\xc0\x0c\x00\x01\x00\x01",
    "trailing garbage": query_wire(f"alpha.{ZONE}") + b"\xde\xad",
    "qtype OPT": query_wire(f"alpha.{ZONE}", "OPT"),
}


@pytest.mark.parametrize("tcp", [False, True], ids=["udp", "tcp"])
@pytest.mark.parametrize("wire", FORMERR_QUERIES.values(), ids=FORMERR_QUERIES.keys())
def test_formerr(dns_server: ServerProcess, wire: bytes, tcp: bool) -> None:
    reply = exchange(dns_server, wire, tcp=tcp)
    qid, flags = struct.unpack("!HH", reply[:4])
    assert qid == 0x1234
    assert flags & dns.flags.QR
    assert flags & 0xF == dns.rcode.FORMERR
    assert not flags & dns.flags.AA
    assert_serves_alpha(dns_server, tcp=tcp)


def _with_opcode(opcode: dns.opcode.Opcode) -> bytes:
    message = dns.message.make_query(ZONE, "SOA")
    message.id = 0x1234
    message.set_opcode(opcode)
    return message.to_wire()


def _update() -> bytes:
    message = dns.update.UpdateMessage(ZONE, id=0x1234)
    message.add(f"new.{ZONE}", 60, "A", "192.0.2.9")
    return message.to_wire()


NOTIMP_QUERIES = {
    "STATUS": (_with_opcode(dns.opcode.STATUS), dns.opcode.STATUS),
    "NOTIFY": (_with_opcode(dns.opcode.NOTIFY), dns.opcode.NOTIFY),
    "IQUERY": (_with_opcode(dns.opcode.IQUERY), dns.opcode.IQUERY),
    "opcode 15": (with_header(query_wire(ZONE), flags=15 << 11), 15),
}


@pytest.mark.parametrize("tcp", [False, True], ids=["udp", "tcp"])
@pytest.mark.parametrize(("wire", "opcode"), NOTIMP_QUERIES.values(), ids=NOTIMP_QUERIES.keys())
def test_unsupported_opcodes_get_notimp(
    dns_server: ServerProcess, wire: bytes, opcode: int, tcp: bool
) -> None:
    reply = exchange(dns_server, wire, tcp=tcp)
    qid, flags = struct.unpack("!HH", reply[:4])
    assert qid == 0x1234
    assert flags & dns.flags.QR
    assert (flags >> 11) & 0xF == opcode  # the opcode is echoed
    assert flags & 0xF == dns.rcode.NOTIMP
    assert_serves_alpha(dns_server, tcp=tcp)


@pytest.mark.parametrize("tcp", [False, True], ids=["udp", "tcp"])
def test_unsigned_update_is_refused_and_changes_nothing(
    dns_server: ServerProcess, tcp: bool
) -> None:
    """UPDATE (RFC 2136) is served only when signed with a known TSIG key (RFC 8945)."""
    serial = dns_server.serial()
    reply = dns.message.from_wire(exchange(dns_server, _update(), tcp=tcp))
    assert reply.id == 0x1234
    assert reply.opcode() == dns.opcode.UPDATE
    assert reply.rcode() in (dns.rcode.REFUSED, dns.rcode.NOTAUTH, dns.rcode.NOTIMP)
    assert dns_server.query(f"new.{ZONE}").rcode() == dns.rcode.NXDOMAIN
    assert dns_server.serial() == serial


@pytest.mark.parametrize("tcp", [False, True], ids=["udp", "tcp"])
@pytest.mark.parametrize(
    ("qname", "qtype", "qclass"),
    [
        (ZONE, "AXFR", "IN"),
        (ZONE, "IXFR", "IN"),
        (f"alpha.{ZONE}", "A", "CH"),
        ("version.bind.", "TXT", "CH"),
        (f"alpha.{ZONE}", "A", "ANY"),
        ("example.net.", "A", "IN"),
    ],
)
def test_refused(dns_server: ServerProcess, qname: str, qtype: str, qclass: str, tcp: bool) -> None:
    response = dns_server.query(qname, qtype, tcp=tcp, rdclass=qclass)
    assert response.rcode() == dns.rcode.REFUSED
    assert response.flags & dns.flags.QR
    assert not response.flags & (dns.flags.AA | dns.flags.RA)
    assert not response.answer
    assert not response.authority


# -- garbage -------------------------------------------------------------------------------


def _garbage() -> list[bytes]:
    rng = random.Random(20240601)
    good = query_wire(f"alpha.{ZONE}", use_edns=0)
    packets = [
        b"",
        b"\x00",
        b"\x12\x34\x00\x00\x00",
        good[:11],
        good[:12],
        good[:-1],
        good + b"\x00" * 100,
        with_header(good, qd=0xFFFF),
        with_header(good, ar=0xFFFF),
        good[:12] + b"\x3f" + b"a" * 10,  # a label longer than what follows
        good[:12] + b"\x40abc\x00\x00\x01\x00\x01",  # label type 0x40 (extended)
        good[:12] + b"\xc0\xff\x00\x01\x00\x01",  # pointer past the end
        b"\xff" * 600,
        bytes(rng.randrange(256) for _ in range(60_000)),
    ]
    for _ in range(40):
        size = rng.randrange(0, 200)
        packets.append(bytes(rng.randrange(256) for _ in range(size)))
    for _ in range(40):
        mutated = bytearray(good)
        for _ in range(rng.randrange(1, 6)):
            mutated[rng.randrange(len(mutated))] = rng.randrange(256)
        packets.append(bytes(mutated))
    return packets


def _answered(wire: bytes) -> bool:
    """The server's contract: every message of a header or more that is not a response
    gets a reply (FORMERR when it cannot be parsed); anything else is dropped."""
    return len(wire) >= 12 and not wire[2] & 0x80


def _check_reply(wire: bytes, reply: bytes) -> None:
    assert reply[:2] == wire[:2]  # same ID
    assert reply[2] & 0x80  # QR
    dns.message.from_wire(reply)  # a well-formed message


def test_garbage_over_udp_does_not_stop_the_server(dns_server: ServerProcess) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        for wire in _garbage():
            sock.sendto(wire, (dns_server.host, dns_server.port))
            sock.settimeout(IO_TIMEOUT if _answered(wire) else 0.1)
            try:
                reply = sock.recv(65535)
            except TimeoutError:
                assert not _answered(wire), f"no reply to {wire[:40]!r}"
                continue
            assert _answered(wire), f"a reply to {wire[:40]!r}, which must be dropped"
            _check_reply(wire, reply)
    assert_serves_alpha(dns_server)
    assert_serves_alpha(dns_server, tcp=True)


def test_garbage_over_tcp_does_not_stop_the_server(dns_server: ServerProcess) -> None:
    """Each piece of garbage, then a good query on the same connection: the garbage gets
    its reply (or nothing) and the connection goes on serving."""
    good = query_wire(f"alpha.{ZONE}", qid=7)
    for wire in _garbage():
        with tcp_connect(dns_server) as sock:
            tcp_send(sock, wire, good)
            reply = tcp_receive(sock)
            if _answered(wire):
                _check_reply(wire, reply)
                reply = tcp_receive(sock)
            answer = dns.message.from_wire(reply)
            assert (answer.id, answer.rcode()) == (7, dns.rcode.NOERROR), wire[:40]
            assert str(answer.answer[0][0]) == "192.0.2.1"
    # Connections that stop mid-length or mid-message, then vanish.
    for partial in (b"\x00", b"\x00\x40" + good[:20]):
        with tcp_connect(dns_server) as sock:
            sock.sendall(partial)
    assert_serves_alpha(dns_server, tcp=True)
    assert_serves_alpha(dns_server)


@pytest.mark.parametrize("tcp", [False, True], ids=["udp", "tcp"])
def test_responses_are_never_answered(dns_server: ServerProcess, tcp: bool) -> None:
    response = dns.message.make_response(dns.message.make_query(f"alpha.{ZONE}", "A"))
    response.id = 0x4242
    wire = response.to_wire()
    if tcp:
        with tcp_connect(dns_server) as sock:
            tcp_send(sock, wire, query_wire(f"alpha.{ZONE}", qid=0x4343))
            first = dns.message.from_wire(tcp_receive(sock))
        assert first.id == 0x4343  # the response got nothing back
    else:
        assert udp_exchange(dns_server, wire, wait=0.5) is None
    assert_serves_alpha(dns_server, tcp=tcp)
