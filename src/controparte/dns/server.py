"""The sockets: UDP and TCP on one address, and the journal follower.

- UDP: a blocking receive/answer/send loop in its own thread (the asyncio datagram
  machinery costs several times more per packet than the answer itself).
  `dns_workers` > 1 adds processes with their own socket on the same port
  (SO_REUSEPORT), each with its own snapshot following the same journal.
- Before anything else, a datagram or TCP message the answer cache does not know is
  screened from its header and framing (`dns/screen.py`): garbage is dropped or
  answered NOTIMP/FORMERR, header only, and counted by reason, never logged.
  Response rate limiting (`dns/rrl.py`, setting `rrl`), when on, passes every response
  the loop sends (`udp_loop`'s `limit`), each process with its own table.
- TCP (RFC 7766): asyncio; several queries per connection, pipelined, answered in order;
  an idle timeout; a cap on concurrent connections, in all and per client
  (`dns/slots.py`: an IPv4 address, an IPv6 /64).
- The follower (`Follower`, a thread of its own) reads the store's journal, builds the
  next snapshot and swaps the engine's one reference (CoreDNS's rule: reload off the
  serving path, swap one pointer); the event loop never reads the store or builds a
  snapshot after start-up. It reads when woken: by `poke()` (writers in the same
  process), by the store's change listener when the engine has one (PostgreSQL:
  every commit of any node notifies, and every reconnection of the listener is
  followed by a read that catches up on what it may have missed), and every
  `journal_check_interval` besides; without a listener (SQLite) it polls every
  `journal_poll_interval`. While the store cannot be read, DNS answers from the last
  snapshot, and `snapshot_age` grows.
- UPDATE (RFC 2136, opcode 5) when the server has `services`: the UDP thread hands the
  datagram to the event loop (`call_soon_threadsafe`), which runs `Updater.handle` in a
  small executor (a store write must not stall queries); when something changed, it
  awaits the follower's catch-up (`Follower.catch_up`) and then sends the response from
  the loop thread (sending on the UDP socket from two threads is safe), so the client's
  next query sees the change. TCP awaits the same path, so pipelined requests still get
  answers in order. At most `MAX_PENDING_HAND_OFFS` wait at once; more are dropped (the
  client retries). Without services, UPDATE gets NOTIMP from the answer path. A worker
  process (`dns_workers` > 1) has its own follower, and handles the UPDATEs that reach
  its socket in a thread of its own, over its own services.
- Zone transfers and signed requests (`transfer.is_keyed`: a TSIG record, IXFR, or
  over TCP AXFR) never go through the answer cache or the fast path: the UDP thread
  hands them off as it does UPDATEs, and `Transfers.respond` runs in an executor of its
  own (it verifies TSIG, reads keys and the journal). Over TCP the messages it yields
  are made on the event loop one at a time (a 64 KiB message costs under a
  millisecond), each written and drained before the next, then a pause in proportion
  to the UDP answer rate (`transfer_pause`: one interpreter runs one thread at a time,
  and a transfer made flat out would halve the UDP answers), so other connections and
  the UDP thread keep being served; then the connection reads its next request
  (RFC 5936 4.1, RFC 7766). A worker process serves those that reach its UDP socket in
  its hand-off thread (with keys only when it has services).
- NOTIFY (RFC 1996) to the secondaries of the setting `notify`: the follower hands each
  snapshot it swaps in to the notifier (`dns/notifier.py`), which runs on the event
  loop of this process, started and stopped with the server (never in a worker).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import queue
import socket
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from controparte import logs
from controparte.claim import Shared, bind, bind_error
from controparte.dns.acceptor import Acceptor
from controparte.dns.engine import Engine
from controparte.dns.notifier import Notifier, targets
from controparte.dns.rrl import RrlCounters, families, limiter_for
from controparte.dns.screen import COMPILED, REPLIES, rejection, screen
from controparte.dns.slots import REFUSALS, Slots
from controparte.dns.transfer import Transfers, is_keyed
from controparte.dns.tsigauth import KeyResolver
from controparte.dns.updater import Updater, is_update
from controparte.dns.zone import Zone, load_zone
from controparte.errors import ControparteError
from controparte.model import ZoneConfig
from controparte.service.access import ResolvedKey
from controparte.service.health import ServedZone
from controparte.service.metrics import (
    ZONE_SERIAL,
    ZONE_SERIAL_HELP,
    Family,
    Sample,
    counter,
    gauge,
    labelled,
)
from controparte.service.services import Services, open_services
from controparte.settings import Settings
from controparte.store import ChangeListener, Store, open_store

log = logging.getLogger("controparte.dns")

UDP_RECEIVE_BUFFER = 4 * 1024 * 1024
MAX_PENDING_HAND_OFFS = 256
"""UPDATEs, transfer requests and signed queries on their way from the UDP thread."""
UPDATE_THREADS = 2
TRANSFER_THREADS = 2
YIELD_RATE = 10_000.0
"""Queries a second at which a transfer pauses as long as it worked (`transfer_pause`)."""
MAX_YIELD = 20.0
"""The longest pause, in times the work: a transfer always moves on."""
FOLLOWER_STOP_TIMEOUT = 2.0
"""Seconds `DnsServer.stop` waits for a catch-up in progress (the thread is a daemon)."""
TCP_BACKLOG = 1024
"""Connections the kernel completes before the server accepts them (capped by
net.core.somaxconn): a client opening connections by the hundred must not fill the
queue that others wait in (asyncio's default is 100)."""
TCP_STREAM_LIMIT = 70_000  # a reader's buffer: one message of 64 KiB and its prefix
BIND_ATTEMPTS = 20  # kernel picks tried for port 0 before giving up: see DnsServer._bind
LISTEN_WAIT = 1.0
"""Seconds the follower's listening thread waits for a change at a time."""

Limit = Callable[[bytes, Any, bytes | None], bytes | None]
"""What to send to a UDP peer in place of a response (`Limiter.check`), given the
response, the peer and, for an answer from the cache, the cached bytes after its ID (the
same object for every answer to that question, so the limiter remembers what it read of
it): the response, another (a slip), or None (drop)."""

HandOff = Callable[[bytes, Any], bool]
"""Takes a datagram (and its sender's address) off the UDP thread when it is not for
the engine (an UPDATE, a transfer, a signed request): True when taken. Never blocks."""


def follow(store: Store, zone: Zone) -> Zone:
    """`zone` brought up to date with the store's journal (itself if nothing changed)."""
    last = store.last_seq()
    if last == zone.seq:
        return zone
    if last < zone.seq:  # the store was replaced under us: start again
        return load_zone(store, zone.config)
    while True:
        entries = store.journal_since(zone.seq)
        if not entries:
            return zone
        if entries[0].seq != zone.seq + 1:  # a gap (pruned journal): start again
            return load_zone(store, zone.config)
        zone = zone.apply(entries)
        if zone.seq >= last:
            return zone


class Follower:
    """Keeps `engine` serving the store's latest snapshot, from a thread of its own.

    The thread looks at the journal every `interval` seconds, and at once after `poke()`
    or `catch_up()`, or when `listener` (the store's, owned and closed by the follower)
    says so from a second thread: a change was committed, or the listener has just
    (re)connected and may have missed some. While the listener is not connected (the
    database restarting, a reconnection pausing), it looks every `unheard_interval`
    seconds instead, as it would with no listener at all. A look applies the new entries
    to the served snapshot (or loads the whole zone again after a gap or a replaced
    store, see `follow`) and swaps the engine's reference. It is the only thread that
    swaps, and each snapshot is built from the one served, so a snapshot never replaces
    a newer one. A failure is retried at the next look, and logged: a bug each time, the
    store out of reach once until it can be read again. The engine keeps serving its
    snapshot meanwhile. `on_swap`, if given, is called on the thread with each snapshot
    swapped in (it must not block)."""

    def __init__(
        self,
        store: Store,
        engine: Engine,
        interval: float,
        on_swap: Callable[[Zone], None] | None = None,
        listener: ChangeListener | None = None,
        *,
        unheard_interval: float | None = None,
    ) -> None:
        self.store = store
        self.engine = engine
        self.interval = interval
        self.unheard_interval = interval if unheard_interval is None else unheard_interval
        self.on_swap = on_swap
        self.listener = listener
        self._wake = threading.Condition()
        self._poked = False
        self._stopping = False
        self._waiting: list[Future[Zone]] = []
        self._read_at = time.monotonic()
        """When the last look that read the store began (the first snapshot's is just
        before the follower is made)."""
        self._failing = False
        self._thread = threading.Thread(target=self._run, name="dns-follow", daemon=True)
        self._listening = (
            None
            if listener is None
            else threading.Thread(
                target=self._listen, args=(listener,), name="dns-listen", daemon=True
            )
        )

    def start(self) -> None:
        self._thread.start()
        if self._listening is not None:
            self._listening.start()

    def snapshot_age(self) -> float:
        """Seconds since the served snapshot was last found to be the store's newest
        (the start of the last look that read the store): below the look interval
        while the store answers, growing while it does not."""
        return max(0.0, time.monotonic() - self._read_at)

    def poke(self) -> None:
        """Look at the journal now (thread-safe; never waits for a look)."""
        with self._wake:
            self._poked = True
            self._wake.notify()

    def catch_up(self) -> Future[Zone]:
        """Look at the journal now (thread-safe). The future holds the snapshot served
        after a look that began after this call, so it has every change committed
        before the call; or that look's error; it is cancelled if the follower stops
        first."""
        done: Future[Zone] = Future()
        with self._wake:
            if self._stopping:
                done.cancel()
                return done
            self._waiting.append(done)
            self._poked = True
            self._wake.notify()
        return done

    def stop(self, timeout: float) -> None:
        """End the thread, waiting at most `timeout` seconds for a look in progress."""
        with self._wake:
            self._stopping = True
            waiting, self._waiting = self._waiting, []
            self._wake.notify()
        for done in waiting:
            done.cancel()
        if self.listener is not None:
            self.listener.close()  # ends a wait in progress
        if self._thread.is_alive():
            self._thread.join(timeout)
        if self._listening is not None and self._listening.is_alive():
            self._listening.join(timeout)

    def _listen(self, listener: ChangeListener) -> None:
        """The listening thread: a look after every change, every (re)connection and
        every drop (so that the follower polls from then on, not after its interval)."""
        heard = False
        while not self._stopping:
            woken = listener.wait(LISTEN_WAIT)
            connected = listener.connected
            if woken or (heard and not connected):
                self.poke()
            heard = connected

    def _run(self) -> None:
        while True:
            with self._wake:
                if not self._poked and not self._stopping:
                    heard = self.listener is None or self.listener.connected
                    self._wake.wait(self.interval if heard else self.unheard_interval)
                if self._stopping:
                    return
                self._poked = False
                waiting, self._waiting = self._waiting, []
            waiting = [done for done in waiting if done.set_running_or_notify_cancel()]
            try:
                zone = self._look()
            except Exception as exc:  # the store may be busy or gone for a moment: retry
                if not self._stopping:  # else the store may be closing under a late look
                    self._failed(exc)
                for done in waiting:
                    done.set_exception(exc)
            else:
                for done in waiting:
                    done.set_result(zone)

    def _failed(self, exc: Exception) -> None:
        serial = self.engine.zone.serial
        if not isinstance(exc, ControparteError):
            log.exception("cannot read the journal; serving serial %d meanwhile", serial)
        elif not self._failing:
            log.warning("cannot read the journal (%s); serving serial %d meanwhile", exc, serial)
        self._failing = True

    def _look(self) -> Zone:
        started = time.monotonic()
        zone = self.engine.zone
        newer = follow(self.store, zone)
        self._read_at = started
        if self._failing:
            self._failing = False
            log.info("the journal can be read again: serving serial %d", newer.serial)
        if newer is not zone:
            self.engine.swap(newer)
            log.debug("zone %s now at serial %d", zone.config.origin, newer.serial)
            if self.on_swap is not None:
                self.on_swap(newer)
        return newer


def follower_for(
    store: Store,
    engine: Engine,
    settings: Settings,
    on_swap: Callable[[Zone], None] | None = None,
) -> Follower:
    """A follower of `store` for `engine`: woken by the store's change listener when it
    has one, and reading every `journal_check_interval` besides (every
    `journal_poll_interval` while the listener is not connected); else polling every
    `journal_poll_interval`."""
    listener = store.change_listener()
    poll = settings.journal_poll_interval
    if listener is None:
        return Follower(store, engine, poll, on_swap)
    interval = settings.journal_check_interval
    return Follower(store, engine, interval, on_swap, listener, unheard_interval=poll)


def bind_udp(host: str, port: int, shared: Shared = "no") -> socket.socket:
    """The UDP socket on host:port (`claim.bind`: SO_REUSEPORT only among the processes
    of one service), with a large receive buffer."""
    sock = bind(socket.SOCK_DGRAM, host, port, shared=shared)
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, UDP_RECEIVE_BUFFER)
    return sock


