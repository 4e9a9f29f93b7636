"""The outside-in probe (`POST /v1/installations/{code}/probe`): the service dials the
installation's registered public address and port, and says what happened.

Rules, all checked before any socket is opened:
- The target is never the caller's choice: it is the installation's registered public
  port, at the registered address (IPv4 or IPv6) that equals the request's source
  address (after the trusted-proxy rule). A request from any other address is refused
  (`ForbiddenError`, 403): the address must have come from the installation itself (a
  heartbeat does that), so the service dials only the machine that asks, never a third
  party's host.
- An installation with no registered port cannot be probed (`ValidationError`, 422).
- At most one probe per installation per `ProbeLimiter.interval` seconds
  (`RateLimitedError` carrying `retry_after`: 429 with Retry-After).
- Bounded: the connection must be made within `CONNECT_TIMEOUT`; then the probe line
  (`model/probe.py`) is sent and at most `MAX_LINE` bytes are read within `READ_TIMEOUT`.

Pure parts: `choose_target`, `ProbeLimiter` (its clock injected), `make_report`. The
socket part, `run_probe`, is a thin asyncio shell around them.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import math
import threading
import time
from collections.abc import Callable
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
"""Seconds between two probes of one installation."""


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

    def to_json(self) -> dict[str, object]:
        return {
            "result": self.result.value,
            "address": self.address,
            "port": self.port,
            "elapsed_ms": self.elapsed_ms,
            "nonce_verified": self.nonce_verified,
            "agent_code": self.agent_code,
            "detail": self.detail,
        }


def _same_address(a: str, b: str) -> bool:
    try:
        first, second = ipaddress.ip_address(a), ipaddress.ip_address(b)
    except ValueError:
        return False
    if isinstance(first, ipaddress.IPv6Address) and first.ipv4_mapped is not None:
        first = first.ipv4_mapped
    if isinstance(second, ipaddress.IPv6Address) and second.ipv4_mapped is not None:
        second = second.ipv4_mapped
    return first == second


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


class ProbeLimiter:
    """One probe per installation per `interval` seconds (codes compared without
    regard to case). Thread-safe; `clock` is injected for tests. `done` says what the
    installation did too recently, in the refusal's words (the relay has its own)."""

    def __init__(
        self,
        interval: float = PROBE_INTERVAL,
        clock: Callable[[], float] = time.monotonic,
        max_entries: int = 100_000,
        done: str = "was probed",
    ) -> None:
        self.interval = interval
        self.clock = clock
        self.max_entries = max_entries
        self.done = done
        self._last: dict[str, float] = {}
        self._lock = threading.Lock()

    def acquire(self, code: str) -> None:
        """Take the probe slot of `code`, or raise RateLimitedError with the seconds
        until the next one is allowed (rounded up, at least 1)."""
        now = self.clock()
        key = code.lower()
        with self._lock:
            last = self._last.get(key)
            if last is not None and now - last < self.interval:
                wait = max(1, math.ceil(self.interval - (now - last)))
                raise RateLimitedError(
                    f"installation {code!r} {self.done} less than {self.interval:g} s ago;"
                    f" try again in {wait} s",
                    retry_after=wait,
                )
            if len(self._last) >= self.max_entries:
                for old in [k for k, t in self._last.items() if now - t >= self.interval]:
                    del self._last[old]
            self._last[key] = now


def make_report(
    target: ProbeTarget,
    reach: Reach,
    elapsed: float,
    answer: Answer | None = None,
    *,
    connect_timeout: float = CONNECT_TIMEOUT,
) -> ProbeReport:
    """The report of a probe of `target` whose connection attempt came out as `reach`
    after `elapsed` seconds; `answer` is what the port sent back (when open)."""
    where = f"port {target.port} of {target.address}"
    verified = answer.verified if answer is not None and reach is Reach.OPEN else None
    claimed = answer.code if answer is not None and reach is Reach.OPEN else None
    if reach is Reach.OPEN:
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
    )


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
    connect_timeout: float = CONNECT_TIMEOUT,
    read_timeout: float = READ_TIMEOUT,
    clock: Callable[[], float] = time.monotonic,
) -> ProbeReport:
    """Dial `target`, send a probe with a fresh nonce, judge the answer against `code`
    and `token` (the token of the request that asked). Never raises for network
    trouble: every outcome is a report."""
    nonce = new_nonce()
    start = clock()
    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(target.address, target.port), connect_timeout
        )
    except (OSError, TimeoutError) as exc:
        return make_report(
            target, classify_error(exc), clock() - start, connect_timeout=connect_timeout
        )
    elapsed = clock() - start
    line = b""
    try:
        writer.write(probe_line(nonce))
        await asyncio.wait_for(writer.drain(), read_timeout)
        line = await asyncio.wait_for(_read_line(reader), read_timeout)
    except (OSError, TimeoutError):
        pass  # open, but it said nothing usable in time
    finally:
        writer.close()
        with contextlib.suppress(OSError, TimeoutError):
            await asyncio.wait_for(writer.wait_closed(), 1.0)
    answer = check_answer(line, token=token, code=code, nonce=nonce)
    return make_report(target, Reach.OPEN, elapsed, answer, connect_timeout=connect_timeout)
