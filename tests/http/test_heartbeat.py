"""`POST /v1/installations/{code}/heartbeat` in process, against both of its shells (the
pure-ASGI one the service runs and the FastAPI route the OpenAPI document describes:
one function behind both): what a beat publishes, the body and credential rules,
trusted proxies, the stale flag, throttling and logging; and, case by case, that the
two shells answer byte for byte alike."""

from __future__ import annotations

import logging
from dataclasses import replace
from datetime import timedelta

import pytest

from controparte.model.installation import utcnow
from controparte.store import Origin
from tests.http.conftest import ADMIN, BEAT, PEER, PROXY, SHELLS, ZONE, Api, MakeApi, beat

pytestmark = pytest.mark.anyio


@pytest.fixture(params=SHELLS)
def heartbeat_shell(request: pytest.FixtureRequest) -> str:
    shell = request.param
    assert isinstance(shell, str)
    return shell


# -- heartbeat ------------------------------------------------------------------------------


async def test_heartbeat_publishes_the_source_address_and_port(api: Api) -> None:
    token = api.add("A-1", "alpha")
    before = api.services.store.serial()
    answer = await beat(api, "A-1", token, private_port=9000, version="1.2.3")
    assert answer == {
        "code": "A-1",
        "label": "alpha",
        "fqdn": "alpha." + ZONE,
        "ip": PEER,
        "ipv6": None,
        "port": 4443,
        "changed": True,
        "serial": api.services.store.serial(),
        "stale_after": 900.0,
        "heartbeat_interval": 300.0,
    }
    assert answer["serial"] != before
    inst = api.services.registry.get("A-1")
    assert (inst.ipv4, inst.port, inst.private_port, inst.agent_version) == (
        PEER,
        4443,
        9000,
        "1.2.3",
    )
    assert inst.last_seen is not None


async def test_a_heartbeat_without_change_moves_only_last_seen(api: Api) -> None:
    token = api.add("A-1", "alpha")
    store = api.services.store
    first = await beat(api, "A-1", token)
    seen = api.services.registry.get("A-1").last_seen
    serial, seq, history = store.serial(), store.last_seq(), store.history("A-1")
    second = await beat(api, "A-1", token)
    assert second["changed"] is False
    assert second["serial"] == first["serial"] == serial
    assert (store.serial(), store.last_seq()) == (serial, seq)  # no new serial, no journal
    assert store.history("A-1") == history
    later = api.services.registry.get("A-1").last_seen
    assert seen is not None
    assert later is not None
    assert later >= seen
    third = await beat(api, "A-1", token, port=4444)  # a new port is a change
    assert third["changed"] is True
    assert store.serial() != serial


async def test_heartbeat_from_ipv6(api: Api) -> None:
    token = api.add("A-1", "alpha", ipv4="192.0.2.1")
    answer = await beat(api, "A-1", token, peer="2001:db8::42")
    assert (answer["ip"], answer["ipv6"]) == (None, "2001:db8::42")
    inst = api.services.registry.get("A-1")
    assert (inst.ipv4, inst.ipv6) == ("192.0.2.1", "2001:db8::42")  # v4 kept


async def test_one_installation_cannot_heartbeat_for_another(api: Api) -> None:
    api.add("A-1", "alpha", ipv4="192.0.2.1", port=1111)
    beta = api.add("B-2", "beta")
    for token in (beta, ADMIN, "cpt_wrong"):
        async with api.bearer(token) as http:
            response = await http.post(BEAT.format("A-1"), json={"port": 4443})
        assert response.status_code == 401
    inst = api.services.registry.get("A-1")
    assert (inst.ipv4, inst.port, inst.last_seen) == ("192.0.2.1", 1111, None)


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"port": 0},
        {"port": 65536},
        {"port": "x"},
        {"port": 1, "private_port": 0},
        {"port": 1, "version": "x" * 65},
        {"port": 1, "version": "a b"},
    ],
)
async def test_heartbeat_body_is_checked(api: Api, body: dict[str, object]) -> None:
    token = api.add("A-1", "alpha")
    async with api.bearer(token) as http:
        response = await http.post(BEAT.format("A-1"), json=body)
    assert response.status_code == 422
    assert api.services.registry.get("A-1").last_seen is None


