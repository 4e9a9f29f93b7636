"""The probe without sockets: the line protocol, what a connection outcome means, where
a probe may dial (an installation's own port, a counterpart's), the address it names as
its source, the limits (fake clock) and the report's words."""

from __future__ import annotations

import errno

import pytest

from controparte.errors import ForbiddenError, RateLimitedError, ValidationError
from controparte.model import Installation
from controparte.model.probe import (
    Answer,
    Reach,
    answer_line,
    check_answer,
    classify_error,
    new_nonce,
    parse_probe_line,
    probe_line,
    probe_mac,
)
from controparte.service.probe import (
    ProbeLimiter,
    ProbeTarget,
    choose_source,
    choose_target,
    counterpart_targets,
    make_report,
)

TOKEN = "cpt_the-installations-token"
CODE = "ACME-0001"
NONCE = "0123456789abcdef0123456789abcdef"


# -- the line protocol -------------------------------------------------------------------------


def test_probe_line_round_trip() -> None:
    nonce = new_nonce()
    assert len(nonce) == 32
    line = probe_line(nonce)
    assert line == f"CONTROPARTE-PROBE {nonce}\n".encode()
    assert parse_probe_line(line) == nonce
    assert parse_probe_line(line.replace(b"\n", b"\r\n")) == nonce


@pytest.mark.parametrize(
    "line",
    [
        b"",
        b"GET / HTTP/1.1\r\n",
        b"CONTROPARTE-PROBE\n",
        b"CONTROPARTE-PROBE 0123\n",
        b"CONTROPARTE-PROBE " + NONCE.upper().encode() + b"\n",
        b"controparte-probe " + NONCE.encode() + b"\n",
        b"CONTROPARTE-PROBE " + NONCE.encode() + b" extra\n",
        b"CONTROPARTE-PROBE  " + NONCE.encode() + b"\n",
        b"\xff\xfe" + NONCE.encode(),
    ],
)
def test_anything_but_a_probe_is_not_one(line: bytes) -> None:
    assert parse_probe_line(line) is None


def test_probe_line_refuses_a_bad_nonce() -> None:
    with pytest.raises(ValueError, match="nonce"):
        probe_line("not hex")


def test_answer_is_a_mac_of_code_and_nonce_keyed_by_the_token() -> None:
    line = answer_line(TOKEN, CODE, NONCE)
    word, code, nonce, mac = line.decode().rstrip("\n").split(" ")
    assert (word, code, nonce) == ("CONTROPARTE-AGENT", CODE, NONCE)
    assert len(mac) == 64
    assert mac == probe_mac(TOKEN, CODE.lower(), NONCE)  # the code's case does not matter
    assert mac != probe_mac(TOKEN, CODE, "f" * 32)
    assert mac != probe_mac(TOKEN + "x", CODE, NONCE)


GOOD = answer_line(TOKEN, CODE, NONCE)


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (GOOD, Answer(True, CODE)),
        (GOOD.rstrip(b"\n"), Answer(True, CODE)),
        (answer_line(TOKEN, CODE.lower(), NONCE), Answer(True, CODE.lower())),
        (answer_line("another-token", CODE, NONCE), Answer(False, CODE)),  # an old token
        (answer_line("their-token", "OTHER-9", NONCE), Answer(False, "OTHER-9")),  # elsewhere
        (answer_line(TOKEN, CODE, "f" * 32), Answer(False, CODE)),  # another probe's answer
        (b"", Answer(None)),  # silence
        (b"SSH-2.0-OpenSSH_9.6\r\n", Answer(None)),  # another service
        (b"CONTROPARTE-AGENT " + CODE.encode() + b"\n", Answer(None)),
        (b"CONTROPARTE-AGENT bad/code " + NONCE.encode() + b" " + b"0" * 64 + b"\n", Answer(None)),
        (b"\x00\xff garbage", Answer(None)),
    ],
)  # fmt: skip
def test_check_answer(line: bytes, expected: Answer) -> None:
    assert check_answer(line, token=TOKEN, code=CODE, nonce=NONCE) == expected


