"""One `controparte serve` per DNS port, HTTP port and data directory: a second one
refuses to start, in one line naming the process that holds what it wanted, and exits
2 (a configuration error); so does a server whose address is taken by another program
or is not an address of this machine, DNS or HTTP, with no traceback. Real processes on
loopback."""

from __future__ import annotations

import re
import socket
from pathlib import Path

import pytest

from tests.processes import HOST, free_tcp_port
from tests.realserver import ServerProcess

pytestmark = pytest.mark.integration

EXIT_TIMEOUT = 30.0  # seconds: a bound on a refused start, never a speed assertion
QUERIES = 40


def refused(server: ServerProcess) -> str:
    """Start `server`, which must refuse: its one line of error, after checking that it
    exited 2 and printed no traceback."""
    try:
        code = server.spawn().wait(EXIT_TIMEOUT)
    finally:
        server.stop()  # one that started after all (the old behaviour) must not linger
    log = server.log_text()
    errors = [line for line in log.splitlines() if line.startswith("error: ")]
    assert code == 2, log
    assert "Traceback" not in log, log
    assert len(errors) == 1, log
    return errors[0]


def second(first: ServerProcess, data: Path, **env: str) -> ServerProcess:
    return ServerProcess(data, {**first.settings_env, "CONTROPARTE_DATA": str(data), **env})


def test_a_second_server_on_the_same_dns_port_refuses_naming_the_first(tmp_path: Path) -> None:
    with ServerProcess(tmp_path / "one") as first:
        with first.registry() as registry:
            registry.add("ALPHA-1", "alpha", ipv4="192.0.2.1")
        other = second(first, tmp_path / "two", CONTROPARTE_HTTP=f"{HOST}:{free_tcp_port()}")
        line = refused(other)
        assert re.fullmatch(
            rf"error: dns: cannot listen on {HOST}:{first.port} \(udp\): in use by pid"
            rf" {first.pids()[0]} \(.*controparte serve\)",
            line,
        ), line
        # Every query still reaches the first server (before, half got NXDOMAIN from
        # an empty second registry sharing the port).
        for _ in range(QUERIES):
            answer = first.query(first.name("alpha"))
            assert [rd.to_text() for rrset in answer.answer for rd in rrset] == ["192.0.2.1"]


def test_a_second_server_with_workers_on_the_same_ports_refuses(tmp_path: Path) -> None:
    """The first shares its ports among its own workers (SO_REUSEPORT): a second, with
    workers too, may not join them, on the DNS port nor on the HTTP port."""
    workers = {"CONTROPARTE_DNS_WORKERS": "2", "CONTROPARTE_HTTP_WORKERS": "2"}
    with ServerProcess(tmp_path / "one", workers) as first:
        first.wait_http()
        line = refused(second(first, tmp_path / "two"))
        assert line.startswith(f"error: dns: cannot listen on {HOST}:{first.port} (udp): in use")
        other_dns = f"{HOST}:{free_tcp_port()}"
        line = refused(second(first, tmp_path / "three", CONTROPARTE_DNS=other_dns))
        assert line.startswith(f"error: http: cannot listen on {first.settings.http} (tcp): in use")
        held_by = re.search(r"by pid (\d+) ", line)
        assert held_by is not None and int(held_by[1]) in first.pids(), line


def test_a_second_server_on_the_same_data_directory_refuses(tmp_path: Path) -> None:
    with ServerProcess(tmp_path / "var") as first:
        other = second(
            first,
            first.data,
            CONTROPARTE_DNS=f"{HOST}:{free_tcp_port()}",
            CONTROPARTE_HTTP=f"{HOST}:{free_tcp_port()}",
        )
        line = refused(other)
        assert line == (
            f"error: data: {first.data} is in use by another controparte serve"
            f" (pid {first.pids()[0]}): one data directory serves one service (several"
            " nodes: one data directory each)"
        )
        first.query(first.name("@"), "SOA")  # the first one serves on
    with ServerProcess(first.data):  # and once it stopped, the directory is free
        pass


def test_an_http_port_taken_by_another_program_stops_the_start_cleanly(tmp_path: Path) -> None:
    """DNS has started when HTTP fails: the server stops it and exits 2 in one line."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as holder:
        holder.bind((HOST, 0))
        holder.listen()
        port = holder.getsockname()[1]
        server = ServerProcess(tmp_path / "var", {"CONTROPARTE_HTTP": f"{HOST}:{port}"})
        line = refused(server)
        assert re.fullmatch(
            rf"error: http: cannot listen on {HOST}:{port} \(tcp\): in use by pid \d+ \(.*\)",
            line,
        ), line
        assert "serving zone" in server.log_text()  # DNS had started


@pytest.mark.parametrize("setting", ["CONTROPARTE_DNS", "CONTROPARTE_HTTP"])
def test_an_address_that_is_not_local_stops_the_start_in_one_line(
    tmp_path: Path, setting: str
) -> None:
    server = ServerProcess(tmp_path / "var", {setting: "192.0.2.1:8053"})
    line = refused(server)
    key = setting.removeprefix("CONTROPARTE_").lower()
    assert line == (
        f"error: {key}: cannot listen on 192.0.2.1:8053"
        f" ({'udp' if key == 'dns' else 'tcp'}): 192.0.2.1 is not an address of this machine"
    )
