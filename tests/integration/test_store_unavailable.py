"""The front ends in process, over a real PostgreSQL store whose server (the test's own,
`tests/pgserver.py`) is stopped: what each answers, byte for byte where it writes its own
bytes, and that the node is whole again once the server is back.

- Both heartbeat shells (the pure-ASGI one the service runs, and the FastAPI route)
  and the API: 503, `Retry-After`, `{"error": "StorageUnavailableError", "detail"}`.
- DynDNS2: `911`. RFC 2136 (`Updater`, whose key lookup is the first to fail): an
  unsigned SERVFAIL (no key could be read to sign it), logged as a warning, not as an
  internal error.
- /healthz: 503 with the health fields and those of an error; /metrics:
  `controparte_database_up 0` and no installation count it cannot know.
The store waits at most POOL_WAIT for a connection, so each refusal comes quickly; one
server serves the module, stopped before each test.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass

import dns.message
import dns.tsig
import dns.update
import httpx
import pytest
from dns.rcode import Rcode

from controparte.dns.server import DnsServer
from controparte.dns.updater import Updater
from controparte.http.app import create_app
from controparte.model import ZoneConfig
from controparte.service.services import Services, open_services
from controparte.settings import load_settings
from controparte.store.postgres import PostgresStore
from tests.pgserver import PgServer, own_server

pytestmark = [pytest.mark.integration, pytest.mark.anyio]

ADMIN = "admin-token-for-tests-0123456789"
ZONE = "bp.controparte.test."
POOL_WAIT = 1.0
WAIT = 30.0


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@dataclass
class Down:
    """Services over a store whose server is stopped, with A-1 (alpha), its token and
    its TSIG key registered before, and a DNS server (not started) made before; `pg`
    starts it again."""

    services: Services
    pg: PgServer
    token: str
    key: dns.tsig.Key
    dns: DnsServer

    def client(self, headers: dict[str, str] | None = None, fast: bool = True) -> httpx.AsyncClient:
        app = create_app(self.services, dns=self.dns, fast_heartbeat=fast)
        transport = httpx.ASGITransport(app=app, client=("192.0.2.200", 40000))
        return httpx.AsyncClient(transport=transport, base_url="http://t.test", headers=headers)


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Down]:
    """One server and services for the module: each test stops the server (`down`)."""
    with own_server() as pg:
        settings = load_settings(
            env={
                "CONTROPARTE_DATA": str(tmp_path_factory.mktemp("data")),
                "CONTROPARTE_DATABASE": pg.url,
                "CONTROPARTE_ADMIN_TOKEN": ADMIN,
                "CONTROPARTE_ALLOW_NON_GLOBAL": "1",
            }
        )
        services = open_services(settings, store=PostgresStore(pg.url, timeout=POOL_WAIT))
        try:
            services.registry.add("A-1", "alpha", ipv4="192.0.2.1")
            token = services.access.issue_token("A-1")
            made = services.access.create_tsig_key("A-1")
            key = dns.tsig.Key(made.name, made.secret)
            yield Down(services, pg, token, key, DnsServer(settings, services.store))
        finally:
            services.close()


@pytest.fixture
def down(node: Down) -> Down:
    if node.pg.running():
        node.pg.stop("fast")
    return node


def assert_unavailable(response: httpx.Response) -> None:
    assert response.status_code == 503, response.text
    assert response.headers["retry-after"] == "5"
    body = response.json()
    assert set(body) == {"error", "detail"}
    assert body["error"] == "StorageUnavailableError"
    assert body["detail"].endswith("try again later"), body


@pytest.mark.parametrize("fast", [True, False], ids=["asgi-shell", "fastapi-route"])
async def test_a_heartbeat_is_refused_retryably_by_either_shell(down: Down, fast: bool) -> None:
    async with down.client({"authorization": f"Bearer {down.token}"}, fast) as http:
        response = await http.post("/v1/installations/A-1/heartbeat", json={"port": 4443})
    assert_unavailable(response)


async def test_the_api_and_dyndns2_are_refused_retryably(down: Down) -> None:
    async with down.client({"authorization": f"Bearer {ADMIN}"}) as http:
        assert_unavailable(await http.patch("/v1/installations/A-1", json={"port": 7}))
        assert_unavailable(await http.get("/v1/installations/A-1"))
    async with down.client({"user-agent": "test/1.0"}) as http:
        response = await http.get(
            f"/nic/update?hostname=alpha.{ZONE}&myip=192.0.2.9", auth=("A-1", down.token)
        )
    assert (response.status_code, response.text) == (200, "911\n")


async def test_health_and_metrics_say_so_then_recover(down: Down) -> None:
    async with down.client() as http:
        health = await http.get("/healthz")
        text = (await http.get("/metrics")).text
    assert health.status_code == 503
    body = health.json()
    since = body["database"].pop("since")
    assert body["database"].pop("detail")
    zone = body.pop("zone")
    assert zone["serial"] == down.dns.engine.zone.serial
    assert zone["age"] > 0
    detail = body.pop("detail")
    assert detail.startswith(f"the database cannot be reached since {since} (")
    assert detail.endswith(f"; DNS serves serial {zone['serial']} from its snapshot")
    assert body == {
        "status": "unavailable",
        "error": "StorageUnavailableError",
        "serial": None,  # no check ever read it
        "installations": None,
        "database": {"state": "unreachable"},
    }
    assert "controparte_database_up 0\n" in text
    assert "controparte_installations" not in text
    assert "controparte_zone_snapshot_age_seconds " in text
    down.pg.start()
    async with down.client({"authorization": f"Bearer {down.token}"}) as http:
        deadline = time.monotonic() + WAIT
        while (health := await http.get("/healthz")).status_code != 200:
            assert time.monotonic() < deadline, health.text
        beat = await http.post("/v1/installations/A-1/heartbeat", json={"port": 4443})
        text = (await http.get("/metrics")).text
    assert health.json()["installations"] == 1
    assert health.json()["database"]["since"] > since
    assert beat.status_code == 200, beat.text
    assert "controparte_database_up 1\n" in text
    assert "controparte_installations 1\n" in text


def test_an_update_whose_key_cannot_be_read_gets_servfail(
    down: Down, caplog: pytest.LogCaptureFixture
) -> None:
    config = ZoneConfig.from_settings(down.services.settings)
    updater = Updater(down.services, config)
    zone = down.dns.engine.zone
    message = dns.update.UpdateMessage(ZONE)
    message.replace("alpha", 60, "A", "192.0.2.9")
    message.use_tsig(down.key)
    wire = message.to_wire()
    with caplog.at_level(logging.INFO, "controparte.dns.update"):
        result = updater.handle(wire, "192.0.2.200", zone)
    assert result.response is not None and not result.changed
    response = dns.message.from_wire(result.response, keyring=False)
    assert response.rcode() == Rcode.SERVFAIL
    assert response.id == message.id and not response.had_tsig
    [record] = [r for r in caplog.records if r.name == "controparte.dns.update"]
    assert record.levelno == logging.WARNING and record.exc_info is None
    assert "SERVFAIL" in record.getMessage() and "unavailable" in record.getMessage()
