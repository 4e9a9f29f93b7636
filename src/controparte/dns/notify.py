"""NOTIFY out (RFC 1996): which secondary is told what and when, and what an answer
means. Pure: no sockets and no clock of its own (every call takes `now`, in seconds of
one monotonic clock), randomness injected (`rng`: message IDs and jitter). The shell
that sends, receives and runs the timer is `dns/notifier.py`.

For each secondary (`Target`) the machine (`NotifyMachine`) keeps:
- the serial it acknowledged last: an answer to a NOTIFY that carried serial S
  acknowledges S, and S covers every serial up to S (RFC 1982 order), so one answer
  ends the work for all of them;
- when it is next due:
  - a serial it has not acknowledged makes it due `window` seconds later (a burst of
    changes within a window is one NOTIFY; a steady stream, one per window);
  - one NOTIFY is in flight at a time; unanswered, it is sent again after 1, 2, 4 ...
    `max_retry` seconds (less up to `jitter` of that), with a new ID and the serial
    current at that moment (NSD ignores a NOTIFY whose serial is not newer than its
    own), until an answer acknowledges the current serial; a serial that arrives while
    one is in flight waits for its answer, then goes out at once (or `window` after the
    last NOTIFY to that secondary, whichever is later);
  - an error answer (REFUSED or NOTAUTH: a misconfigured secondary; a TSIG that does
    not verify) is a failure, and the next try waits at least `failed_retry` seconds.
An answer matches a NOTIFY when it comes from the secondary's address (the caller
routes answers by address), carries the ID of one of the last `MAX_TRIES` NOTIFYs sent
to it, is their response (QR, opcode NOTIFY, the question echoed: RFC 1996 3.4) and,
when the NOTIFY was signed, is signed with the same key over its MAC (RFC 8945 5.3);
anything else is ignored. Memory is bounded: `MAX_TRIES` NOTIFYs per secondary.

Counted per secondary (`Tally`): NOTIFYs sent, answered (NOERROR, verified) and failed
(an error answer, no answer before the next try, or not sent at all); an answer that
arrives after its NOTIFY was counted as unanswered is counted answered too.
"""

from __future__ import annotations

import random
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field

import dns.exception
import dns.flags
import dns.message
import dns.opcode
import dns.rcode
import dns.rdatatype
import dns.rdtypes.ANY.SOA
import dns.rdtypes.ANY.TSIG
import dns.tsig

from controparte.dns.zone import ZoneRRset
from controparte.settings import HostPort

MAX_TRIES = 8
"""NOTIFYs remembered per secondary (their answers are recognised); older ones are
forgotten, and a late answer to one of them is ignored."""

_SERIAL_HALF = 2**31
_SERIAL_SPACE = 2**32
_MAX_DOUBLINGS = 30
_PARSE_ERRORS = (dns.exception.DNSException, ValueError, IndexError, UnicodeError)


def newer(a: int, b: int) -> bool:
    """Whether serial `a` comes after serial `b` (RFC 1982 section 3.2)."""
    return 0 < (a - b) % _SERIAL_SPACE < _SERIAL_HALF


def covers(acked: int | None, serial: int) -> bool:
    """Whether an acknowledgement of serial `acked` covers `serial` (the same serial or
    an earlier one); None (nothing acknowledged) covers nothing."""
    return acked is not None and not newer(serial, acked)


def soa_serial(soa: ZoneRRset) -> int:
    """The serial of an SOA RRset."""
    rdata = soa.rdatas[0]
    assert isinstance(rdata, dns.rdtypes.ANY.SOA.SOA)
    return int(rdata.serial)


@dataclass(frozen=True, slots=True)
class Target:
    """A secondary to notify: its address and the TSIG key that signs its NOTIFYs."""

    host: str
    port: int
    key: dns.tsig.Key | None = None

    def __str__(self) -> str:
        """`host:port` (`[v6]:port`): the secondary's name in logs and metrics."""
        return str(HostPort(self.host, self.port))


@dataclass(frozen=True, slots=True)
class Timing:
    """The schedule, in seconds (see the module)."""

    window: float = 0.1
    first_retry: float = 1.0
    max_retry: float = 60.0
    failed_retry: float = 10.0
    jitter: float = 0.2
    """A retry delay d becomes a random value in (d * (1 - jitter), d]."""


@dataclass(slots=True)
class Tally:
    """What was counted for one secondary; `acked` is the last serial it acknowledged."""

    sent: int = 0
    answered: int = 0
    failed: int = 0
    acked: int | None = None


@dataclass(frozen=True, slots=True)
class Send:
    """A NOTIFY to send now: to `target` (the `index`-th), carrying `serial`."""

    index: int
    target: Target
    wire: bytes
    serial: int


