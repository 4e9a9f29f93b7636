"""The NOTIFY state machine (`dns/notify.py`) on a fake clock, without sockets: what it
sends and when (coalescing, one in flight, backoff with a cap, the current serial in
every try), what an answer means (an acknowledgement of S covers every serial up to
S; error answers are failures and slow the retries down; answers to nothing it sent
are ignored), and the NOTIFY's format. Secondaries are played by dnspython: each
answer is the response a secondary would build from the NOTIFY it got."""

from __future__ import annotations

import heapq
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rdtypes.ANY.TSIG
import dns.rrset
import dns.tsig
import pytest

from controparte.dns.notify import (
    MAX_TRIES,
    NotifyMachine,
    Outcome,
    Send,
    Target,
    Timing,
    covers,
    newer,
)
from controparte.dns.zone import Zone, ZoneRRset
from controparte.model import ZoneConfig
from controparte.settings import settings_from

CONFIG = ZoneConfig.from_settings(settings_from({}, {}))
ZONE = CONFIG.origin
KEY = dns.tsig.Key(
    "xfr.example.test.", "W1XsNW1udMTYNLTIB5HF4X5cyFxpV1Z051zgdam4eJ4=", "hmac-sha256"
)
OTHER_SECRET = dns.tsig.Key(
    "xfr.example.test.", "AAAANW1udMTYNLTIB5HF4X5cyFxpV1Z051zgdam4eJ4=", "hmac-sha256"
)
SIGNED = Target("192.0.2.1", 53, KEY)
PLAIN = Target("2001:db8::2", 5300)
NO_JITTER = Timing(jitter=0.0)


def soa(serial: int) -> ZoneRRset:
    return Zone.build(CONFIG, serial, 0, ()).soa_rrset()


class FakeRandom(random.Random):
    """IDs 1, 2, 3 ...; `random()` always `value` (0: no jitter)."""

    def __init__(self, value: float = 0.0) -> None:
        super().__init__(0)
        self.value = value
        self.ids = 0

    def random(self) -> float:
        return self.value

    def getrandbits(self, k: int, /) -> int:
        self.ids += 1
        return self.ids % (1 << k)


def machine(*targets: Target, timing: Timing = NO_JITTER, value: float = 0.0) -> NotifyMachine:
    return NotifyMachine(targets or (SIGNED,), timing, FakeRandom(value))


# -- a secondary, played by dnspython --------------------------------------------------------


def answer(
    wire: bytes,
    *,
    rcode: dns.rcode.Rcode = dns.rcode.NOERROR,
    sign: dns.tsig.Key | None = KEY,
    tsig_error: int = 0,
    edit: Callable[[dns.message.Message], None] | None = None,
) -> bytes:
    """The response a secondary builds for the NOTIFY `wire`: `rcode`, signed with
    `sign` over the NOTIFY's MAC (None: unsigned), or unsigned with `tsig_error`;
    `edit` changes the response before it is rendered."""
    bare = dns.message.from_wire(wire, keyring=False)
    request = bare
    if sign is KEY and bare.had_tsig and not tsig_error:
        request = dns.message.from_wire(wire, keyring=KEY)  # verifies the NOTIFY
    response = dns.message.make_response(request)  # signed when `request` has the key
    response.set_rcode(rcode)
    if sign is not None and sign is not KEY:
        response.use_tsig(sign)
        response.request_mac = bare.mac or b""
    if tsig_error:
        assert bare.tsig is not None
        tsig = bare.tsig[0]
        assert isinstance(tsig, dns.rdtypes.ANY.TSIG.TSIG)
        response.tsig = dns.rrset.from_rdata(
            bare.tsig.name, 0, tsig.replace(mac=b"", error=tsig_error, other=b"")
        )
    if edit is not None:
        edit(response)
    return response.to_wire()


def parsed(send: Send) -> dns.message.Message:
    """The NOTIFY as the secondary reads it (its TSIG verified when signed)."""
    return dns.message.from_wire(send.wire, keyring=KEY if send.target.key else False)


# -- a run on the fake clock -----------------------------------------------------------------

Policy = Callable[[int, Send], tuple[float, bytes] | None]
"""(try number for that secondary, from 1; the NOTIFY) -> (delay, answer) or silence."""


def answers_after(delay: float, **how: object) -> Policy:
    return lambda _n, send: (delay, answer(send.wire, **how))  # type: ignore[arg-type]


def silent(_n: int, _send: Send) -> None:
    return None


def silent_first(tries: int, delay: float = 0.001) -> Policy:
    return lambda n, send: None if n <= tries else (delay, answer(send.wire))


