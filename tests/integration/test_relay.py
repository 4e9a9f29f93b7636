"""The relay for real: `controparte serve` on loopback, a `controparte agent` process for
B (its relay worker on by default), and `controparte agent listen` for A. A asks through
`ServiceApi.relay` (what doctor calls): B's agent dials A's registered port and A's
listener answers the nonce (verified with A's token); a closed port comes back refused;
an installation not linked gets no dial (403); one whose counterpart runs no agent is
told so (409)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from controparte.agent.evidence import Dial, Source
from controparte.agent.service_api import ServiceApi
from controparte.model.probe import Reach
from controparte.plan.catalog import packaged_catalog
from controparte.service import Registry
from controparte.service.links import Links
from tests.agentproc import AgentRunner, issue_token, write_token
from tests.conftest import StartServer
from tests.processes import free_tcp_port
from tests.realserver import ServerProcess

pytestmark = pytest.mark.integration

LOOPBACK = "127.0.0.1"
DEADLINE = 20.0


@pytest.fixture
def agents(tmp_path: Path) -> Iterator[AgentRunner]:
    runner = AgentRunner(tmp_path)
    yield runner
    runner.stop_all()


def relay(server: ServerProcess, code: str, token: str, counterpart: str) -> Dial:
    """What doctor gets: `counterpart`'s agent dials `code`'s registered port."""
    api = ServiceApi(server.http_url, token)
    try:
        return api.relay(code, counterpart, wait=DEADLINE)
    finally:
        api.close()


def test_a_relayed_dial_end_to_end(
    start_server: StartServer, agents: AgentRunner, tmp_path: Path
) -> None:
    listening, closed = free_tcp_port(), free_tcp_port()

    def seed(registry: Registry) -> None:
        registry.add("A-1", "alpha", ipv4=LOOPBACK, port=listening)
        registry.add("B-1", "beta", ipv4=LOOPBACK, port=free_tcp_port())
        registry.add("D-1", "delta", ipv4=LOOPBACK, port=closed)  # nothing listens
        registry.add("E-1", "epsilon", ipv4=LOOPBACK, port=listening)  # linked to nobody
        registry.add("F-1", "phi", ipv4=LOOPBACK, port=listening)
        registry.add("G-1", "gamma", ipv4=LOOPBACK, port=free_tcp_port())  # runs no agent
        links = Links(registry, packaged_catalog())
        links.add("B-1", "A-1", ["primanota"])
        links.add("D-1", "B-1", ["primanota"])
        links.add("F-1", "G-1", ["primanota"])

    server = start_server(seed=seed)
    server.wait_http()

    tokens = {code: issue_token(server, code) for code in ("A-1", "B-1", "D-1", "E-1", "F-1")}
    a_file = write_token(tmp_path / "a.token", tokens["A-1"])
    listener = agents(
        "listen", "--code", "A-1", "--token-file", str(a_file), "--port", str(listening)
    )
    listener.wait_log("answering controparte probes")
    b_file = write_token(tmp_path / "b.token", tokens["B-1"])
    b_agent = agents(
        "--server", server.http_url, "--code", "B-1", "--token-file", str(b_file),
        "--port", "4443", "--interval", "60",
    )  # fmt: skip
    b_agent.wait_log("relay: taking dial requests")

    dial = relay(server, "A-1", tokens["A-1"], "B-1")
    deadline = time.monotonic() + DEADLINE
    while dial.reach is None and "last asked never" in (dial.unavailable or ""):
        assert time.monotonic() < deadline, dial  # B's first poll is on its way
        time.sleep(0.2)
        dial = relay(server, "A-1", tokens["A-1"], "B-1")
    assert dial.source is Source.COUNTERPART, dial
    found = (dial.reach, dial.nonce_verified, dial.agent_code)
    assert found == (Reach.OPEN, True, "A-1"), dial.unavailable
    assert (dial.address, dial.port, dial.from_address) == (LOOPBACK, listening, LOOPBACK)
    listener.wait_log(f"answered a probe from {LOOPBACK}")
    b_agent.wait_log(rf"relay: dialled {LOOPBACK} port {listening} for A-1: open")

    refused = relay(server, "D-1", tokens["D-1"], "B-1")
    assert (refused.reach, refused.port, refused.nonce_verified) == (Reach.REFUSED, closed, None)
    b_agent.wait_log(rf"relay: dialled {LOOPBACK} port {closed} for D-1: refused")

    unlinked = relay(server, "E-1", tokens["E-1"], "B-1")
    assert unlinked.reach is None
    assert "E-1 and B-1 are not linked for any feature" in (unlinked.unavailable or "")

    no_agent = relay(server, "F-1", tokens["F-1"], "G-1")
    assert no_agent.reach is None
    assert (no_agent.unavailable or "").startswith(
        "G-1's agent does not take relay requests: last asked never; it runs an older agent,"
    )
    assert b_agent.stop() == 0  # SIGTERM ends the relay's long poll too (no SIGKILL)
    assert "relay: stopped" in b_agent.log()
    assert "cpt_" not in b_agent.log()  # the token is never logged
