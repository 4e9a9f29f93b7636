"""The wire format of zone transfers: the zone's records as bytes, the messages that carry
them, and the TSIG that signs a stream of messages. Pure; no sockets.

A transfer of a million installations is 2.5 million records: made through dnspython's
objects it takes minutes, so installations are written by hand (`NodeWire`), straight
from the snapshot's packed nodes, and checked against dnspython by property tests. The
apex (SOA, NS, glue: a few records) is rendered by dnspython.

Every message repeats the question (RFC 5936 2.2.1 allows it; Knot does it), so every
owner name below the apex is written as its first label and a pointer to the question
name at offset 12, and nothing else is compressed: a record's bytes do not depend on
where it lands, and a message can be cut between any two records. SRV targets are
written in full, as dnspython writes them (RFC 2782).
"""

from __future__ import annotations

import io
import itertools
import struct
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Final

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.rdtypes.ANY.TSIG
import dns.tsig
from dns.rdataclass import RdataClass
from dns.rdatatype import RdataType

from controparte.dns.answer import HEADER
from controparte.dns.zone import SRV_LABELS, Node, Zone, ZoneRRset

MAX_MESSAGE: Final = 65535
"""The largest DNS message over TCP (the two-byte length), dnspython's limit too."""

_RR_FIXED: Final = struct.Struct("!HHIH")  # type, class, TTL, RDLENGTH
_TO_QUESTION: Final = b"\xc0\x0c"  # a pointer to the question name
_LENGTH: Final = tuple(bytes((n,)) for n in range(64))  # a label's length byte
_SRV_SERVICE: Final = b"".join(_LENGTH[len(label)] + label for label in SRV_LABELS)

Chunk = tuple[bytes, int]
"""Whole records in wire format, and how many."""


def name_wire(name: dns.name.Name) -> bytes:
    """`name` in wire format, uncompressed."""
    wire = name.to_wire()
    assert wire is not None
    return wire


class _QuestionOnly(dict[dns.name.Name, int]):
    """A compression table holding the question name and never learning another, so
    that what dnspython renders with it points only at offset 12 (see the module)."""

    def __setitem__(self, name: dns.name.Name, offset: int) -> None:
        pass


def rrset_wire(rrset: ZoneRRset, origin: dns.name.Name) -> Chunk:
    """An RRset of the zone in wire format, names compressed against the question only
    (which names `origin`)."""
    out = io.BytesIO()
    compress = _QuestionOnly({origin: 12})
    count = rrset.to_rrset().to_wire(out, compress, want_shuffle=False)
    return out.getvalue(), count


class NodeWire:
    """Installations' records in wire format, for one zone configuration: the records
    `Zone.rrsets` describes (A, AAAA, then the SRV at `_mxserver._tcp.<label>`), written
    by hand. Owner names point at the question name, which must be the zone's apex."""

    __slots__ = ("_a", "_aaaa", "_origin", "_srv", "_srv_rdlength")

    def __init__(self, origin: dns.name.Name, ttl: int) -> None:
        self._origin = name_wire(origin)
        self._a = _RR_FIXED.pack(RdataType.A, RdataClass.IN, ttl, 4)
        self._aaaa = _RR_FIXED.pack(RdataType.AAAA, RdataClass.IN, ttl, 16)
        self._srv = struct.pack("!HHI", RdataType.SRV, RdataClass.IN, ttl)
        self._srv_rdlength = 6 + 1 + len(self._origin)  # priority, weight, port, target

    def chunks(
        self, nodes: Iterable[tuple[bytes, Node]], hidden: frozenset[bytes] = frozenset()
    ) -> Iterator[Chunk]:
        """The records of each (label, node), one chunk per installation, made lazily:
        A `ipv4`, AAAA `ipv6` (packed), SRV `0 0 port <label>.<zone>.`, each when set;
        the labels in `hidden` left out. One loop, no call per installation: a million
        take about a second."""
        a, aaaa, srv, rdlength, origin = (
            self._a,
            self._aaaa,
            self._srv,
            self._srv_rdlength,
            self._origin,
        )
        length = _LENGTH
        for label, (ipv4, ipv6, port) in nodes:
            if label in hidden:
                continue
            size = length[len(label)]
            owner = size + label + _TO_QUESTION
            data = b""
            count = 0
            if ipv4 is not None:
                data = owner + a + ipv4
                count = 1
            if ipv6 is not None:
                data += owner + aaaa + ipv6
                count += 1
            if port is not None:
                data += b"".join(
                    (
                        _SRV_SERVICE,
                        owner,
                        srv,
                        (rdlength + len(label)).to_bytes(2, "big"),
                        b"\x00\x00\x00\x00",  # priority 0, weight 0
                        port.to_bytes(2, "big"),
                        size,
                        label,
                        origin,
                    )
                )
                count += 1
            yield data, count


def apex_chunks(zone: Zone) -> list[Chunk]:
    """The SOA, the apex NS and the glue, in the order of `Zone.rrsets`."""
    return [rrset_wire(rrset, zone.config.origin) for rrset in zone.apex_rrsets()]


def soa_chunk(zone: Zone, serial: int | None = None) -> Chunk:
    """The zone's SOA record, with `serial` instead of the zone's when given."""
    soa = zone.soa_rrset()
    if serial is not None:
        soa = soa._replace(rdatas=(soa.rdatas[0].replace(serial=serial),))
    return rrset_wire(soa, zone.config.origin)


