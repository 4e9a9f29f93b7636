"""The v1 JSON API in process (httpx over ASGI, real services on a temporary store):
management, resolution, health, metrics and the OpenAPI document. Heartbeats, trusted
proxies, the stale flag and throttling are in `test_heartbeat.py`."""

from __future__ import annotations

import re
from datetime import datetime

import dns.message
import httpx
import pytest

from controparte.dns.server import DnsServer
from controparte.http.app import create_app
from controparte.model.installation import utcnow
from tests.http.conftest import BEAT, PEER, ZONE, Api, beat

pytestmark = pytest.mark.anyio


# -- service endpoints --------------------------------------------------------------------


async def test_healthz(api: Api) -> None:
    api.add("A-1", "alpha")
    async with api.client() as http:
        response = await http.get("/healthz")
    assert response.status_code == 200
    body = response.json()
    since = body["database"].pop("since")
    assert body == {
        "status": "ok",
        "serial": api.services.store.serial(),
        "installations": 1,
        "database": {"state": "reachable", "detail": None},
        "zone": None,  # no DNS server in this process
    }
    assert datetime.fromisoformat(since) <= utcnow()


async def test_openapi_describes_the_v1_api(api: Api) -> None:
    async with api.client() as http:
        document = (await http.get("/openapi.json")).json()
    paths = document["paths"]
    assert set(paths) >= {
        "/v1/installations",
        "/v1/installations/{code}",
        "/v1/installations/{code}/token",
        "/v1/installations/{code}/heartbeat",
        "/v1/installations/{code}/history",
        "/v1/resolve/{name}",
        "/nic/update",
        "/healthz",
        "/metrics",
    }
    assert set(paths["/v1/installations/{code}"]) == {"get", "patch", "delete"}
    assert set(paths["/nic/update"]) == {"get"}
    schemas = document["components"]["schemas"]
    assert set(schemas["HeartbeatIn"]["properties"]) == {"port", "private_port", "version"}
    assert schemas["HeartbeatIn"]["required"] == ["port"]
    assert {"changed", "serial", "stale_after", "heartbeat_interval"} <= set(
        schemas["HeartbeatOut"]["properties"]
    )
    assert "token" not in schemas["ResolveOut"]["properties"]
    assert "HTTPBearer" in document["components"]["securitySchemes"]
    heartbeat = paths["/v1/installations/{code}/heartbeat"]["post"]
    assert heartbeat["security"] == [{"HTTPBearer": []}]


# -- management -----------------------------------------------------------------------------


async def test_create_returns_the_token_once_and_it_works(api: Api) -> None:
    async with api.admin() as http:
        response = await http.post(
            "/v1/installations",
            json={"code": "A-1", "label": "Alpha", "ip": "192.0.2.1", "port": 4443},
        )
        assert response.status_code == 201, response.text
        created = response.json()
        assert created["label"] == "alpha"
        assert created["fqdn"] == "alpha." + ZONE
        assert created["ip"] == "192.0.2.1"
        assert created["stale"] is False
        token = created["token"]
        assert token.startswith("cpt_")
        shown = (await http.get("/v1/installations/A-1")).json()
    assert "token" not in shown
    assert token not in str(shown)
    await beat(api, "A-1", token)
    history = api.services.store.history("A-1")
    assert [(h["action"], h["actor"], h["via"], h["source"]) for h in history[:2]] == [
        ("add", "admin", "api", PEER),
        ("token", "admin", "api", PEER),
    ]


@pytest.mark.parametrize(
    ("body", "status", "needle"),
    [
        ({"code": "A-1", "label": "-bad"}, 422, "label"),
        ({"code": "A 1", "label": "alpha"}, 422, "code"),
        ({"code": "A-1", "label": "alpha", "ip": "300.1.1.1"}, 422, "ip"),
        ({"code": "A-1", "label": "alpha", "port": 0}, 422, "port"),
        ({"code": "A-1", "label": "alpha", "kind": "cloud"}, 422, "kind"),
        ({"code": "A-1", "label": "alpha", "secret": "x"}, 422, "secret"),
        ({"code": "A-1", "label": "ns1"}, 422, "reserved"),
        ({"code": "a-1", "label": "other"}, 409, "code"),  # codes are unique ignoring case
        ({"code": "B-2", "label": "taken"}, 409, "label"),
    ],
)
async def test_create_refusals_name_the_field(
    api: Api, body: dict[str, object], status: int, needle: str
) -> None:
    api.add("A-1", "taken")
    async with api.admin() as http:
        response = await http.post("/v1/installations", json=body)
    assert response.status_code == status, response.text
    assert needle in response.text
    assert api.services.store.count() == 1


