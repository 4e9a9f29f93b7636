"""`controparte throttle list` and `throttle clear ADDRESS` against a running
`controparte serve` with two HTTP worker processes: the throttle's counts and blocks are
in the store, so the command line sees what the server enforces, whichever process
counted, and a clear reaches every process."""

from __future__ import annotations

import json
import time

import httpx
import pytest

from tests.conftest import StartServer
from tests.dns_update.test_integration import cli
from tests.realserver import ServerProcess

pytestmark = pytest.mark.integration

ADMIN = "admin-token-for-tests-0123456789"
NAT = "127.0.0.9"  # loopback: any 127.0.0.0/8 address is this machine


def heartbeat(server: ServerProcess, code: str, token: str) -> int:
    """One heartbeat from NAT on a new connection (either worker may take it)."""
    transport = httpx.HTTPTransport(local_address=NAT)
    with httpx.Client(transport=transport, timeout=10) as client:
        response = client.post(
            f"{server.http_url}/v1/installations/{code}/heartbeat",
            json={"port": 4443},
            headers={"authorization": f"Bearer {token}"},
        )
    return response.status_code


def test_list_and_clear_through_the_cli(start_server: StartServer) -> None:
    server = start_server(env={"CONTROPARTE_ADMIN_TOKEN": ADMIN, "CONTROPARTE_HTTP_WORKERS": "2"})
    server.wait_http()
    tokens = {}
    for code in ("A-1", "B-2"):
        response = httpx.post(
            f"{server.http_url}/v1/installations",
            json={"code": code, "label": code.lower()},
            headers={"authorization": f"Bearer {ADMIN}"},
            timeout=10,
        )
        assert response.status_code == 201, response.text
        tokens[code] = response.json()["token"]
    listed = cli(server, "throttle", "list", "--json")
    assert (listed.returncode, json.loads(listed.stdout)) == (0, [])

    answers = [heartbeat(server, "A-1", "cpt_stale") for _ in range(8)]
    assert answers[:5] == [401] * 5  # counted in the store, whichever worker answered
    assert set(answers[5:]) <= {401, 429}  # a worker sees a block within about a second
    deadline = time.monotonic() + 5
    while heartbeat(server, "A-1", tokens["A-1"]) != 429:
        assert time.monotonic() < deadline, "no worker enforced the block"
        time.sleep(0.1)
    assert heartbeat(server, "B-2", tokens["B-2"]) == 200  # the same address, another claim

    listed = cli(server, "throttle", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    rows = {(row["address"], row["claim"]): row for row in json.loads(listed.stdout)}
    assert set(rows) == {(NAT, "a-1"), (NAT, "*")}
    assert rows[(NAT, "a-1")]["blocked_until"] is not None
    assert rows[(NAT, "*")]["blocked_until"] is None
    assert rows[(NAT, "*")]["failures"] >= 5
    table = cli(server, "throttle", "list")
    assert NAT in table.stdout and "a-1" in table.stdout

    cleared = cli(server, "throttle", "clear", NAT)
    assert cleared.returncode == 0, cleared.stderr
    assert f"cleared {NAT}" in cleared.stderr
    for _ in range(6):  # both workers: new connections, every one accepted soon
        deadline = time.monotonic() + 5
        while heartbeat(server, "A-1", tokens["A-1"]) != 200:
            assert time.monotonic() < deadline, "the clear never reached a worker"
            time.sleep(0.1)
    assert json.loads(cli(server, "throttle", "list", "--json").stdout) == []
    again = cli(server, "throttle", "clear", NAT)
    assert (again.returncode, again.stderr.strip()) == (0, f"nothing counted for {NAT}")
    assert "Traceback" not in server.log_text()
