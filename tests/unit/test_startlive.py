"""The start-live client's choice of broker (`agent/startlive.Rotation`, an injected
clock), its reading of an answer, and the broker's wake hooks (`service/broker.py`):
a real command and a real webhook, their contract and their timeout."""

from __future__ import annotations

import asyncio
import http.server
import json
from collections.abc import Sequence
from pathlib import Path
from typing import ClassVar

import pytest

from controparte.agent.startlive import Rotation, Started, start_url
from controparte.errors import ConfigError
from controparte.service.broker import (
    CommandHook,
    Placement,
    Wake,
    WakeOutcome,
    Waker,
    WebhookHook,
    hook_of,
)
from controparte.settings import settings_from
from tests.httpstub import serving

NAMES = ("start-live", "start-live01", "start-live02")


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# (events: ("fail", name) | ("ok", name) | ("wait", seconds), expected order after them)
ROTATIONS: list[tuple[Sequence[tuple[str, object]], tuple[str, ...]]] = [
    ([], NAMES),
    ([("fail", "start-live")], ("start-live01", "start-live02", "start-live")),
    ([("fail", "start-live"), ("wait", 29.9)], ("start-live01", "start-live02", "start-live")),
    ([("fail", "start-live"), ("wait", 30.0)], NAMES),  # back after its cooldown
    ([("fail", "start-live"), ("ok", "start-live")], NAMES),  # a success clears it
    ([("fail", "start-live01")], ("start-live", "start-live02", "start-live01")),
    (  # all down: the one that failed longest ago first
        [
            ("fail", "start-live02"),
            ("wait", 1),
            ("fail", "start-live"),
            ("wait", 1),
            ("fail", "start-live01"),
        ],
        ("start-live02", "start-live", "start-live01"),
    ),
    (
        [("fail", "start-live"), ("wait", 20), ("fail", "start-live01"), ("wait", 10)],
        ("start-live", "start-live02", "start-live01"),
    ),
]


@pytest.mark.parametrize(("events", "expected"), ROTATIONS)
def test_rotation(events: Sequence[tuple[str, object]], expected: tuple[str, ...]) -> None:
    clock = Clock()
    rotation = Rotation(NAMES, cooldown=30.0, clock=clock)
    for what, value in events:
        if what == "wait":
            assert isinstance(value, (int, float))
            clock.now += value
        elif what == "fail":
            rotation.failed(str(value))
        else:
            rotation.succeeded(str(value))
    assert rotation.order() == expected


def test_rotation_needs_a_name() -> None:
    with pytest.raises(ValueError, match="no start-live broker"):
        Rotation(())


@pytest.mark.parametrize(
    "body",
    [
        [],
        {"gateway": "192.0.2.1", "port": 9001},
        {"gateway": "192.0.2.1", "port": True, "ready": True},
        {"gateway": "192.0.2.1", "port": 0, "ready": True},
        {"gateway": 1, "port": 9001, "ready": True},
        {"gateway": "192.0.2.1", "port": 9001, "ready": "yes"},
    ],
)
def test_an_answer_that_is_not_a_start_is_refused(body: object) -> None:
    with pytest.raises(ValueError):
        Started.from_json("start-live", body, ())


@pytest.mark.parametrize(
    ("body", "name"),
    [
        ({"gateway": "192.0.2.1", "port": 9001, "ready": True}, None),
        ({"gateway": "192.0.2.1", "port": 9001, "ready": True, "gateway_name": None}, None),
        ({"gateway": "192.0.2.1", "port": 9001, "ready": True, "gateway_name": "gw1"}, "gw1"),
        ({"gateway": "192.0.2.1", "port": 9001, "ready": True, "gateway_name": 7}, None),
    ],
)
def test_an_answer_names_the_gateway_when_the_pool_placed_it(
    body: object, name: str | None
) -> None:
    started = Started.from_json("start-live", body, ())
    assert (started.gateway, started.port, started.gateway_name) == ("192.0.2.1", 9001, name)


def test_start_url() -> None:
    assert start_url("start-live01.example.test", 443, "Acme") == (
        "https://start-live01.example.test:443/v1/start/acme"
    )
    assert start_url("2001:db8::1", 8443, "a/b") == "https://[2001:db8::1]:8443/v1/start/a%2Fb"


