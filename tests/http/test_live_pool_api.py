"""The installation routes and the Live pool (issue 12): a Live installation created
without a port is placed and the answer tells where; the view shows `gateway`; an
exhausted pool is a 503 naming the gateway; a heartbeat of a placed installation keeps
it at its gateway (both engines)."""

from __future__ import annotations

import pytest

from tests.http.conftest import Api, MakeApi, beat

pytestmark = pytest.mark.anyio

GATEWAY = "name=gw1 ipv4=192.0.2.10 ipv6=2001:db8::10 ports=9000-9001"


@pytest.fixture
def api(make_api: MakeApi) -> Api:
    return make_api(CONTROPARTE_LIVE_GATEWAYS=GATEWAY)


async def test_a_live_installation_is_placed_and_an_exhausted_pool_is_503(api: Api) -> None:
    async with api.admin() as http:
        asked = await http.post(
            "/v1/installations",
            json={"code": "L-2", "label": "l2", "kind": "live", "gateway": "gw1", "port": 9001},
        )
        created = await http.post(  # the one port left
            "/v1/installations", json={"code": "L-1", "label": "l1", "kind": "live"}
        )
        again = await http.post(
            "/v1/installations", json={"code": "L-3", "label": "l3", "kind": "live"}
        )
        shown = await http.get("/v1/installations/L-2")
    assert created.status_code == 201, created.text
    body = created.json()
    assert (body["gateway"], body["ip"], body["ipv6"], body["port"]) == (
        "gw1",
        "192.0.2.10",
        "2001:db8::10",
        9000,
    )
    assert asked.status_code == 201 and shown.json()["gateway"] == "gw1"
    assert shown.json()["port"] == 9001
    assert again.status_code == 503
    assert again.json()["detail"].startswith("no free port is left on the Live gateway(s) gw1")


async def test_a_heartbeat_keeps_a_placed_installation_at_its_gateway(api: Api) -> None:
    token = api.add("L-1", "l1", kind="live")
    answer = await beat(api, "L-1", token, peer="203.0.113.77")
    stored = api.services.registry.get("L-1")
    assert (stored.gateway, stored.ipv4) == ("gw1", "192.0.2.10")
    assert stored.port in (9000, 9001)
    assert (answer["port"], answer["changed"]) == (stored.port, False)  # ip: the source seen
    assert stored.last_seen is not None
