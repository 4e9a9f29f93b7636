"""What `doctor` knows about one connection, and where the knowledge comes from. Pure.

Every result `doctor` gives rests on a `Dial`: one TCP connection attempted to one
address and port, from one `Source`:

- `HERE`: this machine (doctor's own connection);
- `SERVICE`: the service, from outside (the probe of this installation's own public
  port, or of a linked counterpart's);
- `COUNTERPART`: the counterpart's agent, asked by the service on this installation's
  behalf (the relay), dialling this installation's registered public address and port.

A `Dial` whose `reach` is None was not made; `unavailable` says why (no token, the
counterpart's agent does not take relay requests, the service refused, ...).

The service's API reports every dial it made or relayed with one JSON shape (the probe's,
`ProbeOut`): `{result, address, port, elapsed_ms, nonce_verified, agent_code, detail,
source}` where `source` is the address the connection came from, when known.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass

from controparte.model.probe import Reach


class Status(enum.StrEnum):
    """How a check came out. WARNING: it passed, with something to tell (an alternative
    that did not answer, a record not kept current); UNTESTED: it could not be tested
    from here, or not fully (the check says why and how to test it)."""

    PASSED = "passed"
    WARNING = "warning"
    FAILED = "failed"
    UNTESTED = "untested"


class Source(enum.StrEnum):
    """Where a connection test was made from."""

    HERE = "here"
    SERVICE = "service"
    COUNTERPART = "counterpart-agent"


@dataclass(frozen=True, slots=True)
class Dial:
    """One connection test from `source` to `address`:`port`, or why there is none.

    `from_address`: the address the connection left from, when known (the service's
    probe source, the counterpart agent's address). `nonce_verified` and `agent_code`
    as in `model.probe.Answer` (None unless a probe line was exchanged)."""

    source: Source
    reach: Reach | None
    address: str | None = None
    port: int | None = None
    elapsed_ms: int | None = None
    from_address: str | None = None
    nonce_verified: bool | None = None
    agent_code: str | None = None
    detail: str = ""
    unavailable: str | None = None

    @classmethod
    def none(cls, source: Source, reason: str) -> Dial:
        """A dial that was not made, and why."""
        return cls(source, None, unavailable=reason)

    @classmethod
    def from_json(cls, source: Source, body: Mapping[str, object]) -> Dial:
        """From the service's report of a dial (the probe's JSON shape); `ValueError`
        if `body` is not one."""
        try:
            reach = Reach(str(body["result"]))
            port = body["port"]
            elapsed = body["elapsed_ms"]
        except (KeyError, ValueError):
            raise ValueError("not a dial report") from None
        if not isinstance(port, int) or not isinstance(elapsed, int):
            raise ValueError("not a dial report")
        verified = body.get("nonce_verified")
        agent = body.get("agent_code")
        origin = body.get("source")
        address = body.get("address")
        return cls(
            source,
            reach,
            address=address if isinstance(address, str) else None,
            port=port,
            elapsed_ms=elapsed,
            from_address=origin if isinstance(origin, str) else None,
            nonce_verified=verified if isinstance(verified, bool) else None,
            agent_code=agent if isinstance(agent, str) else None,
            detail=str(body.get("detail") or ""),
        )

    @property
    def made(self) -> bool:
        return self.reach is not None

    def to_json(self) -> dict[str, object]:
        return {
            "kind": "connect",
            "from": self.source.value,
            "from_address": self.from_address,
            "address": self.address,
            "port": self.port,
            "result": None if self.reach is None else self.reach.value,
            "elapsed_ms": self.elapsed_ms,
            "nonce_verified": self.nonce_verified,
            "agent_code": self.agent_code,
            "detail": self.unavailable if self.reach is None else self.detail,
        }
