"""The screen: garbage rejected from its header and framing, before any parse.

A flood of malformed datagrams must cost no more than a flood of cached answers, so
what can be judged from the header and the framing of the records is judged here, with
byte tests only (no dnspython, no exception on the common path), and rejected with the
answer RFC 1035 4.1.1 and RFC 7766 call for: nothing for what is no request (shorter than
a header: there is no ID to echo; a response: never answer one, no loops), NOTIMP for an
opcode we do not serve, FORMERR (header only, ID, opcode and RD echoed) for a query
whose sections cannot be right. What passes may still be refused or answered FORMERR by
the general path (a bad OPT option, EDNS version): the screen only takes away what
needs no parse to judge.

`screen` returns the reason (a label of `controparte_dns_malformed_total`) and
`rejection` the response for it; both are pure and never raise. `screen` is the
compiled walk (`_screen.c`) when the package was built with it, else `python_screen`;
the two give the same verdict for every datagram (tests/unit/test_screen.py). The
compiled one, run before the answer cache, makes a rejection cost no more than a
cached answer (docs/HARDENING.md, "Fourth pass").
"""

from __future__ import annotations

import dns.rcode

from controparte.dns.answer import header_tails

SHORT = "short"
"""Shorter than a DNS header: dropped."""
RESPONSE = "response"
"""QR set: a response, never answered (dropped)."""
OPCODE = "opcode"
"""An opcode we do not serve: NOTIMP."""
QDCOUNT = "qdcount"
"""A QUERY without exactly one question (RFC 9619), an UPDATE without exactly one zone
(RFC 2136 3.1.1): FORMERR."""
ANSWER = "answer"
"""A QUERY with records in its answer section: FORMERR."""
QUESTION = "question"
"""The question's name or fixed fields are cut short, too long, compressed or of a
label type that is not plain: FORMERR."""
QTYPE = "qtype"
"""A question for a type that only stands in a record (OPT, TKEY, TSIG): FORMERR."""
RECORDS = "records"
"""The records after the question (an UPDATE's prerequisites and updates too) do not
frame the rest of the message exactly (cut short, trailing bytes, a bad name), or hold
more than one OPT, or an OPT that is not owned by the root, not in the additional
section or whose options do not fill its RDATA exactly: FORMERR."""

REASONS = (SHORT, RESPONSE, OPCODE, QDCOUNT, ANSWER, QUESTION, QTYPE, RECORDS)

_HEADER = 12
_LAST_QTYPE = _HEADER + 255 + 4
"""Where the question's type and class end at the latest (a name is at most 255 octets)."""
_UPDATE = 5
_OPT = 41
_RECORD_ONLY_TYPES = (_OPT, 249, 250)  # OPT, TKEY, TSIG: all below 256
REPLIES = {
    reason: header_tails(dns.rcode.NOTIMP if reason == OPCODE else dns.rcode.FORMERR)
    for reason in REASONS
    if reason not in (SHORT, RESPONSE)
}
"""Reason -> the query's third header byte -> the rejection after its ID (`header_only`'s);
absent: dropped. Public for the UDP loop, which answers a flood without a call more."""


def python_screen(wire: bytes, updates: bool) -> str | None:  # noqa: C901 - one pass, on purpose
    """The reason `wire` is rejected, or None when it goes on to be answered: a QUERY
    (or, with `updates`, an UPDATE: its zone section stands where the question does,
    its prerequisites and updates where the answer and authority do) whose header and
    records frame the message exactly."""
    size = len(wire)
    if size < _HEADER:
        return SHORT
    flags = wire[2]
    if flags & 0x80:
        return RESPONSE
    opcode = flags >> 3 & 0x0F
    if opcode and not (updates and opcode == _UPDATE):
        return OPCODE
    if wire[4] or wire[5] != 1:
        return QDCOUNT
    if not opcode and (wire[6] or wire[7]):
        return ANSWER
    pos = _HEADER
    try:  # the question's name: plain labels only (nothing earlier to point at)
        while length := wire[pos]:
            if length > 63:
                return QUESTION
            pos += length + 1
    except IndexError:  # cut short: rare, and no dearer than a walk over records
        return QUESTION
    pos += 5
    if pos > size or pos > _LAST_QTYPE:
        return QUESTION
    if not opcode and not wire[pos - 4] and wire[pos - 3] in _RECORD_ONLY_TYPES:
        return QTYPE
    before = (wire[6] << 8 | wire[7]) + (wire[8] << 8 | wire[9])  # answer, authority
    count = before + (wire[10] << 8 | wire[11])
    if not count:
        return None if pos == size else RECORDS
    return _records(wire, pos, before, count)


def _records(wire: bytes, pos: int, before: int, count: int) -> str | None:  # noqa: C901
    """RECORDS unless the `count` records from `pos` frame the rest of `wire` exactly,
    with at most one OPT, owned by the root, after the first `before` records (in the
    additional section), its options filling its RDATA exactly."""
    size = len(wire)
    opts = 0
    for index in range(count):
        start = pos
        while True:  # a record's name: labels, ending with the root or an earlier pointer
            if pos >= size:
                return RECORDS
            length = wire[pos]
            if length == 0:
                pos += 1
                break
            if length >= 0xC0:
                if pos + 1 >= size or ((length & 0x3F) << 8 | wire[pos + 1]) >= start:
                    return RECORDS
                pos += 2
                break
            if length > 63:
                return RECORDS
            pos += 1 + length
        if pos + 10 > size:
            return RECORDS
        end = pos + 10 + (wire[pos + 8] << 8 | wire[pos + 9])
        if not wire[pos] and wire[pos + 1] == _OPT:
            opts += 1
            if opts > 1 or index < before or pos != start + 1 or end > size:
                return RECORDS
            option = pos + 10
            while option < end:  # each option: code, length, data, filling the RDATA
                if option + 4 > end:
                    return RECORDS
                option += 4 + (wire[option + 2] << 8 | wire[option + 3])
            if option != end:
                return RECORDS
        pos = end
    if pos != size:
        return RECORDS
    return None


try:
    from controparte.dns._screen import screen as screen  # noqa: PLC0414 - re-exported
except ImportError:  # built without a C compiler (or CONTROPARTE_PURE): same verdicts
    screen = python_screen
COMPILED = screen is not python_screen
"""Whether `screen` is the compiled walk."""


def rejection(wire: bytes, reason: str) -> bytes | None:
    """The response to `wire`, rejected for `reason` by `screen` (None: send nothing)."""
    tails = REPLIES.get(reason)
    return None if tails is None else wire[:2] + tails[wire[2]]
