"""The probe on loopback sockets: `run_probe` against the agent's listener and against
other things that may sit on a port, `POST /v1/installations/{code}/probe` against a
real server with `controparte agent listen` as a subprocess, and the doctor's client of
the counterparts and of their probe (`agent/service_api.py`) against a real server, and
against an HTTP server without those routes."""

from __future__ import annotations

import asyncio
import contextlib
import http.server
import socket
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

from controparte.agent.evidence import Source
from controparte.agent.listen import ListenConfig, ProbeListener
from controparte.agent.service_api import ServiceApi
from controparte.errors import ControparteError
from controparte.model.probe import Reach
from controparte.plan.catalog import load_catalog
from controparte.service import Registry
from controparte.service.links import Links
from controparte.service.probe import ProbeTarget, run_probe
from tests.agentproc import AgentRunner, issue_token, write_token
from tests.conftest import StartServer
from tests.httpstub import serving
from tests.processes import free_tcp_port

pytestmark = pytest.mark.integration

CODE = "ACME-0001"
TOKEN = "cpt_the-token-of-acme"


@contextlib.asynccontextmanager
async def listening(token_file: Path, code: str = CODE) -> AsyncIterator[ProbeTarget]:
    listener = ProbeListener(
        ListenConfig(code=code, token_file=token_file, port=0, bind="127.0.0.1"),
        read_timeout=1.0,
    )
    where = await listener.start()
    port = int(where[0].rsplit(":", 1)[1])
    try:
        yield ProbeTarget("127.0.0.1", port)
    finally:
        await listener.stop()