def udp_loop(
    sock: socket.socket,
    engine: Engine,
    running: Callable[[], bool],
    hand_off: HandOff | None = None,
    limit: Limit | None = None,
    *,
    updates: bool = False,
) -> None:
    """Answer datagrams until `running()` is false (checked after each datagram).
    Each datagram is screened first (`Engine.reject`; an UPDATE passes with `updates`),
    then answered from the answer cache, else offered to `hand_off` first, when given;
    what it does not take the engine answers. Each response passes `limit` (response rate
    limiting), when given, on its way out, with the cached tail it came from."""
    receive = sock.recvfrom
    send = sock.sendto
    answer = engine.answer
    counters = engine.counters
    malformed = counters.malformed
    replies = REPLIES.get  # `rejection`, inline: reason -> third header byte -> tail
    while running():
        try:
            wire, peer = receive(65535)
        except OSError:  # e.g. an ICMP error from an earlier send: keep serving
            if sock.fileno() < 0:
                return
            continue
        hit: bytes | None = None
        response: bytes | None
        if (reason := screen(wire, updates)) is not None:  # `Engine.reject`, inline
            malformed[reason] += 1
            tails = replies(reason)
            response = None if tails is None else wire[:2] + tails[wire[2]]
        elif (hit := engine.current.zone.udp_cache.get(wire[2:])) is not None:
            counters.queries += 1  # `hit`, the cached tail, also goes to `limit`
            counters.cache_hits += 1
            response = wire[:2] + hit
        elif hand_off is not None and hand_off(wire, peer):
            continue
        else:
            response = answer(wire, False)
        if response is not None and limit is not None:
            response = limit(response, peer, hit)
        if response is not None:
            try:
                send(response, peer)
            except OSError:
                continue