async def test_management_needs_the_admin_token(api: Api) -> None:
    token = api.add("A-1", "alpha")
    requests = [
        ("POST", "/v1/installations", {"code": "B-2", "label": "beta"}),
        ("GET", "/v1/installations", None),
    ]
    for method, path, body in requests:
        async with api.client() as http:
            missing = await http.request(method, path, json=body)
        assert missing.status_code == 401
        assert missing.headers["www-authenticate"].startswith("Bearer")
        assert missing.json()["error"] == "AuthError"
        async with api.bearer(token) as http:
            wrong = await http.request(method, path, json=body)
        assert wrong.status_code == 401
    assert api.services.store.count() == 1


async def test_list_pages_by_code(api: Api) -> None:
    for number in range(5):
        api.add(f"C-{number}", f"c{number}")
    async with api.admin() as http:
        page = (await http.get("/v1/installations", params={"limit": 2, "offset": 1})).json()
        bad = await http.get("/v1/installations", params={"limit": 0})
    assert [i["code"] for i in page["installations"]] == ["C-1", "C-2"]
    assert (page["total"], page["limit"], page["offset"]) == (5, 2, 1)
    assert bad.status_code == 422


async def test_get_one_is_for_the_admin_or_the_installation_itself(api: Api) -> None:
    alpha = api.add("A-1", "alpha")
    beta = api.add("B-2", "beta")
    async with api.bearer(alpha) as http:
        assert (await http.get("/v1/installations/A-1")).json()["label"] == "alpha"
        assert (await http.get("/v1/installations/B-2")).status_code == 401
        assert (await http.get("/v1/installations/alpha")).status_code == 404  # codes only
    async with api.admin() as http:
        assert (await http.get("/v1/installations/B-2")).json()["label"] == "beta"
        missing = await http.get("/v1/installations/NOPE")
    assert missing.status_code == 404
    assert missing.json() == {
        "error": "NotFoundError",
        "detail": "no installation with code 'NOPE'",
    }
    assert beta


async def test_patch_changes_fields_and_null_clears(api: Api) -> None:
    api.add("A-1", "alpha", ipv4="192.0.2.1", port=4443)
    serial = api.services.store.serial()
    async with api.admin() as http:
        response = await http.patch(
            "/v1/installations/A-1", json={"ip": "198.51.100.2", "port": None, "kind": "live"}
        )
        assert response.status_code == 200, response.text
        changed = response.json()
        assert (changed["ip"], changed["port"], changed["kind"]) == ("198.51.100.2", None, "live")
        assert (await http.patch("/v1/installations/A-1", json={"label": None})).status_code == 422
        assert (await http.patch("/v1/installations/A-1", json={})).status_code == 422
        assert (
            await http.patch("/v1/installations/A-1", json={"ipv6": "::1:2:3:4:5:6:7:8:9"})
        ).status_code == 422
        assert (await http.patch("/v1/installations/NOPE", json={"port": 1})).status_code == 404
    inst = api.services.registry.get("A-1")
    assert (inst.ipv4, inst.port) == ("198.51.100.2", None)
    assert api.services.store.serial() != serial
    last = api.services.store.history("A-1")[-1]
    assert (last["action"], last["actor"], last["via"], last["source"]) == (
        "update",
        "admin",
        "api",
        PEER,
    )


