"""Response rate limiting (RRL) for UDP answers: the design of Vixie and Schryver (BIND's
`rate-limit`), as Knot's `rrl` module and NSD's `rrl-*` options apply it.

A spoofed UDP query makes the server send its answer to the spoofed address, so a flood
of them turns the server into a reflector. RRL counts the responses going to each
source prefix (`ipv4_prefix`, `ipv6_prefix` bits of the address), per kind of response:

- an answer, or NODATA: per question (owner name and type), `rate` a second;
- NXDOMAIN: all of them together (this server serves one zone), `errors_rate` a second;
- any other rcode (REFUSED, FORMERR, SERVFAIL, NOTIMP...): all of them together,
  `errors_rate` a second.

(The zone has no delegations, so no referrals.) Each such bucket is an account credited
its rate every second, holding at most one second's worth and owing at most `window`
seconds' worth; each response debits one. While the account is negative, responses are
limited: every `slip`-th of them leaves as a truncated response (TC=1, the question and
nothing else) so that a real resolver behind the prefix retries over TCP, which is never
limited; the others are dropped. `slip` 0 drops them all, 1 truncates them all. A rate
of 0 limits nothing of its kind. Sources in `whitelist` are never limited.

The table holds at most `table_size` buckets: when it is full, buckets that are not
limiting are forgotten (an idle one is back to a full account anyway), and if that is
not enough, the sources' buckets are, the source seen first first, down to three
quarters of the cap.

The question in a bucket's key is the bytes up to the first zero byte after the header
(the owner name's end, save for a name with a zero byte inside a label: such names are
keyed on their leading part) and the type, lower-cased. Pure: the clock is injected.
"""

from __future__ import annotations

import ipaddress
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from controparte.service.metrics import Family, counter
from controparte.settings import Settings

_FULL = 1.0 + 1e-6
"""An account's size, one second, and a microsecond for the rounding of adding 1/rate
again and again (five steps of 0.2 s from 1000.2 overshoot 1001.0 by 1e-13)."""
_NXDOMAIN_TAG, _ERROR_TAG = b"\x03", b"\x01"
"""The question part of the key of NXDOMAIN and of the other errors."""
_V6 = 1 << 128
"""Added to an IPv6 prefix, so that no IPv6 prefix equals an IPv4 one."""
_MAPPED = b"\x00" * 10 + b"\xff\xff"
"""The first 12 bytes of an IPv4-mapped IPv6 address (a dual-stack socket's IPv4 peer)."""
_TC = 0x02  # in the third header byte
_NO_RECORDS = b"\x00\x00" * 3  # ANCOUNT, NSCOUNT, ARCOUNT


@dataclass(frozen=True, slots=True)
class RrlConfig:
    """What `Limiter` limits: rates a second, slip, window in seconds, prefix lengths,
    the table's cap and the networks never limited (text, as `ipaddress` reads it)."""

    rate: int = 20
    errors_rate: int = 10
    slip: int = 2
    window: int = 15
    ipv4_prefix: int = 24
    ipv6_prefix: int = 56
    table_size: int = 100_000
    whitelist: Sequence[str] = ()


@dataclass(slots=True)
class RrlCounters:
    """Responses dropped, and sent truncated in their place (slipped)."""

    dropped: int = 0
    slipped: int = 0


def families(counters: RrlCounters) -> list[Family]:
    """The metrics of `counters` (`MetricsSource`'s families)."""
    return [
        counter(
            "controparte_dns_rrl_dropped_total",
            "UDP answers dropped by response rate limiting.",
            counters.dropped,
        ),
        counter(
            "controparte_dns_rrl_slipped_total",
            "UDP answers sent truncated (TC) in place of an answer by response rate limiting.",
            counters.slipped,
        ),
    ]


