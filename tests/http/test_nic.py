"""DynDNS2 (`GET /nic/update`) in process: every result code, the order of the lines,
dual stack, the source address and trusted proxies, who may update what, throttling,
logging, the history and the metrics."""

from __future__ import annotations

import logging

import httpx
import pytest

from controparte.errors import ConflictError, StorageError, ValidationError
from tests.http.conftest import PEER, PROXY, ZONE, Api, MakeApi

pytestmark = pytest.mark.anyio

ALPHA = "alpha." + ZONE.rstrip(".")
BETA = "beta." + ZONE.rstrip(".")
AGENT = "ddclient/3.10.0"


async def nic(
    api: Api,
    params: dict[str, str] | None = None,
    *,
    auth: tuple[str, str] | None = None,
    peer: str = PEER,
    method: str = "GET",
    headers: dict[str, str] | None = None,
    agent: str | None = AGENT,
) -> httpx.Response:
    async with api.client(peer) as http:
        if agent is None:
            del http.headers["user-agent"]
        else:
            http.headers["user-agent"] = agent
        return await http.request(
            method, "/nic/update", params=params, auth=auth, headers=headers or {}
        )


def lines(response: httpx.Response) -> list[str]:
    assert response.headers["content-type"].startswith("text/plain")
    assert response.text.endswith("\n")
    return response.text.splitlines()


@pytest.fixture
def alpha(api: Api) -> tuple[str, str]:
    """The credentials of ALPHA-1 (alpha, 192.0.2.1); BETA-2 (beta, 192.0.2.2) exists."""
    token = api.add("ALPHA-1", "alpha", ipv4="192.0.2.1", port=4443)
    api.add("BETA-2", "beta", ipv4="192.0.2.2")
    return ("ALPHA-1", token)


# -- good and nochg -------------------------------------------------------------------------


async def test_good_then_nochg(api: Api, alpha: tuple[str, str]) -> None:
    serial = api.services.store.serial()
    first = await nic(api, {"hostname": ALPHA, "myip": "198.51.100.23"}, auth=alpha)
    assert (first.status_code, lines(first)) == (200, ["good 198.51.100.23"])
    assert api.services.registry.get("ALPHA-1").ipv4 == "198.51.100.23"
    changed = api.services.store.serial()
    assert changed != serial
    for _ in range(10):  # repeated nochg is not abuse
        again = await nic(api, {"hostname": ALPHA, "myip": "198.51.100.23"}, auth=alpha)
        assert (again.status_code, lines(again)) == (200, ["nochg 198.51.100.23"])
    assert api.services.store.serial() == changed  # nochg writes nothing
    history = api.services.store.history("ALPHA-1")
    updates = [h for h in history if h["action"] == "update"]
    assert len(updates) == 1
    assert (updates[0]["actor"], updates[0]["via"], updates[0]["source"]) == (
        "ALPHA-1",
        "dyndns2",
        PEER,
    )
    new = updates[0]["new"]
    assert isinstance(new, dict)
    assert new["ip"] == "198.51.100.23"


async def test_without_myip_the_source_address_is_used(api: Api, alpha: tuple[str, str]) -> None:
    response = await nic(api, {"hostname": ALPHA}, auth=alpha)
    assert lines(response) == [f"good {PEER}"]
    ipv6 = await nic(api, {"hostname": ALPHA, "myip": ""}, auth=alpha, peer="2001:db8::23")
    assert lines(ipv6) == ["good 2001:db8::23"]
    inst = api.services.registry.get("ALPHA-1")
    assert (inst.ipv4, inst.ipv6) == (PEER, "2001:db8::23")


async def test_source_address_from_a_trusted_proxy(api: Api, alpha: tuple[str, str]) -> None:
    spoofed = await nic(
        api, {"hostname": ALPHA}, auth=alpha, headers={"x-forwarded-for": "203.0.113.9"}
    )
    assert lines(spoofed) == [f"good {PEER}"]  # not from a trusted proxy: ignored
    proxied = await nic(
        api,
        {"hostname": ALPHA},
        auth=alpha,
        peer=PROXY,
        headers={"x-forwarded-for": "203.0.113.9, 10.4.4.4"},
    )
    assert lines(proxied) == ["good 203.0.113.9"]
    assert api.services.store.history("ALPHA-1")[-1]["source"] == "203.0.113.9"


