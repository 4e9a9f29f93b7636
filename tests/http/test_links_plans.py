"""Links and plans over the v1 API (in process, real services): who may do what,
idempotent link creation, the plan in JSON and as firewall scripts, the same JSON as
the CLI's, and the Live port range refused on create, patch and heartbeat."""

from __future__ import annotations

from pathlib import Path

import pytest

from controparte.plan.planner import Role
from controparte.plan.wire import plan_dict
from controparte.store import Origin
from tests.http.conftest import PEER, Api, MakeApi

pytestmark = pytest.mark.anyio


def seed(api: Api) -> dict[str, str]:
    """Three installations; their tokens by code."""
    return {
        "AZ-1": api.add("AZ-1", "azienda", ipv4="203.0.113.10", port=4443),
        "ST-2": api.add("ST-2", "studio", kind="live", ipv4="198.51.100.20", port=9102),
        "PA-3": api.add("PA-3", "paghe", ipv4="192.0.2.30", port=9443),
    }


# -- links -----------------------------------------------------------------------------------


async def test_links_create_list_delete(api: Api) -> None:
    seed(api)
    body = {"a": "azienda", "b": "ST-2", "features": ["primanota", "realtime"]}
    async with api.admin() as http:
        created = await http.post("/v1/links", json=body)
        again = await http.post("/v1/links", json={**body, "features": ["realtime"]})
        await http.post("/v1/links", json={"a": "PA-3", "b": "AZ-1", "features": ["sprix"]})
        listed = await http.get("/v1/links")
        of_studio = await http.get("/v1/links", params={"code": "ST-2"})
        removed = await http.delete("/v1/links/AZ-1/ST-2", params={"feature": "realtime"})
        missing = await http.delete("/v1/links/ST-2/AZ-1")
    assert created.status_code == 201, created.text
    assert [(x["a"], x["b"], x["feature"], x["new"]) for x in created.json()["links"]] == [
        ("AZ-1", "ST-2", "primanota", True),
        ("AZ-1", "ST-2", "realtime", True),
    ]
    assert again.status_code == 200
    assert again.json()["links"][0]["new"] is False
    assert again.json()["links"][0]["created"] == created.json()["links"][1]["created"]
    assert [(x["a"], x["b"], x["feature"]) for x in listed.json()["links"]] == [
        ("AZ-1", "ST-2", "primanota"),
        ("AZ-1", "ST-2", "realtime"),
        ("PA-3", "AZ-1", "sprix"),
    ]
    assert len(of_studio.json()["links"]) == 2
    assert removed.status_code == 200
    assert [x["feature"] for x in removed.json()["links"]] == ["realtime"]
    assert missing.status_code == 404
    assert missing.json()["detail"] == "no link from ST-2 to AZ-1"
    history = api.services.store.history("ST-2")
    assert [(h["action"], h["via"], h["source"]) for h in history[-3:]] == [
        ("link", "api", PEER),
        ("link", "api", PEER),
        ("unlink", "api", PEER),
    ]


@pytest.mark.parametrize(
    ("body", "detail"),
    [
        ({"a": "AZ-1", "b": "ST-2", "features": ["nope"]}, "feature: unknown feature 'nope'"),
        ({"a": "AZ-1", "b": "AZ-1", "features": ["realtime"]}, "b: an installation cannot"),
    ],
)
async def test_link_errors_name_the_field(api: Api, body: dict[str, object], detail: str) -> None:
    seed(api)
    async with api.admin() as http:
        response = await http.post("/v1/links", json=body)
    assert response.status_code == 422
    assert response.json()["detail"].startswith(detail)


async def test_link_with_no_feature_is_a_request_error(api: Api) -> None:
    seed(api)
    async with api.admin() as http:
        response = await http.post("/v1/links", json={"a": "AZ-1", "b": "ST-2", "features": []})
    assert response.status_code == 422


async def test_who_may_read_and_change_links(api: Api) -> None:
    tokens = seed(api)
    api.services.links.add("AZ-1", "ST-2", ["einvoice"])
    api.services.links.add("PA-3", "ST-2", ["einvoice"])
    body = {"a": "AZ-1", "b": "PA-3", "features": ["einvoice"]}
    async with api.bearer(tokens["AZ-1"]) as http:
        own = await http.get("/v1/links", params={"code": "AZ-1"})
        other = await http.get("/v1/links", params={"code": "PA-3"})
        every = await http.get("/v1/links")
        create = await http.post("/v1/links", json=body)
        delete = await http.delete("/v1/links/AZ-1/ST-2")
    async with api.client() as http:
        anonymous = await http.get("/v1/links", params={"code": "AZ-1"})
    assert own.status_code == 200
    assert [x["b"] for x in own.json()["links"]] == ["ST-2"]
    assert (other.status_code, every.status_code) == (401, 401)
    assert (create.status_code, delete.status_code) == (401, 401)
    assert anonymous.status_code == 401
    assert len(api.services.links.list()) == 2


