"""The DNS server binds UDP and TCP on one port. With port 0 the kernel picks the UDP
port, and a TCP connection may hold that number already (an outgoing connection takes
ephemeral ports too): the server then tries another pick. A bind that fails leaves
nothing bound and says so in a `ConfigError` (the CLI's one line and exit code 2).
Real sockets on loopback."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import dns.message
import dns.query
import pytest

from controparte.claim import Shared
from controparte.dns import server as server_module
from controparte.dns.server import DnsServer
from controparte.errors import ConfigError
from controparte.service.services import Services, open_services
from controparte.settings import load_settings
from tests.processes import HOST, free_port

pytestmark = pytest.mark.integration

ZONE = "bp.controparte.test."
WAIT = 10.0  # seconds: a bound on waiting for an answer, never a speed assertion


def services_on(data: Path, port: int) -> Services:
    settings = load_settings(
        env={
            "CONTROPARTE_DATA": str(data),
            "CONTROPARTE_DNS": f"{HOST}:{port}",
            "CONTROPARTE_ALLOW_NON_GLOBAL": "1",
        }
    )
    services = open_services(settings)
    services.registry.add("ALPHA-1", "alpha", ipv4="192.0.2.1")
    return services


def tcp_listener(port: int) -> socket.socket:
    """A TCP socket listening on HOST:port, without SO_REUSEADDR or SO_REUSEPORT, as
    another program's socket would be."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind((HOST, port))
    sock.listen()
    return sock


def udp_bindable(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        try:
            sock.bind((HOST, port))
        except OSError:
            return False
        return True


def test_a_taken_tcp_port_fails_the_start_and_leaves_nothing_bound(tmp_path: Path) -> None:
    port = free_port()
    services = services_on(tmp_path, port)
    holder = tcp_listener(port)

    async def scenario() -> None:
        with pytest.raises(
            ConfigError, match=rf"dns: cannot listen on {HOST}:{port} \(tcp\): in use"
        ):
            async with DnsServer(services.settings, services.store, services=services):
                pass

    try:
        asyncio.run(scenario())
        assert udp_bindable(port), "the UDP socket of the failed start is still bound"
    finally:
        holder.close()
        services.close()


def test_port_zero_takes_another_pick_when_the_tcp_port_is_held(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first kernel pick is made to be a port whose TCP side another socket holds
    (the race the CI run met); the server binds the next pick and answers on it."""
    held = free_port()
    holder = tcp_listener(held)
    real_bind_udp = server_module.bind_udp
    picks: list[int] = []

    def first_pick_held(host: str, port: int, shared: Shared) -> socket.socket:
        sock = real_bind_udp(host, held if not picks else port, shared)
        picks.append(int(sock.getsockname()[1]))
        return sock

    monkeypatch.setattr(server_module, "bind_udp", first_pick_held)
    services = services_on(tmp_path, 0)

    async def scenario() -> int:
        async with DnsServer(services.settings, services.store, services=services) as server:
            query = dns.message.make_query(f"alpha.{ZONE}", "A")
            for send in (dns.query.udp, dns.query.tcp):
                response = await asyncio.to_thread(
                    send, query, HOST, timeout=WAIT, port=server.port
                )
                assert [rd.to_text() for rrset in response.answer for rd in rrset] == ["192.0.2.1"]
            return server.port

    try:
        port = asyncio.run(scenario())
        assert picks[0] == held
        assert len(picks) == 2 and port == picks[1] != held
        assert udp_bindable(held), "the UDP socket of the first pick is still bound"
    finally:
        holder.close()
        services.close()