@pytest.mark.parametrize(
    ("params", "answer", "ipv4", "ipv6"),
    [
        (
            {"myip": "198.51.100.23,2001:db8::23"},
            "good 198.51.100.23,2001:db8::23",
            "198.51.100.23",
            "2001:db8::23",
        ),
        (
            {"myipv4": "198.51.100.23", "myipv6": "2001:db8::23"},
            "good 198.51.100.23,2001:db8::23",
            "198.51.100.23",
            "2001:db8::23",
        ),
        ({"myipv6": "2001:db8::23"}, "good 2001:db8::23", "192.0.2.1", "2001:db8::23"),
        (
            {"myip": "2001:db8::23", "myipv4": "192.0.2.1"},
            "good 192.0.2.1,2001:db8::23",
            "192.0.2.1",
            "2001:db8::23",
        ),
        ({"myip": "192.0.2.1"}, "nochg 192.0.2.1", "192.0.2.1", None),
    ],
)
async def test_dual_stack(
    api: Api,
    alpha: tuple[str, str],
    params: dict[str, str],
    answer: str,
    ipv4: str,
    ipv6: str | None,
) -> None:
    response = await nic(api, {"hostname": ALPHA, **params}, auth=alpha)
    assert lines(response) == [answer]
    inst = api.services.registry.get("ALPHA-1")
    assert (inst.ipv4, inst.ipv6, inst.port) == (ipv4, ipv6, 4443)


# -- credentials ------------------------------------------------------------------------------


@pytest.mark.parametrize("username", ["ALPHA-1", "alpha-1", "alpha", "ALPHA", ALPHA, ALPHA + "."])
async def test_username_is_code_label_or_fqdn(
    api: Api, alpha: tuple[str, str], username: str
) -> None:
    response = await nic(
        api, {"hostname": ALPHA, "myip": "198.51.100.4"}, auth=(username, alpha[1])
    )
    assert lines(response) == ["good 198.51.100.4"]


async def test_badauth(api: Api, alpha: tuple[str, str], caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="controparte")
    beta_token = api.services.access.issue_token("BETA-2")
    cases: list[tuple[str, str] | None] = [
        ("ALPHA-1", "cpt_wrong"),
        ("NOBODY", alpha[1]),
        ("BETA-2", alpha[1]),  # alpha's token is not beta's
        ("ALPHA-1", beta_token),  # nor the reverse
        None,  # no credentials at all
    ]
    for auth in cases:
        response = await nic(api, {"hostname": ALPHA, "myip": "198.51.100.4"}, auth=auth)
        assert response.status_code == 401, auth
        assert lines(response) == ["badauth"]
        assert response.headers["www-authenticate"].startswith("Basic")
    assert api.services.registry.get("ALPHA-1").ipv4 == "192.0.2.1"
    failures = [r.getMessage() for r in caplog.records if "authentication failed" in r.getMessage()]
    assert len(failures) == 4  # each wrong credential is logged; a missing one is not a failure
    assert all("via dyndns2 from 198.51.100.7" in f for f in failures)
    for secret in ("cpt_wrong", alpha[1], beta_token):
        assert secret not in caplog.text


async def test_one_account_cannot_update_another_installation(
    api: Api, alpha: tuple[str, str]
) -> None:
    response = await nic(api, {"hostname": BETA, "myip": "198.51.100.66"}, auth=alpha)
    assert (response.status_code, lines(response)) == (200, ["nohost"])
    assert api.services.registry.get("BETA-2").ipv4 == "192.0.2.2"
    assert api.services.registry.get("ALPHA-1").ipv4 == "192.0.2.1"


