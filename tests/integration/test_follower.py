"""The journal follower builds snapshots off the event loop (CoreDNS's rule: reload off
the serving path, swap one reference), and keeps its guarantees: a catch-up has every
change committed before it was asked for, a snapshot never replaces a newer one, an
UPDATE's response leaves once the served snapshot has the change, failures are retried,
and `stop` ends the thread.

The store is a real `SqliteStore` that records which thread calls the follower's reads
(`last_seq`, `journal_since`, `dns_snapshot`) and can hold the next `journal_since`
(after it has read) until the test releases it: that makes the races deterministic."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TypeVar

import dns.message
import dns.query
import dns.tsig
import dns.update
import pytest
from dns.rcode import Rcode

from controparte.dns.engine import Engine
from controparte.dns.server import DnsServer, Follower
from controparte.dns.zone import Zone, load_zone
from controparte.errors import StorageError
from controparte.model import DnsRecord, InstallationChange, ZoneConfig
from controparte.service.services import Services, open_services
from controparte.settings import Settings, load_settings
from controparte.store.base import JournalEntry
from controparte.store.sqlite import DB_FILE, SqliteStore

pytestmark = pytest.mark.integration

ZONE = "bp.controparte.test."
WAIT = 10.0  # seconds: a bound on waiting for an event, never a speed assertion
T = TypeVar("T")


class WatchedStore(SqliteStore):
    """A real store that records the thread of the follower's reads; `hold_next()`
    makes the next `journal_since` set `held` once it has read, then wait for
    `release`; `fail_next()` makes the next one raise StorageError (or the error
    given)."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.calls: list[tuple[str, int]] = []
        self.held = threading.Event()
        self.release = threading.Event()
        self._hold = threading.Event()
        self._fail = threading.Event()

    def hold_next(self) -> None:
        self.held.clear()
        self.release.clear()
        self._hold.set()

    def fail_next(self, error: Exception | None = None) -> None:
        self._error = error or StorageError("cannot read the store: failing on purpose")
        self._fail.set()

    def last_seq(self) -> int:
        self.calls.append(("last_seq", threading.get_ident()))
        return super().last_seq()

    def journal_since(self, seq: int, limit: int = 10_000) -> list[JournalEntry]:
        self.calls.append(("journal_since", threading.get_ident()))
        if self._fail.is_set():
            self._fail.clear()
            raise self._error
        entries = super().journal_since(seq, limit)
        if self._hold.is_set():
            self._hold.clear()
            self.held.set()
            assert self.release.wait(WAIT), "the test never released the held read"
        return entries

    def dns_snapshot(self, consume: Callable[[Iterable[DnsRecord]], T]) -> tuple[int, int, T]:
        self.calls.append(("dns_snapshot", threading.get_ident()))
        return super().dns_snapshot(consume)


class RecordingEngine(Engine):
    """An engine that records the seq of every snapshot swapped in."""

    def __init__(self, zone: Zone) -> None:
        super().__init__(zone)
        self.swaps: list[int] = []

    def swap(self, zone: Zone) -> None:
        self.swaps.append(zone.seq)
        super().swap(zone)


def settings_for(data: Path, poll: str) -> Settings:
    return load_settings(
        env={
            "CONTROPARTE_DATA": str(data),
            "CONTROPARTE_DNS": "127.0.0.1:0",
            "CONTROPARTE_ALLOW_NON_GLOBAL": "1",
            "CONTROPARTE_JOURNAL_POLL_INTERVAL": poll,
        }
    )


def watched_services(data: Path, poll: str) -> tuple[WatchedStore, Services]:
    """Services over a `WatchedStore`, with ALPHA-1 (alpha, 192.0.2.1) and BETA-2
    (beta, 198.51.100.2) registered."""
    settings = settings_for(data, poll)
    store = WatchedStore(data / DB_FILE)
    services = open_services(settings, store=store)
    services.registry.add("ALPHA-1", "alpha", ipv4="192.0.2.1")
    services.registry.add("BETA-2", "beta", ipv4="198.51.100.2")
    return store, services


def change(key: dns.tsig.Key, address: str) -> dns.update.UpdateMessage:
    message = dns.update.UpdateMessage(ZONE)
    message.replace("alpha", 60, "A", address)
    message.use_tsig(key)
    return message


