"""Fixtures of the HTTP tests: the app over real services on a temporary data directory
and each engine in turn (SQLite, then PostgreSQL: the fixture `database`), driven in
process with httpx's ASGI transport (the client address is chosen per
client, so trusted proxies and throttling can be tested), and seeded installations.

`heartbeat_shell` says which shell answers heartbeats: "fast" (the pure-ASGI shell the
service runs) or "fastapi" (the documented route); a test module overrides the fixture
to run its tests against both."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from starlette.types import ASGIApp

from controparte.http.app import create_app
from controparte.service.services import Services, open_services
from controparte.settings import Settings, load_settings
from tests.pgserver import Databases

ADMIN = "admin-token-for-tests-0123456789"
ZONE = "bp.controparte.test."
PEER = "198.51.100.7"  # the client address of a plain client
PROXY = "10.1.2.3"  # inside the trusted proxies of the default settings
TRUSTED = "10.0.0.0/8,2001:db8:ffff::/48"
BEAT = "/v1/installations/{}/heartbeat"
SHELLS = ("fast", "fastapi")


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No CONTROPARTE_* setting of the machine running the tests leaks in."""
    for key in list(os.environ):
        if key.startswith("CONTROPARTE_"):
            monkeypatch.delenv(key)


@dataclass
class Api:
    """An app over its services, and a way to make clients with a given address."""

    app: ASGIApp
    services: Services

    @property
    def settings(self) -> Settings:
        return self.services.settings

    def client(self, peer: str = PEER, **headers: str) -> httpx.AsyncClient:
        transport = httpx.ASGITransport(app=self.app, client=(peer, 40000))
        return httpx.AsyncClient(
            transport=transport, base_url="http://controparte.test", headers=headers
        )

    def admin(self, peer: str = PEER) -> httpx.AsyncClient:
        return self.client(peer, authorization=f"Bearer {ADMIN}")

    def bearer(self, token: str, peer: str = PEER) -> httpx.AsyncClient:
        return self.client(peer, authorization=f"Bearer {token}")

    def add(self, code: str, label: str, **fields: object) -> str:
        """Register an installation through the services; its token."""
        self.services.registry.add(code, label, **fields)  # type: ignore[arg-type]
        return self.services.access.issue_token(code)


MakeApi = Callable[..., Api]


async def beat(
    api: Api, code: str, token: str, peer: str = PEER, **extra: object
) -> dict[str, object]:
    """A heartbeat that must be accepted; its JSON answer."""
    async with api.bearer(token, peer) as http:
        response = await http.post(BEAT.format(code), json={"port": 4443, **extra})
    assert response.status_code == 200, response.text
    found = response.json()
    assert isinstance(found, dict)
    return found


@pytest.fixture
def heartbeat_shell() -> str:
    return "fast"


@pytest.fixture
def make_api(
    tmp_path: Path, heartbeat_shell: str, database: str, request: pytest.FixtureRequest
) -> Iterator[MakeApi]:
    """An `Api` with settings from `env` (CONTROPARTE_* names) on top of: a fresh data
    directory, a fresh registry on each engine in turn (`database`), the admin token
    ADMIN, documentation addresses allowed and TRUSTED as the trusted proxies. Every
    one made is closed at teardown."""
    made: list[Services] = []
    extra: list[str] = []  # the PostgreSQL databases of the second and later ones

    def databases() -> Databases:
        found: Databases = request.getfixturevalue("pg_databases")
        return found

    def make(**env: str) -> Api:
        data = tmp_path / f"data{len(made)}"
        url = database
        if database and made:
            url = databases().take()
            extra.append(url)
        base = {
            "CONTROPARTE_DATA": str(data),
            "CONTROPARTE_DATABASE": url,
            "CONTROPARTE_ADMIN_TOKEN": ADMIN,
            "CONTROPARTE_ALLOW_NON_GLOBAL": "1",
            "CONTROPARTE_TRUSTED_PROXIES": TRUSTED,
        }
        settings = load_settings(env={**base, **env})
        services = open_services(settings)
        made.append(services)
        return Api(create_app(services, fast_heartbeat=heartbeat_shell == "fast"), services)

    yield make
    for services in made:
        services.close()
    for url in extra:
        databases().give_back(url)


@pytest.fixture
def api(make_api: MakeApi) -> Api:
    return make_api()
