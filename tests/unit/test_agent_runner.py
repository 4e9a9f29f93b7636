"""The agent's loop over a scripted server (no sockets, no sleeping): what it logs, how
long it waits, and when it gives up. The HTTP client is checked on httpx's
MockTransport: the request it sends and how it reads answers and network errors."""

from __future__ import annotations

import json
import logging
import random
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from controparte.agent import Agent, AgentConfig, HeartbeatClient
from controparte.agent.wire import Done, GiveUp, HeartbeatReply, HeartbeatRequest, Outcome, Retry
from controparte.errors import AuthError, ConfigError, ControparteError, ValidationError

URL = "https://cp.example.test/v1/installations/ACME-0001/heartbeat"


def reply(ip: str = "203.0.113.7", port: int = 9001, interval: float | None = 300) -> Done:
    return Done(
        HeartbeatReply.from_json(
            {
                "code": "ACME-0001",
                "label": "shop-42",
                "fqdn": "shop-42.bp.controparte.test.",
                "ip": ip,
                "port": port,
                "changed": False,
                "heartbeat_interval": interval,
                "stale_after": 900,
            }
        )
    )


class Script:
    """A server that answers with the scripted outcomes, then stops the agent."""

    url = URL

    def __init__(self, outcomes: list[Outcome]) -> None:
        self.outcomes = iter(outcomes)
        self.tokens: list[str] = []
        self.requests: list[HeartbeatRequest] = []

    def beat(self, token: str, request: HeartbeatRequest) -> Outcome:
        self.tokens.append(token)
        self.requests.append(request)
        return next(self.outcomes)


class Clock(threading.Event):
    """A stop event whose wait() records the delay and returns at once; it reports
    'stopped' after `stop_after` waits."""

    def __init__(self, stop_after: int) -> None:
        super().__init__()
        self.stop_after = stop_after
        self.waits: list[float] = []

    def wait(self, timeout: float | None = None) -> bool:
        assert timeout is not None
        self.waits.append(timeout)
        return len(self.waits) >= self.stop_after


class Middle(random.Random):
    def uniform(self, a: float, b: float) -> float:
        return (a + b) / 2


@pytest.fixture
def token(tmp_path: Path) -> Path:
    path = tmp_path / "agent.token"
    path.write_text("cpt_first\n")
    path.chmod(0o600)
    return path


def run(
    token: Path, outcomes: list[Outcome], *, interval: float | None = None, once: bool = False
) -> tuple[Agent, Script, Clock]:
    config = AgentConfig(
        "https://cp.example.test", "ACME-0001", token, 9001, 8000, interval, once=once
    )
    script = Script(outcomes)
    clock = Clock(stop_after=len(outcomes))
    agent = Agent(config, script, stop=clock, rng=Middle())
    assert agent.run() == 0
    return agent, script, clock