@pytest.mark.parametrize(
    ("error", "reach"),
    [
        (TimeoutError(), Reach.TIMEOUT),
        (OSError(errno.ETIMEDOUT, "Connection timed out"), Reach.TIMEOUT),
        (ConnectionRefusedError(errno.ECONNREFUSED, "Connection refused"), Reach.REFUSED),
        (OSError(errno.ECONNREFUSED, "Connection refused"), Reach.REFUSED),
        (OSError(errno.EHOSTUNREACH, "No route to host"), Reach.UNREACHABLE),
        (OSError(errno.ENETUNREACH, "Network is unreachable"), Reach.UNREACHABLE),
        (PermissionError(errno.EPERM, "Operation not permitted"), Reach.UNREACHABLE),
        (OSError("something else"), Reach.UNREACHABLE),
    ],
)
def test_classify_error(error: BaseException, reach: Reach) -> None:
    assert classify_error(error) is reach


# -- where a probe may dial ----------------------------------------------------------------------


def inst(**fields: object) -> Installation:
    return Installation.create(CODE, "shop-42", allow_non_global=True, **fields)  # type: ignore[arg-type]


V4 = inst(ipv4="203.0.113.7", port=9001)
DUAL = inst(ipv4="203.0.113.7", ipv6="2001:db8::7", port=9001)


@pytest.mark.parametrize(
    ("installation", "client", "target"),
    [
        (V4, "203.0.113.7", ProbeTarget("203.0.113.7", 9001)),
        (V4, "::ffff:203.0.113.7", ProbeTarget("203.0.113.7", 9001)),
        (DUAL, "203.0.113.7", ProbeTarget("203.0.113.7", 9001)),
        (DUAL, "2001:db8::7", ProbeTarget("2001:db8::7", 9001)),
        (DUAL, "2001:0db8:0::7", ProbeTarget("2001:db8::7", 9001)),
    ],
)
def test_the_target_is_the_registered_address_the_request_comes_from(
    installation: Installation, client: str, target: ProbeTarget
) -> None:
    assert choose_target(installation, client) == target


def test_a_request_from_another_address_is_forbidden() -> None:
    with pytest.raises(ForbiddenError, match=r"comes from 198\.51\.100\.9, .* registered at 203"):
        choose_target(inst(ipv4="203.0.113.7", port=9001), "198.51.100.9")


def test_no_registered_address_is_forbidden() -> None:
    with pytest.raises(ForbiddenError, match="no public address registered"):
        choose_target(inst(port=9001), "203.0.113.7")


def test_no_registered_port_is_invalid() -> None:
    with pytest.raises(ValidationError, match=r"port: .* no public port registered"):
        choose_target(inst(ipv4="203.0.113.7"), "203.0.113.7")


def test_an_unknown_source_address_is_invalid() -> None:
    with pytest.raises(ValidationError, match="Forwarded"):
        choose_target(inst(ipv4="203.0.113.7", port=9001), None)


@pytest.mark.parametrize(
    ("installation", "targets"),
    [
        (V4, [ProbeTarget("203.0.113.7", 9001)]),
        (DUAL, [ProbeTarget("203.0.113.7", 9001), ProbeTarget("2001:db8::7", 9001)]),
        (inst(ipv6="2001:db8::7", port=9001), [ProbeTarget("2001:db8::7", 9001)]),
    ],
)
def test_a_counterpart_is_dialled_at_each_registered_address(
    installation: Installation, targets: list[ProbeTarget]
) -> None:
    assert list(counterpart_targets(installation)) == targets


@pytest.mark.parametrize(
    ("installation", "missing"),
    [
        (inst(port=9001), "no public address registered"),
        (inst(ipv4="203.0.113.7"), "no public port registered"),
        (inst(), "no public address registered"),
    ],
)
def test_a_counterpart_without_address_or_port_is_forbidden(
    installation: Installation, missing: str
) -> None:
    with pytest.raises(ForbiddenError, match=missing):
        counterpart_targets(installation)


SOURCES = ("192.0.2.53", "192.0.2.54", "2001:db8:53::1")


