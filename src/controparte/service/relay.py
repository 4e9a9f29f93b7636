"""The relay: installation A (the requester) asks the service to have the agent of a
linked installation B (the agent) dial A's registered public address and port, so that
a flow from B to A is tested from B's side (`POST /v1/installations/{code}/relay`).

Rules, all checked before anything is stored (the pure ones take the time as `now`):
- A is authenticated by its own token (the route does that).
- B must be linked to A for some feature, either way round (`are_linked`; else
  `ForbiddenError`, 403), so an installation can put only its own counterparts to work.
- The target is never A's choice: it is A's own registered public address (IPv4 when
  one is registered, else IPv6; `family` may pick the other one registered) and A's
  registered public port (`relay_target`; none registered: `ForbiddenError`). B's agent
  can thus be made to dial only A's machine, never a third party's.
- B's agent must have asked for its relay requests within `POLL_FRESH` seconds
  (`check_polling`; else `ConflictError`, 409, in words: an older agent, `--no-relay`,
  or none running), so a request is never left for nobody.
- One request per requester per `RELAY_INTERVAL` seconds (a `ProbeLimiter` of its
  own: 429 with Retry-After), at most `MAX_PENDING` pending per agent (checked by the
  store, atomically among processes and nodes: 429).
- A request lives `RELAY_TTL` seconds; rows are purged `PURGE_AFTER` seconds after
  they expire (so a late reader still learns "expired").

The agent reports the outcome (result, elapsed, the line the port answered). The service
judges the line when A reads the request (`relay_report`), against the token of A's
own read, exactly as the probe does (`model/probe.py`): the report says whether A's
agent answered the nonce, and from which address B's agent reported (`source`).
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta
from typing import Literal

from controparte.errors import (
    ConflictError,
    ForbiddenError,
    NotFoundError,
    RateLimitedError,
    ValidationError,
)
from controparte.model import Installation, Link
from controparte.model.installation import utcnow
from controparte.model.probe import MAX_LINE, Reach, check_answer, new_nonce
from controparte.service.probe import ProbeLimiter, ProbeTarget, make_report
from controparte.service.registry import Registry
from controparte.store import RelayRequest

RELAY_TTL = 60.0
"""Seconds a relay request waits for its agent's report."""
PURGE_AFTER = 60.0
"""Seconds after its expiry a request is still kept (read as "expired")."""
POLL_FRESH = 60.0
"""An agent that asked for its requests within this many seconds takes relay requests."""
RELAY_INTERVAL = 5.0
"""Seconds between two relay requests of one requester."""
MAX_PENDING = 4
"""Relay requests pending at once for one agent, at most."""

RelayState = Literal["pending", "done", "expired"]


def are_linked(links: Iterable[Link], a: str, b: str) -> bool:
    """Whether `a` and `b` are linked for some feature, either way round."""
    pair = {a.lower(), b.lower()}
    return any({link.a.lower(), link.b.lower()} == pair for link in links)


def relay_target(requester: Installation, family: int | None = None) -> ProbeTarget:
    """Where the relay dials for `requester`: its registered public port at its
    registered IPv4 address, else IPv6 (`family` 4 or 6 asks for one of them).
    ForbiddenError when that address or the port is not registered."""
    if family not in (None, 4, 6):
        raise ValidationError("family", "4 or 6")
    if family == 6 or (family is None and requester.ipv4 is None):
        address, which = requester.ipv6, "IPv6"
    else:
        address, which = requester.ipv4, "IPv4"
    if address is None:
        wanted = "public address" if family is None else f"public {which} address"
        raise ForbiddenError(
            f"installation {requester.code!r} has no {wanted} registered: the relay dials"
            " only a registered address; a heartbeat from the installation registers it"
            " (controparte agent)"
        )
    if requester.port is None:
        raise ForbiddenError(
            f"installation {requester.code!r} has no public port registered: the relay"
            " dials only the registered port (controparte agent --port N registers it)"
        )
    return ProbeTarget(address, requester.port)


def check_polling(agent: str, last_poll: datetime | None, now: datetime) -> None:
    """ConflictError unless the agent of `agent` asked for its relay requests within
    `POLL_FRESH` seconds before `now`."""
    if last_poll is not None and (now - last_poll).total_seconds() <= POLL_FRESH:
        return
    asked = (
        "never"
        if last_poll is None
        else f"{last_poll.isoformat(timespec='seconds')}"
        f" ({int((now - last_poll).total_seconds())} s ago)"
    )
    raise ConflictError(
        f"{agent}'s agent does not take relay requests: last asked {asked}; it runs an"
        " older agent, was started with --no-relay, or is not running"
    )


