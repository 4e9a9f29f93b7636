"""The two shells of the heartbeat (the pure-ASGI one the service runs, the FastAPI
route the OpenAPI document describes) answer every case alike: status, headers and
body, byte for byte (the zone serial aside: each app has its own store), and count
alike in /metrics. Every error body is `{"error": <kind>, "detail": <text>}`."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

import httpx
import pytest

from controparte.http.app import create_app
from tests.http.conftest import ADMIN, BEAT, PROXY, Api, MakeApi

pytestmark = pytest.mark.anyio

JSON = {"content-type": "application/json"}


@dataclass(frozen=True)
class Case:
    name: str
    status: int
    body: bytes = b'{"port":4443}'
    token: str | None = "own"  # own, other (B-2's), admin, a literal, or None
    code: str = "A-1"
    peer: str = "198.51.100.7"
    headers: tuple[tuple[str, str], ...] = tuple(JSON.items())
    method: str = "POST"


CASES = [
    Case("ok", 200),
    Case("ok again: nothing changed", 200),
    Case(
        "ok, all fields and an unknown one",
        200,
        b'{"port":1,"private_port":2,"version":"v1","x":1}',
    ),
    Case("ok, the code in lower case", 200, code="a-1"),
    Case("ok from IPv6", 200, peer="2001:db8::42"),
    Case("ok, a numeric string", 200, b'{"port":"4443"}'),
    Case("ok, application/*+json", 200, headers=(("content-type", "application/x+json"),)),
    Case(
        "ok through a trusted proxy",
        200,
        peer=PROXY,
        headers=(*JSON.items(), ("x-forwarded-for", "192.0.2.9")),
    ),
    Case("no credentials", 401, token=None),
    Case("no credentials, a bad body too", 401, b'{"port":0}', token=None),
    Case("not Bearer", 401, token="Basic abc"),
    Case("another installation's token", 401, token="other"),
    Case("an admin token", 401, token="admin"),
    Case("a wrong token, a bad body too", 401, b"{", token="cpt_wrong", peer="198.51.100.30"),
    Case("unknown code", 401, code="NOPE", peer="198.51.100.31"),
    Case("the label in the path", 404, code="alpha"),
    Case("bad body: port 0", 422, b'{"port":0}'),
    Case("bad body: several errors", 422, b'{"port":0,"private_port":70000,"version":"a b"}'),
    Case("bad body: missing", 422, b""),
    Case("bad body: not JSON", 400, b'{"port":'),
    Case("bad body: not UTF-8", 400, b'{"port":1,"version":"\xff"}'),
    Case("bad body: a list", 422, b"[1]"),
    Case("bad body: infinite", 422, b'{"port":1e400}'),
    Case("no content type", 422, headers=()),
    Case("text/plain", 422, headers=(("content-type", "text/plain"),)),
    Case(
        "a proxy forwarded garbage",
        422,
        peer=PROXY,
        headers=(*JSON.items(), ("forwarded", "for=unknown")),
    ),
    Case("Live port outside the range", 422, token="own-live", code="L-1"),
    Case("a wrong method", 405, method="PUT"),
    Case("a wrong method, no credentials", 405, token=None, method="GET"),
    *[Case(f"wrong token {n}", 401, token="cpt_wrong", peer="198.51.100.20") for n in range(5)],
    Case("throttled, even with the right token", 429, peer="198.51.100.20"),
]


async def answer(
    api: Api, case: Case, tokens: dict[str, str]
) -> tuple[int, list[tuple[str, str]], str]:
    headers = dict(case.headers)
    if case.token is not None:
        token = tokens.get(case.token, case.token)
        headers["authorization"] = token if " " in token else f"Bearer {token}"
    transport = httpx.ASGITransport(app=api.app, client=(case.peer, 40000))
    async with httpx.AsyncClient(transport=transport, base_url="http://controparte.test") as http:
        request = http.build_request(
            case.method, BEAT.format(case.code), content=case.body, headers=headers
        )
        response = await http.send(request)
    body = re.sub(r'"serial":\d+', '"serial":0', response.content.decode("utf-8"))
    length = str(len(body.encode()))
    headers_seen = [
        (k, length if k == "content-length" else v) for k, v in response.headers.items()
    ]
    return response.status_code, headers_seen, body


async def metrics(api: Api) -> list[str]:
    async with api.client() as http:
        text = (await http.get("/metrics")).text
    wanted = (
        "controparte_http_requests",
        "controparte_heartbeats",
        "controparte_errors",
        "controparte_auth",
    )
    return [line for line in text.splitlines() if line.startswith(wanted)]


def seeded(make_api: MakeApi, fast: bool) -> tuple[Api, dict[str, str]]:
    made = make_api()
    api = Api(create_app(made.services, fast_heartbeat=fast), made.services)
    tokens = {
        "own": api.add("A-1", "alpha"),
        "other": api.add("B-2", "beta"),
        "admin": ADMIN,
    }
    api.services.registry.add("L-1", "live1", kind="live")
    tokens["own-live"] = api.services.access.issue_token("L-1")
    return api, tokens


async def test_both_shells_answer_every_case_alike(make_api: MakeApi) -> None:
    fast, fast_tokens = seeded(make_api, True)
    route, route_tokens = seeded(make_api, False)
    for case in CASES:
        by_fast = await answer(fast, case, fast_tokens)
        by_route = await answer(route, case, route_tokens)
        assert by_fast == by_route, case.name
        assert by_fast[0] == case.status, (case.name, by_fast)
        if case.status != 200:
            shape = json.loads(by_fast[2])
            assert list(shape) == ["error", "detail"], case.name
            assert isinstance(shape["detail"], str), case.name
    assert await metrics(fast) == await metrics(route)
    counted = 'method="POST",route="/v1/installations/{code}/heartbeat",status="200"} 8'
    assert "controparte_http_requests_total{" + counted in await metrics(fast)
