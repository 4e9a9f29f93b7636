"""The HTTP server under abuse, over real sockets against the real `controparte serve`
(short limits, so each test is bounded): silent and trickling connections are closed
(`http_header_timeout`), idle keep-alive connections too (`http_keepalive_timeout`), a
slow body is answered 408 (`http_body_timeout`); many silent connections leave room
for `/healthz` (`http_max_connections`: the idlest make way); a body far above
`http_max_body` is answered 413 before the client has finished sending it, also when
chunked, and before authentication, also to a client that reads only once it has
sent everything; heads too long or with too many fields 431; and a
table of garbage inputs, each answered 4xx with the one error body, never 5xx.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.rawhttp import (
    closed_by_peer,
    connect,
    exchange,
    head,
    read_answer,
    request,
    send_until_answered,
)
from tests.realserver import ServerProcess, serving

pytestmark = pytest.mark.integration

ADMIN = "admin-token-for-tests-0123456789"
MAX_BODY = 65_536
MAX_CONNECTIONS = 60
TIMEOUT = 1.0  # head, body and keep-alive timeouts of the server under test
WAIT = 15.0  # how long a test waits for what should come after TIMEOUT
LIMITS = {
    "CONTROPARTE_ADMIN_TOKEN": ADMIN,
    "CONTROPARTE_HTTP_MAX_BODY": str(MAX_BODY),
    "CONTROPARTE_HTTP_MAX_CONNECTIONS": str(MAX_CONNECTIONS),
    "CONTROPARTE_HTTP_HEADER_TIMEOUT": str(TIMEOUT),
    "CONTROPARTE_HTTP_BODY_TIMEOUT": str(TIMEOUT),
    "CONTROPARTE_HTTP_KEEPALIVE_TIMEOUT": str(TIMEOUT),
    "CONTROPARTE_HTTP_MAX_HEADER_BYTES": "8192",
    "CONTROPARTE_HTTP_MAX_HEADERS": "50",
}
CODE = "ABUSE-1"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    data = tmp_path_factory.mktemp("abuse") / "data"
    with serving(data, LIMITS, lambda registry: registry.add(CODE, "abuse-1")) as started:
        yield started


@pytest.fixture(scope="module")
def token(server: ServerProcess) -> str:
    response = httpx.post(
        f"{server.http_url}/v1/installations/{CODE}/token",
        headers={"authorization": f"Bearer {ADMIN}"},
        timeout=10,
    )
    assert response.status_code == 200, response.text
    found = response.json()["token"]
    assert isinstance(found, str)
    return found


def address(server: ServerProcess) -> tuple[str, int]:
    where = server.settings.http
    return where.host, where.port


def healthz(server: ServerProcess) -> int:
    return httpx.get(f"{server.http_url}/healthz", timeout=10).status_code


def error_of(raw: bytes) -> dict[str, str]:
    """The error body of a refusal; it has the one shape."""
    body = json.loads(raw)
    assert set(body) == {"error", "detail"}, body
    return body  # type: ignore[no-any-return]


# -- timeouts ----------------------------------------------------------------------------


def test_silent_connections_are_closed_without_an_answer(server: ServerProcess) -> None:
    socks = [connect(address(server)) for _ in range(20)]
    try:
        for sock in socks:
            closed, sent = closed_by_peer(sock, WAIT)
            assert closed, "a silent connection was still open"
            assert sent == b""  # nobody asked anything: nothing to answer
    finally:
        for sock in socks:
            sock.close()


def test_a_trickled_head_is_answered_408_and_closed(server: ServerProcess) -> None:
    """Slowloris: one more header line every 0.2 s, never the blank line."""
    with connect(address(server)) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        deadline = time.monotonic() + WAIT
        data = b""
        while time.monotonic() < deadline:
            try:
                sock.sendall(b"X-Trickle: a\r\n")
            except (BrokenPipeError, ConnectionResetError):
                break
            closed, got = closed_by_peer(sock, 0.2)
            data += got
            if closed:
                break
        else:
            pytest.fail("the trickling connection was never closed")
    assert data.startswith(b"HTTP/1.1 408 "), data
    assert error_of(data.partition(b"\r\n\r\n")[2])["error"] == "RequestTimeoutError"


def test_an_idle_keep_alive_connection_is_closed(server: ServerProcess) -> None:
    with connect(address(server)) as sock:
        sock.sendall(head("GET", "/healthz"))
        assert read_answer(sock).status == 200
        sock.sendall(head("GET", "/healthz"))  # the connection is kept alive
        assert read_answer(sock).status == 200
        closed, sent = closed_by_peer(sock, WAIT)
    assert closed and sent == b""


def test_a_slow_body_is_answered_408(server: ServerProcess, token: str) -> None:
    with connect(address(server)) as sock:
        sock.sendall(
            head(
                "POST",
                f"/v1/installations/{CODE}/heartbeat",
                f"Authorization: Bearer {token}",
                "Content-Type: application/json",
                "Content-Length: 100",
            )
            + b'{"port": '
        )
        answer = read_answer(sock, WAIT)
    assert answer.status == 408
    assert error_of(answer.body)["error"] == "RequestTimeoutError"


# -- the connection cap --------------------------------------------------------------------


def test_many_silent_connections_leave_room_for_healthz(server: ServerProcess) -> None:
    """Five times the cap of silent connections, opened as fast as the server takes
    them: the idlest make way, so /healthz answers meanwhile, every time."""
    socks: list[socket.socket] = []
    try:
        for _ in range(5 * MAX_CONNECTIONS):
            socks.append(connect(address(server)))
        answers = [healthz(server) for _ in range(10)]
        still_open = sum(1 for sock in socks if not closed_by_peer(sock, 0.01)[0])
    finally:
        for sock in socks:
            sock.close()
    assert answers == [200] * 10
    assert still_open <= MAX_CONNECTIONS


# -- body size -------------------------------------------------------------------------------


def big_post(token: str, *headers: str) -> bytes:
    return head(
        "POST",
        f"/v1/installations/{CODE}/heartbeat",
        f"Authorization: Bearer {token}",
        "Content-Type: application/json",
        *headers,
    )


def test_a_body_far_above_the_limit_is_refused_before_it_is_sent(server: ServerProcess) -> None:
    """64 times the limit announced: 413 arrives while the client is still sending,
    before authentication (the token is wrong, and the answer is not 401)."""
    chunk = b" " * 65_536
    chunks = 64 * MAX_BODY // len(chunk)
    with connect(address(server)) as sock:
        got = send_until_answered(
            sock, big_post("wrong-token", f"Content-Length: {chunks * len(chunk)}"), chunks, chunk
        )
    assert got.answer is not None, f"no answer after {got.sent} of {got.total} bytes"
    assert got.answer.status == 413
    assert got.answer.headers["connection"] == "close"
    assert error_of(got.answer.body)["error"] == "TooLargeError"
    assert got.sent < got.total


def test_a_chunked_body_above_the_limit_is_refused_while_it_arrives(
    server: ServerProcess, token: str
) -> None:
    data = b" " * 16_384
    chunk = b"%x\r\n" % len(data) + data + b"\r\n"
    chunks = 64 * MAX_BODY // len(data)
    with connect(address(server)) as sock:
        got = send_until_answered(
            sock, big_post(token, "Transfer-Encoding: chunked"), chunks, chunk
        )
    assert got.answer is not None, f"no answer after {got.sent} of {got.total} bytes"
    assert got.answer.status == 413
    assert error_of(got.answer.body)["error"] == "TooLargeError"
    assert got.sent < got.total


@pytest.mark.parametrize("chunked", [False, True], ids=["Content-Length", "chunked"])
def test_a_client_that_sends_it_all_before_reading_still_gets_413(
    server: ServerProcess, chunked: bool
) -> None:
    """A client that writes the whole body, then reads: the server lingers (reads and
    drops what still comes) instead of resetting the connection under it."""
    size = 64 * MAX_BODY  # more than the socket buffers hold
    if chunked:
        raw = big_post("wrong-token", "Transfer-Encoding: chunked")
        raw += b"%x\r\n" % size + b" " * size + b"\r\n0\r\n\r\n"
    else:
        raw = big_post("wrong-token", f"Content-Length: {size}") + b" " * size
    with connect(address(server)) as sock:
        sock.sendall(raw)
        answer = read_answer(sock)
    assert answer.status == 413
    assert error_of(answer.body)["error"] == "TooLargeError"


def test_a_chunked_body_within_the_limit_is_read_whole(server: ServerProcess, token: str) -> None:
    body = b'{"port": 4443, "version": "chunked"}'
    raw = big_post(token, "Transfer-Encoding: chunked", "Connection: close")
    raw += b"%x\r\n" % 5 + body[:5] + b"\r\n" + b"%x\r\n" % (len(body) - 5) + body[5:]
    answer = exchange(address(server), raw + b"\r\n0\r\n\r\n")
    assert answer.status == 200, answer.body
    assert answer.json()["port"] == 4443


# -- the garbage table -----------------------------------------------------------------------

DEEP = b"[" * 30_000 + b"]" * 30_000  # within the body limit
LONG = b'{"port": 1' + b"0" * 5000 + b"}"  # an integer of 5001 digits
BEAT = f"/v1/installations/{CODE}/heartbeat"
BAD = (400, "MalformedError")
BIG = (431, "HeadersTooLargeError")
INVALID = (422, "InvalidRequestError")
NOT_FOUND = (404, "NotFoundError")


def admin(method: str, target: str, body: bytes = b"") -> bytes:
    """A request with the admin token (and a JSON body, when there is one)."""
    json_type = ["Content-Type: application/json"] if body else []
    return request(method, target, body, f"Authorization: Bearer {ADMIN}", *json_type)


def own(method: str, target: str, body: bytes = b"") -> bytes:
    """The same with the installation's token (filled in by the test)."""
    return admin(method, target, body).replace(ADMIN.encode(), b"{token}")


