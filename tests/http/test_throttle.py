"""The failed-authentication throttle behind a shared address (a NAT), in process on
each engine: one misconfigured client blocks only the installation it claims to be,
never another installation nor an admin behind the same address; guessing across
claims meets the address's higher ceiling; success forgets its own claim's failures;
a block in the store reaches another process's check; `clear` lifts it. And the logs of
every failed DynDNS2 login shape hold no username or password as presented."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest

from controparte.errors import RateLimitedError
from controparte.service.throttle import ADMIN, FailureThrottle, Limits
from tests.http.conftest import ADMIN as ADMIN_TOKEN
from tests.http.conftest import BEAT, PEER, ZONE, Api

pytestmark = pytest.mark.anyio

NAT = "203.0.113.9"


async def heartbeat(api: Api, code: str, token: str, peer: str = NAT) -> int:
    async with api.bearer(token, peer) as http:
        response = await http.post(BEAT.format(code), json={"port": 4443})
    return response.status_code


async def admin_list(api: Api, token: str, peer: str = NAT) -> int:
    async with api.bearer(token, peer) as http:
        return (await http.get("/v1/installations")).status_code


@pytest.fixture
def tokens(api: Api) -> dict[str, str]:
    return {code: api.add(code, code.lower()) for code in ("A-1", "B-2", "C-3", "D-4", "E-5")}


async def test_one_bad_router_locks_out_only_itself(api: Api, tokens: dict[str, str]) -> None:
    answers = [await heartbeat(api, "A-1", "cpt_stale") for _ in range(7)]
    assert answers == [401] * 5 + [429] * 2
    assert await heartbeat(api, "A-1", tokens["A-1"]) == 429  # even with the right token
    assert await heartbeat(api, "B-2", tokens["B-2"]) == 200  # another one behind the NAT
    assert await admin_list(api, ADMIN_TOKEN) == 200  # and the admin
    assert await heartbeat(api, "A-1", tokens["A-1"], peer=PEER) == 200  # elsewhere
    async with api.bearer(tokens["A-1"], NAT) as http:
        refused = await http.post(BEAT.format("A-1"), json={"port": 4443})
    assert "as 'a-1'" in refused.json()["detail"]


async def test_guessing_across_claims_meets_the_address_ceiling(
    api: Api, tokens: dict[str, str]
) -> None:
    for code in ("A-1", "B-2", "C-3", "D-4"):  # 4 claims x 5 = 20: the address's ceiling
        for _ in range(5):
            assert await heartbeat(api, code, "cpt_guess") == 401
    assert await heartbeat(api, "E-5", tokens["E-5"]) == 429
    assert await admin_list(api, ADMIN_TOKEN) == 429
    assert await heartbeat(api, "E-5", tokens["E-5"], peer=PEER) == 200


async def test_admin_failures_are_a_claim_of_their_own(api: Api, tokens: dict[str, str]) -> None:
    assert [await admin_list(api, "cpt_not_admin") for _ in range(6)] == [401] * 5 + [429]
    assert await admin_list(api, ADMIN_TOKEN) == 429
    assert await heartbeat(api, "A-1", tokens["A-1"]) == 200
    blocked = {(e.address, e.claim) for e in api.services.throttle.entries() if e.blocked_until}
    assert blocked == {(NAT, ADMIN)}


async def test_success_forgets_its_own_claims_failures(api: Api, tokens: dict[str, str]) -> None:
    for _ in range(3):
        for _ in range(4):
            assert await heartbeat(api, "A-1", "cpt_typo") == 401
        assert await heartbeat(api, "A-1", tokens["A-1"]) == 200  # 4 failures forgotten
    assert await heartbeat(api, "A-1", tokens["A-1"]) == 200


async def test_a_block_reaches_other_processes_and_clear_lifts_it(
    api: Api, tokens: dict[str, str]
) -> None:
    other = FailureThrottle(api.services.store, Limits(), refresh=0.0)  # another process
    try:
        for _ in range(5):
            await heartbeat(api, "A-1", "cpt_stale")
        deadline = time.monotonic() + 5
        while not blocked_in(other, "a-1"):
            assert time.monotonic() < deadline, "the block never reached the other process"
            await asyncio.sleep(0.02)
        assert not blocked_in(other, "b-2")
        assert other.clear(NAT) == 2  # the claim and the address
        deadline = time.monotonic() + 5
        while await heartbeat(api, "A-1", tokens["A-1"]) == 429:
            assert time.monotonic() < deadline, "the clear never reached the API's process"
            await asyncio.sleep(0.1)
    finally:
        other.close()


def blocked_in(throttle: FailureThrottle, claim: str) -> bool:
    try:
        throttle.check(NAT, claim)
    except RateLimitedError:
        return True
    return False


# -- no presented secret in the logs ----------------------------------------------------

ALPHA = "alpha." + ZONE.rstrip(".")


async def test_failed_dyndns2_logins_log_no_presented_name_or_password(
    api: Api, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    alpha = api.add("ALPHA-1", "alpha")
    beta = api.add("BETA-2", "beta")
    other = "cpt_" + "q" * 40
    shapes = [
        (alpha, "ALPHA-1"),  # the fields swapped
        (alpha, ALPHA),  # swapped, with the host name
        (alpha, alpha),  # the token in both
        (alpha, ""),  # the token as the username, no password
        ("alpha", beta),  # another installation's token
        ("ALPHA-1", other),  # a wrong token
        ("nobody-secret-name", alpha),  # no such installation
        ("nobody.secret." + ZONE.rstrip("."), other),
        (f"{alpha}:{beta}", other),  # a colon in the username
    ]
    for number, (username, password) in enumerate(shapes):
        async with api.client(f"192.0.2.{number + 10}") as http:  # one each: none blocked
            http.headers["user-agent"] = "ddclient/3.10.0"
            response = await http.get(
                "/nic/update", params={"hostname": ALPHA}, auth=(username, password)
            )
        assert response.text == "badauth\n", (username, response.text)
    presented = {alpha, beta, other, "nobody-secret-name", "nobody.secret"}
    leaked = [p for p in presented if p in caplog.text]
    assert leaked == []
    failures = [r.getMessage() for r in caplog.records if "authentication failed" in r.getMessage()]
    assert len(failures) == len(shapes)
    assert all(" as alpha-1: " in f or " as (unknown): " in f for f in failures), failures
    claims = {e.claim for e in api.services.throttle.entries()}
    assert claims <= {"", "alpha-1", "(unknown)"}  # nor is any kept in the store