async def test_repeated_badauth_is_throttled_into_abuse(api: Api, alpha: tuple[str, str]) -> None:
    answers = []
    for _ in range(6):
        response = await nic(api, {"hostname": ALPHA}, auth=("ALPHA-1", "cpt_wrong"))
        answers.append((response.status_code, response.text))
    assert answers == [(401, "badauth\n")] * 5 + [(200, "abuse\n")]
    right = await nic(api, {"hostname": ALPHA, "myip": "198.51.100.5"}, auth=alpha)
    assert lines(right) == ["abuse"]  # blocked, even with the right password
    assert api.services.registry.get("ALPHA-1").ipv4 == "192.0.2.1"
    other = await nic(
        api, {"hostname": ALPHA, "myip": "198.51.100.5"}, auth=alpha, peer="198.51.100.99"
    )
    assert lines(other) == ["good 198.51.100.5"]


# -- hostnames --------------------------------------------------------------------------------


async def test_one_line_per_hostname_in_order(api: Api, alpha: tuple[str, str]) -> None:
    hostnames = [ALPHA, BETA, "alpha", "nope." + ZONE, "alpha.example.net", ALPHA.upper() + ".", ""]
    response = await nic(
        api, {"hostname": ",".join(hostnames), "myip": "198.51.100.23"}, auth=alpha
    )
    assert response.status_code == 200
    assert lines(response) == [
        "good 198.51.100.23",
        "nohost",  # another account's
        "notfqdn",
        "nohost",  # in the zone, but nobody's
        "nohost",  # outside the zone
        "nochg 198.51.100.23",  # the same name again: already done
        "notfqdn",
    ]


async def test_notfqdn_once_without_hostname(api: Api, alpha: tuple[str, str]) -> None:
    for params in ({}, {"hostname": ""}, {"hostname": "  "}):
        response = await nic(api, {**params, "myip": "198.51.100.3"}, auth=alpha)
        assert (response.status_code, lines(response)) == (200, ["notfqdn"])
    assert api.services.registry.get("ALPHA-1").ipv4 == "192.0.2.1"


async def test_numhost_over_twenty(api: Api, alpha: tuple[str, str]) -> None:
    twenty = await nic(
        api, {"hostname": ",".join([ALPHA] * 20), "myip": "198.51.100.3"}, auth=alpha
    )
    assert lines(twenty) == ["good 198.51.100.3"] + ["nochg 198.51.100.3"] * 19
    response = await nic(
        api, {"hostname": ",".join([ALPHA] * 21), "myip": "198.51.100.4"}, auth=alpha
    )
    assert (response.status_code, lines(response)) == (200, ["numhost"])
    assert api.services.registry.get("ALPHA-1").ipv4 == "198.51.100.3"


# -- agent and method -------------------------------------------------------------------------


async def test_badagent(api: Api, alpha: tuple[str, str]) -> None:
    params = {"hostname": ALPHA, "myip": "198.51.100.3"}
    no_agent = await nic(api, params, auth=alpha, agent=None)
    blank_agent = await nic(api, params, auth=alpha, agent=" ")
    post = await nic(api, params, auth=alpha, method="POST")
    put = await nic(api, params, auth=alpha, method="PUT")
    for response in (no_agent, blank_agent, post, put):
        assert (response.status_code, lines(response)) == (200, ["badagent"])
    assert api.services.registry.get("ALPHA-1").ipv4 == "192.0.2.1"


# -- bad addresses ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("params", "line"),
    [
        ({"myip": "not-an-ip"}, "badip not-an-ip"),
        ({"myip": "198.51.100.300"}, "badip 198.51.100.300"),
        ({"myip": "198.51.100.3,198.51.100.4"}, "badip 198.51.100.4"),
        ({"myipv4": "2001:db8::1"}, "badip 2001:db8::1"),
        ({"myipv6": "198.51.100.3"}, "badip 198.51.100.3"),
        ({"myip": "224.0.0.1"}, "badip 224.0.0.1"),
        ({"myip": "1.2.3.4 5"}, "badip 1.2.3.4%205"),
    ],
)
async def test_malformed_addresses_get_badip(
    api: Api, alpha: tuple[str, str], params: dict[str, str], line: str
) -> None:
    response = await nic(api, {"hostname": f"{ALPHA},{BETA}", **params}, auth=alpha)
    assert (response.status_code, lines(response)) == (400, [line])
    assert api.services.registry.get("ALPHA-1").ipv4 == "192.0.2.1"


