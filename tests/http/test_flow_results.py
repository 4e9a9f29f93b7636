"""Flow results over the v1 API (in process, real services, each engine): a doctor
run's report (`POST /v1/installations/{code}/flow-results`: only plans the reporter is
an end of, linked pairs and the plan's flows on its ports now, bounded), the service's
own probes and the relay recorded as results, and `GET /v1/flow-results` (who may read,
what each flow is shown as)."""

from __future__ import annotations

import socket
from typing import Any

import pytest

from controparte.model.flowresult import MAX_PLANS
from tests.http.conftest import Api

pytestmark = pytest.mark.anyio

REPORT = "/v1/installations/{}/flow-results"
READ = "/v1/flow-results"
OUT = "outbound:AZ-1->ST-2"
BACK = "return:ST-2->AZ-1"


def closed_port() -> int:
    """A loopback port where nothing listens (a connection is refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def seed(api: Api, port: int = 5443) -> dict[str, str]:
    """AZ-1 calls ST-2 (einvoice, realtime); PA-3 calls AZ-1 (sprix); OT-4 is linked to
    nobody. ST-2 listens on loopback at `port`."""
    tokens = {
        "AZ-1": api.add("AZ-1", "azienda", ipv4="203.0.113.10", port=4443),
        "ST-2": api.add("ST-2", "studio", ipv4="127.0.0.1", port=port),
        "PA-3": api.add("PA-3", "paghe", ipv4="192.0.2.30", port=9443),
        "OT-4": api.add("OT-4", "other", ipv4="198.51.100.40", port=4443),
    }
    api.services.links.add("AZ-1", "ST-2", ["einvoice", "realtime"])
    api.services.links.add("PA-3", "AZ-1", ["sprix"])
    return tokens


def plan_of(
    flows: list[dict[str, str]], caller: str = "AZ-1", callee: str = "ST-2"
) -> dict[str, object]:
    return {"caller": caller, "callee": callee, "feature": "einvoice", "flows": flows}


def flow(fid: str, ports: str, status: str, reason: str = "seen") -> dict[str, str]:
    return {"id": fid, "ports": ports, "status": status, "reason": reason}


async def shown(api: Api, token: str, feature: str = "einvoice") -> dict[str, Any]:
    """Each flow of AZ-1 -> ST-2 as `GET /v1/flow-results` shows it, by id."""
    async with api.bearer(token) as http:
        answer = await http.get(
            READ, params={"caller": "azienda", "callee": "ST-2", "feature": feature}
        )
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert (body["caller"], body["callee"], body["feature"]) == ("AZ-1", "ST-2", feature)
    return {f["id"]: f for f in body["flows"]}


async def test_a_doctor_report_colours_the_flows_it_tested(api: Api) -> None:
    tokens = seed(api)
    async with api.bearer(tokens["AZ-1"]) as http:
        first = await http.post(
            REPORT.format("AZ-1"),
            json={
                "plans": [
                    plan_of([flow(OUT, "5443", "failed", "refused"), flow(BACK, "4443", "warning")])
                ]
            },
        )
    assert first.status_code == 200, first.text
    assert first.json() == {"recorded": 2, "skipped": []}
    flows = await shown(api, tokens["ST-2"])
    assert [(f["outcome"], f["result"]["source"]) for f in flows.values()] == [
        ("failed", "doctor"),
        ("passed", "doctor"),
    ]
    assert flows[OUT]["result"]["detail"] == "doctor on AZ-1: refused"
    assert flows[BACK]["result"]["detail"] == "doctor on AZ-1: warning: seen"
    assert flows[OUT]["ports"] == "5443"
    # ST-2's doctor could not test the outbound flow: that does not hide AZ-1's failure
    async with api.bearer(tokens["ST-2"]) as http:
        later = await http.post(
            REPORT.format("ST-2"), json={"plans": [plan_of([flow(OUT, "5443", "untested")])]}
        )
    assert later.json()["recorded"] == 1
    after = await shown(api, tokens["AZ-1"])
    assert after[OUT]["outcome"] == "failed"
    assert (await shown(api, tokens["AZ-1"], "realtime"))[OUT]["outcome"] == "unknown"
    async with api.admin() as http:
        body = (
            await http.get(READ, params={"caller": "AZ-1", "callee": "ST-2", "feature": "einvoice"})
        ).json()
    assert [(r["flow"], r["outcome"], r["reporter"]) for r in body["history"]] == [
        (OUT, "untested", "ST-2"),
        (OUT, "failed", "AZ-1"),  # one report, one time: in the order sent
        (BACK, "passed", "AZ-1"),
    ]


async def test_what_a_report_may_not_record_is_skipped_or_refused(api: Api) -> None:
    tokens = seed(api)
    plans = [
        plan_of([flow("outbound:AZ-1->XX-9", "5443", "passed"), flow(OUT, "4443", "passed")]),
        plan_of([flow(OUT, "5443", "passed")], callee="OT-4"),  # not linked
    ]
    async with api.bearer(tokens["AZ-1"]) as http:
        partly = await http.post(REPORT.format("AZ-1"), json={"plans": plans})
        foreign = await http.post(
            REPORT.format("AZ-1"),
            json={"plans": [plan_of([flow(OUT, "5443", "passed")], caller="PA-3")]},
        )
        other = await http.post(REPORT.format("ST-2"), json={"plans": []})
        huge = await http.post(
            REPORT.format("AZ-1"), json={"plans": [plan_of([])] * (MAX_PLANS + 1)}
        )
        bad = await http.post(
            REPORT.format("AZ-1"), json={"plans": [plan_of([flow(OUT, "5443", "great")])]}
        )
    assert partly.status_code == 200, partly.text
    assert partly.json() == {
        "recorded": 0,
        "skipped": [
            {
                "caller": "AZ-1",
                "callee": "ST-2",
                "feature": "einvoice",
                "flow": "outbound:AZ-1->XX-9",
                "why": "not a flow of the plan",
            },
            {
                "caller": "AZ-1",
                "callee": "ST-2",
                "feature": "einvoice",
                "flow": OUT,
                "why": "tested on ports 4443; the plan's are 5443 now",
            },
            {
                "caller": "AZ-1",
                "callee": "OT-4",
                "feature": "einvoice",
                "flow": None,
                "why": "AZ-1 is not linked to OT-4 for einvoice",
            },
        ],
    }
    assert foreign.status_code == 403
    assert "caller or the callee" in foreign.json()["detail"]
    assert other.status_code == 401  # another installation's token
    assert (huge.status_code, bad.status_code) == (422, 422)
    assert {f["outcome"] for f in (await shown(api, tokens["AZ-1"])).values()} == {"unknown"}


@pytest.mark.parametrize(
    ("who", "callee", "status"),
    [
        (None, "ST-2", 401),
        ("OT-4", "ST-2", 401),  # the token of neither end
        ("PA-3", "ST-2", 401),
        ("AZ-1", "OT-4", 403),  # an end, but the two are not linked
        ("AZ-1", "ST-2", 200),
    ],
)
async def test_only_an_admin_or_a_linked_end_reads_the_results(
    api: Api, who: str | None, callee: str, status: int
) -> None:
    tokens = seed(api)
    query = {"caller": "AZ-1", "callee": callee, "feature": "einvoice"}
    async with api.client() if who is None else api.bearer(tokens[who]) as http:
        answer = await http.get(READ, params=query)
    assert answer.status_code == status, answer.text


async def test_a_counterpart_probe_is_the_result_of_the_flows_towards_it(api: Api) -> None:
    tokens = seed(api, closed_port())
    async with api.bearer(tokens["AZ-1"]) as http:
        probed = await http.post(
            "/v1/installations/AZ-1/probe-counterpart", json={"counterpart": "ST-2"}
        )
    assert probed.status_code == 200, probed.text
    for feature in ("einvoice", "realtime"):
        flows = await shown(api, tokens["AZ-1"], feature)
        towards = flows.pop(OUT)
        assert (towards["outcome"], towards["result"]["source"]) == ("failed", "counterpart-probe")
        assert towards["result"]["reporter"] == "AZ-1"
        assert "not tested" in towards["result"]["detail"]
        outcomes = {k: f["outcome"] for k, f in flows.items()}
        assert outcomes.pop("return:AZ-1->ST-2", "failed") == "failed"  # realtime's
        assert set(outcomes.values()) == {"unknown"}  # the flows towards AZ-1


async def test_a_relayed_dial_is_the_result_of_the_flows_it_made(api: Api) -> None:
    tokens = seed(api)
    async with api.bearer(tokens["ST-2"]) as agent:
        await agent.get("/v1/installations/ST-2/relay-requests")  # its agent polls
        async with api.bearer(tokens["AZ-1"]) as http:
            asked = await http.post("/v1/installations/AZ-1/relay", json={"counterpart": "ST-2"})
        assert asked.status_code == 202, asked.text
        claimed = await agent.get("/v1/installations/ST-2/relay-requests")
        [task] = claimed.json()["requests"]
        done = await agent.post(
            f"/v1/installations/ST-2/relay-requests/{task['id']}",
            json={"result": "open", "elapsed_ms": 12},
        )
    assert done.status_code == 204
    flows = await shown(api, tokens["AZ-1"], "realtime")
    assert {k: f["outcome"] for k, f in flows.items()} == {
        OUT: "unknown",
        "outbound:ST-2->AZ-1": "passed",
        "return:ST-2->AZ-1": "passed",
        "return:AZ-1->ST-2": "unknown",
    }
    assert flows[BACK]["result"]["source"] == "relay"
    assert flows[BACK]["result"]["reporter"] == "ST-2"
