"""Abuse at a small scale against a real `controparte serve` (the full runs, beside
Knot and NSD, are bench/flood_bench.py): a flood of malformed datagrams of every kind
leaves the server answering, alive and quiet in its log; one client holding its share
of the TCP slots idle does not shut another out; a file-descriptor limit too low for
the TCP cap is said at start."""

from __future__ import annotations

import socket
import sys
import time

import dns.message
import dns.query
import dns.rcode
import httpx
import pytest

from tests.conftest import StartServer
from tests.integration.conftest import STANDARD_ENV, ZONE, seed_standard
from tests.malformed import KINDS, packets
from tests.processes import LoggedProcess, clean_env
from tests.realserver import ServerProcess

pytestmark = pytest.mark.integration

PER_KIND = 2_000
BURST = 100  # datagrams sent before a pause, so the loopback buffers keep most of them
IO_TIMEOUT = 3.0


def metric_samples(server: ServerProcess, name: str) -> dict[str, float]:
    """The samples of the metric family `name` on /metrics: label text -> value."""
    text = httpx.get(server.http_url + "/metrics", timeout=10).text
    found = {}
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            key, _, value = line.rpartition(" ")
            found[key[len(name) :]] = float(value)
    return found


def assert_answers_alpha(server: ServerProcess, *, source: str = "127.0.0.1") -> None:
    query = dns.message.make_query(f"alpha.{ZONE}", "A")
    for tcp in (False, True):
        exchange = dns.query.tcp if tcp else dns.query.udp
        response = exchange(query, server.host, timeout=IO_TIMEOUT, port=server.port, source=source)
        assert response.rcode() == dns.rcode.NOERROR
        assert [str(rdata) for rdata in response.answer[0]] == ["192.0.2.1"]


def test_a_flood_of_malformed_datagrams_is_counted_not_logged(start_server: StartServer) -> None:
    server = start_server(STANDARD_ENV, seed_standard)
    server.wait_http()
    log_lines = len(server.log_text().splitlines())
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        for kind in KINDS:
            for number, wire in enumerate(packets(kind, PER_KIND, ZONE)):
                sock.sendto(wire, (server.host, server.port))
                if number % BURST == 0:
                    time.sleep(0.002)
            assert_answers_alpha(server)
    assert not server.died()
    counted = metric_samples(server, "controparte_dns_malformed_total")
    # Every kind counted under its reason; a loaded machine may drop datagrams on the
    # way, so the counts are not exact.
    for kind in set(KINDS) - {"random"}:
        assert counted[f'{{reason="{kind}"}}'] > 0, (kind, counted)
    assert sum(counted.values()) > PER_KIND * len(KINDS) / 4, counted
    new_lines = server.log_text().splitlines()[log_lines:]
    assert len(new_lines) < 10, new_lines  # HTTP access lines at most, never one a packet


def _held(server: ServerProcess, source: str) -> socket.socket:
    """A TCP connection from `source`, shown to be accepted (one query answered), then
    held idle."""
    sock = socket.create_connection((server.host, server.port), IO_TIMEOUT, (source, 0))
    query = dns.message.make_query(f"alpha.{ZONE}", "A")
    dns.query.send_tcp(sock, query)
    response, _ = dns.query.receive_tcp(sock, time.time() + IO_TIMEOUT)
    assert response.rcode() == dns.rcode.NOERROR
    return sock


def _closed_at_once(server: ServerProcess, source: str) -> bool:
    """Whether a new TCP connection from `source` is closed by the server unanswered
    (reset: on loopback the reset may come before `connect` returns)."""
    query = dns.message.make_query(f"alpha.{ZONE}", "A")
    try:
        with socket.create_connection((server.host, server.port), IO_TIMEOUT, (source, 0)) as s:
            dns.query.send_tcp(s, query)
            dns.query.receive_tcp(s, time.time() + IO_TIMEOUT)
    except (EOFError, ConnectionError):
        return True
    return False


def test_one_client_holding_its_tcp_slots_does_not_shut_out_another(
    start_server: StartServer,
) -> None:
    env = {
        **STANDARD_ENV,
        "CONTROPARTE_TCP_MAX_CONNECTIONS": "6",
        "CONTROPARTE_TCP_MAX_CONNECTIONS_PER_CLIENT": "4",
        "CONTROPARTE_TCP_IDLE_TIMEOUT": "30",
    }
    server = start_server(env, seed_standard)
    held = [_held(server, "127.0.0.2") for _ in range(4)]
    try:
        assert _closed_at_once(server, "127.0.0.2")  # its share is taken
        for _ in range(3):  # another client still gets its answers
            assert_answers_alpha(server, source="127.0.0.3")
        held += [_held(server, "127.0.0.3") for _ in range(2)]
        assert _closed_at_once(server, "127.0.0.4")  # every slot is taken
        server.wait_http()
        assert metric_samples(server, "controparte_dns_tcp_connections") == {"": 6.0}
        refused = metric_samples(server, "controparte_dns_tcp_refused_total")
        assert refused == {'{reason="per_client"}': 1.0, '{reason="total"}': 1.0}
    finally:
        for sock in held:
            sock.close()
    # the server gives the slots back once it sees the closes: wait for that, bounded
    deadline = time.monotonic() + IO_TIMEOUT
    while metric_samples(server, "controparte_dns_tcp_connections") != {"": 0.0}:
        assert time.monotonic() < deadline, "the closed connections kept their slots"
        time.sleep(0.05)
    assert_answers_alpha(server, source="127.0.0.4")


def test_a_descriptor_limit_too_low_for_the_tcp_cap_is_said_at_start(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """Hard limit 300 (the soft one cannot be raised past it): the cap is lowered to
    what fits, with one warning naming the setting, and the server serves."""
    server = ServerProcess(tmp_path_factory.mktemp("data"), STANDARD_ENV)
    with server.registry() as registry:
        seed_standard(registry)
    code = (
        "import resource, runpy, sys;"
        "resource.setrlimit(resource.RLIMIT_NOFILE, (300, 300));"
        "sys.argv = ['controparte', 'serve'];"
        "runpy.run_module('controparte', run_name='__main__')"
    )
    child = LoggedProcess(
        [sys.executable, "-c", code], server.log_path, clean_env(**server.settings_env)
    )
    try:
        child.wait_log(r"serving zone")
        assert_answers_alpha(server)
        warning = child.wait_log(r"file-descriptor limit \(300, RLIMIT_NOFILE\).*")[0][0]
        assert "tcp_max_connections=1024" in warning and "serving with 172" in warning
    finally:
        child.stop()
