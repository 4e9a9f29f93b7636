"""The real `python -m controparte serve` (DNS and HTTP in one process, started by the
`start_server` fixture on free 127.0.0.1 ports) driven over real sockets: a heartbeat
over HTTP changes what `dig` and dnspython see (and a repeated one does not move the
SOA serial); the real `ddclient` updates a record through `/nic/update` and DNS serves
it; `controparte resolve --server/--dns` read the running server; /metrics counts DNS.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import StartServer
from tests.debtools import tool
from tests.realserver import ServerProcess

pytestmark = pytest.mark.integration

ADMIN = "admin-token-for-tests-0123456789"


@pytest.fixture
def server(start_server: StartServer) -> ServerProcess:
    started = start_server(env={"CONTROPARTE_ADMIN_TOKEN": ADMIN, "CONTROPARTE_TTL": "30"})
    started.wait_http()
    return started


@pytest.fixture
def http(server: ServerProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.http_url, timeout=10) as client:
        yield client


def create(http: httpx.Client, code: str, label: str, **fields: object) -> str:
    """Register over the API with the admin token; the installation's token."""
    response = http.post(
        "/v1/installations",
        json={"code": code, "label": label, **fields},
        headers={"authorization": f"Bearer {ADMIN}"},
    )
    assert response.status_code == 201, response.text
    token = response.json()["token"]
    assert isinstance(token, str)
    return token


def assert_nothing_else_changed(server: ServerProcess, http: httpx.Client, serial: int) -> None:
    """A positive barrier for "nothing changed since DNS served `serial`": one later
    change (a new installation), waited for until DNS serves it; then DNS must serve
    the serial right after `serial`. Every committed change moves the serial by one and
    DNS applies changes in order, so no other change was committed since, nor served."""
    label = f"later-{serial}"
    create(http, f"LATER-{serial}", label, ip="192.0.2.250")
    server.wait_for(label, ["192.0.2.250"])
    assert server.serial() == serial + 1, "a change besides the later one reached DNS"


def heartbeat(
    server: ServerProcess, code: str, token: str, source: str, port: int
) -> dict[str, object]:
    """A heartbeat from the local address `source` (127.0.0.0/8 is all loopback)."""
    transport = httpx.HTTPTransport(local_address=source)
    with httpx.Client(transport=transport, timeout=10) as client:
        response = client.post(
            f"{server.http_url}/v1/installations/{code}/heartbeat",
            json={"port": port, "version": "test"},
            headers={"authorization": f"Bearer {token}"},
        )
    assert response.status_code == 200, response.text
    found = response.json()
    assert isinstance(found, dict)
    return found


def test_a_heartbeat_over_http_is_served_by_dns(server: ServerProcess, http: httpx.Client) -> None:
    token = create(http, "HB-1", "hb")
    assert server.records("hb") == []
    first = heartbeat(server, "HB-1", token, "127.0.0.2", 4443)
    assert (first["ip"], first["port"], first["changed"]) == ("127.0.0.2", 4443, True)
    server.wait_for("hb", ["127.0.0.2"])
    assert server.dig("hb") == ["127.0.0.2"]
    assert server.records("_mxserver._tcp.hb", "SRV") == [f"0 0 4443 {server.name('hb')}"]
    assert server.serial() == first["serial"]

    moved = heartbeat(server, "HB-1", token, "127.0.0.3", 4443)  # the address changed
    assert moved["changed"] is True
    server.wait_for("hb", ["127.0.0.3"])
    assert server.dig("hb") == ["127.0.0.3"]
    serial = server.serial()
    assert serial == moved["serial"] != first["serial"]

    same = heartbeat(server, "HB-1", token, "127.0.0.3", 4443)  # nothing changed
    assert same["changed"] is False
    assert same["serial"] == serial
    assert_nothing_else_changed(server, http, serial)  # the SOA serial did not move
    assert server.records("hb") == ["127.0.0.3"]
    shown = http.get("/v1/resolve/HB-1").json()
    assert (shown["ip"], shown["port"], shown["stale"]) == ("127.0.0.3", 4443, False)
    assert shown["last_seen"] is not None


def test_another_installations_token_changes_nothing(
    server: ServerProcess, http: httpx.Client
) -> None:
    intruder = create(http, "B-2", "intruder")
    create(http, "A-1", "victim", ip="192.0.2.1")
    server.wait_for("victim", ["192.0.2.1"])  # and so the intruder's registration
    serial = server.serial()
    response = httpx.post(
        f"{server.http_url}/v1/installations/A-1/heartbeat",
        json={"port": 1},
        headers={"authorization": f"Bearer {intruder}"},
        timeout=10,
    )
    assert response.status_code == 401
    dyndns = httpx.get(
        f"{server.http_url}/nic/update",
        params={"hostname": server.name("victim"), "myip": "203.0.113.66"},
        auth=("B-2", intruder),
        headers={"user-agent": "test"},
        timeout=10,
    )
    assert dyndns.text == "nohost\n"
    assert_nothing_else_changed(server, http, serial)
    assert server.records("victim") == ["192.0.2.1"]


def ddclient_config(
    server: ServerProcess, login: str, password: str, hostname: str, ip: str
) -> str:
    """A ddclient 3.10+ configuration: dyndns2 over plain HTTP to our server, with a
    fixed address (`usev4=ipv4`), no daemon, no syslog."""
    return "\n".join(
        [
            "daemon=0",
            "syslog=no",
            "ssl=no",
            "protocol=dyndns2",
            f"server={server.settings.http}",
            f"login={login}",
            f"password={password}",
            f"use=disabled, usev4=ipv4, ipv4={ip}",
            hostname,
            "",
        ]
    )


