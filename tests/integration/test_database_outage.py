"""A real `controparte serve` on PostgreSQL (a server of the test's own, `private_pg`)
whose database goes away and comes back, driven by real clients: httpx, the real
`nsupdate` and dnspython for RFC 2136, `dig` and dnspython for DNS.

- The DNS follower is woken by the database (LISTEN/NOTIFY): with its safety read a
  whole hour apart, a change committed by another process is served within seconds.
- The database stopped, then frozen (SIGSTOP: it keeps its sockets and answers
  nothing): DNS answers from its last snapshot; /healthz answers 503 and /metrics
  `controparte_database_up 0`, saying since when and what serial DNS serves; every
  write fails within a bounded time with the retryable error of the table: 503 with
  Retry-After and `{"error", "detail"}` (the API and the heartbeat), DynDNS2 `911`,
  RFC 2136 SERVFAIL; never a traceback, never a crash.
- The database back: writes succeed again without restarting serve, and a change
  committed by another connection while the node could not listen (its role locked
  out across a restart, so no notification reaches it) is served: the listener's
  catch-up read after it reconnects.

No wall-clock speed is asserted: BOUND only tells a bounded answer from a hang.
"""

from __future__ import annotations

import functools
import re
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import dns.message
import dns.rcode
import dns.tsig
import dns.update
import httpx
import psycopg
import pytest

from controparte.model import InstallationChange
from controparte.service import Registry
from controparte.service.services import open_services
from controparte.store.postgres import PostgresStore
from tests.debtools import tool
from tests.pgserver import PgServer, url_with_database
from tests.realserver import ServerProcess

pytestmark = pytest.mark.integration

ADMIN = "admin-token-for-outage-tests-0123456789"
BOUND = 20.0
"""Seconds within which every request is answered while the database is away: the
store gives up after about 6 s (a frozen server), a heartbeat may wait for the batch
in front of it too. A hang would be far longer."""
WAIT = 30.0
"""Seconds to wait for something that happens by itself (a reconnection, a change
being served): a bound, never a speed assertion."""
NODE_ROLE = "node"


@dataclass
class Node:
    """A `controparte serve` on a database of its own role `NODE_ROLE`, with A-1
    (alpha, 192.0.2.1), its token and its TSIG key (a BIND key file for nsupdate)."""

    server: ServerProcess
    pg: PgServer
    admin_url: str
    """The node's database as the superuser (who can write while the node cannot)."""
    token: str
    key_file: Path
    key: dns.tsig.Key

    @property
    def zone(self) -> str:
        return self.server.zone

    def lock_out(self) -> None:
        """The node's role may not log in any more (its sessions go on)."""
        self._alter_role("NOLOGIN")

    def let_in(self) -> None:
        self._alter_role("LOGIN")

    def _alter_role(self, what: str) -> None:
        with psycopg.connect(self.pg.url, autocommit=True) as conn:
            conn.execute(f"ALTER ROLE {NODE_ROLE} {what}")

    def change(self, ipv4: str) -> None:
        """Set alpha's address through a store of this process, as the superuser."""
        store = PostgresStore(self.admin_url)
        try:
            Registry(store, self.server.settings).update("A-1", InstallationChange(ipv4=ipv4))
        finally:
            store.close()