async def test_non_global_addresses_need_the_setting(make_api: MakeApi) -> None:
    api = make_api(CONTROPARTE_ALLOW_NON_GLOBAL="0")
    token = api.add("ALPHA-1", "alpha", ipv4="8.8.4.4")
    private = await nic(api, {"hostname": ALPHA, "myip": "10.1.1.1"}, auth=("ALPHA-1", token))
    assert (private.status_code, lines(private)) == (400, ["badip 10.1.1.1"])
    source = await nic(api, {"hostname": ALPHA}, auth=("ALPHA-1", token), peer="192.168.1.5")
    assert (source.status_code, lines(source)) == (400, ["badip 192.168.1.5"])
    good = await nic(api, {"hostname": ALPHA, "myip": "8.8.8.8"}, auth=("ALPHA-1", token))
    assert lines(good) == ["good 8.8.8.8"]


async def test_a_proxy_forwarding_garbage_gets_badip(api: Api, alpha: tuple[str, str]) -> None:
    response = await nic(
        api, {"hostname": ALPHA}, auth=alpha, peer=PROXY, headers={"x-forwarded-for": "junk"}
    )
    assert (response.status_code, lines(response)) == (400, ["badip junk"])


# -- server-side failures -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("error", "line", "kind"),
    [
        (ConflictError("label: clash"), "dnserr", "ConflictError"),
        (ValidationError("label", "reserved"), "dnserr", "ValidationError"),
        (StorageError("disk full"), "911", "StorageError"),
        (RuntimeError("bug"), "911", "internal"),
    ],
)
async def test_write_failures_answer_dnserr_or_911(
    api: Api,
    alpha: tuple[str, str],
    monkeypatch: pytest.MonkeyPatch,
    error: Exception,
    line: str,
    kind: str,
) -> None:
    def fail(*_args: object, **_kwargs: object) -> None:
        raise error

    monkeypatch.setattr(api.services.registry, "write", fail)  # the one write step
    response = await nic(api, {"hostname": f"{ALPHA},{BETA}", "myip": "198.51.100.3"}, auth=alpha)
    assert (response.status_code, lines(response)) == (200, [line, "nohost"])
    assert api.services.registry.get("ALPHA-1").ipv4 == "192.0.2.1"
    async with api.client() as http:
        metrics = (await http.get("/metrics")).text
    assert f'controparte_errors_total{{kind="{kind}"}} 1' in metrics.splitlines()


# -- metrics --------------------------------------------------------------------------------------


async def test_metrics_count_results_and_updates(api: Api, alpha: tuple[str, str]) -> None:
    await nic(api, {"hostname": ALPHA, "myip": "198.51.100.3"}, auth=alpha)
    await nic(api, {"hostname": f"{ALPHA},{BETA}", "myip": "198.51.100.3"}, auth=alpha)
    await nic(api, {"hostname": ALPHA}, auth=("ALPHA-1", "cpt_wrong"))
    async with api.client() as http:
        text = (await http.get("/metrics")).text
    for line in (
        'controparte_dyndns2_results_total{code="good"} 1',
        'controparte_dyndns2_results_total{code="nochg"} 1',
        'controparte_dyndns2_results_total{code="nohost"} 1',
        'controparte_dyndns2_results_total{code="badauth"} 1',
        'controparte_updates_total{way="dyndns2"} 1',
        'controparte_auth_failures_total{way="dyndns2"} 1',
        'controparte_http_requests_total{method="GET",route="/nic/update",status="401"} 1',
        'controparte_http_requests_total{method="GET",route="/nic/update",status="200"} 2',
    ):
        assert line in text.splitlines(), line
