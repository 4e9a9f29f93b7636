"""The heartbeat's wire form and the table from HTTP answers to agent outcomes."""

from __future__ import annotations

import json

import pytest

from controparte.agent.wire import (
    Done,
    GiveUp,
    HeartbeatReply,
    HeartbeatRequest,
    Retry,
    classify,
    error_detail,
    heartbeat_url,
)
from controparte.errors import ValidationError

REPLY = {
    "code": "ACME-0001",
    "label": "shop-42",
    "fqdn": "shop-42.bp.controparte.test.",
    "ip": "203.0.113.7",
    "ipv6": None,
    "port": 9001,
    "changed": True,
    "serial": 2025030101,
    "stale_after": 900,
    "heartbeat_interval": 300,
}


def body(value: object) -> bytes:
    return json.dumps(value).encode()


@pytest.mark.parametrize(
    ("server", "code", "url"),
    [
        ("https://cp.example.test", "ACME-0001", "https://cp.example.test/v1/installations/ACME-0001/heartbeat"),
        ("https://cp.example.test/", "a.b_c", "https://cp.example.test/v1/installations/a.b_c/heartbeat"),
        ("http://127.0.0.1:8080/api/", "X", "http://127.0.0.1:8080/api/v1/installations/X/heartbeat"),
    ],
)  # fmt: skip
def test_heartbeat_url(server: str, code: str, url: str) -> None:
    assert heartbeat_url(server, code) == url


def test_heartbeat_url_refuses_a_code_that_could_change_the_path() -> None:
    with pytest.raises(ValidationError, match="code"):
        heartbeat_url("https://cp.example.test", "../admin")


def test_request_body_carries_only_what_is_given() -> None:
    assert HeartbeatRequest(9001).to_json() == {"port": 9001}
    assert HeartbeatRequest(9001, 8000, "0.1.0").to_json() == {
        "port": 9001,
        "private_port": 8000,
        "version": "0.1.0",
    }


@pytest.mark.parametrize("port", [0, 65536, -1])
def test_request_refuses_a_port_out_of_range(port: int) -> None:
    with pytest.raises(ValidationError, match="port"):
        HeartbeatRequest(port)
    with pytest.raises(ValidationError, match="port"):
        HeartbeatRequest(9001, private_port=port)


def test_reply_parses_and_says_where_the_world_sees_you() -> None:
    reply = HeartbeatReply.from_json(REPLY)
    assert reply.endpoints() == ("203.0.113.7:9001",)
    assert reply.where() == "203.0.113.7:9001 (shop-42.bp.controparte.test.)"
    assert reply.heartbeat_interval == 300.0
    assert reply.stale_after == 900.0
    assert reply.changed


def test_reply_with_both_families_and_no_name() -> None:
    reply = HeartbeatReply.from_json(
        {"code": "X", "ip": "192.0.2.1", "ipv6": "2001:db8::1", "port": 9100}
    )
    assert reply.where() == "192.0.2.1:9100, [2001:db8::1]:9100"
    assert reply.heartbeat_interval is None
    assert not reply.changed


@pytest.mark.parametrize(
    "bad",
    [
        [],
        {},
        {"code": 5},
        {**REPLY, "port": "9001"},
        {**REPLY, "port": True},
        {**REPLY, "ip": 7},
        {**REPLY, "serial": 1.5},
    ],
)
def test_reply_that_is_not_a_heartbeat_reply(bad: object) -> None:
    outcome = classify(200, body(bad))
    assert isinstance(outcome, Retry)
    assert "not a heartbeat reply" in outcome.reason


def test_reply_intervals_that_are_not_seconds_are_ignored() -> None:
    reply = HeartbeatReply.from_json(
        {**REPLY, "heartbeat_interval": "300", "stale_after": "2025-01-01T00:00:00Z"}
    )
    assert reply.heartbeat_interval is None
    assert reply.stale_after is None


@pytest.mark.parametrize(
    ("status", "kind", "auth"),
    [
        (401, GiveUp, True),
        (403, GiveUp, True),
        (400, GiveUp, False),
        (404, GiveUp, False),
        (422, GiveUp, False),
        (301, GiveUp, False),
        (408, Retry, False),
        (429, Retry, False),
        (500, Retry, False),
        (502, Retry, False),
        (503, Retry, False),
        (504, Retry, False),
        (599, Retry, False),
    ],
)
def test_classify_error_statuses(status: int, kind: type, auth: bool) -> None:
    outcome = classify(status, body({"detail": "the server's words"}), 7.0)
    assert isinstance(outcome, kind)
    assert not isinstance(outcome, Done)
    assert f"HTTP {status}: the server's words" in outcome.reason
    if isinstance(outcome, GiveUp):
        assert outcome.auth is auth
    else:
        assert isinstance(outcome, Retry)
        assert outcome.retry_after == 7.0


def test_classify_success() -> None:
    outcome = classify(200, body(REPLY))
    assert isinstance(outcome, Done)
    assert outcome.reply.code == "ACME-0001"


def test_classify_redirect_names_the_location() -> None:
    outcome = classify(308, b"", location="https://cp.example.test/v1/x")
    assert isinstance(outcome, GiveUp)
    assert "https://cp.example.test/v1/x" in outcome.reason
    assert "--server" in outcome.reason


@pytest.mark.parametrize(
    ("raw", "detail"),
    [
        (body({"detail": "bad credentials"}), "bad credentials"),
        (body({"error": "throttled\nslow down"}), "throttled slow down"),
        (body({"message": "x" * 500}), "x" * 200),
        (body({"detail": [{"loc": ["port"]}]}), ""),
        (body(["detail"]), ""),
        (b"<html>502 Bad Gateway</html>", ""),
        (b"\xff\xfe", ""),
    ],
)
def test_error_detail(raw: bytes, detail: str) -> None:
    assert error_detail(raw) == detail
