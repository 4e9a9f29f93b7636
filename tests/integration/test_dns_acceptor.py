"""The DNS TCP accept loop (`dns/acceptor.py`) over real loopback sockets, in process:
what the slots admit is served, what they refuse is reset at once and never reaches the
handler, a slot comes back when its connection ends, and accepting resumes after a pause
for lack of descriptors."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import socket

import pytest

from controparte.dns import acceptor as acceptor_module
from controparte.dns.acceptor import Acceptor
from controparte.dns.slots import PER_CLIENT, TOTAL, Slots

pytestmark = [pytest.mark.integration, pytest.mark.anyio]

HOST = "127.0.0.1"
WAIT = 5.0


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class Echo:
    """A handler that answers each line with the same line, and counts connections."""

    def __init__(self) -> None:
        self.served = 0

    async def __call__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.served += 1
        try:
            while line := await reader.readline():
                writer.write(line)
                await writer.drain()
        finally:
            writer.close()


def listening() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind((HOST, 0))
    return sock


OPENED: list[asyncio.StreamWriter] = []


async def talk(port: int, source: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection(HOST, port, local_addr=(source, 0))
    OPENED.append(writer)
    return reader, writer


async def close_clients() -> None:
    while OPENED:
        writer = OPENED.pop()
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


async def refused(port: int, source: str) -> bool:
    """Whether a new connection from `source` is reset or closed unanswered (on
    loopback the reset may come before the connect returns)."""
    try:
        connection = await talk(port, source)
    except ConnectionError:
        return True
    return not await echoes(*connection)


async def echoes(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
    """Whether the connection answers a line (False: it was closed or reset)."""
    try:
        writer.write(b"ping\n")
        await writer.drain()
        return await asyncio.wait_for(reader.readline(), WAIT) == b"ping\n"
    except ConnectionError:
        return False


async def test_admitted_served_refused_reset_and_slots_given_back() -> None:
    slots, handler = Slots(total=3, per_client=2), Echo()
    acceptor = Acceptor(listening(), slots, handler, 1024)
    acceptor.start(16)
    port = acceptor.sock.getsockname()[1]
    try:
        first = [await talk(port, "127.0.0.2") for _ in range(2)]
        assert all([await echoes(*c) for c in first])
        assert await refused(port, "127.0.0.2")  # its share is taken
        third = await talk(port, "127.0.0.3")
        assert await echoes(*third)
        assert await refused(port, "127.0.0.4")  # every slot is taken
        assert handler.served == 3 and slots.open == 3
        assert slots.refused == {TOTAL: 1, PER_CLIENT: 1}
        first[0][1].close()  # a slot comes back when its connection ends
        for _ in range(100):
            if slots.open == 2:
                break
            await asyncio.sleep(0.02)
        again = await talk(port, "127.0.0.2")
        assert await echoes(*again)
        assert handler.served == 4
    finally:
        await close_clients()
        await acceptor.close(WAIT)
    assert slots.open == 0  # close ended the connections, each gave its slot back


async def test_accepting_pauses_when_out_of_descriptors_and_resumes(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(acceptor_module, "ACCEPT_PAUSE", 0.3)
    handler = Echo()
    acceptor = Acceptor(listening(), Slots(total=10, per_client=10), handler, 1024)
    acceptor.start(16)
    port = acceptor.sock.getsockname()[1]
    try:
        acceptor._pause(OSError(errno.EMFILE, "Too many open files"))
        loop = asyncio.get_running_loop()
        started = loop.time()
        connection = await talk(port, "127.0.0.2")  # the kernel completes it; it waits
        assert await echoes(*connection)
        assert loop.time() - started >= 0.25  # not before the pause ended
        assert handler.served == 1
        assert "cannot accept TCP connections (Too many open files)" in caplog.text
    finally:
        await close_clients()
        await acceptor.close(WAIT)
