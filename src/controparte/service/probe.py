"""The outside-in probes: the service dials an installation's registered public address
and port, and says what happened.

- `POST /v1/installations/{code}/probe`: the installation's own port (`choose_target`,
  `run_probe`). The target is never the caller's choice: it is the installation's
  registered public port, at the registered address (IPv4 or IPv6) that equals the
  request's source address (after the trusted-proxy rule). A request from any other
  address is refused (`ForbiddenError`, 403): the address must have come from the
  installation itself (a heartbeat does that), so the service dials only the machine
  that asks, never a third party's host. The probe line (`model/probe.py`) is sent and
  its answer checked with the token of the request.
- `POST /v1/installations/{code}/probe-counterpart`: a counterpart linked to `code`
  (`counterpart_targets`, `run_dial`): each registered public address (IPv4, IPv6) at
  the registered public port, never an address the requester names; connect only,
  since the service holds no token of the counterpart to check an answer with. No
  registered address or port: `ForbiddenError`.
- An installation with no registered port cannot be probed (`ValidationError`, 422).
- Rate limits (`ProbeLimiter`, `RateLimitedError` carrying `retry_after`: 429 with
  Retry-After): one probe of an installation's own port per `PROBE_INTERVAL` s; one
  probe of a given counterpart per `PROBE_INTERVAL` s whoever asks (its own slot, so a
  counterpart's probes never hold up the installation's own); and at most
  `REQUESTER_LIMIT` counterpart probes per requester per `REQUESTER_WINDOW` s.
- Bounded: the connection must be made within `CONNECT_TIMEOUT`; then the probe line
  (`model/probe.py`) is sent and at most `MAX_LINE` bytes are read within `READ_TIMEOUT`.
- Every report names its `source`: the address the connection leaves from towards the
  target (`choose_source`: a configured `probe_sources` address of the target's family,
  else the local address the host uses towards it).

Pure parts: `choose_target`, `counterpart_targets`, `choose_source`, `ProbeLimiter`
(its clock injected), `make_report`. The socket parts, `run_probe`, `run_dial` and
`local_source`, are thin shells around them.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import math
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from controparte.errors import ForbiddenError, RateLimitedError, ValidationError
from controparte.model import Installation
from controparte.model.probe import (
    CONNECT_TIMEOUT,
    MAX_LINE,
    READ_TIMEOUT,
    Answer,
    Reach,
    check_answer,
    classify_error,
    new_nonce,
    probe_line,
)

PROBE_INTERVAL = 5.0
"""Seconds between two probes of one installation (of its own port, or as a
counterpart)."""
REQUESTER_LIMIT = 10
REQUESTER_WINDOW = 60.0
"""At most REQUESTER_LIMIT counterpart probes per requester per REQUESTER_WINDOW s."""


@dataclass(frozen=True, slots=True)
class ProbeTarget:
    """Where a probe dials: a registered address and the registered public port."""

    address: str
    port: int


@dataclass(frozen=True, slots=True)
class ProbeReport:
    """What one probe found. `nonce_verified` as `model.probe.Answer.verified`; it is None
    unless the connection was made. `agent_code` is the code a listener claimed."""

    result: Reach
    address: str
    port: int
    elapsed_ms: int
    nonce_verified: bool | None
    agent_code: str | None
    detail: str
    source: str | None = None
    """The address the connection left from (`choose_source`), when known."""

    def to_json(self) -> dict[str, object]:
        return {
            "result": self.result.value,
            "address": self.address,
            "port": self.port,
            "elapsed_ms": self.elapsed_ms,
            "nonce_verified": self.nonce_verified,
            "agent_code": self.agent_code,
            "detail": self.detail,
            "source": self.source,
        }


def _address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """`text` as an address (an IPv4-mapped IPv6 address as its IPv4 one), or None."""
    try:
        found = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(found, ipaddress.IPv6Address) and found.ipv4_mapped is not None:
        return found.ipv4_mapped
    return found


def _same_address(a: str, b: str) -> bool:
    first, second = _address(a), _address(b)
    return first is not None and first == second


def choose_target(inst: Installation, client_address: str | None) -> ProbeTarget:
    """The one place a probe of `inst` may dial, asked from `client_address` (None when
    a trusted proxy forwarded something that is not an address). Raises
    ValidationError (no address to compare, no registered port) or ForbiddenError (no
    registered address, or the request does not come from it)."""
    if client_address is None:
        raise ValidationError(
            "Forwarded", "the request's source address cannot be told, so it cannot be probed"
        )
    registered = [a for a in (inst.ipv4, inst.ipv6) if a is not None]
    if not registered:
        raise ForbiddenError(
            f"installation {inst.code!r} has no public address registered: the probe dials"
            " only a registered address; a heartbeat from the installation registers it"
            " (controparte agent)"
        )
    if inst.port is None:
        raise ValidationError(
            "port",
            f"installation {inst.code!r} has no public port registered: register the port"
            " forwarded to MxServer first (controparte agent --port N)",
        )
    for address in registered:
        if _same_address(address, client_address):
            return ProbeTarget(address, inst.port)
    raise ForbiddenError(
        f"this request comes from {client_address}, but installation {inst.code!r} is"
        f" registered at {', '.join(registered)}: the service probes only the registered"
        " address, and only when asked from it. The address must have come from the"
        " installation itself: send a heartbeat from it (controparte agent), then ask"
        " for the probe from there"
    )


def counterpart_targets(inst: Installation) -> tuple[ProbeTarget, ...]:
    """Where a probe of counterpart `inst` dials: each registered public address (IPv4,
    then IPv6) at the registered public port. ForbiddenError when it has no registered
    address or no registered port: the probe dials nothing else."""
    registered = [a for a in (inst.ipv4, inst.ipv6) if a is not None]
    if not registered or inst.port is None:
        missing = "public address" if not registered else "public port"
        raise ForbiddenError(
            f"installation {inst.code!r} has no {missing} registered: the service probes"
            " a counterpart only at its registered address and public port, which its"
            " heartbeats (controparte agent) or an operator register"
        )
    return tuple(ProbeTarget(address, inst.port) for address in registered)


def choose_source(configured: Sequence[str], target: str, local: str | None) -> str | None:
    """The address a probe of `target` leaves from, as the service's reports name it:
    with `configured` addresses (the setting `probe_sources`) of the target's family,
    `local` when it is one of them (no NAT on this host), else the first of them;
    without any of that family, `local` (the address the host dials from, None when
    unknown)."""
    wanted = _address(target)
    family = [
        a
        for a in configured
        if (found := _address(a)) is not None
        and wanted is not None
        and found.version == wanted.version
    ]
    if not family:
        return local
    if local is not None and any(_same_address(local, a) for a in family):
        return local
    return family[0]


class ProbeLimiter:
    """At most `limit` probes per key per `interval` seconds (keys compared without
    regard to case): installation codes, as target or as requester. A refusal's
    message is `refusal` formatted with `key`, `interval` and `limit`. Thread-safe;
    `clock` is injected for tests."""

    def __init__(
        self,
        interval: float = PROBE_INTERVAL,
        clock: Callable[[], float] = time.monotonic,
        max_entries: int = 100_000,
        *,
        limit: int = 1,
        refusal: str = "installation {key!r} was probed less than {interval:g} s ago",
    ) -> None:
        self.interval = interval
        self.clock = clock
        self.max_entries = max_entries
        self.limit = limit
        self.refusal = refusal
        self._taken: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def acquire(self, key: str) -> None:
        """Take a probe slot of `key`, or raise RateLimitedError with the seconds until
        the next one is free (rounded up, at least 1)."""
        now = self.clock()
        with self._lock:
            taken = self._taken.get(key.lower(), deque())
            while taken and now - taken[0] >= self.interval:
                taken.popleft()
            if len(taken) >= self.limit:
                wait = max(1, math.ceil(self.interval - (now - taken[0])))
                said = self.refusal.format(key=key, interval=self.interval, limit=self.limit)
                raise RateLimitedError(f"{said}; try again in {wait} s", retry_after=wait)
            if len(self._taken) >= self.max_entries:
                for old in [k for k, t in self._taken.items() if now - t[-1] >= self.interval]:
                    del self._taken[old]
            taken.append(now)
            self._taken[key.lower()] = taken


def make_report(
    target: ProbeTarget,
    reach: Reach,
    elapsed: float,
    answer: Answer | None = None,
    *,
    connect_only: bool = False,
    connect_timeout: float = CONNECT_TIMEOUT,
    source: str | None = None,
) -> ProbeReport:
    """The report of a probe of `target` whose connection attempt came out as `reach`
    after `elapsed` seconds; `answer` is what the port sent back (when open), or
    nothing was sent (`connect_only`); `source` as `ProbeReport.source`."""
    where = f"port {target.port} of {target.address}"
    verified = answer.verified if answer is not None and reach is Reach.OPEN else None
    claimed = answer.code if answer is not None and reach is Reach.OPEN else None
    if reach is Reach.OPEN and connect_only:
        detail = (
            f"{where} is open: the connection was made (connect only: which machine the"
            " port reaches is not checked)"
        )
    elif reach is Reach.OPEN:
        if verified is True:
            detail = (
                f"{where} is open and the controparte agent there answered the nonce"
                " with this installation's proof: the port reaches this installation's"
                " machine"
            )
        elif verified is False:
            detail = (
                f"{where} is open, but the controparte agent there answered as"
                f" {claimed!r} without this installation's proof: the port reaches"
                " another machine (or one with an old token)"
            )
        else:
            detail = (
                f"{where} is open; nothing there answered the nonce (MxServer or"
                " another service listens), so which machine it reaches is not proven"
            )
    elif reach is Reach.REFUSED:
        detail = (
            f"{target.address} answered with a TCP reset on port {target.port}: nothing"
            " listens there (no port forward, or MxServer is not running)"
        )
    elif reach is Reach.TIMEOUT:
        detail = (
            f"no answer from {where} within {connect_timeout:g} s: a firewall drops the"
            " connection, or no host answers at that address"
        )
    else:
        detail = (
            f"the network rejected the connection to {where} (ICMP unreachable or"
            " prohibited, or no route): a firewall rejects it"
        )
    return ProbeReport(
        reach,
        target.address,
        target.port,
        max(0, round(elapsed * 1000)),
        verified,
        claimed,
        detail,
        source,
    )


def local_source(target: ProbeTarget) -> str | None:
    """The local address this host dials `target` from: a UDP socket connected towards
    it (nothing is sent; the kernel picks the route and the address). None when there
    is no route."""
    family = socket.AF_INET6 if ":" in target.address else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_DGRAM) as udp:
            udp.connect((target.address, target.port))
            return str(udp.getsockname()[0])
    except OSError:
        return None


Streams = tuple[asyncio.StreamReader, asyncio.StreamWriter]


async def _connect(
    target: ProbeTarget, connect_timeout: float, clock: Callable[[], float]
) -> tuple[Streams | Reach, float, str | None]:
    """Connect to `target`: the streams (or why not), the seconds it took, and the
    local address the connection left from (when not connected: `local_source`)."""
    start = clock()
    try:
        streams = await asyncio.wait_for(
            asyncio.open_connection(target.address, target.port), connect_timeout
        )
    except (OSError, TimeoutError) as exc:
        return classify_error(exc), clock() - start, local_source(target)
    sockname = streams[1].get_extra_info("sockname")
    return streams, clock() - start, None if sockname is None else str(sockname[0])


async def _close(writer: asyncio.StreamWriter) -> None:
    writer.close()
    with contextlib.suppress(OSError, TimeoutError):
        await asyncio.wait_for(writer.wait_closed(), 1.0)


async def _read_line(reader: asyncio.StreamReader) -> bytes:
    """Bytes until LF, end of stream or MAX_LINE bytes, whichever comes first."""
    data = b""
    while len(data) < MAX_LINE and b"\n" not in data:
        chunk = await reader.read(MAX_LINE - len(data))
        if not chunk:
            break
        data += chunk
    return data.split(b"\n", 1)[0] + (b"\n" if b"\n" in data else b"")


async def run_probe(
    target: ProbeTarget,
    *,
    code: str,
    token: str,
    sources: Sequence[str] = (),
    connect_timeout: float = CONNECT_TIMEOUT,
    read_timeout: float = READ_TIMEOUT,
    clock: Callable[[], float] = time.monotonic,
) -> ProbeReport:
    """Dial `target`, send a probe with a fresh nonce, judge the answer against `code`
    and `token` (the token of the request that asked); `sources` is the setting
    `probe_sources` (see `choose_source`). Never raises for network trouble: every
    outcome is a report."""
    nonce = new_nonce()
    streams, elapsed, local = await _connect(target, connect_timeout, clock)
    source = choose_source(sources, target.address, local)
    if isinstance(streams, Reach):
        return make_report(target, streams, elapsed, connect_timeout=connect_timeout, source=source)
    reader, writer = streams
    line = b""
    try:
        writer.write(probe_line(nonce))
        await asyncio.wait_for(writer.drain(), read_timeout)
        line = await asyncio.wait_for(_read_line(reader), read_timeout)
    except (OSError, TimeoutError):
        pass  # open, but it said nothing usable in time
    finally:
        await _close(writer)
    answer = check_answer(line, token=token, code=code, nonce=nonce)
    return make_report(
        target, Reach.OPEN, elapsed, answer, connect_timeout=connect_timeout, source=source
    )


async def run_dial(
    target: ProbeTarget,
    *,
    sources: Sequence[str] = (),
    connect_timeout: float = CONNECT_TIMEOUT,
    clock: Callable[[], float] = time.monotonic,
) -> ProbeReport:
    """Connect to `target` and close at once (connect only; `sources` as for
    `run_probe`). Never raises for network trouble: every outcome is a report."""
    streams, elapsed, local = await _connect(target, connect_timeout, clock)
    source = choose_source(sources, target.address, local)
    if isinstance(streams, Reach):
        reach = streams
    else:
        reach = Reach.OPEN
        await _close(streams[1])
    return make_report(
        target,
        reach,
        elapsed,
        connect_only=True,
        connect_timeout=connect_timeout,
        source=source,
    )