GARBAGE: list[tuple[str, bytes, tuple[int, str]]] = [
    ("not HTTP", b"GARBAGE / HTTP/1.1\r\n\r\n", BAD),
    ("binary", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 40, BAD),
    ("a byte above ASCII in the path", request("GET", b"/v1/resolve/\xe9"), BAD),
    ("a bad Content-Length", head("POST", "/v1/links", "Content-Length: -1"), BAD),
    ("a head too long", request("GET", "/healthz", b"", "X-Long: " + "a" * 20_000), BIG),
    ("a target too long", request("GET", "/v1/resolve/" + "a" * 20_000), BIG),
    ("too many fields", request("GET", "/healthz", b"", *(f"X-{i}: a" for i in range(60))), BIG),
    ("JSON nested deeply", admin("POST", "/v1/links", DEEP), BAD),
    ("JSON nested deeply, heartbeat", own("POST", BEAT, DEEP), BAD),
    ("an integer of 5001 digits", own("POST", BEAT, LONG), BAD),
    ("an integer of 5001 digits, API", admin("PATCH", f"/v1/installations/{CODE}", LONG), BAD),
    ("a lone surrogate", own("POST", BEAT, b'{"port": 1, "version": "\\ud800"}'), INVALID),
    (
        "a lone surrogate, API",
        admin("PATCH", f"/v1/installations/{CODE}", b'{"kind": "\\udfff"}'),
        INVALID,
    ),
    ("not UTF-8", admin("POST", "/v1/links", b'{"a": "\xff"}'), BAD),
    ("NaN", own("POST", BEAT, b'{"port": NaN}'), INVALID),
    ("a huge offset", admin("GET", "/v1/installations?offset=99999999999999999999999"), INVALID),
    ("offset 2^63", admin("GET", "/v1/installations?offset=9223372036854775808"), INVALID),
    ("a limit of 5001 digits", admin("GET", "/v1/installations?limit=1" + "0" * 5000), INVALID),
    ("wait=nan", own("GET", f"/v1/installations/{CODE}/relay-requests?wait=nan"), INVALID),
    ("wait=1e999", own("GET", f"/v1/installations/{CODE}/relay-requests?wait=1e999"), INVALID),
    ("malformed percent-encoding", request("GET", "/v1/resolve/%ff%fe%zz"), NOT_FOUND),
    ("a percent-encoded surrogate", request("GET", "/v1/resolve/%ed%a0%80"), NOT_FOUND),
    ("malformed percent-encoding in the query", admin("GET", "/v1/links?code=%zz%"), NOT_FOUND),
    (
        "a percent-encoded NUL",
        admin("DELETE", "/v1/links/a%00/b?feature=%00"),
        (422, "ValidationError"),
    ),
    ("an unknown path", request("GET", "/%2e%2e/%2e%2e/etc/passwd"), (404, "UnsupportedError")),
]


@pytest.mark.parametrize(("raw", "expected"), [g[1:] for g in GARBAGE], ids=[g[0] for g in GARBAGE])
def test_garbage_is_answered_4xx_with_the_error_body(
    server: ServerProcess, token: str, raw: bytes, expected: tuple[int, str]
) -> None:
    answer = exchange(address(server), raw.replace(b"{token}", token.encode()))
    assert (answer.status, error_of(answer.body)["error"]) == expected, answer.body
    assert healthz(server) == 200


def test_the_server_logged_no_internal_error(server: ServerProcess) -> None:
    """Last in the module: nothing above made a traceback."""
    assert "Traceback" not in server.log_text()