def truncated(response: bytes) -> bytes:
    """`response` as a slip sends it: its header with TC set and no records, then its
    question (when it has one, well-formed)."""
    header = response[:2] + bytes((response[2] | _TC, response[3]))
    if len(response) < 12 or not (response[4] | response[5]):
        return header + b"\x00\x00" + _NO_RECORDS
    pos = 12
    size = len(response)
    while pos < size and 0 < response[pos] <= 63:
        pos += 1 + response[pos]
    if pos >= size or response[pos] or pos + 5 > size:
        return header + b"\x00\x00" + _NO_RECORDS
    return header + b"\x00\x01" + _NO_RECORDS + response[12 : pos + 5]


class Limiter:
    """The buckets of one process; `check` says what to send in place of a response.

    A bucket is one number, the time its account is full again (the "theoretical arrival
    time" of the generic cell rate algorithm, which is a token bucket stated as a time):
    each response moves it on by 1/rate, from now when it is past, and the response is
    limited when that lands more than a second (the account's size) ahead of now. A
    limited response moves it on too, to at most `window` seconds beyond that (the debt).

    The buckets of a source prefix are kept together, in a table of their own keyed by
    the question (answers) or by a one-byte tag (NXDOMAIN, other errors: no question is
    that short), and each address is remembered with its source's table: an answer costs
    two look-ups in small tables and one in its source's, and touches no object made for
    it (what the server spends beyond that is memory it reads cold, the more so the
    bigger one table)."""

    def __init__(self, config: RrlConfig, clock: Callable[[], float] = time.monotonic) -> None:
        self.config = config
        self.counters = RrlCounters()
        self._clock = clock
        self._by_source: dict[int, dict[bytes, float]] = {}
        """Source prefix -> its buckets: question (or tag) -> the time its account is
        full again. Oldest source first."""
        self._size = 0  # buckets in `_by_source`, all sources together
        self._slips: dict[tuple[int, bytes], int] = {}
        self._shift4 = 32 - config.ipv4_prefix
        self._shift6 = 128 - config.ipv6_prefix
        self._answer_step = 1.0 / config.rate if config.rate else 0.0
        self._error_step = 1.0 / config.errors_rate if config.errors_rate else 0.0
        self._ceiling = 1.0 + config.window
        self._sources: dict[str, tuple[int, dict[bytes, float]]] = {}
        """Address (as the socket gives it) -> its source prefix and that source's
        buckets (`_UNLIMITED` for a whitelisted one); forgotten whenever a source's
        table is, and at `table_size` addresses."""
        self._questions: dict[bytes, bytes] = {}
        self._whitelist = tuple(
            (network.version == 6, int(network.network_address), int(network.broadcast_address))
            for network in (ipaddress.ip_network(text, strict=False) for text in config.whitelist)
        )

    def __len__(self) -> int:
        return self._size

    def source(self, host: str) -> int:
        """The source prefix of the address `host` (an IPv4-mapped address counts as its
        IPv4 address) as a number, IPv6 prefixes offset past every IPv4 one; -1 when the
        address is in the whitelist."""
        if ":" not in host:
            address = int.from_bytes(socket.inet_aton(host))
            v6 = False
        else:
            packed = socket.inet_pton(socket.AF_INET6, host.partition("%")[0])
            v6 = packed[:12] != _MAPPED
            address = int.from_bytes(packed if v6 else packed[12:])
        source = _V6 + (address >> self._shift6) if v6 else address >> self._shift4
        for network_v6, low, high in self._whitelist:
            if network_v6 is v6 and low <= address <= high:
                source = -1
        return source

    def _remember(self, host: str) -> tuple[int, dict[bytes, float]]:
        """`host`'s source prefix and that source's buckets (made when new), remembered."""
        source = self.source(host)
        if source < 0:
            found = (source, _UNLIMITED)
        else:
            buckets = self._by_source.get(source)
            if buckets is None:
                if len(self._by_source) >= self.config.table_size:
                    self._evict(self._clock())  # sources without a bucket (a rate of 0) too
                buckets = self._by_source[source] = {}
            found = (source, buckets)
        if len(self._sources) >= self.config.table_size:
            self._sources.clear()
        self._sources[host] = found
        return found

    def check(
        self, response: bytes, peer: tuple[Any, ...], tail: bytes | None = None
    ) -> bytes | None:
        """What to send to `peer` (a UDP socket address) in place of `response`: itself,
        its truncated form (a slip), or nothing (dropped). `tail`: `response` after its
        ID when it came from the answer cache (that object, long-lived): the question
        read from it is remembered by it (at most `table_size`), so that the next answer
        from the cache is keyed without reading it again."""
        found = self._sources.get(peer[0])
        if found is None:
            found = self._remember(peer[0])
        buckets = found[1]
        if buckets is _UNLIMITED:
            return response
        rcode = response[3] & 0x0F
        key: bytes | None
        if rcode:
            key = _NXDOMAIN_TAG if rcode == 3 else _ERROR_TAG
            step = self._error_step
        else:
            key = None if tail is None else self._questions.get(tail)
            if key is None:
                key = self._question(response, tail)
            step = self._answer_step
        if not step:
            return response
        now = self._clock()
        due = buckets.get(key)
        if due is None or due < now:  # new, or idle long enough: a full account
            if due is None:
                if self._size >= self.config.table_size:
                    self._evict(now)
                    return self.check(response, peer, tail)  # its source's table may be gone
                self._size += 1
            buckets[key] = now + step
            return response
        due += step
        if due <= now + _FULL:
            buckets[key] = due
            return response
        ceiling = now + self._ceiling
        buckets[key] = due if due < ceiling else ceiling
        return self._limited((found[0], key), response)

    def _question(self, response: bytes, tail: bytes | None) -> bytes:
        """The question of `response` as a key (see the module), remembered by `tail`."""
        end = response.find(0, 12) + 3
        question = response[12:end].lower() if end > 2 else b""
        if tail is not None:
            if len(self._questions) >= self.config.table_size:
                self._questions.clear()
            self._questions[tail] = question
        return question

    def _limited(self, key: tuple[int, bytes], response: bytes) -> bytes | None:
        """A limited response: every `slip`-th of a bucket's truncated, the others
        dropped."""
        slip = self.config.slip
        if slip:
            slips = self._slips.get(key, 0) + 1
            if slips >= slip:
                self._slips[key] = 0
                self.counters.slipped += 1
                return truncated(response)
            self._slips[key] = slips
        self.counters.dropped += 1
        return None

    def _evict(self, now: float) -> None:
        """Make room: forget the buckets that are not limiting now (their account is not
        in debt), then, if more than three quarters of the cap remain, the sources' tables
        oldest first down to that. The addresses remembered are forgotten too (they may
        point at a table gone)."""
        full = now + _FULL
        by_source = self._by_source
        for source, buckets in list(by_source.items()):
            for question, due in list(buckets.items()):
                if due <= full:
                    del buckets[question]
            if not buckets:
                del by_source[source]
        size = sum(len(buckets) for buckets in by_source.values())
        keep = self.config.table_size * 3 // 4
        for source in list(by_source):
            if size <= keep:
                break
            size -= len(by_source.pop(source))
        self._size = size
        self._sources.clear()
        slips = self._slips
        for slipped in [k for k in slips if k[1] not in by_source.get(k[0], ())]:
            del slips[slipped]


_UNLIMITED: dict[bytes, float] = {}
"""The buckets of a whitelisted source: none, never written (`Limiter._remember`)."""


def limiter_for(settings: Settings) -> Limiter | None:
    """A limiter with the limits `settings` ask for; None when RRL is off (setting
    `rrl`: "auto" is on unless DNS listens on a loopback address)."""
    mode = settings.rrl
    if mode == "off" or (mode == "auto" and ipaddress.ip_address(settings.dns.host).is_loopback):
        return None
    config = RrlConfig(
        settings.rrl_rate,
        settings.rrl_errors_rate,
        settings.rrl_slip,
        settings.rrl_window,
        settings.rrl_ipv4_prefix,
        settings.rrl_ipv6_prefix,
        settings.rrl_table_size,
        settings.rrl_whitelist,
    )
    return Limiter(config)