def served(port: int, label: str, tcp: bool = True) -> set[str]:
    query = dns.message.make_query(f"{label}.{ZONE}", "A")
    send = dns.query.tcp if tcp else dns.query.udp
    response = send(query, "127.0.0.1", port=port, timeout=WAIT)
    return {rd.to_text() for rrset in response.answer for rd in rrset}


async def served_eventually(port: int, label: str, expected: set[str]) -> set[str]:
    """What is served for `label` once it is `expected`, or after WAIT seconds."""
    deadline = asyncio.get_running_loop().time() + WAIT
    while True:
        answer = await asyncio.to_thread(served, port, label)
        if answer == expected or asyncio.get_running_loop().time() > deadline:
            return answer
        await asyncio.sleep(0.01)


def labels(zone: Zone) -> dict[str, bytes | None]:
    return {label.decode(): node[0] for label, node in zone.nodes.items()}


# -- the server --------------------------------------------------------------------------


def test_the_event_loop_never_reads_the_store_after_start_up(tmp_path: Path) -> None:
    """Changes by another writer (found by polling) and by UPDATEs are served, and every
    journal read and snapshot build after start-up happened on another thread."""
    store, services = watched_services(tmp_path, poll="0.01")
    made = services.access.create_tsig_key("ALPHA-1")
    key = dns.tsig.Key(made.name, made.secret)
    other = open_services(services.settings)  # another writer: its own store, no poke

    async def scenario() -> None:
        loop_thread = threading.get_ident()
        async with DnsServer(services.settings, store, services=services) as server:
            started = len(store.calls)
            other.registry.update("BETA-2", InstallationChange(ipv4="198.51.100.3"))
            assert await served_eventually(server.port, "beta", {"198.51.100.3"}) == {
                "198.51.100.3"
            }
            for tcp, address in ((False, "192.0.2.21"), (True, "192.0.2.22")):
                send = dns.query.tcp if tcp else dns.query.udp
                response = await asyncio.to_thread(
                    send, change(key, address), "127.0.0.1", port=server.port, timeout=WAIT
                )
                assert response.rcode() == Rcode.NOERROR
                assert await asyncio.to_thread(served, server.port, "alpha", tcp) == {address}
            after = store.calls[started:]
        assert {"last_seq", "journal_since"} <= {name for name, _ in after}
        assert [name for name, thread in after if thread == loop_thread] == []

    try:
        asyncio.run(scenario())
    finally:
        other.close()
        services.close()


def test_an_update_is_answered_after_a_look_that_began_after_its_write(tmp_path: Path) -> None:
    """A look that began before the UPDATE's write is in progress (held) when the write
    commits: the response waits for the next look, so the client's next query sees the
    change; meanwhile the loop keeps answering from the old snapshot. No polling here
    (the interval is a minute): only `poke` and the UPDATE path make the follower look."""
    store, services = watched_services(tmp_path, poll="60")
    made = services.access.create_tsig_key("ALPHA-1")
    key = dns.tsig.Key(made.name, made.secret)
    other = open_services(services.settings)

    async def scenario() -> None:
        async with DnsServer(services.settings, store, services=services) as server:
            port = server.port
            store.hold_next()
            other.registry.update("BETA-2", InstallationChange(ipv4="198.51.100.3"))
            beta_seq = other.store.last_seq()
            server.poke()
            assert await asyncio.to_thread(store.held.wait, WAIT)
            # The follower is inside a look that has beta's change; the loop still serves.
            assert await asyncio.to_thread(served, port, "beta") == {"198.51.100.2"}
            sending = asyncio.create_task(
                asyncio.to_thread(
                    dns.query.tcp, change(key, "192.0.2.9"), "127.0.0.1", port=port, timeout=WAIT
                )
            )
            deadline = asyncio.get_running_loop().time() + WAIT
            while other.store.last_seq() == beta_seq:  # until the UPDATE has committed
                assert asyncio.get_running_loop().time() < deadline, "the UPDATE never wrote"
                await asyncio.sleep(0.01)
            assert not sending.done()
            store.release.set()
            response = await sending
            assert response.rcode() == Rcode.NOERROR
            assert await asyncio.to_thread(served, port, "alpha") == {"192.0.2.9"}
            assert await asyncio.to_thread(served, port, "beta") == {"198.51.100.3"}

    try:
        asyncio.run(scenario())
    finally:
        store.release.set()
        other.close()
        services.close()