@dataclass(frozen=True, slots=True)
class Outcome:
    """What became of one NOTIFY to `target`: answered, or failed and why (`reason`);
    `retry_in`: seconds until the next NOTIFY to it when one is planned (0: now)."""

    target: Target
    answered: bool
    serial: int
    reason: str
    retry_in: float | None = None


@dataclass(frozen=True, slots=True)
class Verdict:
    """What a response to a NOTIFY says: acknowledged (`ok`) or a failure, and why."""

    ok: bool
    reason: str


def notify_message(soa: ZoneRRset, ident: int, key: dns.tsig.Key | None) -> dns.message.Message:
    """The NOTIFY of RFC 1996 for `soa`'s zone: opcode NOTIFY, AA, the question
    `<zone> IN SOA`, the SOA in the answer section (3.7: the secondary compares its
    serial), signed with `key` when given (its MAC is set once rendered)."""
    message = dns.message.make_query(soa.name, dns.rdatatype.SOA, id=ident)
    message.flags = dns.flags.AA  # no RD
    message.set_opcode(dns.opcode.NOTIFY)
    message.answer.append(soa.to_rrset())
    if key is not None:
        message.use_tsig(key)
    return message


def read_answer(request: dns.message.Message, wire: bytes) -> Verdict | None:
    """What `wire` says as the response to `request` (a NOTIFY, rendered, so signed if
    it has a key): None when it is not its response (ignore it), else a `Verdict`.
    Acknowledged: NOERROR, and signed by the request's key over its MAC when the
    request was signed."""
    try:
        bare = dns.message.from_wire(wire, keyring=False)
    except _PARSE_ERRORS:
        return None
    if not _responds(request, bare):
        return None
    problems: list[str] = []
    rcode = bare.rcode()
    if rcode != dns.rcode.NOERROR:
        problems.append(f"answered {dns.rcode.to_text(rcode)}")
    key = request.keyring if request.had_tsig else None
    tsig = _tsig_rdata(bare)
    if tsig is not None and tsig.error:
        error = dns.rcode.to_text(dns.rcode.Rcode.make(tsig.error), tsig=True)
        problems.append(f"TSIG error {error}{_TSIG_HINTS.get(tsig.error, '')}")
    elif isinstance(key, dns.tsig.Key):
        if tsig is None:
            problems.append(f"the answer is not signed (the NOTIFY was, with {key.name})")
        else:
            try:
                dns.message.from_wire(wire, keyring=key, request_mac=request.mac)
            except _PARSE_ERRORS as exc:
                problems.append(f"the answer's TSIG does not verify with {key.name} ({exc})")
    if problems:
        return Verdict(False, "; ".join(problems))
    return Verdict(True, "NOERROR")


def _responds(request: dns.message.Message, bare: dns.message.Message) -> bool:
    """Whether `bare` is a response to `request` (ID, QR, opcode; the question echoed,
    which an error answer may leave out: NSD answers REFUSED without it)."""
    if not bare.flags & dns.flags.QR or bare.id != request.id:
        return False
    if bare.opcode() != request.opcode():
        return False
    if not bare.question:
        return bare.rcode() != dns.rcode.NOERROR
    return request.is_response(bare)


_TSIG_HINTS = {
    dns.rcode.BADKEY: " (the secondary has no key of that name and algorithm)",
    dns.rcode.BADSIG: " (the secondary's secret for the key differs)",
    dns.rcode.BADTIME: " (the clocks differ by more than the fudge)",
}


def _tsig_rdata(message: dns.message.Message) -> dns.rdtypes.ANY.TSIG.TSIG | None:
    if message.tsig is None:
        return None
    rdata = message.tsig[0]
    return rdata if isinstance(rdata, dns.rdtypes.ANY.TSIG.TSIG) else None


@dataclass(slots=True)
class _Try:
    request: dns.message.Message
    serial: int


@dataclass(slots=True)
class _Peer:
    target: Target
    tally: Tally = field(default_factory=Tally)
    tries: OrderedDict[int, _Try] = field(default_factory=OrderedDict)
    in_flight: int | None = None
    """The ID of the NOTIFY awaiting its answer (the latest sent), if any."""
    attempt: int = 0
    """NOTIFYs sent since the last acknowledgement (the backoff's exponent)."""
    due: float | None = None
    last_sent: float | None = None
    last_delay: float = 0.0