def _wake(sock: socket.socket) -> None:
    """Unblock a thread waiting in recvfrom on `sock` (an empty datagram to it)."""
    with contextlib.suppress(OSError):
        host, port = sock.getsockname()[:2]
        with socket.socket(sock.family, socket.SOCK_DGRAM) as s:
            s.sendto(b"", (host, port))


class DnsServer:
    """UDP + TCP server over a store; use `async with` or start()/stop()."""

    def __init__(
        self, settings: Settings, store: Store | None = None, services: Services | None = None
    ) -> None:
        self.settings = settings
        self.services = services  # for UPDATE (RFC 2136): credentials and registry writes
        self.store = store if store is not None else open_store(settings.data, settings.database)
        self.config = ZoneConfig.from_settings(settings)
        if self.store.adopt_zone_config(self.config.fingerprint()):
            log.info(
                "the zone's configuration (SOA, NS, glue or TTLs) changed: new serial %d,"
                " secondaries get the whole zone",
                self.store.serial(),
            )
        self.engine = Engine(load_zone(self.store, self.config))
        self.rrl = limiter_for(settings)  # on the UDP thread only
        self._udp: socket.socket | None = None
        self._udp_thread: threading.Thread | None = None
        self._tcp: Acceptor | None = None
        self.notifier: Notifier | None = None  # NOTIFY out (RFC 1996), in this process only
        if settings.notify:
            resolve = services.access.resolve_key if services is not None else None
            self.notifier = Notifier(targets(settings.notify, resolve), settings.notify_source)
        self._follower = follower_for(
            self.store,
            self.engine,
            settings,
            self.notifier.offer if self.notifier is not None else None,
        )
        self._loop: asyncio.AbstractEventLoop | None = None
        self._running = False
        self._tcp_slots = Slots(
            settings.tcp_max_connections, settings.tcp_max_connections_per_client
        )
        self._workers: list[multiprocessing.process.BaseProcess] = []
        self.updater = Updater(services, self.config) if services is not None else None
        self.transfers = Transfers(settings.transfer_allow, self.store, keys_of(services))
        self._update_executor: ThreadPoolExecutor | None = None
        self._transfer_executor: ThreadPoolExecutor | None = None
        self._hand_off_tasks: set[asyncio.Task[None]] = set()
        self._hand_off_slots = threading.BoundedSemaphore(MAX_PENDING_HAND_OFFS)
        self.updates_dropped = 0
        """Datagrams handed off the UDP thread (UPDATEs, transfers, signed queries)
        dropped because MAX_PENDING_HAND_OFFS were on their way already."""

    @property
    def port(self) -> int:
        assert self._udp is not None
        return int(self._udp.getsockname()[1])

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        if self.notifier is not None:
            await self.notifier.start(self.engine.zone)
        host = self.settings.dns.host
        try:
            self._udp, self._tcp = await self._bind(host, self.settings.dns.port)
        except BaseException:
            if self.notifier is not None:
                await self.notifier.stop()
            raise
        port = self.port
        self._running = True
        if self.updater is not None:
            self._update_executor = ThreadPoolExecutor(UPDATE_THREADS, "dns-update")
        self._transfer_executor = ThreadPoolExecutor(TRANSFER_THREADS, "dns-transfer")
        self._udp_thread = threading.Thread(
            target=udp_loop,
            args=(
                self._udp,
                self.engine,
                lambda: self._running,
                self._udp_hand_off,
                None if self.rrl is None else self.rrl.check,
            ),
            kwargs={"updates": self.updater is not None},
            name="dns-udp",
            daemon=True,
        )
        self._udp_thread.start()
        self._follower.start()
        context = multiprocessing.get_context("spawn")
        for number in range(1, self.settings.dns_workers):
            worker = context.Process(
                target=udp_worker,
                args=(self.settings, port, self.updater is not None),
                name=f"dns-udp-{number}",
                daemon=True,
            )
            worker.start()
            self._workers.append(worker)
        zone = self.engine.zone
        log.info(
            "serving zone %s serial %d (%d installations) on %s port %d, udp and tcp",
            self.config.origin,
            zone.serial,
            len(zone.nodes),
            host,
            port,
        )
        if not COMPILED:
            log.info("the screen is not compiled (no C compiler at install): garbage costs more")

    async def _bind(self, host: str, port: int) -> tuple[socket.socket, Acceptor]:
        """A UDP socket and a TCP server on the same `port`, the TCP one never shared
        and the UDP one shared only with this server's workers (`dns_workers`). Port 0
        takes the kernel's pick for UDP, which a TCP connection may hold already: then
        another pick, up to BIND_ATTEMPTS times. Nothing stays bound when this raises;
        a port that cannot be bound raises a `ConfigError` naming who holds it."""
        attempts_left = BIND_ATTEMPTS if port == 0 else 1
        shared: Shared = "first" if self.settings.dns_workers > 1 else "no"
        while True:
            kind = socket.SOCK_DGRAM
            try:
                udp = bind_udp(host, port, shared)
            except OSError as exc:
                raise bind_error("dns", kind, host, port, exc) from None
            try:
                kind = socket.SOCK_STREAM
                tcp = Acceptor(
                    bind(kind, host, int(udp.getsockname()[1])),
                    self._tcp_slots,
                    self._serve_tcp,
                    TCP_STREAM_LIMIT,
                )
                tcp.start(TCP_BACKLOG)
            except OSError as exc:
                udp.close()
                attempts_left -= 1
                if attempts_left == 0:
                    raise bind_error("dns", kind, host, port, exc) from None
            except BaseException:
                udp.close()
                raise
            else:
                return udp, tcp

    async def stop(self) -> None:
        self._running = False
        for worker in self._workers:
            worker.terminate()
        await asyncio.to_thread(self._follower.stop, FOLLOWER_STOP_TIMEOUT)
        if self.notifier is not None:
            await self.notifier.stop()
        await self._stop_sockets()
        await self._stop_hand_offs()
        if self._udp is not None:
            self._udp.close()
        for worker in self._workers:
            worker.join(2)

    async def _stop_sockets(self) -> None:
        """Stop accepting TCP and wake the UDP thread out of its receive, bounded."""
        if self._tcp is not None:
            await self._tcp.close(2)
        if self._udp is not None:
            _wake(self._udp)
            if self._udp_thread is not None:
                await asyncio.to_thread(self._udp_thread.join, 2)

    async def _stop_hand_offs(self) -> None:
        """Cancel what the UDP thread handed off (UPDATEs, transfers, signed requests)
        on its way and shut the executors down."""
        for task in list(self._hand_off_tasks):
            task.cancel()
        if self._hand_off_tasks:
            await asyncio.wait(self._hand_off_tasks, timeout=5)
        for executor in (self._update_executor, self._transfer_executor):
            if executor is not None:
                await asyncio.to_thread(executor.shutdown, True, cancel_futures=True)

    async def __aenter__(self) -> DnsServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def poke(self) -> None:
        """Look at the journal now (thread-safe); writers in this process call it."""
        self._follower.poke()

    def served_zone(self) -> ServedZone:
        """The serial served, and the age of its snapshot (`Follower.snapshot_age`)."""
        return ServedZone(self.engine.zone.serial, self._follower.snapshot_age())

    def metric_families(self) -> list[Family]:
        """The DNS counters of this process, the serial it serves, the age of its
        snapshot, its response rate limiting and its NOTIFYs (`MetricsSource`)."""
        c = self.engine.counters
        notify = self.notifier.metric_families() if self.notifier is not None else []
        return [
            counter("controparte_dns_queries_total", "DNS queries received.", c.queries),
            counter(
                "controparte_dns_cache_hits_total",
                "DNS answers from the answer cache.",
                c.cache_hits,
            ),
            counter("controparte_dns_fast_path_total", "DNS answers by the fast path.", c.fast),
            counter(
                "controparte_dns_general_path_total", "DNS answers by the general path.", c.general
            ),
            counter("controparte_dns_dropped_total", "DNS queries dropped unanswered.", c.dropped),
            labelled(
                "controparte_dns_malformed_total",
                "counter",
                "DNS messages rejected from their header and framing, before any parse, by"
                " reason (short and response: dropped; opcode: NOTIMP; else FORMERR).",
                "reason",
                dict(c.malformed),
            ),
            gauge(
                "controparte_dns_screen_compiled",
                "1 when malformed datagrams are screened by the compiled walk, 0 by Python's.",
                int(COMPILED),
            ),
            counter(
                "controparte_dns_internal_errors_total",
                "DNS queries answered SERVFAIL after an internal error.",
                c.internal_errors,
            ),
            gauge(
                "controparte_dns_tcp_connections",
                "DNS TCP connections open.",
                self._tcp_slots.open,
            ),
            labelled(
                "controparte_dns_tcp_refused_total",
                "counter",
                "DNS TCP connections closed at once, by reason (total: every slot taken;"
                " per_client: the client holds its share).",
                "reason",
                {reason: self._tcp_slots.refused[reason] for reason in REFUSALS},
            ),
            gauge(ZONE_SERIAL, ZONE_SERIAL_HELP, self.engine.zone.serial),
            gauge(
                "controparte_zone_snapshot_age_seconds",
                "Seconds since the zone served was last found to be the newest in the"
                " database (it grows while the database cannot be read).",
                self._follower.snapshot_age(),
            ),
            *families(RrlCounters() if self.rrl is None else self.rrl.counters),
            *transfer_families(self.transfers),
            *notify,
        ]

    # -- hand-offs: UPDATE, transfers, signed requests ----------------------------------

    def _udp_hand_off(self, wire: bytes, peer: Any) -> bool:
        """On the UDP thread (`HandOff`): take an UPDATE (when we apply them) or a keyed
        request (`is_keyed`) to the event loop, never waiting; drop it when
        MAX_PENDING_HAND_OFFS are already on their way (a flood must not grow the loop's
        queue without bound)."""
        if not ((self.updater is not None and is_update(wire)) or is_keyed(wire, tcp=False)):
            return False
        loop = self._loop
        if loop is None or not self._hand_off_slots.acquire(blocking=False):
            self.updates_dropped += 1
            return True
        try:
            loop.call_soon_threadsafe(self._start_hand_off, wire, peer)
        except RuntimeError:  # the loop is closing
            self._hand_off_slots.release()
        return True

    def _start_hand_off(self, wire: bytes, peer: Any) -> None:
        if not self._running:
            self._hand_off_slots.release()
            return
        task = asyncio.create_task(self._hand_off_task(wire, peer))
        self._hand_off_tasks.add(task)
        task.add_done_callback(self._hand_off_tasks.discard)

    async def _hand_off_task(self, wire: bytes, peer: Any) -> None:
        try:
            if is_update(wire):
                response = await self._update(wire, str(peer[0]))
                out = [] if response is None else [response]
            else:
                out = list(await self._keyed(wire, str(peer[0]), tcp=False))
            if self._udp is not None:
                for message in out:
                    with contextlib.suppress(OSError):
                        self._udp.sendto(message, peer)
        finally:
            self._hand_off_slots.release()

    async def _update(self, wire: bytes, peer: str) -> bytes | None:
        """The response to one UPDATE: the write runs in the executor; when it changed
        the registry, the response leaves once the follower has swapped in a snapshot
        with the change (awaited, the loop goes on), so the client's next query sees it."""
        assert self.updater is not None and self._update_executor is not None
        loop = asyncio.get_running_loop()
        result = await loop.run_in_executor(
            self._update_executor, self.updater.handle, wire, peer, self.engine.zone
        )
        if result.changed:
            try:
                await asyncio.wrap_future(self._follower.catch_up())
            except Exception:  # logged by the follower, which retries
                log.warning("the snapshot may not have the UPDATE yet: answering anyway")
        return result.response

    async def _keyed(self, wire: bytes, peer: str, *, tcp: bool) -> Iterator[bytes]:
        """`Transfers.respond` to a keyed request from the snapshot served now, run in
        the transfer executor (it reads keys and the journal); over UDP its one message
        (if any) is made there too, over TCP they are left for `_stream` to make."""
        assert self._transfer_executor is not None
        zone = self.engine.zone

        def respond() -> Iterator[bytes]:
            out = self.transfers.respond(wire, peer, zone, tcp=tcp)
            return out if tcp else iter(list(out))

        return await asyncio.get_running_loop().run_in_executor(self._transfer_executor, respond)

    async def _stream(
        self, writer: asyncio.StreamWriter, wire: bytes, peer: str, drain_within: float
    ) -> None:
        """Answer a keyed request over TCP: its messages made here one at a time, each
        written and drained, then a pause that gives the UDP thread its share of the
        interpreter (`transfer_pause`) and lets the loop serve other connections."""
        counters = self.engine.counters
        out = await self._keyed(wire, peer, tcp=True)
        queries, since = counters.queries, time.perf_counter()
        while True:
            started = time.perf_counter()
            try:
                message = next(out, None)  # the transfer counts as done when this is None
            except Exception:  # a bug: the stream cannot go on, the connection ends
                log.exception("internal error in a response to %s; connection closed", peer)
                raise ConnectionAbortedError from None
            if message is None:
                return
            made = time.perf_counter() - started
            writer.write(len(message).to_bytes(2, "big") + message)
            await asyncio.wait_for(writer.drain(), drain_within)
            now = time.perf_counter()
            rate = (counters.queries - queries) / max(now - since, 1e-6)
            queries, since = counters.queries, now
            await asyncio.sleep(transfer_pause(made, rate))

    async def _serve_tcp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """One connection the acceptor admitted (it holds a slot until this returns)."""
        timeout = self.settings.tcp_idle_timeout
        try:
            while True:
                prefix = await asyncio.wait_for(reader.readexactly(2), timeout)
                wire = await asyncio.wait_for(
                    reader.readexactly(int.from_bytes(prefix, "big")), timeout
                )
                reason = self.engine.reject(wire, updates=self.updater is not None)
                if reason is not None:
                    response = rejection(wire, reason)
                elif self.updater is not None and is_update(wire):
                    response = await self._update(wire, _address(writer))
                elif is_keyed(wire, tcp=True):
                    await self._stream(writer, wire, _address(writer), timeout)
                    continue
                else:
                    response = self.engine.answer(wire, True)
                if response is None:
                    continue
                writer.write(len(response).to_bytes(2, "big") + response)
                await asyncio.wait_for(writer.drain(), timeout)
        except (TimeoutError, asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()


def transfer_pause(made: float, rate: float) -> float:
    """Seconds a transfer pauses after a message that took `made` seconds to make, while
    the server answers `rate` queries a second. The interpreter runs one thread at a
    time, so a transfer made flat out takes the UDP thread's turns (it halved the UDP
    answers). The pause grows with the rate: `made * rate / YIELD_RATE` (at most
    MAX_YIELD times `made`), so the UDP thread keeps the share it needs for all but the
    last YIELD_RATE queries a second of what it can answer alone; idle, a transfer
    runs flat out."""
    return made * min(rate / YIELD_RATE, MAX_YIELD)


def _address(writer: asyncio.StreamWriter) -> str:
    """The address of a TCP connection's peer ("-" when unknown)."""
    peer = writer.get_extra_info("peername")
    return str(peer[0]) if peer else "-"


def _no_key(_name: object) -> ResolvedKey | None:
    return None


def keys_of(services: Services | None) -> KeyResolver:
    """The TSIG keys of `services` (none without: every signed request gets BADKEY)."""
    return _no_key if services is None else services.access.resolve_key


def transfer_families(transfers: Transfers) -> list[Family]:
    """The metrics of `transfers`: transfers served completely by type and peer (the
    key's name when signed, else the address), refusals by reason, and the serial each
    peer last transferred completely."""
    done, refused, serials = transfers.stats.snapshot()
    samples = tuple(
        Sample((("type", kind), ("peer", peer)), count)
        for (kind, peer), count in sorted(done.items())
    )
    return [
        Family(
            "controparte_transfers_total",
            "counter",
            "Zone transfers served completely, by type and peer (key name or address).",
            samples,
        ),
        labelled(
            "controparte_transfers_refused_total",
            "counter",
            "Transfer requests and signed queries refused, by reason.",
            "reason",
            refused,
        ),
        labelled(
            "controparte_secondary_serial",
            "gauge",
            "The serial each peer (key name or address) last transferred completely.",
            "peer",
            serials,
        ),
    ]


def udp_worker(settings: Settings, port: int, updates: bool = False) -> None:
    """An extra UDP process: own store handle, snapshot and follower, and a thread that
    answers what its UDP loop hands off: transfer requests and signed requests, and
    with `updates` UPDATEs, over services of its own (which also give it the keys)."""
    logs.configure(settings)
    store = open_store(settings.data, settings.database)
    config = ZoneConfig.from_settings(settings)
    engine = Engine(load_zone(store, config))
    sock = bind_udp(settings.dns.host, port, "yes")
    follower = follower_for(store, engine, settings)
    follower.start()
    services = open_services(settings, store=store) if updates else None
    updater = Updater(services, config) if services is not None else None
    transfers = Transfers(settings.transfer_allow, store, keys_of(services))
    pending: queue.Queue[tuple[bytes, Any]] = queue.Queue(MAX_PENDING_HAND_OFFS)

    def answer(wire: bytes, peer: str) -> list[bytes]:
        if updater is None or not is_update(wire):
            return list(transfers.respond(wire, peer, engine.zone, tcp=False))
        result = updater.handle(wire, peer, engine.zone)
        if result.changed:
            try:
                follower.catch_up().result()
            except Exception:  # logged by the follower, which retries
                log.warning("the snapshot may not have the UPDATE yet: answering anyway")
        return [] if result.response is None else [result.response]

    def hand_off_thread() -> None:
        while True:
            wire, peer = pending.get()
            for message in answer(wire, str(peer[0])):
                with contextlib.suppress(OSError):
                    sock.sendto(message, peer)

    def hand_off(wire: bytes, peer: Any) -> bool:
        if not ((updater is not None and is_update(wire)) or is_keyed(wire, tcp=False)):
            return False
        with contextlib.suppress(queue.Full):
            pending.put_nowait((wire, peer))
        return True

    threading.Thread(target=hand_off_thread, name="dns-hand-off", daemon=True).start()
    rrl = limiter_for(settings)
    limit = None if rrl is None else rrl.check
    udp_loop(sock, engine, lambda: True, hand_off, limit, updates=updater is not None)