async def test_an_installation_token_cannot_patch_or_delete(api: Api) -> None:
    alpha = api.add("A-1", "alpha", ipv4="192.0.2.1")
    api.add("B-2", "beta", ipv4="192.0.2.2")
    async with api.bearer(alpha) as http:
        own = await http.patch("/v1/installations/A-1", json={"ip": "192.0.2.9"})
        other = await http.patch("/v1/installations/B-2", json={"ip": "192.0.2.9"})
        own_delete = await http.delete("/v1/installations/A-1")
        other_delete = await http.delete("/v1/installations/B-2")
    assert own.status_code == 403
    assert own.json()["error"] == "ForbiddenError"
    assert other.status_code == 401
    assert own_delete.status_code == 403
    assert other_delete.status_code == 401
    assert api.services.registry.get("A-1").ipv4 == "192.0.2.1"
    assert api.services.registry.get("B-2").ipv4 == "192.0.2.2"


async def test_delete(api: Api) -> None:
    token = api.add("A-1", "alpha")
    async with api.admin() as http:
        response = await http.delete("/v1/installations/A-1")
        assert response.status_code == 204
        assert response.content == b""
        assert (await http.get("/v1/installations/A-1")).status_code == 404
        assert (await http.delete("/v1/installations/A-1")).status_code == 404
        history = (await http.get("/v1/installations/A-1/history")).json()
    assert [h["action"] for h in history["history"]] == ["add", "token", "remove"]
    async with api.bearer(token) as http:  # its token went with it
        assert (await http.post(BEAT.format("A-1"), json={"port": 1})).status_code == 401


async def test_rotate_token(api: Api) -> None:
    old = api.add("A-1", "alpha")
    other = api.add("B-2", "beta")
    async with api.bearer(other) as http:
        assert (await http.post("/v1/installations/A-1/token")).status_code == 401
    async with api.bearer(old) as http:
        response = await http.post("/v1/installations/A-1/token")
    assert response.status_code == 200
    new = response.json()["token"]
    assert response.json()["code"] == "A-1"
    assert new != old
    async with api.bearer(old) as http:
        assert (await http.post(BEAT.format("A-1"), json={"port": 1})).status_code == 401
    await beat(api, "A-1", new)
    async with api.admin() as http:
        by_admin = await http.post("/v1/installations/a-1/token")
        assert (await http.post("/v1/installations/NOPE/token")).status_code == 404
    assert by_admin.json()["code"] == "A-1"  # the canonical code
    await beat(api, "A-1", by_admin.json()["token"])


async def test_history_for_the_admin_or_the_installation(api: Api) -> None:
    alpha = api.add("A-1", "alpha")
    beta = api.add("B-2", "beta")
    await beat(api, "A-1", alpha, port=5000)
    async with api.bearer(alpha) as http:
        own = await http.get("/v1/installations/A-1/history")
    async with api.bearer(beta) as http:
        other = await http.get("/v1/installations/A-1/history")
    async with api.admin() as http:
        by_admin = await http.get("/v1/installations/A-1/history")
        missing = await http.get("/v1/installations/NOPE/history")
    assert own.status_code == 200
    assert own.json() == by_admin.json()
    entries = own.json()["history"]
    assert [e["action"] for e in entries] == ["add", "token", "update"]
    assert (entries[-1]["actor"], entries[-1]["via"], entries[-1]["source"]) == (
        "A-1",
        "heartbeat",
        PEER,
    )
    assert entries[-1]["new"]["port"] == 5000
    assert other.status_code == 401
    assert missing.status_code == 404


# -- resolve ----------------------------------------------------------------------------------


async def test_resolve_needs_no_credentials_and_tells_no_secret(api: Api) -> None:
    token = api.add("A-1", "alpha", ipv4="192.0.2.1", ipv6="2001:db8::1", port=4443)
    expected = {
        "code": "A-1",
        "label": "alpha",
        "fqdn": "alpha." + ZONE,
        "kind": "onprem",
        "ip": "192.0.2.1",
        "ipv6": "2001:db8::1",
        "port": 4443,
        "last_seen": None,
        "stale": False,
    }
    async with api.client() as http:
        for name in ("A-1", "a-1", "alpha", "ALPHA", "alpha." + ZONE, "alpha." + ZONE.rstrip(".")):
            response = await http.get(f"/v1/resolve/{name}")
            assert response.status_code == 200, name
            assert response.json() == expected
            assert token not in response.text
        missing = await http.get("/v1/resolve/nope")
        for name in ("x.alpha." + ZONE, ZONE, "alpha.example.test"):  # not <label>.<zone>
            assert (await http.get(f"/v1/resolve/{name}")).status_code == 404, name
    assert missing.status_code == 404
    assert missing.json()["error"] == "NotFoundError"