# -- plan ------------------------------------------------------------------------------------


async def test_plan_json_is_the_documented_schema(api: Api) -> None:
    seed(api)
    params = {"caller": "azienda", "callee": "studio.bp.controparte.test", "feature": "primanota"}
    async with api.admin() as http:
        response = await http.get("/v1/plan", params=params)
        callee_side = await http.get("/v1/plan", params={**params, "side": "callee"})
    assert response.status_code == 200, response.text
    found = response.json()
    expected = plan_dict(api.services.plans.plan("AZ-1", "ST-2", "primanota"))
    assert found == expected
    assert found["schema"] == "controparte.plan/1" and found["blocked"] is True
    assert callee_side.json() == plan_dict(
        api.services.plans.plan("AZ-1", "ST-2", "primanota"), Role.CALLEE
    )


async def test_plan_as_firewall_scripts(api: Api) -> None:
    seed(api)
    params = {"caller": "AZ-1", "callee": "PA-3", "feature": "einvoice"}
    async with api.admin() as http:
        nft = await http.get("/v1/plan", params={**params, "format": "nftables"})
        ipt = await http.get("/v1/plan", params={**params, "format": "iptables", "side": "callee"})
        bad = await http.get("/v1/plan", params={**params, "format": "pf"})
    assert nft.status_code == 200
    assert nft.headers["content-type"].startswith("text/plain")
    assert "rules for the caller, azienda (AZ-1)" in nft.text
    assert "add rule inet filter output ip daddr { 192.0.2.30 } tcp dport 9443" in nft.text
    assert "rules for the callee, paghe (PA-3)" in ipt.text
    assert "iptables -A INPUT -p tcp -s 203.0.113.10 --dport 9443" in ipt.text
    assert bad.status_code == 422


async def test_plan_needs_admin_or_either_end_of_a_linked_pair(api: Api) -> None:
    tokens = seed(api)
    api.services.links.add("ST-2", "AZ-1", ["primanota"])  # linked one way, for one feature
    params = {"caller": "AZ-1", "callee": "ST-2", "feature": "realtime"}
    statuses = {}
    for who in ("AZ-1", "ST-2", "PA-3"):
        async with api.bearer(tokens[who]) as http:
            statuses[who] = (await http.get("/v1/plan", params=params)).status_code
    async with api.client() as http:
        anonymous = await http.get("/v1/plan", params=params)
    assert statuses == {"AZ-1": 200, "ST-2": 200, "PA-3": 401}
    assert anonymous.status_code == 401
    assert anonymous.headers["www-authenticate"] == 'Bearer realm="controparte"'


@pytest.mark.parametrize("who", ["AZ-1", "PA-3"])
async def test_plan_of_an_unlinked_pair_is_for_admins_only(api: Api, who: str) -> None:
    """Either end's token gets 403 for a pair with no link: the plan tells the other
    end's kind and private port, which only linked counterparts may know."""
    tokens = seed(api)
    params = {"caller": "AZ-1", "callee": "paghe", "feature": "einvoice"}
    async with api.bearer(tokens[who]) as http:
        refused = await http.get("/v1/plan", params=params)
        as_firewall = await http.get("/v1/plan", params={**params, "format": "nftables"})
    other = "PA-3" if who == "AZ-1" else "AZ-1"
    assert refused.status_code == 403, refused.text
    assert refused.json()["detail"].startswith(f"{other!r} is not linked to {who!r}")
    assert "admin token" in refused.json()["detail"]
    assert "9443" not in refused.text
    assert as_firewall.status_code == 403
    async with api.admin() as http:
        assert (await http.get("/v1/plan", params=params)).status_code == 200
    api.services.links.add("PA-3", "AZ-1", ["sprix"])
    async with api.bearer(tokens[who]) as http:
        assert (await http.get("/v1/plan", params=params)).status_code == 200