async def test_credentials_are_checked_before_the_body(api: Api) -> None:
    api.add("A-1", "alpha")
    async with api.client() as http:
        response = await http.post(BEAT.format("A-1"), json={"port": 0})
    assert response.status_code == 401


async def test_a_wrong_token_is_told_before_a_bad_body_and_counted_once(api: Api) -> None:
    token = api.add("A-1", "alpha")
    async with api.bearer("cpt_wrong") as http:
        for body in (b'{"port":0}', b"{", b'{"version":"\xff"}'):
            response = await http.post(
                BEAT.format("A-1"), content=body, headers={"content-type": "application/json"}
            )
            assert response.status_code == 401
    async with api.bearer(token) as http:
        garbage = await http.post(BEAT.format("alpha"), json={"port": 0})
    assert garbage.status_code == 404  # the right token, a label in the path
    async with api.client() as http:
        lines = (await http.get("/metrics")).text.splitlines()
    assert 'controparte_errors_total{kind="AuthError"} 3' in lines
    assert 'controparte_errors_total{kind="NotFoundError"} 1' in lines
    told = ("InvalidRequestError", "MalformedError")  # the bad bodies were not answered
    assert not any(kind in line for line in lines for kind in told)
    assert not any(line.startswith("controparte_heartbeats_total") for line in lines)


async def test_unknown_heartbeat_fields_are_ignored(api: Api) -> None:
    token = api.add("A-1", "alpha")
    assert (await beat(api, "A-1", token, future_field=1))["port"] == 4443


async def test_heartbeat_from_a_non_global_address_needs_the_setting(make_api: MakeApi) -> None:
    api = make_api(CONTROPARTE_ALLOW_NON_GLOBAL="0")
    token = api.add("A-1", "alpha")
    async with api.bearer(token, peer="10.9.8.7") as http:
        response = await http.post(BEAT.format("A-1"), json={"port": 4443})
    assert response.status_code == 422
    assert "10.9.8.7 is not a global unicast address" in response.json()["detail"]
    assert api.services.registry.get("A-1").ipv4 is None


# -- trusted proxies --------------------------------------------------------------------------


async def test_forwarded_for_counts_only_from_a_trusted_proxy(api: Api) -> None:
    token = api.add("A-1", "alpha")
    spoof = {"x-forwarded-for": "192.0.2.77"}
    async with api.client(PEER, authorization=f"Bearer {token}", **spoof) as http:
        direct = (await http.post(BEAT.format("A-1"), json={"port": 1})).json()
    assert direct["ip"] == PEER  # an untrusted peer cannot choose its address
    chain = {"x-forwarded-for": "203.0.113.5, 192.0.2.77, 10.20.30.40"}
    async with api.client(PROXY, authorization=f"Bearer {token}", **chain) as http:
        proxied = (await http.post(BEAT.format("A-1"), json={"port": 1})).json()
    assert proxied["ip"] == "192.0.2.77"  # the right-most untrusted hop
    rfc7239 = {"forwarded": 'for="[2001:db8::77]:5555";proto=https'}
    async with api.client(PROXY, authorization=f"Bearer {token}", **rfc7239) as http:
        forwarded = (await http.post(BEAT.format("A-1"), json={"port": 1})).json()
    assert forwarded["ipv6"] == "2001:db8::77"
    inst = api.services.registry.get("A-1")
    assert (inst.ipv4, inst.ipv6) == ("192.0.2.77", "2001:db8::77")
    assert api.services.store.history("A-1")[-1]["source"] == "2001:db8::77"


async def test_a_proxy_forwarding_garbage_is_refused(api: Api) -> None:
    token = api.add("A-1", "alpha")
    headers = {"authorization": f"Bearer {token}", "forwarded": "for=unknown"}
    async with api.client(PROXY, **headers) as http:
        response = await http.post(BEAT.format("A-1"), json={"port": 1})
    assert response.status_code == 422
    assert "'unknown'" in response.json()["detail"]
    assert api.services.registry.get("A-1").ipv4 is None


