"""The watchdog breaks off a read that outlives its deadline (the blocked thread sees
end of file, as from a server that went away), and leaves alone one that ends in
time. Real sockets (a socketpair standing for a frozen server: it is open and never
answers)."""

from __future__ import annotations

import os
import socket
import threading
import time

from controparte.store.watchdog import Watchdog

WAIT = 10.0


def test_a_read_past_its_deadline_sees_end_of_file() -> None:
    watchdog = Watchdog("test-watchdog")
    ours, theirs = socket.socketpair()
    with ours, theirs:
        got: list[bytes] = []
        started = time.monotonic()

        def read() -> None:
            with watchdog.watch(ours.fileno(), 0.2):
                got.append(ours.recv(10))

        reader = threading.Thread(target=read)
        reader.start()
        reader.join(WAIT)
        assert not reader.is_alive()
        assert got == [b""]  # end of file: the peer never sent anything
        assert time.monotonic() - started >= 0.2
        assert watchdog.fired == 1
        assert ours.fileno() >= 0  # shut down, not closed: its owner closes it


def test_a_read_within_its_deadline_is_left_alone() -> None:
    watchdog = Watchdog("test-watchdog")
    ours, theirs = socket.socketpair()
    with ours, theirs:
        theirs.sendall(b"answer")
        with watchdog.watch(ours.fileno(), 0.2):
            assert ours.recv(10) == b"answer"
        time.sleep(0.4)  # past the deadline: the exchange is no longer watched
        theirs.sendall(b"more")
        assert ours.recv(10) == b"more"
        ours.sendall(b"back")
        assert theirs.recv(10) == b"back"
        assert watchdog.fired == 0


def test_several_exchanges_each_keep_their_own_deadline() -> None:
    watchdog = Watchdog("test-watchdog")
    pairs = [socket.socketpair() for _ in range(3)]
    try:
        outcome: dict[int, bytes] = {}

        def read(number: int, seconds: float) -> None:
            sock = pairs[number][0]
            with watchdog.watch(sock.fileno(), seconds):
                outcome[number] = sock.recv(10)

        readers = [
            threading.Thread(target=read, args=(n, s)) for n, s in ((0, 0.1), (1, 30), (2, 0.3))
        ]
        for reader in readers:
            reader.start()
        readers[0].join(WAIT)
        readers[2].join(WAIT)
        assert (outcome.get(0), outcome.get(2)) == (b"", b"")
        assert 1 not in outcome  # its deadline is far: it still waits
        pairs[1][1].sendall(b"late")
        readers[1].join(WAIT)
        assert outcome[1] == b"late"
        assert watchdog.fired == 2
    finally:
        for ours, theirs in pairs:
            ours.close()
            theirs.close()


def test_a_descriptor_reused_by_another_socket_is_left_alone() -> None:
    watchdog = Watchdog("test-watchdog")
    first, first_peer = socket.socketpair()
    second, second_peer = socket.socketpair()
    with first, first_peer, second, second_peer:
        with watchdog.watch(first.fileno(), 0.2):
            os.dup2(second.fileno(), first.fileno())  # the number names another socket now
            time.sleep(0.8)  # past the deadline
        assert watchdog.fired == 1  # it was due, but the socket was not the same
        second_peer.sendall(b"still")
        assert second.recv(10) == b"still"
