"""The general answer path: request bytes -> response bytes (or None: send nothing).

Built on dnspython, it handles every query, however unusual; `fastpath.py` answers the
common ones faster and is checked byte for byte against this module. Outcome -> rcode
and flags happens here only.

Contract: never raises for any input. Garbage that is not a DNS query (shorter than a
header, or a response) is dropped; anything else gets an answer with an rcode. A signed
request (TSIG) cannot be verified here (no keys): NOTAUTH, header only; the server sends
signed requests and zone transfers to `transfer.py`, which answers them with `respond`.
"""

from __future__ import annotations

import struct

import dns.edns
import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rcode
import dns.rdataclass
import dns.rdatatype
from dns.rdatatype import RdataType

from controparte.dns.lookup import LookupResult, Outcome, lookup
from controparte.dns.zone import Zone

HEADER = struct.Struct("!HHHHHH")
TCP_MAX = 65535
NO_EDNS_UDP_MAX = 512
_QR_BYTE = 0x80  # QR in the third header byte
_OPCODE_RD_BYTE = 0x79  # the opcode and RD in the third header byte
_NO_COUNTS = bytes(8)
_HEADER_SIZE = HEADER.size
_HEADER_TAILS = tuple(
    tuple(bytes((_QR_BYTE | (byte & _OPCODE_RD_BYTE), rcode)) + _NO_COUNTS for byte in range(256))
    for rcode in range(16)
)
"""rcode -> the query's third header byte -> a bare response's header after its ID."""

# Query types that are not data types: refused or rejected before lookup.
_TRANSFER = {RdataType.AXFR, RdataType.IXFR}
_NOT_QUESTIONS = {RdataType.OPT, RdataType.TSIG, RdataType.TKEY}
_OBSOLETE = {RdataType.MAILA, RdataType.MAILB}

_RCODE = {
    Outcome.SUCCESS: dns.rcode.NOERROR,
    Outcome.NODATA: dns.rcode.NOERROR,
    Outcome.NXDOMAIN: dns.rcode.NXDOMAIN,
    Outcome.REFUSED: dns.rcode.REFUSED,
}


def header_only(wire: bytes, rcode: int) -> bytes | None:
    """A bare response (no sections) to a query we could not parse: same ID and opcode,
    RD copied. None for a datagram that is no query at all. The ten bytes after the ID
    come from a table built once (it answers garbage floods: no arithmetic, no enums)."""
    if len(wire) < _HEADER_SIZE or wire[2] & _QR_BYTE:
        return None
    return wire[:2] + _HEADER_TAILS[rcode & 0x0F][wire[2]]


def header_tails(rcode: int) -> tuple[bytes, ...]:
    """The query's third header byte -> what follows the ID in `header_only`'s response
    with `rcode` (for the screen, which answers a flood without a call more)."""
    return _HEADER_TAILS[rcode & 0x0F]


def udp_limit(query: dns.message.Message, edns_udp_size: int) -> int:
    """The largest UDP response the client accepts (RFC 6891 6.2.5), capped by ours."""
    if query.edns < 0:
        return NO_EDNS_UDP_MAX
    return max(NO_EDNS_UDP_MAX, min(query.payload, edns_udp_size))


def response_to(query: dns.message.Message, zone: Zone) -> dns.message.Message:
    """An empty response to `query`: same ID and opcode, RD and CD copied, the question,
    and OPT when the query has EDNS (our size, DO copied). No rcode, no flags else."""
    response = dns.message.Message(query.id)
    response.flags = dns.flags.QR | (query.flags & (dns.flags.RD | dns.flags.CD))
    response.set_opcode(query.opcode())
    response.question = list(query.question)
    if query.edns >= 0:
        response.use_edns(0, query.ednsflags & dns.flags.DO, zone.config.edns_udp_size)
    return response


def size_limit(query: dns.message.Message, zone: Zone, *, tcp: bool) -> int:
    """The largest response to `query`: 64 KiB over TCP, else `udp_limit`."""
    return TCP_MAX if tcp else udp_limit(query, zone.config.edns_udp_size)


def render(response: dns.message.Message, max_size: int) -> bytes:
    """Render within `max_size`. Additional data that does not fit is left out without
    TC; when the answer or authority does not fit, TC is set and they are left out
    (RFC 2181 9, RFC 1035 4.2.1): the client retries over TCP."""
    try:
        return response.to_wire(max_size=max_size)
    except dns.exception.TooBig:
        pass
    while response.additional:
        response.additional.pop()
        try:
            return response.to_wire(max_size=max_size)
        except dns.exception.TooBig:
            continue
    response.answer = []
    response.authority = []
    response.flags |= dns.flags.TC
    return response.to_wire(max_size=max_size)


def answer(zone: Zone, wire: bytes, *, tcp: bool) -> bytes | None:
    """The response to `wire` from `zone` (TCP: no size limit but 64 KiB, full ANY)."""
    if len(wire) < HEADER.size or wire[2] & 0x80:
        return None  # not a query: never answer a response (no loops)
    try:
        query = dns.message.from_wire(wire, keyring=None)
    except dns.message.UnknownTSIGKey:
        return header_only(wire, dns.rcode.NOTAUTH)
    except (dns.exception.DNSException, ValueError, IndexError, UnicodeError):
        return header_only(wire, dns.rcode.FORMERR)
    return render(respond(zone, query, tcp=tcp), size_limit(query, zone, tcp=tcp))


def respond(zone: Zone, query: dns.message.Message, *, tcp: bool) -> dns.message.Message:
    """The response to `query` from `zone`, to be rendered (`render`); over TCP, ANY
    gets every RRset. Zone transfers are refused here (`transfer.py` serves them)."""
    response = response_to(query, zone)
    if query.edns > 0:
        response.set_rcode(dns.rcode.BADVERS)  # RFC 6891 6.1.3, no question data
        return response
    if query.opcode() != dns.opcode.QUERY:
        response.set_rcode(dns.rcode.NOTIMP)
        return response
    if len(query.question) != 1 or query.answer or query.authority:
        response.set_rcode(dns.rcode.FORMERR)
        return response
    question = query.question[0]
    qtype = RdataType(question.rdtype)
    if qtype in _NOT_QUESTIONS:
        response.set_rcode(dns.rcode.FORMERR)
        return response
    if qtype in _OBSOLETE:
        response.set_rcode(dns.rcode.NOTIMP)
        return response
    if question.rdclass != dns.rdataclass.IN or qtype in _TRANSFER:
        # Only class IN is served; a transfer is only for whom `transfer.py` lets in.
        response.set_rcode(dns.rcode.REFUSED)
        return response
    _fill(response, lookup(zone, question.name, qtype, full_any=tcp))
    return response


def _fill(response: dns.message.Message, result: LookupResult) -> None:
    """The one place a lookup outcome becomes rcode, AA and sections."""
    response.set_rcode(_RCODE[result.outcome])
    if result.outcome is Outcome.REFUSED:
        return
    response.flags |= dns.flags.AA
    response.answer = result.answer
    response.authority = result.authority
    response.additional = result.additional