# -- the follower itself -----------------------------------------------------------------


def follower_over(store: WatchedStore, settings: Settings) -> tuple[Follower, RecordingEngine]:
    """A started follower that polls once a minute (so only the test makes it look)."""
    engine = RecordingEngine(load_zone(store, ZoneConfig.from_settings(settings)))
    follower = Follower(store, engine, 60.0)
    follower.start()
    return follower, engine


def follower_thread(store: WatchedStore, since: int) -> threading.Thread:
    """The thread that made the store calls recorded from `since` on (one thread)."""
    threads = {thread for _, thread in store.calls[since:]}
    assert len(threads) == 1, threads
    (ident,) = threads
    (thread,) = [t for t in threading.enumerate() if t.ident == ident]
    return thread


def test_catch_up_has_every_change_before_it_and_swaps_only_forward(tmp_path: Path) -> None:
    store, services = watched_services(tmp_path, poll="60")
    follower, engine = follower_over(store, services.settings)
    try:
        registry = services.registry
        registry.add("ONE-1", "one", ipv4="192.0.2.11")
        one = store.last_seq()
        store.hold_next()
        first = follower.catch_up()
        assert store.held.wait(WAIT)
        # The first look has read `one` and is held; two more changes commit meanwhile.
        registry.add("TWO-2", "two", ipv4="192.0.2.12")
        registry.update("ONE-1", InstallationChange(ipv4="192.0.2.21"))
        three = store.last_seq()
        second = follower.catch_up()
        assert not first.done() and not second.done()
        store.release.set()
        assert first.result(WAIT).seq == one
        newest = second.result(WAIT)
        assert newest.seq == three
        assert engine.zone is newest
        assert engine.swaps == [one, three]
        assert labels(newest) == {
            "alpha": bytes([192, 0, 2, 1]),
            "beta": bytes([198, 51, 100, 2]),
            "one": bytes([192, 0, 2, 21]),
            "two": bytes([192, 0, 2, 12]),
        }
    finally:
        store.release.set()
        follower.stop(WAIT)
        services.close()


def test_poke_makes_the_follower_look_now(tmp_path: Path) -> None:
    store, services = watched_services(tmp_path, poll="60")
    follower, engine = follower_over(store, services.settings)
    other = open_services(services.settings)
    try:
        other.registry.add("POKE-1", "poke", ipv4="192.0.2.30")
        last = other.store.last_seq()
        follower.poke()
        deadline = time.monotonic() + WAIT
        while engine.zone.seq != last and time.monotonic() < deadline:
            time.sleep(0.01)
        assert engine.zone.seq == last
        assert labels(engine.zone)["poke"] == bytes([192, 0, 2, 30])
    finally:
        follower.stop(WAIT)
        other.close()
        services.close()


