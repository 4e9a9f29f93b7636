"""Zone transfers (AXFR, RFC 5936; IXFR, RFC 1995) and the signed requests that go with
them: request bytes, the peer's address and a snapshot -> the response messages. No
sockets: the server runs `Transfers.respond` off its hot paths and writes what it yields,
wherever that runs (the journal and the keys are handed in).

- TSIG (RFC 8945) is verified by `tsigauth.py`, without its replay check (a transfer
  changes nothing; secondaries sharing a key sign concurrently). A failure gets its
  NOTAUTH answer; every other response to a signed request is signed, a stream message
  by message (`xfrwire.StreamSigner`).
- Who may: `TransferPolicy` over the `transfer_allow` rules, with the key only when it is
  a transfer key (`KeyRole.TRANSFER`); nobody by default. A request signed with an
  update key is refused whatever the rules say. Refused: REFUSED, with the question.
  This holds for AXFR, IXFR and any other signed request (the SOA queries secondaries
  send before an IXFR): answered signed when allowed, REFUSED signed otherwise.
- AXFR (TCP only; over UDP REFUSED): the zone from the one snapshot, SOA first and last,
  in messages of up to 64 KiB made one at a time as the caller asks for them.
- IXFR from the client's serial (the SOA in its authority section): the current SOA
  alone when the client is up to date (same or newer serial, RFC 1982); otherwise the
  condensed difference from the journal (`ixfr.py`), computed whole before the first
  message, from entries read once, so pruning meanwhile cannot break it (a gap makes it
  AXFR-style); AXFR-style (the AXFR's records, question IXFR) when the journal does not
  reach back, or when the difference has more records than the AXFR. Over UDP: the whole
  answer when it fits the client's size, else the current SOA alone (RFC 1995 2).
- The zone's name (any case) and class IN only, else NOTAUTH; EDNS version > 0: BADVERS.
"""

from __future__ import annotations

import enum
import ipaddress
import itertools
import logging
import threading
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rdataclass
import dns.rdtypes.ANY.SOA
import dns.serial
from dns.rcode import Rcode
from dns.rdatatype import RdataType

from controparte.dns.answer import header_only, render, respond, response_to, size_limit
from controparte.dns.ixfr import Before, Difference, difference
from controparte.dns.tsigauth import (
    PARSE_ERRORS,
    KeyResolver,
    Rejected,
    TsigVerifier,
    Verified,
    sign_response,
)
from controparte.dns.xfrwire import (
    Chunk,
    Head,
    NodeWire,
    StreamSigner,
    axfr_chunks,
    axfr_size,
    messages,
    soa_chunk,
)
from controparte.dns.zone import Zone
from controparte.settings import TransferRule
from controparte.store.base import JournalEntry, KeyRole

log = logging.getLogger("controparte.dns.transfer")

JOURNAL_PAGE = 10_000
"""Journal entries read at a time for an IXFR."""

_AXFR, _IXFR, _TSIG = RdataType.AXFR, RdataType.IXFR, RdataType.TSIG
_ROOT_OPT = b"\x00\x00\x29"  # an OPT record's owner (the root) and type


class Kind(enum.StrEnum):
    """What a transfer sent (the `type` of `controparte_transfers_total`)."""

    AXFR = "axfr"
    IXFR = "ixfr"
    IXFR_AXFR_STYLE = "ixfr_axfr_style"
    IXFR_UP_TO_DATE = "ixfr_up_to_date"


class Journal(Protocol):
    """The part of the store an IXFR reads (`store.base.Store` has it)."""

    def journal_reach(self, serial: int, /) -> int | None: ...

    def journal_since(self, seq: int, limit: int = ..., /) -> Sequence[JournalEntry]: ...