@pytest.fixture
def node(private_pg: PgServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    with psycopg.connect(private_pg.url, autocommit=True) as conn:
        conn.execute(f"CREATE ROLE {NODE_ROLE} LOGIN")
        conn.execute(f"CREATE DATABASE registry OWNER {NODE_ROLE} TEMPLATE template0")
    admin_url = url_with_database(private_pg.url, "registry")
    data = tmp_path_factory.mktemp("data")
    server = ServerProcess(
        data,
        {
            "CONTROPARTE_DATABASE": admin_url.replace("postgres@", f"{NODE_ROLE}@"),
            "CONTROPARTE_ADMIN_TOKEN": ADMIN,
            "CONTROPARTE_JOURNAL_CHECK_INTERVAL": "3600",  # only notifications wake DNS
        },
    )
    services = open_services(server.settings)  # migrates the database, as the node
    try:
        services.registry.add("A-1", "alpha", ipv4="192.0.2.1")
        token = services.access.issue_token("A-1")
        made = services.access.create_tsig_key("A-1")
    finally:
        services.close()
    key_file = data.parent / "a-1.key"
    key_file.write_text(made.nsupdate_text())
    server.start()
    try:
        server.wait_http()
        yield Node(
            server,
            private_pg,
            admin_url,
            token,
            key_file,
            dns.tsig.Key(made.name, made.secret, made.algorithm),
        )
    finally:
        died = server.died()
        server.stop()
        assert not died, f"the server exited by itself:\n{server.log_text()}"
    assert "Traceback" not in server.log_text()


def until(condition: Callable[[], bool], what: str, timeout: float = WAIT) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"{what}, after {timeout} s"
        time.sleep(0.05)


# -- the requests ----------------------------------------------------------------------


@dataclass(frozen=True)
class Answer:
    """What a client got, and how long it waited for it."""

    status: int | str
    text: str
    retry_after: str | None
    seconds: float


def timed(request: Callable[[], tuple[int | str, str, str | None]]) -> Answer:
    started = time.monotonic()
    status, text, retry_after = request()
    return Answer(status, text, retry_after, time.monotonic() - started)


def http(node: Node, method: str, path: str, **kwargs: object) -> tuple[int, str, str | None]:
    response = httpx.request(method, node.server.http_url + path, timeout=60, **kwargs)  # type: ignore[arg-type]
    return response.status_code, response.text, response.headers.get("retry-after")


def api_write(node: Node) -> tuple[int, str, str | None]:
    return http(
        node,
        "PATCH",
        "/v1/installations/A-1",
        json={"port": 4443},
        headers={"authorization": f"Bearer {ADMIN}"},
    )


def heartbeat(node: Node) -> tuple[int, str, str | None]:
    return http(
        node,
        "POST",
        "/v1/installations/A-1/heartbeat",
        json={"port": 4443},
        headers={"authorization": f"Bearer {node.token}"},
    )


def dyndns2(node: Node) -> tuple[int, str, str | None]:
    return http(
        node,
        "GET",
        f"/nic/update?hostname=alpha.{node.zone}&myip=192.0.2.99",
        auth=("A-1", node.token),
        headers={"user-agent": "outage-test/1.0"},
    )


def nsupdate(node: Node) -> tuple[str, str, str | None]:
    """The real nsupdate over TCP (no retransmission); its exit status and output."""
    script = (
        f"server {node.server.host} {node.server.port}\nzone {node.zone}\n"
        f"update delete alpha.{node.zone} A\nupdate add alpha.{node.zone} 60 A 192.0.2.77\nsend\n"
    )
    done = subprocess.run(
        [tool("nsupdate"), "-v", "-t", "60", "-k", str(node.key_file)],
        input=script,
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )
    return str(done.returncode), done.stdout + done.stderr, None


def dnspython_update(node: Node) -> tuple[str, str, str | None]:
    """A signed UPDATE over UDP by dnspython; the rcode's name. The answer is read
    without checking its TSIG: a server that cannot read the key cannot sign."""
    message = dns.update.UpdateMessage(node.zone)
    message.replace("alpha", 60, "A", "192.0.2.78")
    message.use_tsig(node.key)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(60)
        sock.sendto(message.to_wire(), (node.server.host, node.server.port))
        response = dns.message.from_wire(sock.recv(65535), keyring=False)
    return dns.rcode.to_text(response.rcode()), response.to_text(), None


def metrics(node: Node) -> dict[str, float]:
    text = httpx.get(node.server.http_url + "/metrics", timeout=60).text
    return {
        name: float(value)
        for name, value in re.findall(r"^(controparte_\w+) (\S+)$", text, re.MULTILINE)
    }


WRITES: dict[str, Callable[[Node], tuple[int | str, str, str | None]]] = {
    "api": api_write,
    "heartbeat": heartbeat,
    "dyndns2": dyndns2,
    "nsupdate": nsupdate,
    "dnspython": dnspython_update,
}


def write_everyway(node: Node) -> dict[str, Answer]:
    """Every way of writing, all at once, each timed."""
    with ThreadPoolExecutor(len(WRITES)) as pool:
        running = {
            name: pool.submit(timed, functools.partial(write, node))
            for name, write in WRITES.items()
        }
        return {name: future.result() for name, future in running.items()}


def assert_unavailable_everyway(answers: dict[str, Answer]) -> None:
    """Each write answered within BOUND with the retryable error of the table."""
    for name, answer in answers.items():
        assert answer.seconds < BOUND, (name, answer)
        assert "Traceback" not in answer.text, (name, answer)
    for name in ("api", "heartbeat"):
        answer = answers[name]
        assert answer.status == 503, (name, answer)
        assert answer.retry_after == "5", (name, answer)
        body = httpx.Response(200, text=answer.text).json()
        assert set(body) == {"error", "detail"}, (name, answer)
        assert body["error"] == "StorageUnavailableError", (name, answer)
        assert "try again later" in body["detail"], (name, answer)
    assert (answers["dyndns2"].status, answers["dyndns2"].text.strip()) == (200, "911")
    assert answers["nsupdate"].status == "2", answers["nsupdate"]
    assert "update failed: SERVFAIL" in answers["nsupdate"].text, answers["nsupdate"]
    assert answers["dnspython"].status == "SERVFAIL", answers["dnspython"]


def assert_health_says_unreachable(node: Node, serial: int) -> None:
    """/healthz: 503 within BOUND, the database unreachable since a moment, DNS's
    serial and a snapshot age; /metrics: database down."""
    started = time.monotonic()
    response = httpx.get(node.server.http_url + "/healthz", timeout=60)
    assert time.monotonic() - started < BOUND
    assert response.status_code == 503, response.text
    body = response.json()
    assert body["status"] == "unavailable"
    assert body["error"] == "StorageUnavailableError"
    assert f"DNS serves serial {serial}" in body["detail"]
    assert body["database"]["state"] == "unreachable"
    assert datetime.fromisoformat(body["database"]["since"]) is not None
    assert body["database"]["detail"]
    assert body["zone"]["serial"] == serial
    assert body["zone"]["age"] > 0
    values = metrics(node)
    assert values["controparte_database_up"] == 0
    assert values["controparte_zone_serial"] == serial
    assert values["controparte_zone_snapshot_age_seconds"] > 0


def assert_dns_answers_the_last_data(node: Node, serial: int, address: str) -> None:
    assert node.server.serial() == serial
    assert node.server.records("alpha") == [address]
    assert node.server.dig("alpha") == [address]


def assert_healthy(node: Node) -> None:
    response = httpx.get(node.server.http_url + "/healthz", timeout=60)
    assert response.status_code == 200, response.text
    assert response.json()["database"]["state"] == "reachable"
    assert metrics(node)["controparte_database_up"] == 1


# -- the tests ---------------------------------------------------------------------------


def test_the_follower_is_woken_by_the_database(node: Node) -> None:
    """The safety read is an hour apart: only the notification of the other process's
    commit can make the node serve its change."""
    node.change("192.0.2.20")
    node.server.wait_for("alpha", ["192.0.2.20"], timeout=WAIT)
    assert node.server.dig("alpha") == ["192.0.2.20"]


def test_a_database_stopped_then_restarted(node: Node) -> None:
    serial = node.server.serial()
    assert_healthy(node)
    node.lock_out()  # its sessions go on until the stop
    node.pg.stop("fast")
    assert_dns_answers_the_last_data(node, serial, "192.0.2.1")
    assert_health_says_unreachable(node, serial)
    assert_unavailable_everyway(write_everyway(node))
    assert_dns_answers_the_last_data(node, serial, "192.0.2.1")
    # Back, but the node may not log in yet (locked out before the stop): a change
    # committed meanwhile notifies no session of the node's.
    node.pg.start()
    node.change("192.0.2.30")
    time.sleep(1)  # the node's attempts go on, refused
    assert node.server.records("alpha") == ["192.0.2.1"]
    node.let_in()
    node.server.wait_for("alpha", ["192.0.2.30"], timeout=WAIT)  # the catch-up read
    until(lambda: api_write(node)[0] == 200, "the API never wrote again")
    assert heartbeat(node)[0] == 200
    assert_healthy(node)


def test_a_frozen_database_then_thawed(node: Node) -> None:
    serial = node.server.serial()
    node.pg.freeze()
    try:
        assert_dns_answers_the_last_data(node, serial, "192.0.2.1")
        assert_health_says_unreachable(node, serial)
        assert_unavailable_everyway(write_everyway(node))
        assert_dns_answers_the_last_data(node, serial, "192.0.2.1")
    finally:
        node.pg.thaw()
    until(lambda: api_write(node)[0] == 200, "the API never wrote again")
    assert heartbeat(node)[0] == 200
    node.change("192.0.2.40")
    node.server.wait_for("alpha", ["192.0.2.40"], timeout=WAIT)
    until(lambda: httpx.get(node.server.http_url + "/healthz").status_code == 200, "unhealthy")
    assert_healthy(node)