def test_a_failed_look_is_logged_and_the_follower_goes_on(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The store failing is told once (a warning) until a look reads it again (info);
    a bug is told each time, with its traceback."""
    store, services = watched_services(tmp_path, poll="60")
    follower, engine = follower_over(store, services.settings)
    try:
        before = engine.zone
        services.registry.add("FAIL-1", "fail", ipv4="192.0.2.40")
        with caplog.at_level(logging.INFO, "controparte.dns"):
            for error in (None, None, RuntimeError("a bug"), RuntimeError("a bug")):
                store.fail_next(error)
                with pytest.raises((StorageError, RuntimeError)):
                    follower.catch_up().result(WAIT)
                assert engine.zone is before  # still served
            assert follower.catch_up().result(WAIT).seq == store.last_seq()
        told = [(r.levelno, r.getMessage(), r.exc_info is not None) for r in caplog.records]
        serving = f"serving serial {before.serial} meanwhile"
        assert told == [
            (
                logging.WARNING,
                f"cannot read the journal (cannot read the store: failing on purpose); {serving}",
                False,
            ),
            (logging.ERROR, f"cannot read the journal; {serving}", True),
            (logging.ERROR, f"cannot read the journal; {serving}", True),
            (
                logging.INFO,
                f"the journal can be read again: serving serial {store.serial()}",
                False,
            ),
        ]
        assert labels(engine.zone)["fail"] == bytes([192, 0, 2, 40])
    finally:
        follower.stop(WAIT)
        services.close()


def test_stop_ends_the_thread_and_cancels_what_waits(tmp_path: Path) -> None:
    store, services = watched_services(tmp_path, poll="60")
    follower, _ = follower_over(store, services.settings)
    try:
        services.registry.add("STOP-1", "stop", ipv4="192.0.2.50")
        since = len(store.calls)
        store.hold_next()
        looking = follower.catch_up()
        assert store.held.wait(WAIT)
        thread = follower_thread(store, since)
        waiting = follower.catch_up()  # for the next look, which will never come
        follower.stop(0)  # returns at once: the look in progress goes on
        assert waiting.cancelled()
        assert follower.catch_up().cancelled()
        store.release.set()
        assert looking.result(WAIT).seq == store.last_seq()  # the look in progress ends
        thread.join(WAIT)
        assert not thread.is_alive()
        follower.stop(WAIT)  # again: nothing left to do
    finally:
        store.release.set()
        follower.stop(WAIT)
        services.close()


def test_a_gap_in_the_journal_loads_the_zone_again_on_the_follower_thread(
    tmp_path: Path,
) -> None:
    store, services = watched_services(tmp_path, poll="60")
    follower, engine = follower_over(store, services.settings)
    try:
        services.registry.add("GAP-1", "gap", ipv4="192.0.2.60")
        services.registry.add("GAP-2", "gap2", ipv4="192.0.2.61")
        with contextlib.closing(sqlite3.connect(tmp_path / DB_FILE)) as conn:  # pruned
            conn.execute("DELETE FROM journal WHERE seq = ?", (engine.zone.seq + 1,))
            conn.commit()
        since = len(store.calls)
        zone = follower.catch_up().result(WAIT)
        snapshots = [thread for name, thread in store.calls[since:] if name == "dns_snapshot"]
        assert snapshots
        assert threading.get_ident() not in snapshots
        assert zone.seq == store.last_seq()
        assert engine.zone is zone
        assert labels(zone)["gap"] == bytes([192, 0, 2, 60])
        assert labels(zone)["gap2"] == bytes([192, 0, 2, 61])
    finally:
        follower.stop(WAIT)
        services.close()


class StandInListener:
    """A change listener that never hears a change; `connected` is set by the test."""

    def __init__(self, connected: bool) -> None:
        self.connected = connected
        self.closed = threading.Event()

    def wait(self, timeout: float) -> bool:
        self.closed.wait(min(timeout, 0.01))
        return False

    def close(self) -> None:
        self.closed.set()


def serves(engine: Engine, seq: int) -> Callable[[], bool]:
    return lambda: engine.zone.seq >= seq


def until(condition: Callable[[], bool], what: str) -> None:
    """Wait (at most WAIT) for `condition`; AssertionError saying `what` after that."""
    deadline = time.monotonic() + WAIT
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.01)


def test_while_the_listener_is_not_connected_the_follower_polls(tmp_path: Path) -> None:
    """A change another node commits while this node cannot listen (the database
    restarting) is served after the poll interval, not the safety read's minute."""
    store, services = watched_services(tmp_path, poll="60")
    engine = RecordingEngine(load_zone(store, ZoneConfig.from_settings(services.settings)))
    listener = StandInListener(connected=True)
    follower = Follower(store, engine, 60.0, None, listener, unheard_interval=0.02)
    follower.start()
    try:
        services.registry.add("GAMMA-3", "gamma", ipv4="192.0.2.3")
        seq = store.last_seq()
        time.sleep(0.3)
        assert engine.swaps == []  # listening: only a change heard (or the minute) looks
        listener.connected = False  # the connection dropped: the follower polls now
        until(serves(engine, seq), "the change was not served while not listening")
        services.registry.add("DELTA-4", "delta", ipv4="192.0.2.4")
        until(serves(engine, store.last_seq()), "a later change was not served either")
    finally:
        follower.stop(WAIT)
        services.close()
