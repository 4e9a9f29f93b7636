"""An installation's counterparts over the v1 API (in process, real services, real
sockets on loopback): `GET /v1/installations/{code}/counterparts` (who may ask, what
each counterpart shows) and `POST /v1/installations/{code}/probe-counterpart` (linked
only, registered addresses only, the limits per requester and per counterpart, what
the dial reports say and where they came from)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import timedelta

import pytest

from controparte.model import InstallationChange
from controparte.model.installation import utcnow
from controparte.service.probe import REQUESTER_LIMIT
from controparte.store import Origin
from tests.http.conftest import Api, MakeApi

pytestmark = pytest.mark.anyio

PROBE = "/v1/installations/{}/probe-counterpart"


def closed_port() -> int:
    """A loopback port where nothing listens (a connection is refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@contextlib.asynccontextmanager
async def accepting_on(host: str, port: int) -> AsyncIterator[int]:
    """A listener on `host` and `port` (0: any) that accepts and says nothing; its
    port."""

    async def handle(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.close()

    server = await asyncio.start_server(handle, host, port)
    try:
        yield int(server.sockets[0].getsockname()[1])
    finally:
        server.close()
        await server.wait_closed()


def seed(api: Api, port: int) -> dict[str, str]:
    """AZ-1 calls ST-2 (two features); PA-3 calls AZ-1; OT-4 is linked to nobody. ST-2
    is on loopback at `port`. Their tokens by code."""
    tokens = {
        "AZ-1": api.add("AZ-1", "azienda", ipv4="203.0.113.10", port=4443),
        "ST-2": api.add("ST-2", "studio", ipv4="127.0.0.1", port=port),
        "PA-3": api.add("PA-3", "paghe", ipv4="192.0.2.30", ipv6="2001:db8::30", port=9443),
        "OT-4": api.add("OT-4", "other", ipv4="198.51.100.40", port=4443),
    }
    links = api.services.links
    links.add("AZ-1", "ST-2", ["einvoice", "realtime"])
    links.add("PA-3", "AZ-1", ["sprix"])
    return tokens


# -- the counterparts ---------------------------------------------------------------------


async def test_counterparts_are_the_linked_installations_both_ways(api: Api) -> None:
    tokens = seed(api, 4443)
    seen = utcnow() - timedelta(seconds=api.settings.stale_after + 60)
    with api.services.store.transaction(Origin()) as tx:
        old = tx.get("PA-3")
        assert old is not None
        tx.update(old, replace(old, last_seen=seen, private_port=8000, agent_version="1.2"))
    async with api.bearer(tokens["AZ-1"]) as http:
        own = await http.get("/v1/installations/AZ-1/counterparts")
    async with api.admin() as http:
        by_label = await http.get("/v1/installations/paghe/counterparts")
        lonely = await http.get("/v1/installations/OT-4/counterparts")
    assert own.status_code == 200, own.text
    body = own.json()
    assert body["code"] == "AZ-1"
    assert [c["code"] for c in body["counterparts"]] == ["PA-3", "ST-2"]
    paghe, studio = body["counterparts"]
    assert paghe == {
        "code": "PA-3",
        "label": "paghe",
        "fqdn": "paghe.bp.controparte.test.",
        "kind": "onprem",
        "ip": "192.0.2.30",
        "ipv6": "2001:db8::30",
        "port": 9443,
        "private_port": 8000,
        "gateway": None,
        "last_seen": seen.isoformat().replace("+00:00", "Z"),
        "stale": True,
        "stale_after": api.settings.stale_after,
        "updated": paghe["updated"],
        "agent_version": "1.2",
        "links": [{"feature": "sprix", "a": "PA-3", "b": "AZ-1"}],
    }
    assert (studio["stale"], studio["last_seen"], studio["private_port"]) == (False, None, None)
    assert studio["links"] == [
        {"feature": "einvoice", "a": "AZ-1", "b": "ST-2"},
        {"feature": "realtime", "a": "AZ-1", "b": "ST-2"},
    ]
    assert by_label.status_code == 200
    assert by_label.json()["code"] == "PA-3"
    assert [c["code"] for c in by_label.json()["counterparts"]] == ["AZ-1"]
    assert lonely.json() == {"code": "OT-4", "counterparts": []}


@pytest.mark.parametrize(
    ("who", "path", "status"),
    [
        (None, "AZ-1", 401),
        ("ST-2", "AZ-1", 401),  # another installation's token
        ("AZ-1", "azienda", 404),  # an installation's token names its code
        ("admin", "NOPE-9", 404),
    ],
)
async def test_counterparts_only_for_admin_or_the_installation(
    api: Api, who: str | None, path: str, status: int
) -> None:
    tokens = seed(api, 4443)
    if who is None:
        client = api.client()
    elif who == "admin":
        client = api.admin()
    else:
        client = api.bearer(tokens[who])
    async with client as http:
        response = await http.get(f"/v1/installations/{path}/counterparts")
    assert response.status_code == status, response.text


# -- the probe of a counterpart ------------------------------------------------------------


async def test_probe_dials_each_registered_address_of_a_linked_counterpart(api: Api) -> None:
    async with accepting_on("127.0.0.1", 0) as port, accepting_on("::1", port):
        tokens = seed(api, port)
        api.services.registry.update("ST-2", InstallationChange(ipv6="::1"))
        async with api.bearer(tokens["AZ-1"]) as http:
            response = await http.post(PROBE.format("AZ-1"), json={"counterpart": "studio"})
    assert response.status_code == 200, response.text
    reports = response.json()["reports"]
    assert [(r["result"], r["address"], r["port"], r["source"]) for r in reports] == [
        ("open", "127.0.0.1", port, "127.0.0.1"),
        ("open", "::1", port, "::1"),
    ]
    for report in reports:
        assert (report["nonce_verified"], report["agent_code"]) == (None, None)
        assert "connect only" in report["detail"]


async def test_a_closed_port_is_refused_and_the_source_is_the_configured_one(
    make_api: MakeApi,
) -> None:
    api = make_api(CONTROPARTE_PROBE_SOURCES="192.0.2.1, 2001:db8::53")
    port = closed_port()
    tokens = seed(api, port)
    async with api.bearer(tokens["AZ-1"]) as http:
        response = await http.post(PROBE.format("AZ-1"), json={"counterpart": "ST-2"})
    assert response.status_code == 200, response.text
    (report,) = response.json()["reports"]
    assert (report["result"], report["address"], report["port"]) == ("refused", "127.0.0.1", port)
    assert report["source"] == "192.0.2.1"
    assert "TCP reset" in report["detail"]


@pytest.mark.parametrize(
    ("asker", "body", "status", "detail"),
    [
        ("AZ-1", {"counterpart": "OT-4"}, 403, "'OT-4' is not linked to 'AZ-1'"),
        ("AZ-1", {"counterpart": "AZ-1"}, 403, "'AZ-1' is not linked to 'AZ-1'"),
        ("AZ-1", {"counterpart": "NOPE-9"}, 404, "NOPE-9"),
        ("PA-3", {"counterpart": "azienda"}, 403, "has no public address registered"),
        ("ST-2", {"counterpart": "PA-3"}, 403, "'PA-3' is not linked to 'ST-2'"),
        ("AZ-1", {"counterpart": "ST-2", "address": "192.0.2.9"}, 422, "address"),
        ("AZ-1", {"address": "192.0.2.9"}, 422, "counterpart"),
        ("admin", {"counterpart": "ST-2"}, 401, "bad credentials"),
    ],
)
async def test_probe_refusals(
    api: Api, asker: str, body: dict[str, str], status: int, detail: str
) -> None:
    tokens = seed(api, closed_port())
    api.services.registry.update("AZ-1", InstallationChange(ipv4=""))
    client = api.admin() if asker == "admin" else api.bearer(tokens[asker])
    code = "AZ-1" if asker == "admin" else asker
    async with client as http:
        response = await http.post(PROBE.format(code), json=body)
    assert response.status_code == status, response.text
    assert detail in response.json()["detail"]


async def test_a_counterpart_without_a_public_port_is_not_probed(api: Api) -> None:
    tokens = seed(api, closed_port())
    api.services.registry.update("ST-2", InstallationChange(port=""))
    async with api.bearer(tokens["AZ-1"]) as http:
        response = await http.post(PROBE.format("AZ-1"), json={"counterpart": "ST-2"})
    assert response.status_code == 403
    assert "has no public port registered" in response.json()["detail"]


async def test_one_probe_of_a_counterpart_per_interval_whoever_asks(api: Api) -> None:
    tokens = seed(api, closed_port())
    api.services.links.add("PA-3", "ST-2", ["einvoice"])
    async with api.bearer(tokens["AZ-1"]) as http:
        first = await http.post(PROBE.format("AZ-1"), json={"counterpart": "ST-2"})
        own = await http.post(PROBE.format("AZ-1"), json={"counterpart": "ST-2"})
    async with api.bearer(tokens["PA-3"]) as http:
        other = await http.post(PROBE.format("PA-3"), json={"counterpart": "ST-2"})
    assert first.status_code == 200, first.text
    for refused in (own, other):
        assert refused.status_code == 429, refused.text
        assert 1 <= int(refused.headers["Retry-After"]) <= 5
        assert "'ST-2' was probed as a counterpart less than 5 s ago" in refused.json()["detail"]


async def test_a_requester_may_ask_for_a_few_probes_a_minute(api: Api) -> None:
    token = api.add("AZ-1", "azienda", ipv4="203.0.113.10", port=4443)
    other = api.add("PA-3", "paghe", ipv4="192.0.2.30", port=4443)
    names = [f"ST-{n}" for n in range(REQUESTER_LIMIT + 1)]
    for name in names:
        api.add(name, name.lower(), ipv4="127.0.0.1", port=closed_port())
        api.services.links.add("AZ-1", name, ["einvoice"])
    api.services.links.add("PA-3", names[-1], ["einvoice"])
    async with api.bearer(token) as http:
        answers = [
            await http.post(PROBE.format("AZ-1"), json={"counterpart": name}) for name in names
        ]
    assert [a.status_code for a in answers] == [200] * REQUESTER_LIMIT + [429]
    assert 1 <= int(answers[-1].headers["Retry-After"]) <= 60
    assert (
        f"asked for {REQUESTER_LIMIT} counterpart probes in the last 60 s"
        in (answers[-1].json()["detail"])
    )
    # The refused request took nothing from the counterpart's own slot.
    async with api.bearer(other) as http:
        theirs = await http.post(PROBE.format("PA-3"), json={"counterpart": names[-1]})
    assert theirs.status_code == 200, theirs.text


async def test_openapi_describes_the_counterparts_and_their_probe(api: Api) -> None:
    async with api.client() as http:
        document = (await http.get("/openapi.json")).json()
    paths, schemas = document["paths"], document["components"]["schemas"]
    assert set(paths["/v1/installations/{code}/counterparts"]) == {"get"}
    probe = paths["/v1/installations/{code}/probe-counterpart"]
    assert set(probe) == {"post"}
    assert {"200", "403", "429"} <= set(probe["post"]["responses"])
    assert set(schemas["ProbeCounterpartIn"]["properties"]) == {"counterpart"}
    assert "source" in schemas["ProbeOut"]["properties"]
    assert {"private_port", "last_seen", "stale", "stale_after", "links"} <= set(
        schemas["CounterpartOut"]["properties"]
    )
