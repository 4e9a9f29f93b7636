"""The fast path: wire-format answers for the commonest queries, without dnspython.

It answers a plain or EDNS(0) QUERY, class IN, for `<label>.<zone>` or
`_mxserver._tcp.<label>.<zone>`, of any data type but ANY, when the response fits the
client's UDP size. Anything else returns None and goes to `answer.py`, which is the
reference: tests check that both give the same bytes for the same query and zone.

The bytes are what dnspython renders for the same response: the question is copied as
sent (the client's case), owner names are pointers into it, SOA names are compressed
against it, the SRV target is written in full (RFC 2782), and additional A before AAAA.
"""

from __future__ import annotations

import struct

from controparte.dns.zone import SRV_LABELS, Zone

_A, _AAAA, _SRV = 1, 28, 33
_COOKIE, _PADDING = 10, 12  # EDNS option codes
_COUNTS_QUERY = b"\x00\x01\x00\x00\x00\x00"  # QDCOUNT=1, ANCOUNT=0, NSCOUNT=0
_IN = b"\x00\x01"
_OPT_FIXED = b"\x00\x00\x29"  # root owner, type OPT
_SRV_QNAME_PREFIX = sum(1 + len(label) for label in SRV_LABELS)  # label offset - 12
_SRV_0, _SRV_1 = SRV_LABELS
_RR_FIXED = struct.Struct("!HHHIH")  # pointer, type, class, ttl, rdlength
_U16 = struct.Struct("!H")


def _not_a_data_type(qtype: int) -> bool:
    """Meta and query-only types (OPT, TKEY, TSIG, IXFR, AXFR, MAILB, MAILA, ANY) and
    type 0: the general path decides what they get."""
    return qtype in {0, 41} or 128 <= qtype <= 255


def _ignorable_options(opt: bytes, pos: int) -> bool:
    """True when the EDNS options from `pos` to the end are all well-formed COOKIE
    (RFC 7873: 8-byte client cookie, optional 8-32-byte server cookie) or PADDING
    options: a server that implements neither ignores them (and answers without)."""
    end = len(opt)
    while pos < end:
        if pos + 4 > end:
            return False
        code = opt[pos] << 8 | opt[pos + 1]
        length = opt[pos + 2] << 8 | opt[pos + 3]
        pos += 4 + length
        if pos > end:
            return False
        if code == _COOKIE:
            if length != 8 and not 16 <= length <= 40:
                return False
        elif code != _PADDING:
            return False
    return True


def write_name(
    out: bytearray, labels: tuple[bytes, ...], compress: dict[tuple[bytes, ...], int]
) -> None:
    """Append a name as dnspython's `Name.to_wire` does with a compression table:
    a pointer to the longest suffix already written, registering new suffixes."""
    for i in range(len(labels)):
        suffix = tuple(label.lower() for label in labels[i:])
        pos = compress.get(suffix)
        if pos is not None:
            out += _U16.pack(0xC000 | pos)
            return
        if len(out) <= 0x3FFF:
            compress[suffix] = len(out)
        out.append(len(labels[i]))
        out += labels[i]
    out.append(0)