def run_ddclient(tmp_path: Path, config: str, *extra: str) -> str:
    """ddclient once in the foreground; its output (it is gone when this returns)."""
    conf = tmp_path / "ddclient.conf"
    conf.write_text(config)
    conf.chmod(0o600)
    done = subprocess.run(
        [
            tool("ddclient"),
            "-foreground",
            "-daemon=0",
            "-noquiet",
            "-verbose",
            *extra,
            "-file",
            str(conf),
            "-cache",
            str(tmp_path / "ddclient.cache"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return done.stdout + done.stderr


def test_ddclient_updates_a_record_that_dns_serves(
    server: ServerProcess, http: httpx.Client, tmp_path: Path
) -> None:
    token = create(http, "DD-1", "dyn", ip="192.0.2.1", port=4443)
    serial = server.serial()
    hostname = server.name("dyn").rstrip(".")
    output = run_ddclient(
        tmp_path, ddclient_config(server, "DD-1", token, hostname, "198.51.100.23")
    )
    assert "good 198.51.100.23" in output, output
    assert "SUCCESS" in output, output
    server.wait_for("dyn", ["198.51.100.23"])
    assert server.dig("dyn") == ["198.51.100.23"]
    assert server.records("_mxserver._tcp.dyn", "SRV") == [f"0 0 4443 {server.name('dyn')}"]
    assert server.serial() != serial
    history = http.get(
        "/v1/installations/DD-1/history", headers={"authorization": f"Bearer {token}"}
    ).json()["history"]
    last = history[-1]
    assert (last["via"], last["actor"], last["source"]) == ("dyndns2", "DD-1", "127.0.0.1")
    assert last["new"]["ip"] == "198.51.100.23"

    # forced again with the same address: nochg, which ddclient accepts; nothing moves
    serial = server.serial()
    again = run_ddclient(
        tmp_path, ddclient_config(server, "DD-1", token, hostname, "198.51.100.23"), "-force"
    )
    assert "nochg" in again, again

    # a wrong password: badauth, and the record stays
    wrong = run_ddclient(
        tmp_path, ddclient_config(server, "DD-1", "cpt_wrong", hostname, "203.0.113.9"), "-force"
    )
    assert "badauth" in wrong or "authorization failed" in wrong, wrong
    assert_nothing_else_changed(server, http, serial)  # neither nochg nor badauth moved it
    assert server.records("dyn") == ["198.51.100.23"]
    assert "cpt_wrong" not in server.log_text()
    assert "authentication failed via dyndns2 from 127.0.0.1" in server.log_text()


def controparte(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "controparte", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=env,
    )


def test_cli_resolve_asks_the_server_and_dns(server: ServerProcess, http: httpx.Client) -> None:
    create(http, "R-1", "res", ip="192.0.2.7", ipv6="2001:db8::7", port=4443)
    env = {"PATH": "/usr/bin:/bin", "CONTROPARTE_DATA": str(server.data)}
    over_http = controparte("resolve", "R-1", "--server", server.http_url, "--json", env=env)
    assert over_http.returncode == 0, over_http.stderr
    assert json.loads(over_http.stdout) == {
        "code": "R-1",
        "label": "res",
        "fqdn": server.name("res"),
        "kind": "onprem",
        "ip": "192.0.2.7",
        "ipv6": "2001:db8::7",
        "port": 4443,
        "last_seen": None,
        "stale": False,
    }
    local = controparte("resolve", "res", "--json", env=env)
    assert json.loads(local.stdout) == json.loads(over_http.stdout)
    over_dns = controparte(
        "resolve", "res", "--dns", f"{server.host}:{server.port}", "--json", env=env
    )
    assert over_dns.returncode == 0, over_dns.stderr
    assert json.loads(over_dns.stdout) == {
        "fqdn": server.name("res"),
        "ip": "192.0.2.7",
        "ipv6": "2001:db8::7",
        "port": 4443,
        "target": server.name("res"),
    }
    missing = controparte("resolve", "nope", "--dns", f"{server.host}:{server.port}", env=env)
    assert missing.returncode == 1
    assert "NXDOMAIN" in missing.stderr
    missing_http = controparte("resolve", "nope", "--server", server.http_url, env=env)
    assert missing_http.returncode == 1
    assert missing_http.stderr.startswith("error: no installation")


def test_metrics_of_the_running_server_count_dns(server: ServerProcess, http: httpx.Client) -> None:
    before = http.get("/metrics").text
    # distinct names: the UDP loop answers repeated queries from its cache uncounted
    for number in range(4):
        server.query(server.name(f"nothing-{number}"), "A")
    server.query(server.name("nothing-0"), "A", tcp=True)
    text = http.get("/metrics").text
    assert before != text
    values = {
        line.split(" ")[0]: float(line.split(" ")[1])
        for line in text.splitlines()
        if line and not line.startswith("#")
    }
    counted = {
        line.split(" ")[0]: float(line.split(" ")[1])
        for line in before.splitlines()
        if line and not line.startswith("#")
    }
    assert values["controparte_dns_queries_total"] - counted["controparte_dns_queries_total"] == 5
    assert values["controparte_zone_serial"] == server.serial()
    assert values["controparte_installations"] == 0
    assert (
        values['controparte_http_requests_total{method="GET",route="/healthz",status="200"}'] >= 1
    )