@contextlib.asynccontextmanager
async def other_service(greeting: bytes | None) -> AsyncIterator[ProbeTarget]:
    """A port where something else listens: it says `greeting` (or nothing) and waits."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if greeting is not None:
            writer.write(greeting)
        with contextlib.suppress(OSError, asyncio.TimeoutError):
            await asyncio.wait_for(reader.read(), 5)
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = int(server.sockets[0].getsockname()[1])
    try:
        yield ProbeTarget("127.0.0.1", port)
    finally:
        server.close()
        await server.wait_closed()


def test_run_probe_against_what_may_listen(tmp_path: Path) -> None:
    token_file = write_token(tmp_path / "token", TOKEN)

    async def main() -> None:
        async with listening(token_file) as target:
            report = await run_probe(target, code=CODE, token=TOKEN)
            assert (report.result, report.nonce_verified, report.agent_code) == (
                Reach.OPEN,
                True,
                CODE,
            )
            other = await run_probe(target, code=CODE, token="cpt_a-newer-token")
            assert (other.result, other.nonce_verified) == (Reach.OPEN, False)
            elsewhere = await run_probe(target, code="OTHER-1", token=TOKEN)
            assert elsewhere.nonce_verified is False
        async with other_service(b"SSH-2.0-OpenSSH_9.6\r\n") as target:
            report = await run_probe(target, code=CODE, token=TOKEN)
            assert (report.result, report.nonce_verified) == (Reach.OPEN, None)
        async with other_service(None) as target:  # MxServer: silent until spoken to
            report = await run_probe(target, code=CODE, token=TOKEN, read_timeout=0.3)
            assert (report.result, report.nonce_verified) == (Reach.OPEN, None)
        closed = ProbeTarget("127.0.0.1", free_tcp_port())
        report = await run_probe(closed, code=CODE, token=TOKEN)
        assert (report.result, report.nonce_verified) == (Reach.REFUSED, None)

    asyncio.run(main())


def test_listener_ignores_what_is_not_a_probe(tmp_path: Path) -> None:
    token_file = write_token(tmp_path / "token", TOKEN)

    async def main() -> None:
        async with listening(token_file) as target:
            for junk in (b"GET / HTTP/1.1\r\n\r\n", b"x" * 1000 + b"\n", b""):
                reader, writer = await asyncio.open_connection(target.address, target.port)
                writer.write(junk)
                if not junk:
                    writer.write_eof()
                answer = await asyncio.wait_for(reader.read(), 3)
                assert answer == b""  # closed unanswered
                writer.close()

    asyncio.run(main())


def test_listener_refuses_an_unsafe_token_file(tmp_path: Path) -> None:
    token_file = write_token(tmp_path / "token", TOKEN)
    token_file.chmod(0o644)
    listener = ProbeListener(ListenConfig(code=CODE, token_file=token_file, port=0))
    with pytest.raises(Exception, match="readable by every user"):
        asyncio.run(listener.start())


# -- the API, with `controparte agent listen` ----------------------------------------------------


@pytest.fixture
def agents(tmp_path: Path) -> Iterator[AgentRunner]:
    runner = AgentRunner(tmp_path)
    yield runner
    runner.stop_all()


def test_probe_endpoint(start_server: StartServer, agents: AgentRunner, tmp_path: Path) -> None:
    port = free_tcp_port()

    def seed(registry: Registry) -> None:
        registry.add(CODE, "shop-42", ipv4="127.0.0.1", port=port)
        registry.add("FAR-1", "far", ipv4="198.51.100.7", port=port)

    server = start_server(seed=seed)
    server.wait_http()
    token = issue_token(server, CODE)
    token_file = write_token(tmp_path / "agent.token", token)
    listener = agents(
        "listen", "--code", CODE, "--token-file", str(token_file), "--port", str(port)
    )
    listener.wait_log("answering controparte probes")
    url = f"{server.http_url}/v1/installations/{CODE}/probe"
    auth = {"Authorization": f"Bearer {token}"}

    assert httpx.post(url).status_code == 401
    answer = httpx.post(url, headers=auth, timeout=10)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["result"] == "open"
    assert (body["address"], body["port"]) == ("127.0.0.1", port)
    assert body["nonce_verified"] is True
    assert body["agent_code"] == CODE
    assert body["source"] == "127.0.0.1"  # the host dials from it; no probe_sources set
    listener.wait_log("answered a probe from 127.0.0.1")

    again = httpx.post(url, headers=auth, timeout=10)
    assert again.status_code == 429
    assert 1 <= int(again.headers["Retry-After"]) <= 5

    far = httpx.post(
        f"{server.http_url}/v1/installations/FAR-1/probe",
        headers={"Authorization": f"Bearer {issue_token(server, 'FAR-1')}"},
        timeout=10,
    )
    assert far.status_code == 403
    assert (
        "comes from 127.0.0.1, but installation 'FAR-1' is registered at 198.51.100.7"
        in (far.json()["detail"])
    )


def test_socket_families_are_what_listen_binds(tmp_path: Path) -> None:
    """Without --bind the listener takes every local address (IPv4 at least)."""
    token_file = write_token(tmp_path / "token", TOKEN)

    async def main() -> None:
        listener = ProbeListener(ListenConfig(code=CODE, token_file=token_file, port=0))
        where = await listener.start()
        try:
            ipv4 = [w for w in where if not w.startswith("[")]  # port 0: one per family
            assert ipv4
            port = int(ipv4[0].rsplit(":", 1)[1])
            with socket.create_connection(("127.0.0.1", port), timeout=2):
                pass
        finally:
            await listener.stop()

    asyncio.run(main())


def test_the_doctors_client_of_counterparts_and_their_probe(
    start_server: StartServer,
) -> None:
    """A listener that accepts (the kernel's backlog does) and a closed port."""
    with socket.create_server(("127.0.0.1", 0)) as listening_socket:
        open_port = int(listening_socket.getsockname()[1])
        closed = free_tcp_port()

        def seed(registry: Registry) -> None:
            registry.add(CODE, "shop-42", ipv4="192.0.2.42", port=4443)
            registry.add("FAR-1", "far", ipv4="127.0.0.1", port=open_port)
            registry.add("SHUT-2", "shut", ipv4="127.0.0.1", port=closed)
            registry.add("ALONE-3", "alone", ipv4="127.0.0.1", port=closed)
            links = Links(registry, load_catalog())
            links.add(CODE, "FAR-1", ["einvoice"])
            links.add("SHUT-2", CODE, ["realtime"])

        server = start_server(env={"CONTROPARTE_PROBE_SOURCES": "2001:db8:53::1"}, seed=seed)
        server.wait_http()
        api = ServiceApi(server.http_url, issue_token(server, CODE))
        try:
            found = api.counterparts(CODE)
            assert [(c["code"], c["port"], c["stale"]) for c in found] == [
                ("FAR-1", open_port, False),
                ("SHUT-2", closed, False),
            ]
            assert found[1]["links"] == [{"feature": "realtime", "a": "SHUT-2", "b": CODE}]

            (dial,) = api.probe_counterpart(CODE, "far")
            assert (dial.source, dial.reach, dial.address, dial.port) == (
                Source.SERVICE,
                Reach.OPEN,
                "127.0.0.1",
                open_port,
            )
            assert dial.from_address == "127.0.0.1"  # no IPv4 probe source: the local one
            (shut,) = api.probe_counterpart(CODE, "SHUT-2")
            assert (shut.reach, shut.port) == (Reach.REFUSED, closed)
            # Probed a moment ago: the client waits the Retry-After once, then gets it.
            (again,) = api.probe_counterpart(CODE, "far")
            assert again.reach is Reach.OPEN
            (busy,) = api.probe_counterpart(CODE, "far", sleep=0)
            assert busy.reach is None
            assert busy.unavailable is not None and "HTTP 429" in busy.unavailable

            (alone,) = api.probe_counterpart(CODE, "alone")
            assert alone.reach is None and alone.unavailable is not None
            assert "HTTP 403" in alone.unavailable and "is not linked to" in alone.unavailable
            with pytest.raises(ControparteError, match="HTTP 401"):  # not its own
                api.counterparts("FAR-1")
        finally:
            api.close()
        tokenless = ServiceApi(server.http_url, None)
        try:
            (none,) = tokenless.probe_counterpart(CODE, "far")
            assert none.unavailable is not None and "token" in none.unavailable
        finally:
            tokenless.close()


class _NoSuchRoute(http.server.BaseHTTPRequestHandler):
    """An HTTP server of another kind: every path is a plain 404."""

    def do_GET(self) -> None:
        self.send_error(404)

    def do_POST(self) -> None:
        self.send_error(404)

    def log_message(self, *_args: object) -> None:
        pass


def test_a_service_without_the_routes() -> None:
    with serving(_NoSuchRoute) as older_service:
        api = ServiceApi(older_service, "cpt_a-token")
        try:
            with pytest.raises(ControparteError, match="has no counterparts API"):
                api.counterparts(CODE)
            with pytest.raises(ControparteError, match="has no links API"):
                api.links(CODE)
            (dial,) = api.probe_counterpart(CODE, "far")
        finally:
            api.close()
    assert dial.reach is None
    assert dial.unavailable == f"{older_service} does not probe counterparts (an older service)"