@pytest.fixture(autouse=True)
def _info(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    with caplog.at_level(logging.INFO, "controparte.agent"):
        yield


def test_first_beat_says_how_the_world_sees_you(
    token: Path, caplog: pytest.LogCaptureFixture
) -> None:
    _, script, clock = run(token, [reply(), reply()])
    assert (
        "this is how the world sees you: 203.0.113.7:9001 (shop-42.bp.controparte.test.)"
        in caplog.messages
    )
    assert clock.waits == [300.0, 300.0]  # the server's interval, jitter at its midpoint
    assert script.tokens == ["cpt_first", "cpt_first"]
    assert script.requests[0].to_json() == {"port": 9001, "private_port": 8000, "version": "0.1.0"}
    assert sum("world sees you" in m for m in caplog.messages) == 1  # unchanged: quiet


def test_address_change_is_logged(token: Path, caplog: pytest.LogCaptureFixture) -> None:
    run(token, [reply(), reply(ip="198.51.100.9"), reply(ip="198.51.100.9", port=9002)])
    changes = [m for m in caplog.messages if m.startswith("address changed")]
    assert changes == [
        "address changed: this is how the world sees you: 198.51.100.9:9001"
        " (shop-42.bp.controparte.test.) (was 203.0.113.7:9001)",
        "address changed: this is how the world sees you: 198.51.100.9:9002"
        " (shop-42.bp.controparte.test.) (was 198.51.100.9:9001)",
    ]


def test_interval_flag_beats_the_server(token: Path) -> None:
    _, _, clock = run(token, [reply(interval=60), reply(interval=60)], interval=20.0)
    assert clock.waits == [20.0, 20.0]


def test_without_a_server_interval_the_default_is_300(token: Path) -> None:
    _, _, clock = run(token, [reply(interval=None)])
    assert clock.waits == [300.0]


def test_interval_not_shorter_than_stale_after_is_warned(
    token: Path, caplog: pytest.LogCaptureFixture
) -> None:
    run(token, [reply()], interval=1200.0)
    assert any("stale_after" in m for m in caplog.messages)


def test_failures_back_off_then_recover(token: Path, caplog: pytest.LogCaptureFixture) -> None:
    outcomes: list[Outcome] = [
        Retry("cannot reach"),
        Retry("HTTP 503"),
        Retry("HTTP 502"),
        Retry("HTTP 429", retry_after=40.0),
        reply(),
        Retry("HTTP 500"),
    ]
    agent, _, clock = run(token, outcomes)
    # equal jitter at its midpoint: 3/4 of 1, 2, 4 s; then Retry-After is a floor;
    # after the success the count starts again
    assert clock.waits == [0.75, 1.5, 3.0, 40.0, 300.0, 0.75]
    assert agent.failures == 1
    assert "heartbeat ok again after 4 failure(s)" in caplog.messages
    assert "heartbeat failed (HTTP 503); retrying in 1.5 s (failure 2)" in caplog.messages


def test_backoff_before_the_first_success_is_capped_at_the_default_interval(
    token: Path,
) -> None:
    _, _, clock = run(token, [Retry("down")] * 12)
    assert max(clock.waits) <= 300.0
    assert clock.waits[-1] == pytest.approx(225.0)  # 3/4 of the cap


def test_token_is_read_before_every_beat(token: Path) -> None:
    config = AgentConfig("https://cp.example.test", "ACME-0001", token, 9001)
    script = Script([reply(), reply()])

    class Rotate(Clock):
        def wait(self, timeout: float | None = None) -> bool:
            token.write_text("cpt_second\n")
            return super().wait(timeout)

    Agent(config, script, stop=Rotate(stop_after=2), rng=Middle()).run()
    assert script.tokens == ["cpt_first", "cpt_second"]


@pytest.mark.parametrize("status", [401, 403])
def test_bad_credentials_end_the_agent(token: Path, status: int) -> None:
    with pytest.raises(AuthError, match=r"bad credentials: .* refused the token in .*agent.token"):
        run(token, [GiveUp(f"HTTP {status}", auth=True)])


def test_a_refusal_that_retrying_cannot_fix_ends_the_agent(token: Path) -> None:
    with pytest.raises(ControparteError, match=r"refused by .*HTTP 422: port"):
        run(token, [GiveUp("HTTP 422: port: out of range")])


def test_missing_token_file_fails_before_any_request(tmp_path: Path) -> None:
    config = AgentConfig("https://cp.example.test", "ACME-0001", tmp_path / "nope", 9001)
    script = Script([])
    with pytest.raises(ConfigError, match="does not exist"):
        Agent(config, script, stop=Clock(1)).run()
    assert script.requests == []


def test_once_succeeds_with_one_beat(token: Path) -> None:
    _, script, clock = run(token, [reply()], once=True)
    assert len(script.requests) == 1
    assert clock.waits == []


def test_once_fails_without_retrying(token: Path) -> None:
    with pytest.raises(ControparteError, match="heartbeat failed: HTTP 503"):
        run(token, [Retry("HTTP 503")], once=True)


def test_stop_before_start_sends_nothing(token: Path) -> None:
    config = AgentConfig("https://cp.example.test", "ACME-0001", token, 9001)
    stop = threading.Event()
    stop.set()
    script = Script([])
    assert Agent(config, script, stop=stop).run() == 0
    assert script.requests == []


@pytest.mark.parametrize(
    ("server", "interval", "field"),
    [
        ("cp.example.test", None, "server"),
        ("ftp://x", None, "server"),
        ("http://x", 0.5, "interval"),
    ],
)
def test_config_is_checked(tmp_path: Path, server: str, interval: float | None, field: str) -> None:
    with pytest.raises(ValidationError, match=field):
        AgentConfig(server, "ACME-0001", tmp_path / "t", 9001, interval=interval)


# -- the HTTP client, on a mock transport -----------------------------------------------


def client(handler: httpx.MockTransport) -> HeartbeatClient:
    return HeartbeatClient("https://cp.example.test/", "ACME-0001", transport=handler)


def test_client_sends_the_beat() -> None:
    seen: list[httpx.Request] = []

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"code": "ACME-0001", "ip": "203.0.113.7", "port": 9001})

    with client(httpx.MockTransport(handle)) as c:
        outcome = c.beat("cpt_x", HeartbeatRequest(9001, version="0.1.0"))
    assert isinstance(outcome, Done)
    (request,) = seen
    assert request.method == "POST"
    assert str(request.url) == URL
    assert request.headers["Authorization"] == "Bearer cpt_x"
    assert request.headers["User-Agent"].startswith("controparte-agent/")
    assert json.loads(request.content) == {"port": 9001, "version": "0.1.0"}


def test_client_reads_retry_after() -> None:
    def handle(_request: httpx.Request) -> httpx.Response:
        return httpx.Response(429, headers={"Retry-After": "30"}, json={"detail": "slow down"})

    with client(httpx.MockTransport(handle)) as c:
        outcome = c.beat("cpt_x", HeartbeatRequest(9001))
    assert outcome == Retry("HTTP 429: slow down", 30.0)


def test_client_does_not_follow_redirects() -> None:
    def handle(_request: httpx.Request) -> httpx.Response:
        return httpx.Response(301, headers={"Location": "https://elsewhere.example.test/"})

    with client(httpx.MockTransport(handle)) as c:
        outcome = c.beat("cpt_x", HeartbeatRequest(9001))
    assert isinstance(outcome, GiveUp)
    assert "elsewhere.example.test" in outcome.reason


@pytest.mark.parametrize(
    ("error", "words"),
    [
        (httpx.ConnectError("[Errno 111] Connection refused"), "cannot reach"),
        (httpx.ReadTimeout("timed out"), "no answer from"),
        (httpx.RemoteProtocolError("server disconnected"), "cannot reach"),
    ],
)
def test_client_turns_network_errors_into_retries(error: Exception, words: str) -> None:
    def handle(_request: httpx.Request) -> httpx.Response:
        raise error

    with client(httpx.MockTransport(handle)) as c:
        outcome = c.beat("cpt_x", HeartbeatRequest(9001))
    assert isinstance(outcome, Retry)
    assert words in outcome.reason
