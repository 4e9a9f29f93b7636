"""The agent's relay worker: dials a linked counterpart asks the service for, made from
this machine, so that a flow towards that counterpart is tested from this side
(`service/relay.py` is the service's half).

`controparte agent` runs it in a thread of its own beside the heartbeat loop (on by
default; `--no-relay` leaves it out, and `--once` never runs it). It long-polls
`GET /v1/installations/{code}/relay-requests?wait=25`, which also tells the service
that this agent takes relay requests, and for each request it is handed:

1. checks it: the address must be an IP literal, the port 1-65535, the nonce the probe's
   (a request that is not is logged and dropped: the service never sends one);
2. dials it (connect timeout 3 s), sends `CONTROPARTE-PROBE <nonce>` and reads one line
   (at most 256 bytes, within 2 s); this agent does not judge the line: the requester's
   token does, at the service;
3. reports `{result, elapsed_ms, line}` to `POST .../relay-requests/{id}`.

Why it is safe to run: the service hands an agent only requests of installations linked
to its own, each naming the requester's own registered public address and port (never
an address a requester picked), one per requester per 5 s and 4 pending at most; and the
agent itself dials one at a time, at most `MAX_DIALS` per `DIAL_WINDOW` seconds. A
request beyond that budget is skipped, not dialled and not reported (the requester sees
it expire): a made-up result would be a false verdict.

Network errors, 5xx and every other refusal are retried with backoff (capped at
`BACKOFF_CAP` seconds), honouring Retry-After. The token file is read before every
poll, as the heartbeat loop does. One log line per dial; the token is never logged. The
worker stops within `STOP_CHECK` seconds of the agent's stop event, even mid-poll.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import random
import threading
import time
import urllib.parse
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import httpx

from controparte import __version__
from controparte.agent.schedule import parse_retry_after, retry_delay
from controparte.agent.token import read_token
from controparte.agent.wire import error_detail
from controparte.errors import ControparteError
from controparte.model.probe import (
    CONNECT_TIMEOUT,
    MAX_LINE,
    READ_TIMEOUT,
    Reach,
    classify_error,
    probe_line,
)

log = logging.getLogger("controparte.agent")

USER_AGENT = f"controparte-agent/{__version__}"
POLL_WAIT = 25.0
"""Seconds each long poll asks the service to wait for a request (its most is 30)."""
HTTP_TIMEOUT = 15.0
"""Seconds beyond the poll's wait before an answer is given up on."""
MAX_DIALS = 10
DIAL_WINDOW = 60.0
BACKOFF_CAP = 60.0
"""The longest wait between polls after failures (a Retry-After may ask for more)."""
STOP_CHECK = 0.2


@dataclass(frozen=True, slots=True)
class RelayTask:
    """One dial the service asks for, checked (`from_json`)."""

    id: str
    address: str
    port: int
    nonce: str
    requester: str

    @classmethod
    def from_json(cls, body: Mapping[str, object]) -> RelayTask:
        """ValueError unless `body` is a request with an IP literal, a port 1-65535
        and a probe nonce."""
        rid, address, port = body.get("id"), body.get("address"), body.get("port")
        nonce, requester = body.get("nonce"), body.get("requester")
        if not isinstance(rid, str) or not isinstance(address, str):
            raise ValueError("a relay request names its id and address")
        ipaddress.ip_address(address)  # a literal, never a name to resolve
        if not isinstance(port, int) or isinstance(port, bool) or not 1 <= port <= 65535:
            raise ValueError(f"port {port!r} is not 1-65535")
        if not isinstance(nonce, str):
            raise ValueError("a relay request carries a nonce")
        probe_line(nonce)  # ValueError unless 32 lower-case hex digits
        return cls(rid, address, port, nonce, str(requester))


@dataclass(frozen=True, slots=True)
class DialResult:
    """What one dial found: the outcome, how long it took, the line the port said."""

    result: Reach
    elapsed_ms: int
    line: str = ""

    def to_json(self) -> dict[str, object]:
        return {"result": self.result.value, "elapsed_ms": self.elapsed_ms, "line": self.line}


class DialBudget:
    """At most `limit` dials in any `window` seconds; `clock` injected for tests."""

    def __init__(
        self,
        limit: int = MAX_DIALS,
        window: float = DIAL_WINDOW,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limit = limit
        self.window = window
        self.clock = clock
        self._made: deque[float] = deque()

    def take(self) -> bool:
        """Count one dial now, if the budget allows it (True); else False."""
        now = self.clock()
        while self._made and now - self._made[0] >= self.window:
            self._made.popleft()
        if len(self._made) >= self.limit:
            return False
        self._made.append(now)
        return True


async def dial(
    task: RelayTask,
    *,
    bind: str | None = None,
    connect_timeout: float = CONNECT_TIMEOUT,
    read_timeout: float = READ_TIMEOUT,
) -> DialResult:
    """Connect to the task's address and port (from `bind` when it is of the same
    family), send the probe line, read one line. Never raises for network trouble."""
    local = None
    if bind is not None:
        same = ipaddress.ip_address(bind).version == ipaddress.ip_address(task.address).version
        local = (bind, 0) if same else None
    start = time.monotonic()
    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(task.address, task.port, local_addr=local, limit=MAX_LINE),
            connect_timeout,
        )
    except (OSError, TimeoutError) as exc:
        elapsed = round((time.monotonic() - start) * 1000)
        return DialResult(classify_error(exc), elapsed)
    elapsed = round((time.monotonic() - start) * 1000)
    line = b""
    try:
        writer.write(probe_line(task.nonce))
        await asyncio.wait_for(writer.drain(), read_timeout)
        line = await asyncio.wait_for(reader.readline(), read_timeout)
    except (OSError, TimeoutError, ValueError):
        pass  # open, but it said nothing usable in time (ValueError: no LF in MAX_LINE)
    finally:
        writer.close()
        with contextlib.suppress(OSError, TimeoutError):
            await asyncio.wait_for(writer.wait_closed(), 1.0)
    text = line.rstrip(b"\r\n").decode("ascii", "replace")
    return DialResult(Reach.OPEN, elapsed, text)