# -- the wake hooks -------------------------------------------------------------------------

WAKE = Wake("L1", "acme", Placement("198.51.100.7", 9001, "gw1"))


@pytest.mark.parametrize(
    ("script", "outcome"),
    [
        (
            'test "$1" = acme && test "$CONTROPARTE_GATEWAY:$CONTROPARTE_PORT" = 198.51.100.7:9001'
            ' && test "$CONTROPARTE_GATEWAY_NAME" = gw1',
            WakeOutcome(True),
        ),
        ('test "$CONTROPARTE_CODE" = L1 && test "$CONTROPARTE_LABEL" = acme', WakeOutcome(True)),
        (
            "echo first >&2; echo 'still asleep' >&2; exit 3",
            WakeOutcome(False, "the wake hook exited with status 3: still asleep"),
        ),
        ("sleep 30", WakeOutcome(False, "the wake hook did not finish within 0.3 s")),
    ],
)
def test_the_command_hook(script: str, outcome: WakeOutcome) -> None:
    hook = CommandHook(("sh", "-c", script, "hook"), timeout=0.3)
    assert asyncio.run(hook(WAKE)) == outcome


def test_a_command_that_cannot_run(tmp_path: Path) -> None:
    found = asyncio.run(CommandHook((str(tmp_path / "missing"),), 1.0)(WAKE))
    assert not found.ready and "could not be run" in found.detail


class _Webhook(http.server.BaseHTTPRequestHandler):
    received: ClassVar[list[object]] = []

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.received.append(body)
        status, answer = {
            "/up": (200, b""),
            "/asleep": (200, b'{"ready": false, "detail": "booting"}'),
            "/broken": (500, b""),
        }[self.path]
        self.send_response(status)
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, *args: object) -> None:
        """Quiet."""


def test_the_webhook_hook() -> None:
    with serving(_Webhook) as base:
        outcomes = [
            asyncio.run(WebhookHook(base + path, 2.0)(WAKE))
            for path in ("/up", "/asleep", "/broken")
        ]
    assert outcomes == [
        WakeOutcome(True),
        WakeOutcome(False, "booting"),
        WakeOutcome(False, "the wake webhook answered HTTP 500"),
    ]
    assert _Webhook.received[0] == {
        "code": "L1",
        "label": "acme",
        "gateway": "198.51.100.7",
        "gateway_name": "gw1",
        "port": 9001,
    }
    unreachable = asyncio.run(WebhookHook("http://127.0.0.1:9/", 1.0)(WAKE))
    assert not unreachable.ready and "cannot be reached" in unreachable.detail


def test_one_wake_at_a_time_per_installation() -> None:
    calls: list[str] = []

    async def hook(wake: Wake) -> WakeOutcome:
        calls.append(wake.code)
        await asyncio.sleep(0.05)
        return WakeOutcome(True)

    async def three() -> list[tuple[WakeOutcome, bool]]:
        waker = Waker(hook)
        other = Wake("L2", "other", WAKE.placement)
        first = await asyncio.gather(waker.wake(WAKE), waker.wake(WAKE), waker.wake(other))
        return [*first, await waker.wake(WAKE)]  # the first is over: a new wake

    found = asyncio.run(three())
    assert [joined for _o, joined in found] == [False, True, False, False]
    assert calls == ["L1", "L2", "L1"]
    assert asyncio.run(Waker(None).wake(WAKE)) == (WakeOutcome(True), False)


def test_hook_of_the_settings() -> None:
    def settings(**given: object) -> object:
        return hook_of(settings_from(given, {}))

    assert settings() is None
    assert settings(broker_wake_command="wake --fast", broker_wake_timeout=5) == CommandHook(
        ("wake", "--fast"), 5.0
    )
    assert settings(broker_wake_url="https://wake.example.test/") == WebhookHook(
        "https://wake.example.test/", 30.0
    )
    with pytest.raises(ConfigError, match="name one wake hook"):
        settings(broker_wake_command="wake", broker_wake_url="https://wake.example.test/")
    with pytest.raises(ConfigError, match="broker_wake_command"):
        settings(broker_wake_command="wake 'unclosed")
    with pytest.raises(ConfigError, match="broker_wake_url"):
        settings(broker_wake_url="ftp://wake.example.test/")
