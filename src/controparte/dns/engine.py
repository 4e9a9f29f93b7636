"""The engine: one current zone snapshot, and request bytes -> response bytes through
the screen, the answer cache, the fast path and the general path, in that order (the
screen first: garbage is judged from its header before its bytes are copied and hashed
for the cache; the compiled screen costs a valid query about 20 ns).

Every response depends only on the query bytes after the ID, the transport and the
snapshot, so it is cached by those; a new snapshot starts with empty caches.
Only opcode QUERY gets past the screen, so only its responses are cached (an UPDATE
changes data; the server routes UPDATEs around the engine when it can apply them, and
the engine's screen answers NOTIMP).
`answer` never raises: an internal error is logged, counted and answered SERVFAIL.
What the screen rejects (`dns/screen.py`) is counted by reason, never logged: a flood
of garbage must not cost a log line a packet.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import dns.rcode

from controparte.dns.answer import answer as general_answer
from controparte.dns.answer import header_only
from controparte.dns.fastpath import FastPath
from controparte.dns.screen import REASONS, rejection, screen
from controparte.dns.zone import Zone

log = logging.getLogger("controparte.dns")

CACHE_MAX_ENTRIES = 500_000
CACHE_MAX_QUERY = 512  # longer queries are answered, never cached
_CACHED_RCODES = (dns.rcode.NOERROR, dns.rcode.NXDOMAIN)


@dataclass(frozen=True, slots=True)
class Current:
    """The snapshot served now and its fast path: swapped together, in one assignment."""

    zone: Zone
    fast: FastPath


@dataclass(slots=True)
class Counters:
    """Queries received, and how each was answered (for metrics); datagrams the screen
    rejected by reason, apart (they are no queries)."""

    queries: int = 0
    cache_hits: int = 0
    fast: int = 0
    general: int = 0
    dropped: int = 0
    internal_errors: int = 0
    malformed: dict[str, int] = field(default_factory=lambda: dict.fromkeys(REASONS, 0))


class Engine:
    """Answers from the current snapshot; `swap` replaces it in one assignment."""

    def __init__(self, zone: Zone) -> None:
        self.current = Current(zone, FastPath(zone))
        self.counters = Counters()

    @property
    def zone(self) -> Zone:
        return self.current.zone

    def swap(self, zone: Zone) -> None:
        self.current = Current(zone, FastPath(zone))

    def reject(self, wire: bytes, *, updates: bool = False) -> str | None:
        """`screen` (UPDATE passes with `updates`), the rejection counted: its reason,
        or None when `wire` goes on to be answered."""
        reason = screen(wire, updates)
        if reason is not None:
            self.counters.malformed[reason] += 1
        return reason

    def answer(self, wire: bytes, tcp: bool) -> bytes | None:
        """The response to one request (None: send nothing). Never raises."""
        current = self.current
        counters = self.counters
        cache = current.zone.tcp_cache if tcp else current.zone.udp_cache
        reason = self.reject(wire)
        if reason is not None:
            return rejection(wire, reason)
        key = wire[2:]
        hit = cache.get(key)
        counters.queries += 1
        if hit is not None:
            counters.cache_hits += 1
            return wire[:2] + hit
        try:
            response = current.fast.answer(wire, tcp)
            if response is None:
                counters.general += 1
                response = general_answer(current.zone, wire, tcp=tcp)
            else:
                counters.fast += 1
        except Exception:  # a bug must not stop the server: answer SERVFAIL, go on
            counters.internal_errors += 1
            log.exception("internal error answering a query; answered SERVFAIL")
            return header_only(wire, dns.rcode.SERVFAIL)
        if response is None:
            counters.dropped += 1
            return None
        if len(key) <= CACHE_MAX_QUERY and response[3] & 0x0F in _CACHED_RCODES:
            if len(cache) >= CACHE_MAX_ENTRIES:
                cache.clear()
            cache[key] = response[2:]
        return response