@dataclass(frozen=True, slots=True)
class RelayConfig:
    server: str
    code: str
    token_file: Path
    bind: str | None = None
    wait: float = POLL_WAIT


class RelayWorker:
    """Polls for relay requests and dials them until `stop` is set (`run`, a
    coroutine; `start` runs it in a thread of its own)."""

    def __init__(
        self,
        config: RelayConfig,
        *,
        stop: threading.Event,
        transport: httpx.AsyncBaseTransport | None = None,
        budget: DialBudget | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.config = config
        self.stop = stop
        self.budget = budget or DialBudget()
        self.rng = rng or random.Random()
        self.failures = 0
        if transport is None and config.bind is not None:
            transport = httpx.AsyncHTTPTransport(local_address=config.bind)
        self._transport = transport
        quoted = urllib.parse.quote(config.code, safe="")
        self.url = f"{config.server.rstrip('/')}/v1/installations/{quoted}/relay-requests"

    def start(self) -> threading.Thread:
        """Run the worker in a daemon thread (it ends by itself once `stop` is set)."""
        thread = threading.Thread(
            target=asyncio.run, args=(self.run(),), name="controparte-relay", daemon=True
        )
        thread.start()
        return thread

    async def run(self) -> None:
        """Poll, dial and report until `stop` is set; returns within `STOP_CHECK`
        seconds of it."""
        log.info("relay: taking dial requests of linked installations (--no-relay: off)")
        work = asyncio.create_task(self._loop())
        while not self.stop.is_set():
            done, _ = await asyncio.wait({work}, timeout=STOP_CHECK)
            if done:
                break
        work.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await work
        log.info("relay: stopped")

    async def _loop(self) -> None:
        timeout = httpx.Timeout(self.config.wait + HTTP_TIMEOUT, connect=10.0)
        async with httpx.AsyncClient(
            transport=self._transport,
            timeout=timeout,
            headers={"User-Agent": USER_AGENT},
            follow_redirects=False,
        ) as client:
            while True:
                delay = await self.poll_once(client)
                if delay > 0:
                    await asyncio.sleep(delay)

    def _failed(self, reason: str, retry_after: float | None = None) -> float:
        self.failures += 1
        delay = retry_delay(self.failures, self.rng, interval=BACKOFF_CAP, retry_after=retry_after)
        log.warning("relay: %s; asking again in %.1f s", reason, delay)
        return delay

    async def poll_once(self, client: httpx.AsyncClient) -> float:
        """One poll and the dials it hands out; the seconds to wait before the next."""
        try:
            token = read_token(self.config.token_file)
        except ControparteError as exc:
            return self._failed(str(exc))
        auth = {"Authorization": f"Bearer {token}"}
        try:
            response = await client.get(
                self.url, params={"wait": f"{self.config.wait:g}"}, headers=auth
            )
        except httpx.HTTPError as exc:
            return self._failed(f"cannot reach {self.url}: {exc or type(exc).__name__}")
        if response.status_code != 200:
            said = error_detail(response.content) or response.reason_phrase
            wait = parse_retry_after(response.headers.get("Retry-After"))
            return self._failed(f"{self.url} answered HTTP {response.status_code}: {said}", wait)
        try:
            body = response.json()
            items = body["requests"]
            if not isinstance(items, list):
                raise TypeError("requests is not a list")
        except (ValueError, KeyError, TypeError) as exc:
            return self._failed(f"{self.url} did not answer a list of requests ({exc})")
        if self.failures:
            log.info("relay: polling again after %d failure(s)", self.failures)
            self.failures = 0
        for item in items:
            await self._serve(client, auth, item)
        return 0.0

    async def _serve(self, client: httpx.AsyncClient, auth: dict[str, str], item: object) -> None:
        """Check, dial and report one request."""
        try:
            if not isinstance(item, dict):
                raise TypeError("not an object")
            task = RelayTask.from_json(item)
        except (ValueError, TypeError) as exc:
            log.warning("relay: dropped a malformed request (%s)", exc)
            return
        if not self.budget.take():
            log.warning(
                "relay: skipped the dial to %s port %d for %s: %d dials in the last %g s"
                " already (this agent's own limit)",
                task.address,
                task.port,
                task.requester,
                self.budget.limit,
                self.budget.window,
            )
            return
        found = await dial(task, bind=self.config.bind)
        answered = f", it answered {len(found.line)} characters" if found.line else ""
        log.info(
            "relay: dialled %s port %d for %s: %s in %d ms%s",
            task.address,
            task.port,
            task.requester,
            found.result.value,
            found.elapsed_ms,
            answered,
        )
        url = f"{self.url}/{urllib.parse.quote(task.id, safe='')}"
        try:
            response = await client.post(url, json=found.to_json(), headers=auth)
        except httpx.HTTPError as exc:
            log.warning("relay: cannot report the dial for %s: %s", task.requester, exc)
            return
        if response.status_code != 204:
            said = error_detail(response.content) or response.reason_phrase
            log.warning(
                "relay: the report of the dial for %s was refused: HTTP %d: %s",
                task.requester,
                response.status_code,
                said,
            )