def axfr_chunks(zone: Zone) -> Iterator[Chunk]:
    """The zone as an AXFR answers it (RFC 5936 2.2): SOA, the apex NS and glue, every
    installation in the snapshot's own order (no sort; those on reserved labels left
    out, as lookups leave them out), the SOA again. Lazy."""
    apex = apex_chunks(zone)
    nodes = NodeWire(zone.config.origin, zone.config.ttl)
    installations = nodes.chunks(zone.nodes.pairs(), zone.config.reserved)
    return itertools.chain(apex, installations, apex[:1])


def axfr_size(zone: Zone) -> int:
    """How many records an AXFR of `zone` carries (the SOA twice): one pass over the
    installations."""
    count = sum(n for _, n in apex_chunks(zone)) + 1
    reserved = zone.config.reserved
    for label, (ipv4, ipv6, port) in zone.nodes.pairs():
        if label not in reserved:
            count += (ipv4 is not None) + (ipv6 is not None) + (port is not None)
    return count


# -- messages ----------------------------------------------------------------------------


class StreamSigner:
    """Signs the messages of one response with TSIG (RFC 8945 5.3.1): the first over the
    request's MAC, each later one chained to the previous MAC (dnspython's
    `dns.tsig.sign` with `multi`). Every message is signed. Not thread-safe: one per
    response."""

    def __init__(
        self,
        key: dns.tsig.Key,
        request_mac: bytes,
        original_id: int,
        clock: Callable[[], float] = time.time,
        fudge: int = 300,
    ) -> None:
        self.key = key
        self.request_mac = request_mac
        self.clock = clock
        self._template = dns.rdtypes.ANY.TSIG.TSIG(  # type: ignore[no-untyped-call]
            RdataClass.ANY, RdataType.TSIG, key.algorithm, 0, fudge, b"", original_id, 0, b""
        )
        self._owner = name_wire(key.name)
        self._ctx: object | None = None
        mac_size = dns.tsig.mac_sizes[key.algorithm]
        self.room: int = len(self._owner) + _RR_FIXED.size + len(self._rdata_wire()) + mac_size
        """The bytes a TSIG record adds to a message."""

    def _rdata_wire(self, rdata: dns.rdtypes.ANY.TSIG.TSIG | None = None) -> bytes:
        wire = (rdata or self._template).to_wire()
        assert wire is not None
        return wire

    def sign(self, wire: bytes) -> bytes:
        """`wire`, a whole message, with its TSIG record appended."""
        rdata, self._ctx = dns.tsig.sign(  # type: ignore[no-untyped-call]
            wire, self.key, self._template, int(self.clock()), self.request_mac, self._ctx, True
        )
        rdata_wire = self._rdata_wire(rdata)
        additional = int.from_bytes(wire[10:12], "big") + 1
        return b"".join(
            (
                wire[:10],
                additional.to_bytes(2, "big"),
                wire[12:],
                self._owner,
                _RR_FIXED.pack(RdataType.TSIG, RdataClass.ANY, 0, len(rdata_wire)),
                rdata_wire,
            )
        )


@dataclass(frozen=True, slots=True)
class Head:
    """What every message of one response repeats: the ID, the flags, the question and
    the OPT record (b"" without EDNS); and the signer when the request was signed."""

    id: int
    flags: int
    question: bytes
    opt: bytes = b""
    signer: StreamSigner | None = None

    @classmethod
    def answering(
        cls, request: dns.message.Message, edns_udp_size: int, signer: StreamSigner | None
    ) -> Head:
        """The head of an authoritative answer to `request` (one question): QR and AA,
        RD copied; OPT when the request had EDNS (RFC 6891 7: our size, DO copied)."""
        q = request.question[0]
        question = name_wire(q.name) + struct.pack("!HH", q.rdtype, q.rdclass)
        opt = b""
        if request.edns >= 0:
            ttl = request.ednsflags & dns.flags.DO  # extended rcode 0, version 0
            opt = b"\x00" + _RR_FIXED.pack(RdataType.OPT, edns_udp_size, ttl, 0)
        flags = dns.flags.QR | dns.flags.AA | (request.flags & dns.flags.RD)
        return cls(request.id, flags, question, opt, signer)


def messages(head: Head, chunks: Iterable[Chunk], max_size: int = MAX_MESSAGE) -> Iterator[bytes]:
    """The messages carrying `chunks` in order, as many per message as fit in `max_size`
    bytes; at least one. Lazy: a message is made when asked for. Raises dnspython's `TooBig` when
    one chunk alone does not fit."""
    signer = head.signer
    fixed = HEADER.size + len(head.question) + len(head.opt)
    budget = max_size - fixed - (signer.room if signer is not None else 0)
    additional = 1 if head.opt else 0
    body: list[bytes] = []
    used = count = 0

    def finish() -> bytes:
        top = HEADER.pack(head.id, head.flags, 1, count, 0, additional)
        wire = b"".join((top, head.question, *body, head.opt))
        return wire if signer is None else signer.sign(wire)

    for data, n in chunks:
        size = len(data)
        if used + size > budget:
            if size > budget:
                raise dns.exception.TooBig
            yield finish()
            body.clear()
            used = count = 0
        body.append(data)
        used += size
        count += n
    yield finish()
