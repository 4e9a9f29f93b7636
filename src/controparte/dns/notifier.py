"""NOTIFY out, the shell: sends what `notify.NotifyMachine` decides, hands it the
answers, and runs its one timer, all on the event loop of the process that serves DNS.

- Sockets: one UDP socket per address family of the secondaries, bound to the setting
  `notify_source` when it is of that family (secondaries match the source address
  against their list of primaries), else to the wildcard address (the system picks
  the source); the port is the system's choice. The loop reads them (`add_reader`);
  an answer is handed to the machine with the secondary its source address names.
- Serials: the DNS server's follower calls `offer` from its thread after every swap;
  only the latest snapshot is handed to the loop (at most one hand-off is queued).
  `start` offers the snapshot served at start: secondaries hear of the current serial
  whenever the server starts (changes may have been made while it was stopped).
- Keys: `targets` resolves each secondary's key name through `Access.resolve_key`; a
  key that does not exist or is not a transfer key is a ConfigError that names the
  secondary and the key, raised before anything starts.
- Logs (`controparte.dns.notify`): every failure with the secondary and the reason,
  never a secret. Metrics: `metric_families` (a `MetricsSource`).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import socket
import threading
from collections.abc import Callable, Sequence

import dns.exception
import dns.name
import dns.tsig

from controparte.dns.notify import NotifyMachine, Outcome, Send, Target, Timing
from controparte.dns.zone import Zone
from controparte.errors import ConfigError
from controparte.service.access import ResolvedKey
from controparte.service.metrics import Family, Sample
from controparte.settings import Secondary
from controparte.store import KeyRole

log = logging.getLogger("controparte.dns.notify")

NOTIFY_TOTAL = "controparte_notify_total"
NOTIFY_ACKED_SERIAL = "controparte_notify_acked_serial"
MAX_READS = 64
"""Datagrams read per wake-up of a socket, so a flood cannot hold the loop."""

ResolveKey = Callable[[dns.name.Name], ResolvedKey | None]


def targets(secondaries: Sequence[Secondary], resolve_key: ResolveKey | None) -> list[Target]:
    """The secondaries of the setting `notify`, each with its key resolved; ConfigError
    for a key that is missing or not a transfer key, or a secondary named twice
    (`resolve_key` None: no key can be resolved)."""
    found: list[Target] = []
    seen: set[tuple[str, int]] = set()
    for secondary in secondaries:
        host = ipaddress.ip_address(secondary.host).compressed
        where = str(Target(host, secondary.port))
        if (host, secondary.port) in seen:
            raise ConfigError(f"notify: the secondary {where} is named twice")
        seen.add((host, secondary.port))
        key = None
        if secondary.key is not None:
            key = _transfer_key(where, secondary.key, resolve_key)
        found.append(Target(host, secondary.port, key))
    return found


def _transfer_key(where: str, name: str, resolve_key: ResolveKey | None) -> dns.tsig.Key:
    make = f"make one with `controparte tsig-key --transfer {name} --out FILE`"
    if resolve_key is None:
        raise ConfigError(f"notify: the key {name} of {where} cannot be read here")
    try:
        resolved = resolve_key(dns.name.from_text(name))
    except dns.exception.DNSException:
        raise ConfigError(f"notify: the key name {name!r} of {where} is not valid") from None
    if resolved is None:
        raise ConfigError(
            f"notify: the secondary {where} names the key {name}, which does not exist: {make}"
        )
    if resolved.role is not KeyRole.TRANSFER:
        raise ConfigError(
            f"notify: the key {name} of {where} is an update key; NOTIFYs are"
            f" signed with transfer keys only: {make}"
        )
    return resolved.key


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def _bind(family: socket.AddressFamily, source: str) -> socket.socket:
    """A non-blocking UDP socket of `family`, bound to `source` when it is of that
    family, else to the wildcard address; any port."""
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        wildcard = "::" if family == socket.AF_INET6 else "0.0.0.0"
        address = source if source and _family(source) == family else wildcard
        try:
            sock.bind((address, 0))
        except OSError as exc:
            raise ConfigError(
                f"notify_source: cannot send NOTIFYs from {address}: {exc.strerror}"
            ) from None
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


class Notifier:
    """NOTIFYs to `targets` of every serial the DNS server serves (see the module)."""

    def __init__(
        self,
        targets: Sequence[Target],
        source: str = "",
        timing: Timing | None = None,
    ) -> None:
        self.machine = NotifyMachine(targets, timing)
        self.source = source
        self._index = {(t.host, t.port): i for i, t in enumerate(targets)}
        self._families = sorted({_family(t.host) for t in targets})
        self._sockets: dict[socket.AddressFamily, socket.socket] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._timer_when = 0.0
        self._lock = threading.Lock()
        self._offered: Zone | None = None

    async def start(self, zone: Zone) -> None:
        """Open the sockets (a ConfigError if `notify_source` cannot be bound) and
        notify every secondary of `zone`'s serial."""
        loop = asyncio.get_running_loop()
        try:
            for family in self._families:
                sock = _bind(family, self.source)
                self._sockets[family] = sock
                loop.add_reader(sock.fileno(), self._readable, sock)
        except BaseException:
            self._close()
            raise
        self._loop = loop
        log.info(
            "notifying %s of every serial, from %s",
            ", ".join(str(t) for t, _ in self.machine.tallies()),
            ", ".join(str(s.getsockname()[0]) for s in self._sockets.values()),
        )
        self.changed(zone)

    async def stop(self) -> None:
        """Stop sending; NOTIFYs still unanswered are abandoned."""
        with self._lock:
            self._loop = None
            self._offered = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._close()

    def _close(self) -> None:
        loop = asyncio.get_running_loop()
        for sock in self._sockets.values():
            loop.remove_reader(sock.fileno())
            sock.close()
        self._sockets.clear()

    def offer(self, zone: Zone) -> None:
        """From any thread: `zone` is served now. Hands the latest offered snapshot to
        the loop; never waits, and queues at most one hand-off."""
        with self._lock:
            loop = self._loop
            if loop is None:
                return
            queued = self._offered is not None
            self._offered = zone
        if not queued:
            with contextlib.suppress(RuntimeError):  # the loop is closed: stopping
                loop.call_soon_threadsafe(self._take)

    def _take(self) -> None:
        with self._lock:
            zone, self._offered = self._offered, None
        if zone is not None and self._loop is not None:
            self.changed(zone)

    def changed(self, zone: Zone) -> None:
        """On the loop: `zone` is served now."""
        assert self._loop is not None
        if zone.serial != self.machine.serial:
            self.machine.changed(zone.soa_rrset(), self._loop.time())
            self._schedule()

    # -- the machine's timer, sends and answers --------------------------------------------

    def _schedule(self) -> None:
        """Arm the timer for the machine's next due time (or none)."""
        when = self.machine.next_due()
        if self._timer is not None:
            if when == self._timer_when:
                return
            self._timer.cancel()
            self._timer = None
        if when is not None and self._loop is not None:
            self._timer = self._loop.call_at(when, self._tick, when)
            self._timer_when = when

    def _tick(self, when: float) -> None:
        self._timer = None
        if self._loop is None:
            return
        # A loop's timers may fire a little early (uvloop counts in milliseconds).
        sends, outcomes = self.machine.due(max(self._loop.time(), when))
        for outcome in outcomes:
            _log(outcome)
        for send in sends:
            self._send(send)
        self._schedule()

    def _send(self, send: Send) -> None:
        assert self._loop is not None
        target = send.target
        try:
            self._sockets[_family(target.host)].sendto(send.wire, (target.host, target.port))
        except OSError as exc:
            reason = f"not sent: {exc.strerror or type(exc).__name__}"
            _log(self.machine.unsent(send.index, self._loop.time(), reason))
        else:
            log.debug("NOTIFY to %s: serial %d sent", target, send.serial)

    def _readable(self, sock: socket.socket) -> None:
        assert self._loop is not None
        for _ in range(MAX_READS):
            try:
                wire, peer = sock.recvfrom(65535)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:  # an ICMP error for an earlier send: the retry handles it
                continue
            try:
                host = ipaddress.ip_address(peer[0]).compressed
            except ValueError:
                continue
            index = self._index.get((host, int(peer[1])))
            if index is None:
                continue
            outcome = self.machine.answer(index, wire, self._loop.time())
            if outcome is not None:
                _log(outcome)
        self._schedule()

    # -- metrics -------------------------------------------------------------------------

    def metric_families(self) -> list[Family]:
        """NOTIFYs by secondary and result, and the serial each acknowledged last
        (`MetricsSource`; the numbers are read without a lock, each one whole)."""
        counts: list[Sample] = []
        acked: list[Sample] = []
        for target, tally in self.machine.tallies():
            name = str(target)
            for result, value in (
                ("sent", tally.sent),
                ("answered", tally.answered),
                ("failed", tally.failed),
            ):
                counts.append(Sample((("secondary", name), ("result", result)), value))
            if tally.acked is not None:
                acked.append(Sample((("secondary", name),), tally.acked))
        return [
            Family(
                NOTIFY_TOTAL,
                "counter",
                "NOTIFYs to secondaries, by result (sent; answered; failed: an error answer,"
                " no answer before the next try, or not sent).",
                tuple(counts),
            ),
            Family(
                NOTIFY_ACKED_SERIAL,
                "gauge",
                "The serial of the last NOTIFY each secondary answered.",
                tuple(acked),
            ),
        ]


def _log(outcome: Outcome) -> None:
    if outcome.answered:
        log.debug("NOTIFY to %s: serial %d answered", outcome.target, outcome.serial)
        return
    then = (
        "no retry planned"
        if outcome.retry_in is None
        else "sending again now"
        if outcome.retry_in == 0
        else f"next try in {outcome.retry_in:.3g} s"
    )
    log.warning(
        "NOTIFY to %s (serial %d) failed: %s; %s",
        outcome.target,
        outcome.serial,
        outcome.reason,
        then,
    )
