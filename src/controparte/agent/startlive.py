"""The start-live client: ask the start-live brokers (the catalog's three names) over
HTTPS "where is Live installation X, wake it up", failing over from one to the next.

Contracts:
- `Rotation` (pure, clock injected) decides which broker to try next: the names in their
  order, except one that failed less than `cooldown` seconds ago (skipped while a name
  out of cooldown remains; when every name is cooling down, the one that failed longest
  ago is tried rather than none). A failed name comes back by itself once its cooldown
  is over; a success clears it at once.
- `StartLive.start(label, token, caller)` asks the brokers in `Rotation`'s order within
  one overall `deadline` (each attempt bounded by what is left and by
  `attempt_timeout`): a broker that cannot be reached, times out or answers 5xx is
  marked failed and the next one is asked; an answer of the registry's (401, 403, 404,
  422, 429) is the same from every broker (they share one registry) and is raised as
  the `ControparteError` of its status at once. Nothing answered in time:
  `NoBrokerError`, naming every broker tried and what each did.
- TLS is always verified: against the CA file `ca` (a lab CA, `controparte broker
  lab-ca`), else the system's trust store. There is no way to turn it off.
- `BrokerRequest` is the wire: `POST https://<name>:<port>/v1/start/<label>`,
  `Authorization: Bearer <token>`, body `{"caller": CODE}` (omitted when the token is
  the Live installation's own); the answer `{gateway, port, ready, detail}`.
"""

from __future__ import annotations

import ssl
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

import httpx

from controparte import __version__
from controparte.agent.wire import error_detail
from controparte.errors import (
    AuthError,
    ControparteError,
    ForbiddenError,
    InvalidRequestError,
    NotFoundError,
    RateLimitedError,
)

COOLDOWN = 30.0
"""Seconds a broker that failed is skipped (while another one is left to try)."""
DEADLINE = 10.0
"""Seconds one start request may take in all, every broker tried included."""
ATTEMPT_TIMEOUT = 4.0
"""Seconds one broker is given at most (connect, TLS and answer)."""
START_PATH = "/v1/start/{label}"
USER_AGENT = f"controparte-startlive/{__version__}"

_REFUSALS: dict[int, Callable[[str], ControparteError]] = {
    401: AuthError,
    403: ForbiddenError,
    404: NotFoundError,
    422: lambda said: InvalidRequestError([("request", said)]),
}
"""The registry's answers: the same from every broker, so not failed over."""


class NoBrokerError(ControparteError):
    """No start-live broker answered in time; `skipped`: (name, what happened) of each
    one tried."""

    def __init__(self, deadline: float, skipped: Sequence[tuple[str, str]]) -> None:
        self.skipped = tuple(skipped)
        tried = "; ".join(f"{name}: {why}" for name, why in self.skipped) or "none tried"
        super().__init__(f"no start-live broker answered within {deadline:g} s ({tried})")


@dataclass
class Rotation:
    """Which broker to try next (see the module). Not thread-safe: one per client."""

    names: tuple[str, ...]
    cooldown: float = COOLDOWN
    clock: Callable[[], float] = time.monotonic
    failed_at: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.names:
            raise ValueError("no start-live broker to ask")

    def cooling(self, name: str, now: float) -> bool:
        """Whether `name` failed less than `cooldown` seconds before `now`."""
        when = self.failed_at.get(name)
        return when is not None and now - when < self.cooldown

    def order(self) -> tuple[str, ...]:
        """The names to try now, in turn: those not cooling down in their order, then
        the cooling ones, the one that failed longest ago first (a last resort when all
        are down; `StartLive` stops at the first that answers)."""
        now = self.clock()
        ready = [n for n in self.names if not self.cooling(n, now)]
        cooling = sorted(
            (n for n in self.names if self.cooling(n, now)), key=lambda n: self.failed_at[n]
        )
        return (*ready, *cooling)

    def failed(self, name: str) -> None:
        self.failed_at[name] = self.clock()

    def succeeded(self, name: str) -> None:
        self.failed_at.pop(name, None)


