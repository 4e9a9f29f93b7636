"""`controparte serve` with `http_workers` = 2 (a real server on free 127.0.0.1 ports):
two processes listen on the HTTP port (SO_REUSEPORT); whichever takes a heartbeat,
DNS in the main process serves the change; and the workers never outlive the server:
SIGTERM and SIGINT stop them all, and they stop by themselves when it is killed."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import StartServer
from tests.http.test_real_server import ADMIN, create, heartbeat
from tests.processes import alive, descendants, stat_fields
from tests.realserver import ServerProcess

pytestmark = pytest.mark.integration

GONE_TIMEOUT = 10.0


def listening_pids(port: int, pids: list[int]) -> set[int]:
    """Which of `pids` hold a TCP socket listening on `port` (IPv4)."""
    inodes = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[3] == "0A" and int(fields[1].rpartition(":")[2], 16) == port:
            inodes.add(fields[9])
    holders = set()
    for pid in pids:
        for fd in Path(f"/proc/{pid}/fd").glob("*"):
            try:
                target = os.readlink(fd)
            except OSError:
                continue
            if target.startswith("socket:[") and target[8:-1] in inodes:
                holders.add(pid)
    return holders


def started(start_server: StartServer) -> ServerProcess:
    """A server with two HTTP processes, once both listen and the main process has said
    so (it logs "HTTP API on" after its worker is ready, a moment after it listens)."""
    server = start_server(env={"CONTROPARTE_HTTP_WORKERS": "2", "CONTROPARTE_ADMIN_TOKEN": ADMIN})
    server.wait_http()
    deadline = time.monotonic() + GONE_TIMEOUT
    while (
        len(listening_pids(server.settings.http.port, server.pids())) < 2
        or "HTTP API on" not in server.log_text()
    ):
        assert time.monotonic() < deadline, f"the HTTP worker did not start:\n{server.log_text()}"
        time.sleep(0.05)
    return server


def describe(pids: list[int]) -> str:
    """Command line and state of each of `pids`, for a failure message."""
    out = []
    for pid in pids:
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            state = stat_fields(pid)[0]
        except (OSError, ValueError):
            continue
        out.append(f"{pid} [{state}] {cmdline[:200]}")
    return "; ".join(out)


def wait_gone(pids: list[int]) -> list[int]:
    deadline = time.monotonic() + GONE_TIMEOUT
    while time.monotonic() < deadline:
        left = [pid for pid in pids if alive(pid)]
        if not left:
            return []
        time.sleep(0.05)
    return [pid for pid in pids if alive(pid)]


def test_two_processes_serve_http_and_dns_follows_both(start_server: StartServer) -> None:
    server = started(start_server)
    assert "HTTP API on" in server.log_text()
    assert len(listening_pids(server.settings.http.port, server.pids())) == 2
    with httpx.Client(base_url=server.http_url, timeout=10) as http:
        token = create(http, "HB-1", "hb")
    # New connections from new source addresses: the kernel spreads them over both
    # processes; each beat moves the address, and DNS must serve every one of them.
    for n in range(2, 18):
        source = f"127.0.0.{n}"
        answer = heartbeat(server, "HB-1", token, source, 4443)
        assert (answer["ip"], answer["changed"]) == (source, True)
        server.wait_for("hb", [source], timeout=2.0)
        assert server.serial() == answer["serial"]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_serve_stops_its_workers(start_server: StartServer, sig: signal.Signals) -> None:
    server = started(start_server)
    assert server.process is not None
    children = descendants(server.process.pid)
    assert len(children) >= 2  # the HTTP worker and multiprocessing's resource tracker
    with httpx.Client(timeout=5) as client:
        assert client.get(server.http_url + "/healthz").status_code == 200
    assert server.stop(sig) == 0  # in time, without SIGKILL
    assert wait_gone(children) == []
    assert "did not stop" not in server.log_text()


def test_workers_stop_when_the_server_is_killed(start_server: StartServer) -> None:
    server = started(start_server)
    assert server.process is not None
    children = descendants(server.process.pid)
    server.kill()
    left = wait_gone(children)
    assert left == [], f"still running: {describe(left)}\n{server.log_text()}"