def is_keyed(wire: bytes, *, tcp: bool) -> bool:
    """Whether `wire` is a request for `Transfers`: it carries a TSIG record, or asks
    IXFR, or (over TCP) AXFR. A look at the header, the question and the records' types,
    cheap enough for the UDP loop (about a microsecond for the common query). A wrong
    guess on a strange request is harmless: both paths answer any request."""
    if len(wire) < 12 or wire[2] & 0x80:
        return False
    questions = wire[4] << 8 | wire[5]
    records = (wire[6] << 8 | wire[7]) + (wire[8] << 8 | wire[9])
    additional = wire[10] << 8 | wire[11]
    try:
        if questions == 1:  # the name's end: its root label (or a zero in a label)
            pos = wire.index(0, 12) + 1
            qtype = wire[pos] << 8 | wire[pos + 1]
            if qtype == _IXFR or (tcp and qtype == _AXFR):
                return True
            pos += 4
            if not additional or (
                not records and additional == 1 and wire[pos : pos + 3] == _ROOT_OPT
            ):
                return False
        else:
            pos = 12
            for _ in range(questions):
                pos = _after_name(wire, pos)
                qtype = wire[pos] << 8 | wire[pos + 1]
                if qtype == _IXFR or (tcp and qtype == _AXFR):
                    return True
                pos += 4
        for _ in range(records + additional):
            pos = _after_name(wire, pos)
            if wire[pos] << 8 | wire[pos + 1] == _TSIG:
                return True
            pos += 10 + (wire[pos + 8] << 8 | wire[pos + 9])
    except (IndexError, ValueError):
        return False
    return False


def _after_name(wire: bytes, pos: int) -> int:
    """The offset after the name at `pos` (labels, ending with the root or a pointer)."""
    while True:
        length = wire[pos]
        if length == 0:
            return pos + 1
        if length >= 0xC0:
            return pos + 2
        pos += length + 1


class TransferPolicy:
    """Who may transfer the zone (and send the signed queries that go with it): the
    `transfer_allow` rules. A rule allows a request when its key, if it names one,
    signed the request, and the request's address is in its networks, if it lists any.
    No rule: nobody."""

    def __init__(self, rules: Sequence[TransferRule]) -> None:
        self._rules = [
            (rule.key, tuple(ipaddress.ip_network(net) for net in rule.networks)) for rule in rules
        ]

    def allows(self, key: dns.name.Name | None, address: str) -> bool:
        """Whether a request from `address`, signed with the transfer key `key` (None:
        unsigned), may transfer."""
        name = None if key is None else key.to_text().lower()
        try:
            ip = ipaddress.ip_address(address.split("%", 1)[0])
        except ValueError:
            ip = None
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        for rule_key, networks in self._rules:
            if rule_key is not None and rule_key != name:
                continue
            if networks and (ip is None or not any(ip in net for net in networks)):
                continue
            return True
        return False