@dataclass
class Run:
    """A machine driven on a fake clock: serial changes at given times, the machine's
    own due times, and the answers its policies give, in time order."""

    machine: NotifyMachine
    policies: Sequence[Policy]
    now: float = 0.0
    sent: list[tuple[float, int, int]] = field(default_factory=list)
    """(time, target index, serial) of every NOTIFY sent."""
    outcomes: list[tuple[float, Outcome]] = field(default_factory=list)
    _answers: list[tuple[float, int, int, bytes]] = field(default_factory=list)
    _tries: dict[int, int] = field(default_factory=dict)

    def until(self, end: float, changes: Sequence[tuple[float, int]] = ()) -> Run:
        pending = sorted(changes)
        for _ in range(100_000):
            candidates = [t for t in (self.machine.next_due(),) if t is not None]
            candidates += [pending[0][0]] if pending else []
            candidates += [self._answers[0][0]] if self._answers else []
            if not candidates or min(candidates) > end:
                self.now = end
                return self
            self.now = max(self.now, min(candidates))
            while pending and pending[0][0] <= self.now:
                self.machine.changed(soa(pending.pop(0)[1]), self.now)
            while self._answers and self._answers[0][0] <= self.now:
                _, _, index, wire = heapq.heappop(self._answers)
                outcome = self.machine.answer(index, wire, self.now)
                if outcome is not None:
                    self.outcomes.append((self.now, outcome))
            sends, outcomes = self.machine.due(self.now)
            self.outcomes += [(self.now, o) for o in outcomes]
            for send in sends:
                self.sent.append((self.now, send.index, send.serial))
                n = self._tries[send.index] = self._tries.get(send.index, 0) + 1
                reply = self.policies[send.index](n, send)
                if reply is not None:
                    entry = (self.now + reply[0], len(self.sent), send.index, reply[1])
                    heapq.heappush(self._answers, entry)
        raise AssertionError("the run does not end")

    def times(self, index: int = 0) -> list[float]:
        return [round(t, 6) for t, i, _ in self.sent if i == index]

    def serials(self, index: int = 0) -> list[int]:
        return [s for _, i, s in self.sent if i == index]

    def tally(self, index: int = 0) -> tuple[int, int, int, int | None]:
        t = self.machine.tallies()[index][1]
        return t.sent, t.answered, t.failed, t.acked


def run(policy: Policy, changes: Sequence[tuple[float, int]], end: float, **kw: object) -> Run:
    return Run(machine(**kw), [policy]).until(end, changes)  # type: ignore[arg-type]


# -- RFC 1982 ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("acked", "serial", "covered"),
    [
        (None, 1, False),
        (5, 5, True),
        (5, 3, True),
        (5, 6, False),
        (1, 0xFFFFFFFF, True),  # 1 comes after 2**32 - 1 (wrapped)
        (0xFFFFFFFF, 1, False),
        (0, 2**31 + 1, True),  # more than half the space ahead: behind
    ],
)
def test_an_acknowledgement_covers_its_serial_and_earlier_ones(
    acked: int | None, serial: int, covered: bool
) -> None:
    assert covers(acked, serial) is covered


def test_newer_is_rfc_1982_order() -> None:
    assert newer(2, 1) and newer(1, 0xFFFFFFFF) and not newer(7, 7) and not newer(1, 2)


# -- the message -------------------------------------------------------------------------------


@pytest.mark.parametrize("target", [SIGNED, PLAIN], ids=["signed", "unsigned"])
def test_the_notify_is_rfc_1996(target: Target) -> None:
    m = machine(target)
    m.changed(soa(1234), 0.0)
    sends, _ = m.due(1.0)
    (send,) = sends
    notify = parsed(send)  # verifies the TSIG with KEY when signed
    assert notify.opcode() == dns.opcode.NOTIFY
    assert notify.flags & dns.flags.AA and not notify.flags & (dns.flags.QR | dns.flags.RD)
    assert [(q.name, q.rdtype, q.rdclass) for q in notify.question] == [
        (ZONE, dns.rdatatype.SOA, dns.rdataclass.IN)
    ]
    (rrset,) = notify.answer
    assert (rrset.name, rrset.rdtype, rrset[0].serial) == (ZONE, dns.rdatatype.SOA, 1234)
    assert notify.had_tsig is (target.key is not None)
    if target.key is not None:
        assert notify.keyname == KEY.name
    assert (send.serial, send.target, send.index) == (1234, target, 0)


# -- when: coalescing, one in flight, backoff --------------------------------------------------