def relay_state(request: RelayRequest, now: datetime) -> RelayState:
    """done once reported; else pending until it expires."""
    if request.finished is not None:
        return "done"
    return "pending" if now < request.expires else "expired"


def agent_report(result: Reach, elapsed_ms: int, line: str, source: str | None) -> str:
    """The stored form (JSON text) of what an agent reported for a request, and the
    address its report came from."""
    if elapsed_ms < 0:
        raise ValidationError("elapsed_ms", "cannot be negative")
    if len(line) > MAX_LINE:
        raise ValidationError("line", f"at most {MAX_LINE} characters")
    body = {"result": result.value, "elapsed_ms": elapsed_ms, "line": line, "source": source}
    return json.dumps(body)


def relay_report(request: RelayRequest, token: str) -> dict[str, object] | None:
    """The dial report of a finished request, in the probe's JSON shape plus `source`
    (the address the agent's report came from): the answered line judged against the
    requester's `token`. None while there is none."""
    if request.report is None:
        return None
    stored = json.loads(request.report)
    reach = Reach(str(stored["result"]))
    line = str(stored["line"]).encode()
    answer = check_answer(line, token=token, code=request.requester, nonce=request.nonce)
    target = ProbeTarget(request.address, request.port)
    report = make_report(target, reach, int(stored["elapsed_ms"]) / 1000, answer)
    source = stored.get("source")
    where = f" (from {source})" if source else ""
    return {
        **report.to_json(),
        "detail": f"dialled by {request.agent}'s agent{where}: {report.detail}",
        "source": source,
    }


class Relay:
    """The relay's use-cases over the registry's store; `clock` is injected."""

    def __init__(
        self,
        registry: Registry,
        limiter: ProbeLimiter | None = None,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.registry = registry
        self.store = registry.store
        self.limiter = limiter or ProbeLimiter(
            RELAY_INTERVAL,
            refusal="installation {key!r} asked for a relay less than {interval:g} s ago",
        )
        self.clock = clock

    def request(
        self, requester: Installation, counterpart: str, family: int | None = None
    ) -> RelayRequest:
        """Ask `counterpart`'s agent (a code, label or `<label>.<zone>`) to dial
        `requester`'s registered public address and port. Raises NotFoundError,
        ForbiddenError, ConflictError or RateLimitedError as the module says."""
        agent = self.registry.find(counterpart)
        if not are_linked(self.store.links(requester.code), requester.code, agent.code):
            raise ForbiddenError(
                f"{requester.code} and {agent.code} are not linked for any feature: the"
                " relay asks only a linked counterpart's agent"
            )
        target = relay_target(requester, family)
        now = self.clock()
        check_polling(agent.code, self.store.relay_polled(agent.code), now)
        self.limiter.acquire(requester.code)
        request = RelayRequest(
            id=secrets.token_hex(16),
            requester=requester.code,
            agent=agent.code,
            address=target.address,
            port=target.port,
            nonce=new_nonce(),
            created=now,
            expires=now + timedelta(seconds=RELAY_TTL),
        )
        purge = now - timedelta(seconds=PURGE_AFTER)
        if not self.store.add_relay(request, MAX_PENDING, purge):
            wait = round(RELAY_INTERVAL)
            raise RateLimitedError(
                f"{agent.code}'s agent has {MAX_PENDING} relay requests pending already;"
                f" try again in {wait} s",
                retry_after=wait,
            )
        return request

    def get(self, requester: Installation, request_id: str) -> tuple[RelayRequest, RelayState]:
        """`requester`'s own request `request_id` and its state (NotFoundError for
        another's, or one purged)."""
        found = self.store.relay(request_id)
        if found is None or found.requester.lower() != requester.code.lower():
            raise NotFoundError(f"no relay request {request_id!r} of {requester.code}")
        return found, relay_state(found, self.clock())

    def waiting(self, agent: Installation) -> bool:
        """Whether a request for `agent`'s agent waits to be claimed (a read)."""
        return self.store.relays_waiting(agent.code, self.clock())

    def claim(self, agent: Installation) -> list[RelayRequest]:
        """Record the poll of `agent`'s agent and hand it its waiting requests."""
        return self.store.claim_relays(agent.code, self.clock())

    def finish(
        self,
        agent: Installation,
        request_id: str,
        *,
        result: Reach,
        elapsed_ms: int,
        line: str,
        source: str | None,
    ) -> None:
        """Record the report of `agent`'s agent on its claimed, unexpired request
        `request_id` (NotFoundError otherwise); `source`: where the report came from."""
        report = agent_report(result, elapsed_ms, line, source)
        if not self.store.finish_relay(request_id, agent.code, report, self.clock()):
            raise NotFoundError(
                f"no relay request {request_id!r} claimed by {agent.code}'s agent and still"
                " open (unknown, not claimed, reported already, or expired)"
            )