@pytest.mark.parametrize(
    ("configured", "target", "local", "source"),
    [
        ((), "203.0.113.7", "10.0.0.5", "10.0.0.5"),  # nothing configured: the local one
        ((), "203.0.113.7", None, None),  # no route, nothing known
        (SOURCES, "203.0.113.7", "10.0.0.5", "192.0.2.53"),  # behind NAT: the first
        (SOURCES, "203.0.113.7", "192.0.2.54", "192.0.2.54"),  # this node's own
        (SOURCES, "203.0.113.7", "::ffff:192.0.2.54", "::ffff:192.0.2.54"),
        (SOURCES, "2001:db8::7", "fd00::5", "2001:db8:53::1"),
        (SOURCES, "2001:db8::7", None, "2001:db8:53::1"),
        (("192.0.2.53",), "2001:db8::7", "fd00::5", "fd00::5"),  # none of that family
        (("2001:db8:53::1",), "203.0.113.7", None, None),
    ],
)
def test_the_source_a_probe_names(
    configured: tuple[str, ...], target: str, local: str | None, source: str | None
) -> None:
    assert choose_source(configured, target, local) == source


# -- the limits -----------------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_limiter_allows_one_probe_per_interval_per_installation() -> None:
    clock = Clock()
    limiter = ProbeLimiter(interval=5.0, clock=clock)
    limiter.acquire(CODE)
    limiter.acquire("OTHER-1")  # another installation is not held up
    clock.now += 1.2
    with pytest.raises(RateLimitedError) as caught:
        limiter.acquire(CODE.lower())  # codes compare without case
    assert caught.value.retry_after == 4
    clock.now += 3.8
    limiter.acquire(CODE)


def test_limiter_allows_a_few_per_window_per_requester() -> None:
    clock = Clock()
    limiter = ProbeLimiter(
        60.0, clock, limit=3, refusal="{key} asked {limit} times in {interval:g} s"
    )
    for step in (0, 10, 10):
        clock.now += step
        limiter.acquire(CODE)
    clock.now += 5
    with pytest.raises(
        RateLimitedError, match=f"^{CODE} asked 3 times in 60 s; try again in 35 s$"
    ):
        limiter.acquire(CODE)
    clock.now += 35  # the first one is a minute old: one slot is free again
    limiter.acquire(CODE)
    with pytest.raises(RateLimitedError) as caught:
        limiter.acquire(CODE)
    assert caught.value.retry_after == 10


def test_limiter_forgets_old_entries_when_full() -> None:
    clock = Clock()
    limiter = ProbeLimiter(interval=5.0, clock=clock, max_entries=2)
    limiter.acquire("A")
    limiter.acquire("B")
    clock.now += 10
    limiter.acquire("C")  # A and B are forgotten, not kept forever
    assert set(limiter._taken) == {"c"}


# -- the report -----------------------------------------------------------------------------------

TARGET = ProbeTarget("203.0.113.7", 9001)


@pytest.mark.parametrize(
    ("reach", "answer", "verified", "words"),
    [
        (Reach.OPEN, Answer(True, CODE), True, "reaches this installation's machine"),
        (Reach.OPEN, Answer(False, "OTHER-9"), False, "answered as 'OTHER-9'"),
        (Reach.OPEN, Answer(None), None, "nothing there answered the nonce"),
        (Reach.REFUSED, None, None, "TCP reset on port 9001"),
        (Reach.TIMEOUT, None, None, "no answer from port 9001 of 203.0.113.7 within 3 s"),
        (Reach.UNREACHABLE, None, None, "rejects it"),
    ],
)
def test_report(reach: Reach, answer: Answer | None, verified: bool | None, words: str) -> None:
    report = make_report(TARGET, reach, 0.0123, answer)
    assert report.result is reach
    assert report.nonce_verified is verified
    assert report.elapsed_ms == 12
    assert words in report.detail
    body = report.to_json()
    assert set(body) == {
        "result",
        "address",
        "port",
        "elapsed_ms",
        "nonce_verified",
        "agent_code",
        "detail",
        "source",
    }
    assert (body["address"], body["port"], body["result"]) == ("203.0.113.7", 9001, reach.value)
    assert body["source"] is None


@pytest.mark.parametrize(
    ("reach", "words"),
    [
        (Reach.OPEN, "port 9001 of 203.0.113.7 is open: the connection was made (connect only"),
        (Reach.REFUSED, "TCP reset on port 9001"),
        (Reach.TIMEOUT, "within 3 s"),
    ],
)
def test_connect_only_report(reach: Reach, words: str) -> None:
    report = make_report(TARGET, reach, 0.002, connect_only=True, source="192.0.2.53")
    assert (report.nonce_verified, report.agent_code) == (None, None)
    assert words in report.detail
    assert report.to_json()["source"] == "192.0.2.53"
