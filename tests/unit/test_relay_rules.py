"""The relay's pure rules (`service/relay.py`) and the agent's checks of what it is
asked (`agent/relay.py`), as tables: who may ask whom, where the dial goes, when an
agent counts as taking requests, a request's state, the report judged with the
requester's token, the agent's own dial budget."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from controparte.agent.relay import DialBudget, RelayTask
from controparte.errors import ConflictError, ForbiddenError, ValidationError
from controparte.model import Installation, Link
from controparte.model.probe import Reach, answer_line
from controparte.service.relay import (
    POLL_FRESH,
    agent_report,
    are_linked,
    check_polling,
    relay_report,
    relay_state,
    relay_target,
)
from controparte.store import RelayRequest

NOW = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)
NONCE = "0123456789abcdef0123456789abcdef"
TOKEN = "cpt_token-of-the-requester"


def inst(ipv4: str | None = None, ipv6: str | None = None, port: int | None = 4443) -> Installation:
    return Installation(
        code="A-1", label="alpha", ipv4=ipv4, ipv6=ipv6, port=port, created=NOW, updated=NOW
    )


def link(a: str, b: str) -> Link:
    return Link(a, b, "prima-nota", NOW)


@pytest.mark.parametrize(
    ("links", "a", "b", "linked"),
    [
        ([link("A-1", "B-1")], "A-1", "B-1", True),
        ([link("B-1", "A-1")], "A-1", "B-1", True),  # either way round
        ([link("a-1", "B-1")], "A-1", "b-1", True),  # codes in any case
        ([link("A-1", "C-1")], "A-1", "B-1", False),
        ([link("C-1", "B-1")], "A-1", "B-1", False),
        ([], "A-1", "B-1", False),
    ],
)
def test_who_is_linked(links: list[Link], a: str, b: str, linked: bool) -> None:
    assert are_linked(links, a, b) is linked


@pytest.mark.parametrize(
    ("ipv4", "ipv6", "family", "address"),
    [
        ("192.0.2.1", None, None, "192.0.2.1"),
        ("192.0.2.1", "2001:db8::1", None, "192.0.2.1"),  # IPv4 first
        (None, "2001:db8::1", None, "2001:db8::1"),
        ("192.0.2.1", "2001:db8::1", 6, "2001:db8::1"),
        ("192.0.2.1", "2001:db8::1", 4, "192.0.2.1"),
    ],
)
def test_the_target_is_the_requesters_registered_address(
    ipv4: str | None, ipv6: str | None, family: int | None, address: str
) -> None:
    target = relay_target(inst(ipv4, ipv6), family)
    assert (target.address, target.port) == (address, 4443)


@pytest.mark.parametrize(
    ("ipv4", "ipv6", "port", "family", "words"),
    [
        (None, None, 4443, None, "no public address registered"),
        ("192.0.2.1", None, 4443, 6, "no public IPv6 address registered"),
        (None, "2001:db8::1", 4443, 4, "no public IPv4 address registered"),
        ("192.0.2.1", None, None, None, "no public port registered"),
    ],
)
def test_no_registered_target_is_forbidden(
    ipv4: str | None, ipv6: str | None, port: int | None, family: int | None, words: str
) -> None:
    with pytest.raises(ForbiddenError, match=words):
        relay_target(inst(ipv4, ipv6, port), family)


def test_a_family_is_4_or_6() -> None:
    with pytest.raises(ValidationError, match="family"):
        relay_target(inst("192.0.2.1"), 5)


@pytest.mark.parametrize(
    ("ago", "takes"),
    [(0.0, True), (POLL_FRESH, True), (POLL_FRESH + 1, False), (None, False)],
)
def test_an_agent_takes_requests_when_it_polled_lately(ago: float | None, takes: bool) -> None:
    last = None if ago is None else NOW - timedelta(seconds=ago)
    if takes:
        check_polling("B-1", last, NOW)
        return
    with pytest.raises(ConflictError) as refused:
        check_polling("B-1", last, NOW)
    words = str(refused.value)
    assert words.startswith("B-1's agent does not take relay requests: last asked ")
    assert "older agent, was started with --no-relay, or is not running" in words
    assert ("never" in words) is (ago is None)


def request(*, report: str | None = None, finished: bool = False) -> RelayRequest:
    return RelayRequest(
        id="f" * 32,
        requester="A-1",
        agent="B-1",
        address="192.0.2.1",
        port=4443,
        nonce=NONCE,
        created=NOW,
        expires=NOW + timedelta(seconds=60),
        claimed=NOW if finished else None,
        report=report,
        finished=NOW if finished else None,
    )


@pytest.mark.parametrize(
    ("finished", "after", "state"),
    [
        (False, 0, "pending"),
        (False, 59.9, "pending"),
        (False, 60, "expired"),
        (True, 0, "done"),
        (True, 600, "done"),  # a report stays a report
    ],
)
def test_state(finished: bool, after: float, state: str) -> None:
    assert relay_state(request(finished=finished), NOW + timedelta(seconds=after)) == state


def stored(result: Reach, line: str, elapsed_ms: int = 12) -> str:
    return agent_report(result, elapsed_ms, line, "198.51.100.9")


@pytest.mark.parametrize(
    ("result", "line", "token", "verified", "claimed"),
    [
        (Reach.OPEN, answer_line(TOKEN, "A-1", NONCE).decode(), TOKEN, True, "A-1"),
        (Reach.OPEN, answer_line(TOKEN, "A-1", NONCE).decode(), "cpt_other", False, "A-1"),
        (Reach.OPEN, answer_line(TOKEN, "C-1", NONCE).decode(), TOKEN, False, "C-1"),
        (Reach.OPEN, "SSH-2.0-OpenSSH_9.6", TOKEN, None, None),
        (Reach.OPEN, "", TOKEN, None, None),
        (Reach.REFUSED, "", TOKEN, None, None),
        (Reach.TIMEOUT, "", TOKEN, None, None),
    ],
)
def test_the_report_is_judged_with_the_requesters_token(
    result: Reach, line: str, token: str, verified: bool | None, claimed: str | None
) -> None:
    report = relay_report(request(report=stored(result, line), finished=True), token)
    assert report is not None
    assert report["result"] == result.value
    assert (report["nonce_verified"], report["agent_code"]) == (verified, claimed)
    assert (report["address"], report["port"], report["elapsed_ms"]) == ("192.0.2.1", 4443, 12)
    assert report["source"] == "198.51.100.9"
    assert str(report["detail"]).startswith("dialled by B-1's agent (from 198.51.100.9): ")


def test_no_report_before_the_agent_sent_one() -> None:
    assert relay_report(request(), TOKEN) is None


@pytest.mark.parametrize(
    ("elapsed_ms", "line", "field"), [(-1, "", "elapsed_ms"), (5, "x" * 257, "line")]
)
def test_an_agent_report_is_bounded(elapsed_ms: int, line: str, field: str) -> None:
    with pytest.raises(ValidationError, match=field):
        agent_report(Reach.OPEN, elapsed_ms, line, None)


def test_an_agent_report_keeps_what_it_said() -> None:
    assert json.loads(agent_report(Reach.OPEN, 7, "hello", None)) == {
        "result": "open",
        "elapsed_ms": 7,
        "line": "hello",
        "source": None,
    }


# -- the agent's side --------------------------------------------------------------------


GOOD = {"id": "e" * 32, "address": "192.0.2.1", "port": 4443, "nonce": NONCE, "requester": "A-1"}


@pytest.mark.parametrize(
    "change",
    [
        {"address": "shop.example.test"},  # a name: never resolved, never dialled
        {"address": "192.0.2.300"},
        {"port": 0},
        {"port": 65536},
        {"port": "4443"},
        {"port": True},
        {"nonce": "not-a-nonce"},
        {"nonce": NONCE.upper()},
        {"id": None},
    ],
)
def test_the_agent_drops_a_request_it_must_not_dial(change: dict[str, object]) -> None:
    with pytest.raises(ValueError):  # each says its own reason
        RelayTask.from_json({**GOOD, **change})


@pytest.mark.parametrize("address", ["192.0.2.1", "2001:db8::1"])
def test_the_agent_takes_a_well_formed_request(address: str) -> None:
    task = RelayTask.from_json({**GOOD, "address": address})
    assert (task.address, task.port, task.nonce, task.requester) == (address, 4443, NONCE, "A-1")


def test_the_dial_budget_is_a_sliding_window() -> None:
    now = [0.0]
    budget = DialBudget(limit=3, window=60.0, clock=lambda: now[0])
    assert [budget.take() for _ in range(4)] == [True, True, True, False]
    now[0] = 59.9
    assert budget.take() is False
    now[0] = 60.0  # the first three fall out of the window together
    assert [budget.take() for _ in range(4)] == [True, True, True, False]