# -- metrics --------------------------------------------------------------------------------------


async def test_metrics_count_requests_updates_errors_and_dns(api: Api) -> None:
    services = api.services
    token = api.add("A-1", "alpha")
    dns_server = DnsServer(services.settings, services.store, services=services)  # not started
    app = create_app(services, dns=dns_server)
    query = dns.message.make_query("alpha." + ZONE, "A").to_wire()
    for _ in range(3):
        assert dns_server.engine.answer(query, False) is not None
    api = Api(app, services)
    await beat(api, "A-1", token)
    await beat(api, "A-1", token)
    async with api.admin() as http:
        await http.patch("/v1/installations/A-1", json={"port": 7})
        await http.get("/v1/installations/NOPE")
        await http.get("/v1/installations/A-1/nothing-here")
    async with api.client() as http:
        response = await http.get("/metrics")
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    text = response.text
    requests = "controparte_http_requests_total"
    expected = [
        "controparte_dns_queries_total 3",
        "controparte_dns_internal_errors_total 0",
        f'{requests}{{method="POST",route="/v1/installations/{{code}}/heartbeat",status="200"}} 2',
        f'{requests}{{method="GET",route="/v1/installations/{{code}}",status="404"}} 1',
        f'{requests}{{method="GET",route="unmatched",status="404"}} 1',
        'controparte_heartbeats_total{result="changed"} 1',
        'controparte_heartbeats_total{result="unchanged"} 1',
        'controparte_updates_total{way="heartbeat"} 1',
        'controparte_updates_total{way="api"} 1',
        'controparte_updates_total{way="dyndns2"} 0',
        'controparte_updates_total{way="rfc2136"} 0',
        'controparte_errors_total{kind="NotFoundError"} 1',
        'controparte_errors_total{kind="UnsupportedError"} 1',  # the unknown path
        "controparte_installations 1",
        f"controparte_zone_serial {dns_server.engine.zone.serial}",
    ]
    lines = text.splitlines()
    for line in expected:
        assert line in lines, line
    fast = int(next(x for x in lines if x.startswith("controparte_dns_fast_path_total")).split()[1])
    general = int(
        next(x for x in lines if x.startswith("controparte_dns_general_path_total")).split()[1]
    )
    assert fast + general >= 1  # the rest came from the answer cache


async def test_an_unexpected_error_is_a_bare_500_and_counted(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(_name: str) -> None:
        raise RuntimeError("secret internals")

    monkeypatch.setattr(api.services.registry, "find", broken)
    transport = httpx.ASGITransport(app=api.app, client=(PEER, 1), raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://controparte.test") as http:
        response = await http.get("/v1/resolve/alpha")
        metrics = (await http.get("/metrics")).text.splitlines()
    assert response.status_code == 500
    assert response.json() == {"error": "internal", "detail": "internal server error"}
    assert "secret internals" not in response.text
    assert 'controparte_errors_total{kind="internal"} 1' in metrics
    route = 'method="GET",route="/v1/resolve/{name}",status="500"'
    assert f"controparte_http_requests_total{{{route}}} 1" in metrics


async def test_the_docs_page_loads_nothing_from_outside(api: Api) -> None:
    """`/docs` works without internet access: every script, style sheet and icon it
    names is served by the server itself (FastAPI's own page takes them from a CDN)."""
    async with api.client() as http:
        page = await http.get("/docs")
        assert page.status_code == 200
        assert page.headers["content-type"].startswith("text/html")
        named = re.findall(r"""(?:src|href)=['"]([^'"]+)['"]""", page.text)
        assert "/openapi.json" in page.text
        assert named and all(url.startswith("/docs/assets/") for url in named), named
        for url in named:
            asset = await http.get(url)
            assert asset.status_code == 200, url
            assert len(asset.content) > 0, url
        assert (await http.get("/redoc")).status_code == 404  # ReDoc would need a CDN
