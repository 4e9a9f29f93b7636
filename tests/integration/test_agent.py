"""`controparte agent` as a subprocess against a real `controparte serve` on loopback:
it publishes the public port and the address the server sees, DNS follows when the
agent's address changes (`--bind` 127.0.0.2, then 127.0.0.3), bad credentials end it
with one clear line, and while the server is down it backs off and then recovers."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import dns.rdatatype
import pytest

from controparte.service import Registry
from tests.agentproc import AgentRunner, issue_token, write_token
from tests.conftest import StartServer
from tests.realserver import ServerProcess

pytestmark = pytest.mark.integration

CODE = "ACME-0001"
LABEL = "shop-42"


@dataclass
class Setup:
    server: ServerProcess
    token_file: Path

    def args(self, *extra: str, port: int = 9001) -> tuple[str, ...]:
        return (
            "--server",
            self.server.http_url,
            "--code",
            CODE,
            "--token-file",
            str(self.token_file),
            "--port",
            str(port),
            *extra,
        )


@pytest.fixture
def setup(start_server: StartServer, tmp_path: Path) -> Setup:
    def seed(registry: Registry) -> None:
        registry.add(CODE, LABEL)

    server = start_server(seed=seed)
    server.wait_http()
    token = issue_token(server, CODE)
    return Setup(server, write_token(tmp_path / "agent.token", token))


@pytest.fixture
def agent(tmp_path: Path) -> Iterator[AgentRunner]:
    runner = AgentRunner(tmp_path)
    yield runner
    runner.stop_all()


def srv_port(server: ServerProcess) -> list[int]:
    response = server.query(server.name(f"_mxserver._tcp.{LABEL}"), "SRV")
    return [
        int(rdata.port)
        for rrset in response.answer
        if rrset.rdtype == dns.rdatatype.SRV
        for rdata in rrset
    ]


def test_once_publishes_the_public_port_and_the_address_seen(
    setup: Setup, agent: AgentRunner
) -> None:
    run = agent(*setup.args("--private-port", "8000", "--bind", "127.0.0.2", "--once"))
    assert run.wait() == 0, run.log()
    assert f"this is how the world sees you: 127.0.0.2:9001 ({LABEL}." in run.log()
    assert setup.server.records(LABEL) == ["127.0.0.2"]
    assert srv_port(setup.server) == [9001]
    with setup.server.registry() as registry:
        inst = registry.get(CODE)
    assert (inst.ipv4, inst.port, inst.private_port) == ("127.0.0.2", 9001, 8000)
    assert inst.agent_version is not None
    assert inst.last_seen is not None


def test_dns_follows_when_the_agent_address_changes(setup: Setup, agent: AgentRunner) -> None:
    first = agent(*setup.args("--bind", "127.0.0.2", "--interval", "1"))
    first.wait_log(r"this is how the world sees you: 127\.0\.0\.2:9001")
    setup.server.wait_for(LABEL, ["127.0.0.2"])
    serial = setup.server.serial()
    first.wait_log(r"heartbeat every 1 s")
    assert first.stop() == 0  # SIGTERM mid-sleep: a clean, prompt stop
    assert "agent stopped" in first.log()

    moved = agent(*setup.args("--bind", "127.0.0.3", "--interval", "1", port=9002))
    moved.wait_log(r"this is how the world sees you: 127\.0\.0\.3:9002")
    setup.server.wait_for(LABEL, ["127.0.0.3"], timeout=2.0)
    assert srv_port(setup.server) == [9002]
    assert setup.server.serial() > serial
    # the next beats only move last-seen: no new serial, no new "world sees you" line
    changed = setup.server.serial()
    seen = last_seen(setup.server)
    for _ in range(2):  # a positive barrier: two later beats committed (the first logged)
        seen = later_beat(setup.server, seen)
    with setup.server.registry() as registry:
        assert registry.store.serial() == changed  # committed: nothing for DNS to follow
    assert setup.server.serial() == changed
    assert moved.log().count("world sees you") == 1


def last_seen(server: ServerProcess) -> datetime:
    with server.registry() as registry:
        seen = registry.get(CODE).last_seen
    assert seen is not None
    return seen


def later_beat(server: ServerProcess, seen: datetime, timeout: float = 5.0) -> datetime:
    """Until a heartbeat after `seen` is committed; its last-seen."""
    deadline = time.monotonic() + timeout
    while (now := last_seen(server)) <= seen:
        assert time.monotonic() < deadline, f"no heartbeat after {seen} in {timeout} s"
        time.sleep(0.05)
    return now


@pytest.mark.parametrize(
    ("token", "mode", "exit_code", "message"),
    [
        ("cpt_wrong", 0o600, 1, r"error: bad credentials: .* refused the token in .*agent\.token"),
        (None, 0o600, 2, r"error: token file: .*missing\.token does not exist"),
        ("cpt_wrong", 0o644, 2, r"error: token file: .* is readable by every user .*chmod 600"),
    ],
)
def test_credentials_problems_end_the_agent_with_one_clear_line(
    setup: Setup,
    agent: AgentRunner,
    tmp_path: Path,
    token: str | None,
    mode: int,
    exit_code: int,
    message: str,
) -> None:
    if token is None:
        setup.token_file = tmp_path / "missing.token"
    else:
        write_token(setup.token_file, token)
        setup.token_file.chmod(mode)
    run = agent(*setup.args("--interval", "1"))  # not --once: it must exit by itself
    assert run.wait(20) == exit_code, run.log()
    log = run.log()
    assert "Traceback" not in log
    errors = [line for line in log.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, log
    assert re.match(message, errors[0]), errors[0]
    assert "cpt_" not in log  # no token in the output, right or wrong
    assert setup.server.records(LABEL) == []


def test_server_down_backs_off_then_recovers(setup: Setup, agent: AgentRunner) -> None:
    setup.server.stop()
    run = agent(*setup.args("--interval", "4", "--bind", "127.0.0.2"))
    retries = run.wait_log(
        r"heartbeat failed \(cannot reach .*\); retrying in ([\d.]+) s \(failure (\d+)\)",
        count=4,
        timeout=20,
    )
    for match in retries:
        delay, failure = float(match[1]), int(match[2])
        ceiling = min(4.0, 2.0 ** (failure - 1))  # doubling from 1 s, capped at the interval
        assert ceiling / 2 <= delay <= ceiling, match[0]
    assert [int(m[2]) for m in retries] == [1, 2, 3, 4]
    assert run.running()  # still trying: the server may come back

    setup.server.start()
    run.wait_log(r"heartbeat ok again after \d+ failure\(s\)", timeout=20)
    run.wait_log(r"this is how the world sees you: 127\.0\.0\.2:9001")
    setup.server.wait_for(LABEL, ["127.0.0.2"])
    assert run.stop() == 0