# -- stale ------------------------------------------------------------------------------------


async def test_stale_after_no_heartbeat_for_stale_after(make_api: MakeApi) -> None:
    api = make_api(CONTROPARTE_STALE_AFTER="60")
    token = api.add("A-1", "alpha")
    api.add("B-2", "beta", ipv4="192.0.2.2")  # never seen: not stale
    await beat(api, "A-1", token)

    async def stale() -> dict[str, bool]:
        async with api.admin() as http:
            listed = (await http.get("/v1/installations")).json()["installations"]
            resolved = (await http.get("/v1/resolve/alpha")).json()["stale"]
            one = (await http.get("/v1/installations/A-1")).json()["stale"]
        flags = {i["code"]: i["stale"] for i in listed}
        assert flags["A-1"] == resolved == one
        return flags

    assert await stale() == {"A-1": False, "B-2": False}
    with api.services.store.transaction(Origin()) as tx:
        old = tx.get("A-1")
        assert old is not None
        tx.update(old, replace(old, last_seen=utcnow() - timedelta(seconds=61)))
    assert await stale() == {"A-1": True, "B-2": False}
    await beat(api, "A-1", token)
    assert await stale() == {"A-1": False, "B-2": False}


# -- throttling and logging -----------------------------------------------------------------------


async def test_repeated_failures_block_the_client_and_are_logged_without_the_token(
    api: Api, caplog: pytest.LogCaptureFixture
) -> None:
    token = api.add("A-1", "alpha")
    wrong = "cpt_wrong_token_value_123456"
    caplog.set_level(logging.INFO, logger="controparte")
    async with api.bearer(wrong) as http:
        statuses = [
            (await http.post(BEAT.format("A-1"), json={"port": 1})).status_code for _ in range(6)
        ]
    assert statuses == [401] * 5 + [429]
    async with api.bearer(token) as http:
        blocked = await http.post(BEAT.format("A-1"), json={"port": 1})
    assert blocked.status_code == 429  # even the right token, while blocked
    assert blocked.json()["error"] == "RateLimitedError"
    assert int(blocked.headers["retry-after"]) > 0
    await beat(api, "A-1", token, peer="198.51.100.8")  # another client is not blocked
    failures = [r for r in caplog.records if "authentication failed" in r.getMessage()]
    assert len(failures) == 5
    assert all(PEER in r.getMessage() for r in failures)
    assert any("blocking 198.51.100.7" in r.getMessage() for r in caplog.records)
    assert wrong not in caplog.text
    assert token not in caplog.text
    async with api.client() as http:
        metrics = (await http.get("/metrics")).text
    assert 'controparte_auth_failures_total{way="api"} 5' in metrics
    assert "controparte_auth_blocks_total 1" in metrics


async def test_missing_credentials_are_not_counted_as_failures(api: Api) -> None:
    api.add("A-1", "alpha")
    async with api.client() as http:
        for _ in range(8):
            response = await http.post(BEAT.format("A-1"), json={"port": 1})
            assert response.status_code == 401


async def test_clients_behind_a_trusted_proxy_are_throttled_one_by_one(api: Api) -> None:
    token = api.add("A-1", "alpha")
    for _ in range(5):
        headers = {"authorization": "Bearer cpt_wrong", "x-forwarded-for": "192.0.2.66"}
        async with api.client(PROXY, **headers) as http:
            await http.post(BEAT.format("A-1"), json={"port": 1})
    headers = {"authorization": f"Bearer {token}", "x-forwarded-for": "192.0.2.66"}
    async with api.client(PROXY, **headers) as http:
        assert (await http.post(BEAT.format("A-1"), json={"port": 1})).status_code == 429
    headers["x-forwarded-for"] = "192.0.2.67"
    async with api.client(PROXY, **headers) as http:
        assert (await http.post(BEAT.format("A-1"), json={"port": 1})).status_code == 200
