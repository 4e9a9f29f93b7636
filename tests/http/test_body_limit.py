"""The body size limit (`bodylimit.py`) and bodies JSON cannot read, in process: a body
above `http_max_body` is answered 413 before any route (a wrong credential is not even
looked at), by its Content-Length or as a chunked body arrives; within the limit a
chunked body reaches the route whole. JSON nested too deeply or with an integer too
long for Python is 400 `MalformedError` on both heartbeat shells and on FastAPI routes,
saying which. And the pure parts of the connection shell: the connection cap fits the
file descriptor limit; the idlest connection makes way."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from controparte.errors import (
    HeadersTooLargeError,
    RequestTimeoutError,
    TooLargeError,
    response_for,
)
from controparte.http.connection import connection_cap
from controparte.http.metrics import AUTH_FAILURES, ERRORS
from tests.http.conftest import BEAT, SHELLS, Api, MakeApi

pytestmark = pytest.mark.anyio

LIMIT = 1000


@pytest.fixture(params=SHELLS)
def heartbeat_shell(request: pytest.FixtureRequest) -> str:
    shell: str = request.param
    return shell


@pytest.fixture
def small(make_api: MakeApi) -> Api:
    return make_api(CONTROPARTE_HTTP_MAX_BODY=str(LIMIT))


async def chunks(*parts: bytes) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


@pytest.mark.parametrize("path", [BEAT.format("A-1"), "/v1/links", "/v1/installations"])
async def test_a_body_above_the_limit_is_413_before_authentication(small: Api, path: str) -> None:
    async with small.bearer("not-a-token") as http:
        response = await http.post(path, content=b" " * (LIMIT + 1))
    assert response.status_code == 413
    assert response.headers["connection"] == "close"
    assert response.json() == {
        "error": "TooLargeError",
        "detail": f"body: Content-Length {LIMIT + 1} is above the limit of {LIMIT} bytes",
    }
    metrics = small.app.metrics  # type: ignore[attr-defined]
    assert metrics.value(AUTH_FAILURES, way="api") == 0  # the token was never looked at
    assert metrics.value(ERRORS, kind="TooLargeError") == 1


async def test_a_chunked_body_above_the_limit_is_413(small: Api) -> None:
    async with small.bearer("not-a-token") as http:
        response = await http.post(
            BEAT.format("A-1"), content=chunks(b" " * 600, b" " * 600, b" " * 600)
        )
    assert response.status_code == 413
    assert response.json()["detail"] == f"body: more than the limit of {LIMIT} bytes"


async def test_a_chunked_body_within_the_limit_reaches_the_route_whole(small: Api) -> None:
    token = small.add("A-1", "alpha")
    async with small.bearer(token) as http:
        response = await http.post(
            BEAT.format("A-1"),
            content=chunks(b'{"port": ', b"4443}"),
            headers={"content-type": "application/json"},
        )
    assert response.status_code == 200, response.text
    assert response.json()["port"] == 4443


async def test_a_body_at_the_limit_is_read(small: Api) -> None:
    token = small.add("A-1", "alpha")
    body = b'{"port": 4443}'
    async with small.bearer(token) as http:
        response = await http.post(
            BEAT.format("A-1"),
            content=body + b" " * (LIMIT - len(body)),
            headers={"content-type": "application/json"},
        )
    assert response.status_code == 200, response.text


@pytest.mark.parametrize(
    ("body", "detail"),
    [
        (b"[" * 5000 + b"]" * 5000, "body: JSON nested too deeply"),
        (b'{"a":' * 5000 + b"1" + b"}" * 5000, "body: JSON nested too deeply"),
        (
            b'{"port": 1' + b"0" * 5000 + b"}",
            "body: not valid JSON: Exceeds the limit (4300 digits) for integer string"
            " conversion: value has 5001 digits; use sys.set_int_max_str_digits()"
            " to increase the limit",
        ),
        (b'{"port": "\xff"}', "body: not text (UTF-8, UTF-16 or UTF-32), so not JSON"),
    ],
    ids=["array", "object", "long integer", "not text"],
)
@pytest.mark.parametrize("path", [BEAT.format("A-1"), "/v1/links"])
async def test_json_that_cannot_be_read_is_400_saying_why(
    api: Api, path: str, body: bytes, detail: str
) -> None:
    token = api.add("A-1", "alpha")
    credential = token if "heartbeat" in path else "admin-token-for-tests-0123456789"
    async with api.bearer(credential) as http:
        response = await http.post(path, content=body, headers={"content-type": "application/json"})
    assert response.status_code == 400
    assert response.json() == {"error": "MalformedError", "detail": detail}


async def test_an_offset_beyond_the_stores_is_422(api: Api) -> None:
    async with api.admin() as http:
        response = await http.get("/v1/installations", params={"offset": str(2**63)})
    assert response.status_code == 422
    assert response.json()["detail"].startswith("query.offset: Input should be less than")


def test_the_limits_have_their_statuses() -> None:
    assert [
        response_for(e).http_status
        for e in (TooLargeError("x"), HeadersTooLargeError("x"), RequestTimeoutError("x"))
    ] == [413, 431, 408]


@pytest.mark.parametrize(
    ("wanted", "open_files", "beside", "cap"),
    [
        (10_000, 1_048_576, 1024, 10_000),  # a raised limit: as set
        (10_000, 20_000, 1024, 10_000),
        (10_000, 1024, 1024, 480),  # systemd's default soft limit: half of what is left
        (10_000, 1024, 100, 860),  # DNS takes its own, HTTP the rest
        (10_000, 1024, 0, 960),  # an HTTP worker: no DNS beside it
        (10_000, 64, 0, 1),  # nothing left: one all the same
        (50, 20_000, 1024, 50),
    ],
)
def test_the_connection_cap_fits_the_file_descriptor_limit(
    wanted: int, open_files: int, beside: int, cap: int
) -> None:
    assert connection_cap(wanted, open_files, beside) == cap
