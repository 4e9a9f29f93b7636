"""HTTP/1.1 over a plain socket, byte by byte as written: for the abuse tests and
`bench/http_abuse_bench.py`, which send what no HTTP client library would (trickled
heads, garbage, bodies larger than announced, silence)."""

from __future__ import annotations

import json
import select
import socket
import time
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Answer:
    """One HTTP response as read off the wire."""

    status: int
    headers: dict[str, str]  # lower-case names, the last value of each
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def head(
    method: str, target: str | bytes, *headers: str | bytes, host: str = "controparte.test"
) -> bytes:
    """A request head: the request line, Host, `headers` (`Name: value`), the blank line."""
    raw_target = target.encode("latin-1") if isinstance(target, str) else target
    lines = [method.encode("latin-1") + b" " + raw_target + b" HTTP/1.1", b"Host: " + host.encode()]
    lines += [h.encode("latin-1") if isinstance(h, str) else h for h in headers]
    return b"\r\n".join(lines) + b"\r\n\r\n"


def request(method: str, target: str | bytes, body: bytes = b"", *headers: str | bytes) -> bytes:
    """A whole request with `Connection: close` and a Content-Length when there is a body."""
    extra = [*headers, "Connection: close"]
    if body:
        extra.append(f"Content-Length: {len(body)}")
    return head(method, target, *extra) + body


def connect(address: tuple[str, int], timeout: float = 10.0) -> socket.socket:
    sock = socket.create_connection(address, timeout=timeout)
    sock.settimeout(timeout)
    return sock


def parse(data: bytes) -> Answer | None:
    """The response at the start of `data` once it is whole (by its Content-Length, or
    chunked to its last chunk); None before."""
    header_end = data.find(b"\r\n\r\n")
    if header_end < 0:
        return None
    lines = data[:header_end].decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    rest = data[header_end + 4 :]
    if "content-length" in headers:
        length = int(headers["content-length"])
        return Answer(status, headers, rest[:length]) if len(rest) >= length else None
    if headers.get("transfer-encoding") == "chunked":
        body = b""
        while True:
            size_end = rest.find(b"\r\n")
            if size_end < 0:
                return None
            size = int(rest[:size_end], 16)
            if len(rest) < size_end + 2 + size + 2:
                return None
            if size == 0:
                return Answer(status, headers, body)
            body += rest[size_end + 2 : size_end + 2 + size]
            rest = rest[size_end + 2 + size + 2 :]
    return Answer(status, headers, rest)


def read_answer(sock: socket.socket, timeout: float = 10.0) -> Answer:
    """Read one whole response (AssertionError when the connection closes first or
    `timeout` passes)."""
    data = b""
    deadline = time.monotonic() + timeout
    while (found := parse(data)) is None:
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"no whole answer in {timeout} s: {data[:300]!r}")
        sock.settimeout(left)
        chunk = sock.recv(65536)
        if not chunk:
            raise AssertionError(f"the connection closed before a whole answer: {data[:300]!r}")
        data += chunk
    return found


def exchange(address: tuple[str, int], raw: bytes, timeout: float = 10.0) -> Answer:
    """Send `raw` on a new connection and read the answer."""
    with connect(address, timeout) as sock:
        sock.sendall(raw)
        return read_answer(sock, timeout)


def closed_by_peer(sock: socket.socket, timeout: float) -> tuple[bool, bytes]:
    """Wait up to `timeout` for the server to close `sock`: (closed, what it sent)."""
    data = b""
    deadline = time.monotonic() + timeout
    while (left := deadline - time.monotonic()) > 0:
        sock.settimeout(left)
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            break
        except ConnectionResetError:
            return True, data
        if not chunk:
            return True, data
        data += chunk
    return False, data


@dataclass(frozen=True)
class Overrun:
    """What a client that sends a body far above the limit saw."""

    answer: Answer | None
    sent: int  # body bytes sent before the answer came (or the server stopped reading)
    total: int  # body bytes the client meant to send


def send_until_answered(
    sock: socket.socket, head_bytes: bytes, chunks: int, chunk: bytes, timeout: float = 20.0
) -> Overrun:
    """Send `head_bytes`, then `chunk` `chunks` times, reading meanwhile: stop at the
    first whole answer (or when the server closes the connection)."""
    sock.setblocking(False)
    sock.sendall(head_bytes)  # small: fits the socket buffer
    pending = memoryview(b"")
    sent = 0
    left = chunks
    data = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        writers = [sock] if (left or pending) else []
        readable, writable, _ = select.select([sock], writers, [], 0.5)
        if readable:
            try:
                got = sock.recv(65536)
            except ConnectionResetError:
                got = b""
            data += got
            answer = parse(data)
            if answer is not None or not got:
                return Overrun(answer, sent, chunks * len(chunk))
        if writable:
            if not pending and left:
                pending, left = memoryview(chunk), left - 1
            try:
                done = sock.send(pending)
            except (BrokenPipeError, ConnectionResetError):
                return Overrun(parse(data), sent, chunks * len(chunk))
            sent += done
            pending = pending[done:]
    return Overrun(parse(data), sent, chunks * len(chunk))
