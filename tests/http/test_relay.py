"""The relay's routes in process, on each engine: A asks, B's agent polls, claims,
reports; A reads the dial judged with its own token. And every refusal: not linked, no
registered port, B's agent not polling, too soon, someone else's request, a report for
a request not claimed."""

from __future__ import annotations

import asyncio

import pytest

from controparte.model.probe import answer_line
from tests.http.conftest import Api

pytestmark = pytest.mark.anyio

A_PEER = "192.0.2.1"
B_PEER = "198.51.100.20"
RELAY = "/v1/installations/{}/relay"
TASKS = "/v1/installations/{}/relay-requests"


def seed(api: Api, *, link: bool = True, a_port: int | None = 4443) -> tuple[str, str]:
    """A (at A_PEER, port `a_port`) and B, linked B -> A for primanota; their tokens."""
    a = api.add("A-1", "alpha", ipv4=A_PEER, port=a_port)
    b = api.add("B-1", "beta", ipv4=B_PEER, port=5000)
    api.add("C-1", "gamma", ipv4="203.0.113.5", port=6000)
    if link:
        api.services.links.add("B-1", "A-1", ["primanota"])
    return a, b


async def poll(api: Api, token: str, code: str = "B-1", wait: float = 0) -> list[dict[str, object]]:
    async with api.bearer(token, B_PEER) as http:
        answer = await http.get(TASKS.format(code), params={"wait": wait})
    assert answer.status_code == 200, answer.text
    found = answer.json()["requests"]
    assert isinstance(found, list)
    return found


async def test_a_relayed_dial_is_judged_with_the_requesters_token(api: Api) -> None:
    a, b = seed(api)
    async with api.bearer(a, A_PEER) as http:
        early = await http.post(RELAY.format("A-1"), json={"counterpart": "beta"})
    assert early.status_code == 409
    assert early.json()["detail"].startswith(
        "B-1's agent does not take relay requests: last asked never;"
    )

    assert await poll(api, b) == []  # B's agent asks: now it takes requests
    async with api.bearer(a, A_PEER) as http:
        asked = await http.post(RELAY.format("A-1"), json={"counterpart": "beta"})
        assert asked.status_code == 202, asked.text
        body = asked.json()
        assert (body["agent"], body["address"], body["port"]) == ("B-1", A_PEER, 4443)
        pending = await http.get(f"{RELAY.format('A-1')}/{body['id']}")
    assert pending.json() == {"state": "pending", "report": None}

    [task] = await poll(api, b)
    assert task["id"] == body["id"]
    assert (task["address"], task["port"], task["requester"]) == (A_PEER, 4443, "A-1")
    assert await poll(api, b) == []  # handed out once

    line = answer_line(a, "A-1", str(task["nonce"])).decode().rstrip("\n")

    async def report() -> None:
        await asyncio.sleep(0.5)
        async with api.bearer(b, B_PEER) as http:
            done = await http.post(
                f"{TASKS.format('B-1')}/{task['id']}",
                json={"result": "open", "elapsed_ms": 12, "line": line},
            )
        assert done.status_code == 204, done.text

    async with api.bearer(a, A_PEER) as http:
        reporter = asyncio.create_task(report())
        waited = await http.get(f"{RELAY.format('A-1')}/{body['id']}", params={"wait": 10})
        await reporter
    out = waited.json()
    assert out["state"] == "done"
    found = out["report"]
    assert (found["result"], found["nonce_verified"], found["agent_code"]) == ("open", True, "A-1")
    assert (found["address"], found["port"], found["source"]) == (A_PEER, 4443, B_PEER)
    assert found["detail"].startswith(f"dialled by B-1's agent (from {B_PEER}): ")

    async with api.bearer(b, B_PEER) as http:  # a report is taken once
        again = await http.post(
            f"{TASKS.format('B-1')}/{task['id']}", json={"result": "refused", "elapsed_ms": 1}
        )
    assert again.status_code == 404


async def test_the_agent_long_poll_wakes_for_a_new_request(api: Api) -> None:
    a, b = seed(api)
    await poll(api, b)

    async def ask() -> None:
        await asyncio.sleep(0.5)
        async with api.bearer(a, A_PEER) as http:
            asked = await http.post(RELAY.format("A-1"), json={"counterpart": "B-1"})
        assert asked.status_code == 202, asked.text

    asking = asyncio.create_task(ask())
    found = await poll(api, b, wait=10)
    await asking
    assert [t["requester"] for t in found] == ["A-1"]


async def test_refusals(api: Api) -> None:
    a, b = seed(api)
    c = api.services.access.issue_token("C-1")
    await poll(api, b)
    url = RELAY.format("A-1")
    async with api.bearer(c, "203.0.113.5") as http:  # C is linked to nobody
        unlinked = await http.post(RELAY.format("C-1"), json={"counterpart": "B-1"})
    assert unlinked.status_code == 403
    assert "C-1 and B-1 are not linked for any feature" in unlinked.json()["detail"]
    async with api.bearer(a, A_PEER) as http:
        assert (await http.post(url, json={"counterpart": "nobody"})).status_code == 404
        v6 = await http.post(url, json={"counterpart": "B-1", "family": 6})
        assert v6.status_code == 403
        assert "no public IPv6 address registered" in v6.json()["detail"]
        bad = await http.post(url, json={"counterpart": "B-1", "address": "203.0.113.5"})
        assert bad.status_code == 422  # the target is never the requester's to name
        first = await http.post(url, json={"counterpart": "B-1"})
        assert first.status_code == 202
        soon = await http.post(url, json={"counterpart": "B-1"})
        assert soon.status_code == 429
        assert 1 <= int(soon.headers["Retry-After"]) <= 5
    async with api.bearer(b, B_PEER) as http:
        other = await http.get(f"{RELAY.format('B-1')}/{first.json()['id']}")
        assert other.status_code == 404  # A's request is not B's to read
        unclaimed = await http.post(
            f"{TASKS.format('B-1')}/{first.json()['id']}", json={"result": "open", "elapsed_ms": 1}
        )
        assert unclaimed.status_code == 404
        assert (await http.get(TASKS.format("A-1"))).status_code in (401, 403)
    async with api.client() as http:
        assert (await http.post(url, json={"counterpart": "B-1"})).status_code == 401


async def test_no_registered_port_no_relay(api: Api) -> None:
    a, b = seed(api, a_port=None)
    await poll(api, b)
    async with api.bearer(a, A_PEER) as http:
        refused = await http.post(RELAY.format("A-1"), json={"counterpart": "B-1"})
    assert refused.status_code == 403
    assert "no public port registered" in refused.json()["detail"]


async def test_the_routes_are_in_the_openapi_document(api: Api) -> None:
    async with api.client() as http:
        paths = (await http.get("/openapi.json")).json()["paths"]
    assert set(paths["/v1/installations/{code}/relay"]) == {"post"}
    assert set(paths["/v1/installations/{code}/relay/{request_id}"]) == {"get"}
    assert set(paths["/v1/installations/{code}/relay-requests"]) == {"get"}
    assert set(paths["/v1/installations/{code}/relay-requests/{request_id}"]) == {"post"}