@dataclass(frozen=True, slots=True)
class Started:
    """A broker's answer: where the Live installation is reached (`gateway`, the address
    to dial, and `port`; `gateway_name`, the gateway's name in the pool, None when placed
    by hand) and whether it is ready; `broker`: the name that answered; `skipped`: (name,
    why) of those tried before it in this request."""

    broker: str
    gateway: str
    port: int
    ready: bool
    detail: str = ""
    skipped: tuple[tuple[str, str], ...] = ()
    gateway_name: str | None = None

    @classmethod
    def from_json(cls, broker: str, body: object, skipped: Sequence[tuple[str, str]]) -> Started:
        """From a broker's 200 answer; ValueError when it is not one."""
        if not isinstance(body, dict):
            raise ValueError("not a JSON object")
        gateway, port, ready = body.get("gateway"), body.get("port"), body.get("ready")
        if not isinstance(gateway, str) or not isinstance(ready, bool):
            raise ValueError("gateway or ready missing")
        if not isinstance(port, int) or isinstance(port, bool) or not 0 < port < 65536:
            raise ValueError("port missing or out of range")
        name = body.get("gateway_name")
        detail = str(body.get("detail") or "")
        named = name if isinstance(name, str) else None
        return cls(broker, gateway, port, ready, detail, tuple(skipped), named)


def tls_context(ca: Path | None) -> ssl.SSLContext:
    """A client context that verifies the broker's certificate and name: against `ca`
    (PEM), else the system's trust store."""
    return ssl.create_default_context(cafile=None if ca is None else str(ca))


def start_url(name: str, port: int, label: str) -> str:
    """The start endpoint of broker `name` (a host name or an address) on `port`."""
    host = f"[{name}]" if ":" in name else name
    return f"https://{host}:{port}" + START_PATH.format(label=quote(label.lower(), safe=""))


class StartLive:
    """The failover client (see the module); keeps its `Rotation` between requests, so
    a broker found down is skipped by the next request too. `close()` when done."""

    def __init__(
        self,
        names: Sequence[str],
        *,
        port: int = 443,
        ca: Path | None = None,
        cooldown: float = COOLDOWN,
        attempt_timeout: float = ATTEMPT_TIMEOUT,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.rotation = Rotation(tuple(names), cooldown, clock)
        self.port = port
        self.attempt_timeout = attempt_timeout
        self.clock = clock
        self._client = httpx.Client(
            verify=tls_context(ca), headers={"User-Agent": USER_AGENT}, follow_redirects=False
        )

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> StartLive:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(
        self, label: str, token: str, caller: str | None = None, *, deadline: float = DEADLINE
    ) -> Started:
        """Ask the brokers to start Live installation `label` (see the module)."""
        end = self.clock() + deadline
        body = None if caller is None else {"caller": caller}
        skipped: list[tuple[str, str]] = []
        for name in self.rotation.order():
            left = end - self.clock()
            if left <= 0:
                break
            try:
                response = self._client.post(
                    start_url(name, self.port, label),
                    json=body,
                    headers={"Authorization": f"Bearer {token}"},
                    timeout=min(left, self.attempt_timeout),
                )
            except httpx.HTTPError as exc:
                self.rotation.failed(name)
                skipped.append((name, str(exc) or type(exc).__name__))
                continue
            said = error_detail(response.content) or response.reason_phrase
            refusal = _REFUSALS.get(response.status_code)
            if refusal is not None:
                self.rotation.succeeded(name)
                raise refusal(f"start-live broker {name}: {said}")
            if response.status_code == 429:
                self.rotation.succeeded(name)
                raise RateLimitedError(f"start-live broker {name}: {said}")
            if response.status_code != 200:
                self.rotation.failed(name)
                skipped.append((name, f"HTTP {response.status_code}: {said}"))
                continue
            try:
                started = Started.from_json(name, response.json(), skipped)
            except ValueError as exc:
                self.rotation.failed(name)
                skipped.append((name, f"not a start answer: {exc}"))
                continue
            self.rotation.succeeded(name)
            return started
        raise NoBrokerError(deadline, skipped)