class NotifyMachine:
    """The NOTIFY state of every secondary (see the module). Not thread-safe: one
    thread (the shell's event loop) calls it; `tallies` may be read from any thread."""

    def __init__(
        self,
        targets: Sequence[Target],
        timing: Timing | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.timing = timing or Timing()
        self.rng = rng or random.SystemRandom()
        self._peers = [_Peer(target) for target in targets]
        self._soa: ZoneRRset | None = None

    @property
    def serial(self) -> int | None:
        """The current serial (None before the first `changed`)."""
        return None if self._soa is None else soa_serial(self._soa)

    def tallies(self) -> list[tuple[Target, Tally]]:
        return [(peer.target, peer.tally) for peer in self._peers]

    def changed(self, soa: ZoneRRset, now: float) -> None:
        """The zone is now at `soa`'s serial: every secondary that has not acknowledged
        it becomes due (unless it already is, or awaits an answer)."""
        self._soa = soa
        for peer in self._peers:
            if peer.due is None and not self._covered(peer):  # in flight: due is set
                peer.due = now + self.timing.window

    def next_due(self) -> float | None:
        """When `due` next has something to do (None: not until something happens)."""
        return min((p.due for p in self._peers if p.due is not None), default=None)

    def due(self, now: float) -> tuple[list[Send], list[Outcome]]:
        """The NOTIFYs to send now, and the outcomes of those that went unanswered."""
        sends: list[Send] = []
        outcomes: list[Outcome] = []
        for index, peer in enumerate(self._peers):
            if peer.due is None or peer.due > now:
                continue
            peer.due = None
            unanswered = peer.tries.get(peer.in_flight) if peer.in_flight is not None else None
            peer.in_flight = None
            if self._covered(peer):
                peer.attempt = 0
                continue
            if unanswered is not None:
                peer.tally.failed += 1
                reason = f"no answer in {peer.last_delay:.3g} s"
                outcomes.append(Outcome(peer.target, False, unanswered.serial, reason, 0.0))
            sends.append(self._send(index, peer, now))
        return sends, outcomes

    def answer(self, index: int, wire: bytes, now: float) -> Outcome | None:
        """A datagram from the `index`-th secondary's address: the outcome of the NOTIFY
        it answers, or None when it answers none of those remembered (ignored)."""
        peer = self._peers[index]
        tried = peer.tries.get(int.from_bytes(wire[:2], "big")) if len(wire) >= 12 else None
        if tried is None:
            return None
        verdict = read_answer(tried.request, wire)
        if verdict is None:
            return None
        ident = tried.request.id
        del peer.tries[ident]  # an answer counts once
        latest = peer.in_flight == ident
        if latest:
            peer.in_flight = None
        if not verdict.ok:
            peer.tally.failed += 1
            if latest:
                wait = max(self.timing.failed_retry, self._delay(peer.attempt))
                peer.due = now + wait
            return Outcome(peer.target, False, tried.serial, verdict.reason, self._wait(peer, now))
        peer.tally.answered += 1
        acked = peer.tally.acked
        if acked is None or newer(tried.serial, acked):
            peer.tally.acked = tried.serial
        if self._covered(peer):
            peer.in_flight = None
            peer.due = None
            peer.attempt = 0
        elif latest:  # a newer serial came while this one was in flight
            peer.attempt = 0
            assert peer.last_sent is not None
            peer.due = max(now, peer.last_sent + self.timing.window)
        return Outcome(peer.target, True, tried.serial, verdict.reason, self._wait(peer, now))

    def unsent(self, index: int, now: float, reason: str) -> Outcome:
        """The `index`-th secondary's latest NOTIFY could not be sent (`reason`): a
        failure; its retry stays planned."""
        peer = self._peers[index]
        peer.tally.failed += 1
        serial = self.serial or 0
        if peer.in_flight is not None:
            tried = peer.tries.pop(peer.in_flight, None)
            serial = tried.serial if tried is not None else serial
            peer.in_flight = None
        return Outcome(peer.target, False, serial, reason, self._wait(peer, now))

    # -- internals -----------------------------------------------------------------------

    def _covered(self, peer: _Peer) -> bool:
        serial = self.serial
        return serial is None or covers(peer.tally.acked, serial)

    def _send(self, index: int, peer: _Peer, now: float) -> Send:
        assert self._soa is not None
        ident = self.rng.getrandbits(16)
        while ident in peer.tries:
            ident = self.rng.getrandbits(16)
        request = notify_message(self._soa, ident, peer.target.key)
        wire = request.to_wire()  # signs, and sets request.mac
        serial = soa_serial(self._soa)
        peer.tries[ident] = _Try(request, serial)
        while len(peer.tries) > MAX_TRIES:
            peer.tries.popitem(last=False)
        peer.in_flight = ident
        peer.attempt += 1
        peer.last_sent = now
        peer.last_delay = self._delay(peer.attempt)
        peer.due = now + peer.last_delay
        peer.tally.sent += 1
        return Send(index, peer.target, wire, serial)

    def _delay(self, attempt: int) -> float:
        """The wait after the `attempt`-th try: first_retry doubled each time, capped,
        less a random part of up to `jitter` of it."""
        t = self.timing
        base = min(t.max_retry, t.first_retry * (1 << min(max(attempt - 1, 0), _MAX_DOUBLINGS)))
        return base * (1 - t.jitter * self.rng.random())

    @staticmethod
    def _wait(peer: _Peer, now: float) -> float | None:
        return None if peer.due is None else max(0.0, peer.due - now)