@pytest.mark.parametrize(
    ("name", "policy", "changes", "end", "times", "serials"),
    [
        (
            "a burst of 1,000 serials within the window: one NOTIFY, the last serial",
            answers_after(0.001),
            [(n / 10_000, 1 + n) for n in range(1000)],
            100.0,
            [0.1],
            [1000],
        ),
        (
            "a steady stream: one NOTIFY per window, each with the serial of its time",
            answers_after(0.001),
            [(n / 1000, 1 + n) for n in range(350)],
            100.0,
            [0.1, 0.2, 0.3, 0.4],
            [101, 201, 301, 350],
        ),
        (
            "a serial during the flight goes out once the answer comes",
            answers_after(0.5),
            [(0.0, 1), (0.3, 2)],
            100.0,
            [0.1, 0.6],
            [1, 2],
        ),
        (
            "silent: retried after 1, 2, 4 ... seconds, capped at 60",
            silent,
            [(0.0, 7)],
            200.0,
            [0.1, 1.1, 3.1, 7.1, 15.1, 31.1, 63.1, 123.1, 183.1],
            [7] * 9,
        ),
        (
            "each retry carries the serial current at that moment",
            silent_first(2),
            [(0.0, 1), (0.5, 2), (2.0, 3)],
            100.0,
            [0.1, 1.1, 3.1],
            [1, 2, 3],
        ),
        (
            "a new serial while retrying waits for the retry, which carries it",
            silent_first(1, delay=0.3),
            [(0.0, 1), (0.2, 2), (1.15, 3)],
            100.0,
            [0.1, 1.1, 1.4],
            [1, 2, 3],
        ),
        (
            "REFUSED: a failure, retried at least 10 s later, then on the backoff",
            answers_after(0.001, rcode=dns.rcode.REFUSED),
            [(0.0, 1)],
            150.0,
            [0.1, 10.101, 20.102, 30.103, 40.104, 56.105, 88.106, 148.107],
            [1] * 8,
        ),
        (
            "nothing changed: nothing sent",
            answers_after(0.001),
            [],
            100.0,
            [],
            [],
        ),
    ],
    ids=lambda v: v if isinstance(v, str) and " " in v else "",
)
def test_when_notifies_go_out(
    name: str,
    policy: Policy,
    changes: list[tuple[float, int]],
    end: float,
    times: list[float],
    serials: list[int],
) -> None:
    done = run(policy, changes, end)
    assert done.times() == pytest.approx(times), name
    assert done.serials() == serials, name


def test_a_late_answer_to_an_earlier_try_acknowledges_its_serial() -> None:
    """The first try's answer arrives after the retry went out (same serial): it ends
    the work; the retry's answer, later, counts as answered too; nothing more is sent."""
    done = run(answers_after(1.5), [(0.0, 5)], 100.0)
    assert done.times() == pytest.approx([0.1, 1.1])
    assert done.tally() == (2, 2, 1, 5)  # sent, answered, failed (the timeout), acked
    assert done.machine.next_due() is None


def test_an_acknowledgement_of_an_older_serial_keeps_the_newer_one_going() -> None:
    """Try 1 (serial 1) is answered late, after the retry carried serial 2 and went
    unanswered: serial 2 is still owed, and the next retry carries it."""
    late_first: Policy = lambda n, send: (1.5, answer(send.wire)) if n == 1 else None  # noqa: E731
    done = run(late_first, [(0.0, 1), (0.5, 2)], 3.5)
    assert done.times() == pytest.approx([0.1, 1.1, 3.1])
    assert done.serials() == [1, 2, 2]
    assert done.tally()[3] == 1


def test_an_acknowledgement_covers_every_earlier_serial() -> None:
    """Acknowledged at serial 10: an older serial showing up (a replaced store) sends
    nothing; a newer one does."""
    done = run(answers_after(0.001), [(0.0, 10), (5.0, 9)], 10.0)
    assert done.serials() == [10]
    done.until(20.0, [(15.0, 11)])
    assert done.serials() == [10, 11]


def test_the_jitter_shortens_retries_by_at_most_its_share() -> None:
    m = NotifyMachine((SIGNED,), Timing(jitter=0.2), FakeRandom(0.999))
    done = Run(m, [silent]).until(40.0, [(0.0, 1)])
    gaps = [b - a for a, b in zip(done.times(), done.times()[1:], strict=False)]
    for gap, full in zip(gaps, [1, 2, 4, 8, 16], strict=False):
        assert 0.8 * full < gap <= full


def test_secondaries_are_independent() -> None:
    done = Run(machine(SIGNED, PLAIN), [answers_after(0.001), silent]).until(5.0, [(0.0, 3)])
    assert done.times(0) == pytest.approx([0.1])
    assert done.times(1) == pytest.approx([0.1, 1.1, 3.1])
    assert done.tally(0) == (1, 1, 0, 3)
    assert done.tally(1) == (3, 0, 2, None)


def test_memory_is_bounded_answers_to_forgotten_notifies_are_ignored() -> None:
    m = machine()
    m.changed(soa(1), 0.0)
    wires = []
    now = 0.0
    for _ in range(MAX_TRIES + 3):
        now = m.next_due() or now
        sends, _ = m.due(now)
        wires += [s.wire for s in sends]
    assert m.answer(0, answer(wires[0]), now) is None  # forgotten
    outcome = m.answer(0, answer(wires[-MAX_TRIES]), now)  # still remembered
    assert outcome is not None and outcome.answered