@pytest.mark.parametrize(
    ("params", "status", "detail"),
    [
        ({"caller": "AZ-1", "callee": "ST-2", "feature": "nope"}, 422, "feature: unknown"),
        ({"caller": "AZ-1", "callee": "nobody", "feature": "einvoice"}, 404, "no installation"),
        ({"caller": "AZ-1", "callee": "azienda", "feature": "einvoice"}, 422, "callee: caller"),
    ],
)
async def test_plan_errors(api: Api, params: dict[str, str], status: int, detail: str) -> None:
    seed(api)
    async with api.admin() as http:
        response = await http.get("/v1/plan", params=params)
    assert response.status_code == status
    assert response.json()["detail"].startswith(detail)


async def test_openapi_describes_links_and_plans(api: Api) -> None:
    async with api.client() as http:
        document = (await http.get("/openapi.json")).json()
    paths = document["paths"]
    assert set(paths["/v1/links"]) == {"get", "post"}
    assert set(paths["/v1/links/{a}/{b}"]) == {"delete"}
    assert set(paths["/v1/plan"]) == {"get"}
    plan_out = document["components"]["schemas"]["PlanOut"]
    assert {"schema", "feature", "caller", "callee", "side", "blocked", "flows", "notes"} == set(
        plan_out["properties"]
    )
    assert "text/plain" in paths["/v1/plan"]["get"]["responses"]["200"]["content"]


# -- the Live port range ----------------------------------------------------------------------


async def test_live_port_outside_the_range_is_refused_on_create_and_patch(api: Api) -> None:
    seed(api)
    live = {"code": "LV-9", "label": "lv", "kind": "live", "port": 443}
    async with api.admin() as http:
        created = await http.post("/v1/installations", json=live)
        patched = await http.patch("/v1/installations/ST-2", json={"port": 8443})
        made_live = await http.patch("/v1/installations/AZ-1", json={"kind": "live"})
        fine = await http.patch("/v1/installations/ST-2", json={"port": 9200})
    for response in (created, patched, made_live):
        assert response.status_code == 422
        assert response.json()["detail"].startswith("port: ")
        assert "outside the Live range 9000-9999" in response.json()["detail"]
    assert fine.status_code == 200


async def test_a_live_heartbeat_outside_the_range_is_refused_and_not_stored(api: Api) -> None:
    tokens = seed(api)
    before = api.services.registry.get("ST-2")
    serial = api.services.store.serial()
    async with api.bearer(tokens["ST-2"]) as http:
        refused = await http.post("/v1/installations/ST-2/heartbeat", json={"port": 4443})
        accepted = await http.post("/v1/installations/ST-2/heartbeat", json={"port": 9103})
    assert refused.status_code == 422
    assert refused.json() == {
        "error": "ValidationError",
        "detail": "port: 4443 is outside the Live range 9000-9999: a Live installation (ST-2)"
        " must have its public port in 9000-9999",
    }
    assert accepted.status_code == 200
    assert accepted.json()["port"] == 9103
    after = api.services.registry.get("ST-2")
    assert after.port == 9103 and after.last_seen is not None
    assert api.services.store.serial() != serial
    # The refused beat left nothing: the only heartbeat change in the history is 9103.
    beats = [h for h in api.services.store.history("ST-2") if h["via"] == "heartbeat"]
    assert [h["new"]["port"] for h in beats if isinstance(h["new"], dict)] == [9103]
    assert len(beats) == 1
    assert before.last_seen is None


async def test_the_rfc2136_path_is_refused_too(api: Api) -> None:
    """`Registry.update_many` (what DNS UPDATE commits through) keeps the rule."""
    from controparte.errors import ValidationError  # noqa: PLC0415
    from controparte.model import InstallationChange  # noqa: PLC0415

    seed(api)
    with pytest.raises(ValidationError, match="Live range"):
        api.services.registry.update_many(
            lambda _reader: (None, {"ST-2": InstallationChange(port=53)}),
            Origin(via="rfc2136"),
        )
    assert api.services.registry.get("ST-2").port == 9102


async def test_services_load_the_catalog_of_the_features_setting(
    make_api: MakeApi, tmp_path: Path
) -> None:
    catalog = tmp_path / "features.toml"
    catalog.write_text(
        "[live]\nport_range = [4000, 4999]\nstart_live_hosts = ['broker.example.test']\n"
        "[features.backup]\ntopology = 'server-async'\n"
    )
    api = make_api(CONTROPARTE_FEATURES=str(catalog))
    assert set(api.services.catalog.features) == {"backup"}
    assert api.services.catalog.live.range_text == "4000-4999"
    token = api.add("LV-1", "lv", kind="live", port=4443)
    async with api.bearer(token) as http:
        refused = await http.post("/v1/installations/LV-1/heartbeat", json={"port": 9100})
    assert refused.status_code == 422
    assert "Live range 4000-4999" in refused.json()["detail"]