class FastPath:
    """Answers from one zone snapshot. Stateless besides the snapshot's caches."""

    __slots__ = ("_origin", "_origin_len", "_zone")

    def __init__(self, zone: Zone) -> None:
        self._zone = zone
        self._origin = zone.config.origin_labels
        self._origin_len = len(self._origin)

    def _negative_soa(self, zoneoff: int) -> bytes:
        """The authority SOA RR for a negative answer whose question has the zone apex
        at `zoneoff` and ends 4 bytes after it (no other name precedes the SOA)."""
        cached = self._zone.soa_cache.get(zoneoff)
        if cached is not None:
            return cached
        c = self._zone.config
        compress: dict[tuple[bytes, ...], int] = {}
        offset = zoneoff
        for i, label in enumerate(self._origin):
            compress[self._origin[i:]] = offset
            offset += 1 + len(label)
        # `out` stands for the message: only its length matters for the offsets.
        start = offset + 1 + 4  # the root label, then QTYPE and QCLASS
        out = bytearray(start)
        out += _RR_FIXED.pack(0xC000 | zoneoff, 6, 1, min(c.ttl, c.negative_ttl), 0)
        rdata_at = len(out)
        write_name(out, tuple(c.soa_mname.labels[:-1]), compress)
        write_name(out, tuple(c.soa_rname.labels[:-1]), compress)
        out += struct.pack(
            "!IIIII", self._zone.serial, c.soa_refresh, c.soa_retry, c.soa_expire, c.negative_ttl
        )
        out[rdata_at - 2 : rdata_at] = _U16.pack(len(out) - rdata_at)
        rr = bytes(out[start:])
        self._zone.soa_cache[zoneoff] = rr
        return rr

    def answer(self, wire: bytes, tcp: bool) -> bytes | None:  # noqa: C901 - hot path: one function on purpose, see docs/PERFORMANCE.md
        """The response, or None when the general path must answer."""
        size = len(wire)
        if size < 17 or wire[2] & 0xF8 or wire[4:10] != _COUNTS_QUERY:
            return None  # a response, another opcode, or not exactly one question
        arcount = wire[10] << 8 | wire[11]
        if arcount > 1:
            return None
        # The question name: plain labels only (a pointer goes to the general path).
        labels: list[bytes] = []
        pos = 12
        while True:
            length = wire[pos]
            if length == 0:
                break
            if length > 63:
                return None
            pos += 1 + length
            if pos >= size:
                return None
            labels.append(wire[pos - length : pos].lower())
        qend = pos + 5
        if qend > size or qend - 12 > 259 or wire[pos + 3 : qend] != _IN:
            return None  # truncated, a name over 255 octets, or not class IN
        qtype = wire[pos + 1] << 8 | wire[pos + 2]
        if _not_a_data_type(qtype):
            return None
        zone = self._zone
        config = zone.config
        if arcount:
            opt = wire[qend:]
            # Exactly one OPT: root owner, version 0, no extended rcode; options only
            # those a server without them ignores (a well-formed COOKIE, PADDING).
            if (
                len(opt) < 11
                or opt[:3] != _OPT_FIXED
                or opt[5:7] != b"\x00\x00"
                or (opt[9] << 8 | opt[10]) != len(opt) - 11
                or (len(opt) > 11 and not _ignorable_options(opt, 11))
            ):
                return None
            limit = max(512, min(opt[3] << 8 | opt[4], config.edns_udp_size))
            opt_rr = (
                _OPT_FIXED + _U16.pack(config.edns_udp_size) + bytes((0, 0, opt[7] & 0x80, 0, 0, 0))
            )
        elif qend != size:
            return None
        else:
            limit = 512
            opt_rr = b""
        n = self._origin_len
        if len(labels) <= n or tuple(labels[-n:]) != self._origin:
            return None  # the apex, or outside the zone
        relative = labels[:-n]
        if len(relative) == 1:
            label = relative[0]
            srv = False
            zoneoff = 13 + len(label)
        elif len(relative) == 3 and relative[0] == _SRV_0 and relative[1] == _SRV_1:
            label = relative[2]
            srv = True
            zoneoff = 13 + _SRV_QNAME_PREFIX + len(label)
        else:
            return None
        if label in config.reserved:
            return None
        node = zone.nodes.get(label)
        ttl = config.ttl
        rcode = 0
        answers = 0
        extra = 0
        body = b""
        if node is None or (srv and node[2] is None):
            rcode = 3  # NXDOMAIN
        elif srv:
            if qtype == _SRV:
                target = b"".join(bytes((len(x),)) + x for x in (label, *self._origin))
                target += b"\x00"
                body = (
                    _RR_FIXED.pack(0xC00C, _SRV, 1, ttl, 6 + len(target))
                    + b"\x00\x00\x00\x00"
                    + _U16.pack(node[2])
                    + target
                )
                answers = 1
                pointer = 0xC000 | (12 + _SRV_QNAME_PREFIX)
                if node[0] is not None:
                    body += _RR_FIXED.pack(pointer, _A, 1, ttl, 4) + node[0]
                    extra += 1
                if node[1] is not None:
                    body += _RR_FIXED.pack(pointer, _AAAA, 1, ttl, 16) + node[1]
                    extra += 1
        elif qtype == _A:
            if node[0] is not None:
                body = _RR_FIXED.pack(0xC00C, _A, 1, ttl, 4) + node[0]
                answers = 1
        elif qtype == _AAAA and node[1] is not None:
            body = _RR_FIXED.pack(0xC00C, _AAAA, 1, ttl, 16) + node[1]
            answers = 1
        if answers:
            counts = struct.pack("!HHHH", 1, 1, 0, extra + (1 if opt_rr else 0))
        else:
            body = self._negative_soa(zoneoff)
            counts = struct.pack("!HHHH", 1, 0, 1, 1 if opt_rr else 0)
        response = b"".join(
            (
                wire[:2],
                bytes((0x84 | (wire[2] & 0x01), (wire[3] & 0x10) | rcode)),
                counts,
                wire[12:qend],
                body,
                opt_rr,
            )
        )
        if not tcp and len(response) > limit:
            return None  # the general path decides what to leave out or truncate
        return response