def test_a_notify_that_could_not_be_sent_is_one_failure() -> None:
    m = machine()
    m.changed(soa(1), 0.0)
    m.due(0.1)
    outcome = m.unsent(0, 0.1, "not sent: Network is unreachable")
    assert not outcome.answered
    assert outcome.retry_in == pytest.approx(1.0)
    _, outcomes = m.due(1.1)  # the retry goes out, and the lost one is no timeout
    assert outcomes == []
    assert m.tallies()[0][1].sent == 2 and m.tallies()[0][1].failed == 1


# -- what an answer means ----------------------------------------------------------------------


def _no_question(r: dns.message.Message) -> None:
    r.question = []


@pytest.mark.parametrize(
    ("how", "answered", "reason"),
    [
        ({}, True, "NOERROR"),
        ({"rcode": dns.rcode.REFUSED}, False, "REFUSED"),
        ({"rcode": dns.rcode.REFUSED, "sign": None, "edit": _no_question}, False, "REFUSED"),
        ({"rcode": dns.rcode.NOTAUTH, "tsig_error": dns.rcode.BADSIG}, False, "BADSIG"),
        ({"rcode": dns.rcode.NOTAUTH, "tsig_error": dns.rcode.BADKEY}, False, "BADKEY"),
        ({"rcode": dns.rcode.NOTAUTH, "sign": None}, False, "NOTAUTH"),
        ({"rcode": dns.rcode.SERVFAIL}, False, "SERVFAIL"),
        ({"sign": None}, False, "not signed"),
        ({"sign": OTHER_SECRET}, False, "does not verify"),
    ],
    ids=[
        "noerror",
        "refused",
        "refused-nsd-style",
        "badsig",
        "badkey",
        "notauth",
        "servfail",
        "unsigned",
        "wrong-secret",
    ],
)
def test_what_an_answer_means(how: dict[str, object], answered: bool, reason: str) -> None:
    m = machine()
    m.changed(soa(42), 0.0)
    (send,), _ = m.due(0.1)
    outcome = m.answer(0, answer(send.wire, **how), 0.2)  # type: ignore[arg-type]
    assert outcome is not None
    assert (outcome.answered, outcome.serial, outcome.target) == (answered, 42, SIGNED)
    assert reason in outcome.reason
    tally = m.tallies()[0][1]
    assert (tally.answered, tally.failed, tally.acked) == ((1, 0, 42) if answered else (0, 1, None))
    if answered:
        assert m.next_due() is None
    else:
        assert outcome.retry_in == pytest.approx(10.0)  # failed_retry
        assert m.next_due() == pytest.approx(10.2)


def _other_zone(r: dns.message.Message) -> None:
    r.question[0].name = dns.name.from_text("other.test.")


def _query_opcode(r: dns.message.Message) -> None:
    r.set_opcode(dns.opcode.QUERY)


def _not_a_response(r: dns.message.Message) -> None:
    r.flags &= ~dns.flags.QR


def _other_id(r: dns.message.Message) -> None:
    r.id ^= 0x8000


@pytest.mark.parametrize(
    "wire_of",
    [
        lambda w: answer(w, edit=_other_zone),
        lambda w: answer(w, sign=None, edit=_other_zone),
        lambda w: answer(w, sign=None, edit=_query_opcode),
        lambda w: answer(w, sign=None, edit=_not_a_response),
        lambda w: answer(w, sign=None, edit=_other_id),
        lambda w: answer(w, sign=None, edit=_no_question),  # NOERROR must echo it
        lambda w: w[:2] + b"\x84",
        lambda w: w[:2] + b"\xff" * 40,
    ],
    ids=["other-zone", "other-zone-unsigned", "opcode", "qr-clear", "id", "no-q", "short", "junk"],
)
def test_what_answers_no_notify_is_ignored(wire_of: Callable[[bytes], bytes]) -> None:
    m = machine()
    m.changed(soa(42), 0.0)
    (send,), _ = m.due(0.1)
    assert m.answer(0, wire_of(send.wire), 0.2) is None
    assert m.tallies()[0][1].answered == m.tallies()[0][1].failed == 0
    assert m.next_due() == pytest.approx(1.1)  # the retry stays planned


def test_an_answer_counts_once() -> None:
    m = machine()
    m.changed(soa(42), 0.0)
    (send,), _ = m.due(0.1)
    reply = answer(send.wire)
    assert m.answer(0, reply, 0.2) is not None
    assert m.answer(0, reply, 0.3) is None
    assert m.tallies()[0][1].answered == 1