class TransferStats:
    """What the transfers did, for metrics. Thread-safe (read with `snapshot`)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._transfers: Counter[tuple[str, str]] = Counter()
        self._refused: Counter[str] = Counter()
        self._serials: dict[str, int] = {}

    def completed(self, kind: Kind, peer: str, serial: int) -> None:
        with self._lock:
            self._transfers[kind.value, peer] += 1
            self._serials[peer] = serial

    def refused(self, reason: str) -> None:
        with self._lock:
            self._refused[reason] += 1

    def snapshot(self) -> tuple[dict[tuple[str, str], int], dict[str, int], dict[str, int]]:
        """(transfers by (type, peer), refusals by reason, the serial each peer last
        transferred completely), copied now."""
        with self._lock:
            return dict(self._transfers), dict(self._refused), dict(self._serials)


class Transfers:
    """Serves transfers of one zone and the signed requests that go with them.
    Thread-safe; `respond` may run in any thread, and its messages be taken in another."""

    def __init__(self, rules: Sequence[TransferRule], journal: Journal, keys: KeyResolver) -> None:
        self.policy = TransferPolicy(rules)
        self.journal = journal
        self.tsig = TsigVerifier(keys, replay=None)
        self.stats = TransferStats()

    def respond(self, wire: bytes, peer: str, zone: Zone, *, tcp: bool) -> Iterator[bytes]:
        """The response to `wire` from `peer` (an address), from `zone`: nothing (not a
        request), one message, or a transfer's messages, made as they are asked for.
        What the transfer needs from the store and the keys is read before this
        returns. A transfer counts as done (`stats`) once its last message was taken
        and the next asked for. Never raises; an internal error is answered SERVFAIL."""
        try:
            return self._respond(wire, peer, zone, tcp)
        except Exception:  # a bug must not stop the server: answer SERVFAIL, go on
            log.exception("internal error on a request from %s; answered SERVFAIL", peer)
            return _one(header_only(wire, Rcode.SERVFAIL))

    def _respond(self, wire: bytes, peer: str, zone: Zone, tcp: bool) -> Iterator[bytes]:
        if len(wire) < 12 or wire[2] & 0x80:
            return iter(())
        asked = self._read(wire, peer, zone)
        if not isinstance(asked, _Asked):
            return asked
        if asked.verified is not None and asked.verified.role is not KeyRole.TRANSFER:
            return self._refused(asked, "update_key")
        if not self.policy.allows(asked.key, peer):
            return self._refused(asked, "not_allowed")
        if not asked.is_transfer:
            return _one(asked.answered(tcp=tcp))  # a signed query (or its error)
        return self._transfer(asked, tcp)

    def _read(self, wire: bytes, peer: str, zone: Zone) -> _Asked | Iterator[bytes]:
        """The request, its TSIG verified when it has one; or the answer to a request
        that is malformed or fails TSIG."""
        try:
            request = dns.message.from_wire(wire, keyring=False)
        except PARSE_ERRORS:
            return self._refuse("formerr", header_only(wire, Rcode.FORMERR), peer, None)
        if not request.had_tsig:
            return _Asked(request, None, peer, zone)
        checked = self.tsig.verify(request, wire)
        if isinstance(checked, Rejected):
            reason = checked.outcome.lower()
            return self._refuse(reason, checked.response, peer, request.keyname)
        return _Asked(checked.message, checked, peer, zone)

    def _transfer(self, asked: _Asked, tcp: bool) -> Iterator[bytes]:
        """An AXFR or IXFR from someone allowed."""
        zone, question = asked.zone, asked.message.question[0]
        if question.name != zone.config.origin or question.rdclass != dns.rdataclass.IN:
            return self._refused(asked, "notauth", Rcode.NOTAUTH)
        if question.rdtype == _AXFR:
            if not tcp:
                return self._refused(asked, "axfr_over_udp")
            return self._done(messages(asked.head(), axfr_chunks(zone)), Kind.AXFR, asked)
        serial = _client_serial(asked.message)
        if serial is None:
            return self._refused(asked, "formerr", Rcode.FORMERR)
        return self._ixfr(asked, serial, tcp)

    # -- IXFR --------------------------------------------------------------------------

    def _ixfr(self, asked: _Asked, serial: int, tcp: bool) -> Iterator[bytes]:
        zone = asked.zone
        current = soa_chunk(zone)
        if _up_to_date(serial, zone.serial):
            kind, chunks = Kind.IXFR_UP_TO_DATE, iter((current,))
        else:
            diff = self._difference(zone, serial)
            if diff is None:
                kind, chunks = Kind.IXFR_AXFR_STYLE, axfr_chunks(zone)
            else:
                kind, chunks = Kind.IXFR, _ixfr_chunks(zone, serial, current, diff)
        done = serial if kind is Kind.IXFR_UP_TO_DATE else zone.serial
        if tcp:
            return self._done(messages(asked.head(), chunks), kind, asked, done)
        limit = size_limit(asked.message, zone, tcp=False)
        try:  # the whole answer in one datagram, if it fits
            out = list(itertools.islice(messages(asked.head(), chunks, limit), 2))
        except dns.exception.TooBig:
            out = []
        if len(out) == 1:
            return self._done(iter(out), kind, asked, done)
        log.info("IXFR to %s over UDP: the current SOA alone (use TCP)", asked.who)
        return messages(asked.head(), [current], limit)

    def _difference(self, zone: Zone, serial: int) -> Difference | None:
        """The condensed difference from `serial` to `zone`; None when the journal does
        not reach back to `serial` (or was pruned while being read), or when it is
        larger than an AXFR."""
        seq = self.journal.journal_reach(serial)
        if seq is None or seq >= zone.seq:
            return None
        before = Before()
        most = len(zone.nodes) + len(zone.config.reserved) + 64  # labels worth a diff
        while seq < zone.seq:
            entries = self.journal.journal_since(seq, JOURNAL_PAGE)
            if not entries or entries[0].seq != seq + 1:
                return None  # pruned since `journal_reach`
            wanted = [e for e in entries if e.seq <= zone.seq]
            before.add(wanted)
            seq = wanted[-1].seq
            if len(before) > most:
                return None
        diff = difference(zone, before)
        size = diff.size + 4  # and the SOAs: new, old, new, new
        if size > len(zone.nodes) and size > axfr_size(zone):
            return None
        return diff

    # -- replies -----------------------------------------------------------------------

    def _done(
        self, out: Iterator[bytes], kind: Kind, asked: _Asked, serial: int | None = None
    ) -> Iterator[bytes]:
        """`out`, then the transfer counted as done (once the caller asks past the last
        message, having sent it): the peer has `serial` (default: the zone's)."""
        sent = 0
        for message in out:
            yield message
            sent += 1
        serial = asked.zone.serial if serial is None else serial
        self.stats.completed(kind, asked.who, serial)
        log.info("%s to %s: serial %d, %d message(s)", kind.value.upper(), asked.who, serial, sent)

    def _refused(self, asked: _Asked, reason: str, rcode: Rcode = Rcode.REFUSED) -> Iterator[bytes]:
        """`rcode` with the question, signed when the request was."""
        response = response_to(asked.message, asked.zone)
        response.set_rcode(rcode)
        if asked.verified is not None:
            sign_response(response, asked.verified)
        return self._refuse(reason, response.to_wire(), asked.peer, asked.key)

    def _refuse(
        self, reason: str, response: bytes | None, peer: str, key: dns.name.Name | None
    ) -> Iterator[bytes]:
        self.stats.refused(reason)
        log.info("refused a request from %s key %s: %s", peer, key or "-", reason)
        return _one(response)


@dataclass(frozen=True, slots=True)
class _Asked:
    """A request being answered: its message (read with the key when signed), the key
    that verified it, the sender's address and the snapshot it is answered from."""

    message: dns.message.Message
    verified: Verified | None
    peer: str
    zone: Zone

    @property
    def key(self) -> dns.name.Name | None:
        """The key that signed the request (None: unsigned)."""
        return None if self.verified is None else self.verified.name

    @property
    def is_transfer(self) -> bool:
        """An AXFR or IXFR query (one question, EDNS version 0 or none)."""
        message = self.message
        return (
            len(message.question) == 1
            and message.opcode() == dns.opcode.QUERY
            and message.question[0].rdtype in (_AXFR, _IXFR)
            and message.edns <= 0
        )

    def answered(self, *, tcp: bool) -> bytes:
        """The general path's answer (`answer.respond`), signed when the request was."""
        response = respond(self.zone, self.message, tcp=tcp)
        if self.verified is not None:
            sign_response(response, self.verified)
        return render(response, size_limit(self.message, self.zone, tcp=tcp))

    @property
    def who(self) -> str:
        """The peer as metrics name it: its key when signed, else its address."""
        return self.peer if self.verified is None else self.verified.name.to_text().lower()

    def head(self) -> Head:
        """The head of a transfer's messages; a new signer each time (a chain starts)."""
        signer = None
        if self.verified is not None:
            signer = StreamSigner(self.verified.key.key, self.message.mac or b"", self.message.id)
        return Head.answering(self.message, self.zone.config.edns_udp_size, signer)


def _one(message: bytes | None) -> Iterator[bytes]:
    return iter(()) if message is None else iter((message,))


def _client_serial(request: dns.message.Message) -> int | None:
    """The serial of the SOA an IXFR request carries for the zone (RFC 1995 3)."""
    name = request.question[0].name
    for rrset in request.authority:
        if rrset.rdtype == RdataType.SOA and rrset.name == name and len(rrset) == 1:
            soa = rrset[0]
            if isinstance(soa, dns.rdtypes.ANY.SOA.SOA):
                return int(soa.serial)
    return None


def _up_to_date(client: int, ours: int) -> bool:
    """The client's serial is ours or newer (RFC 1982 comparison)."""
    return client == ours or dns.serial.Serial(client) > ours


def _ixfr_chunks(zone: Zone, serial: int, current: Chunk, diff: Difference) -> Iterator[Chunk]:
    """One difference sequence (RFC 1995 4): current SOA, then the client's SOA and the
    deletions, the current SOA and the additions, and the current SOA to end."""
    nodes = NodeWire(zone.config.origin, zone.config.ttl)
    return itertools.chain(
        (current, soa_chunk(zone, serial)),
        nodes.chunks(diff.deleted),
        (current,),
        nodes.chunks(diff.added),
        (current,),
    )
