"""The Live port pool: where each Live installation is reached, a (gateway, port) of
the configured Live gateways (setting `live_gateways`), never the same pair twice.

A placed Live installation's served addresses are its gateway's and its port the one
allocated there: its stored row says so (`gateway`, `ipv4`, `ipv6`, `port`), so DNS,
its journal, IXFR and every node serve the placement with nothing more to learn.

`LivePool.place` is the registry's placement step, called by `Registry.write` inside
its transaction for every path: it places a new Live installation (or one that becomes
Live, or one moved to another gateway) on a free pair, checks a port that was asked
for, and keeps a placed one where it is whatever a change says of its addresses and
port (heartbeats, DynDNS2 and RFC 2136 report where an installation is seen; a Live
one is reached at its gateway). Its choice is read from the transaction, which then
holds the pool until it ends (`StoreTransaction.live_ports`: placements take turns on
every process and node, so a gateway's capacity holds); the database's unique
(gateway, port) is what guarantees a pair is never held twice, whoever writes (a pair
taken meanwhile is a PortTakenError, and the registry places again).

`LivePool.where` is the one read of where a Live installation is reached (`Placement`);
`LivePool.use` tells each gateway's free, used and quarantined pairs.
"""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from controparte.errors import (
    ConfigError,
    ConflictError,
    ControparteError,
    NotFoundError,
    PoolExhaustedError,
    ValidationError,
)
from controparte.model import Installation, Kind
from controparte.model.installation import validate_ipv4, validate_ipv6
from controparte.plan.catalog import LiveSettings
from controparte.settings import LiveGateway
from controparte.store import PortUse, Store, StoreTransaction


@dataclass(frozen=True, slots=True)
class Placement:
    """Where Live installation `code` is reached: `port` on `gateway` (None: placed by
    hand, before the pool or without gateways) at `ipv4`/`ipv6`."""

    code: str
    label: str
    gateway: str | None
    ipv4: str | None
    ipv6: str | None
    port: int | None

    def to_dict(self) -> dict[str, object]:
        return {
            "code": self.code,
            "label": self.label,
            "gateway": self.gateway,
            "ip": self.ipv4,
            "ipv6": self.ipv6,
            "port": self.port,
        }


@dataclass(frozen=True, slots=True)
class GatewayUse:
    """A gateway's pairs now: `used` by installations, `quarantined` (freed less than
    the quarantine ago), `free` to allocate (capacity counted)."""

    gateway: LiveGateway
    used: int
    quarantined: int
    free: int

    def to_dict(self) -> dict[str, object]:
        g = self.gateway
        return {
            "gateway": g.name,
            "ip": g.ipv4,
            "ipv6": g.ipv6,
            "ports": g.ports_text,
            "capacity": g.size,
            "used": self.used,
            "quarantined": self.quarantined,
            "free": self.free,
        }


def free_ports(gateway: LiveGateway, taken: Iterable[PortUse]) -> list[int]:
    """The ports of `gateway` free to allocate, in order, given the pairs `taken` (of
    any gateway): none once its installations reach its capacity."""
    mine = [use for use in taken if use.gateway == gateway.name]
    if sum(use.code is not None for use in mine) >= gateway.size:
        return []
    busy = {use.port for use in mine}
    return [port for port in range(gateway.low, gateway.high + 1) if port not in busy]


def free_count(gateway: LiveGateway, taken: Iterable[PortUse]) -> int:
    """How many more installations `gateway` takes: its free ports, within its
    capacity."""
    mine = [use for use in taken if use.gateway == gateway.name]
    used = sum(use.code is not None for use in mine)
    return min(len(free_ports(gateway, mine)), gateway.size - used)


class LivePool:
    """The pool over `gateways` (each range inside the catalog's Live range `live`, and
    each address global unless `allow_non_global`, else a ConfigError naming the
    setting), a freed pair kept out for `quarantine` seconds.
    `rng` chooses among free ports: at random, so that a pair freed after its
    quarantine is not the very next one handed out (reuse spread over the range)."""

    def __init__(
        self,
        gateways: Sequence[LiveGateway],
        quarantine: float,
        live: LiveSettings,
        *,
        allow_non_global: bool = False,
        rng: random.Random | None = None,
    ) -> None:
        for gateway in gateways:
            if not (live.in_range(gateway.low) and live.in_range(gateway.high)):
                raise ConfigError(
                    f"live_gateways {gateway.name}: ports {gateway.ports_text} are not inside"
                    f" the catalog's Live range {live.range_text}"
                )
            try:  # what DNS will serve: public, as any installation's address
                if gateway.ipv4 is not None:
                    validate_ipv4(gateway.ipv4, allow_non_global=allow_non_global)
                if gateway.ipv6 is not None:
                    validate_ipv6(gateway.ipv6, allow_non_global=allow_non_global)
            except ValidationError as exc:
                raise ConfigError(f"live_gateways {gateway.name}: {exc.rule}") from None
        self.gateways = tuple(gateways)
        self.quarantine = timedelta(seconds=quarantine)
        self._by_name = {g.name: g for g in gateways}
        self._rng = rng or random.SystemRandom()

    def gateway(self, name: str) -> LiveGateway:
        """The gateway `name` (in any case); a ValidationError on `gateway` naming the
        configured ones when there is none."""
        found = self._by_name.get(name.strip().lower())
        if found is None:
            known = ", ".join(self._by_name) or "none is configured (live_gateways)"
            raise ValidationError("gateway", f"no Live gateway is named {name!r} ({known})")
        return found

    # -- the placement step of `Registry.write` -------------------------------------------

    def place(
        self, tx: StoreTransaction, old: Installation | None, new: Installation, now: datetime
    ) -> Installation:
        """What `Registry.write` stores for `new` over `old`, placed:
        - not Live: on no gateway (leaving Live frees its pair);
        - Live and placed, on the same gateway: at the gateway's addresses and its
          allocated port, whatever the change says of them (a gateway gone from the
          configuration: as stored);
        - Live and asked onto another gateway (`new.gateway`, a move): a free port there;
        - a new Live installation, or one becoming Live, when gateways are configured:
          on the gateway asked for, else the one whose address was given, else the one
          with the most free pairs; on the port asked for (checked free), else a free
          one;
        - a Live installation stored before the pool (no gateway) stays as it is until
          it is moved.
        Raises ValidationError (an unknown gateway, an address or port no gateway has),
        ConflictError (the port asked for is taken) or PoolExhaustedError."""
        if new.kind is not Kind.LIVE:
            return new if new.gateway is None else replace(new, gateway=None)
        moving = False
        if old is not None and old.kind is Kind.LIVE:
            if new.gateway == old.gateway:
                return new if old.gateway is None else self._pinned(old, new)
            moving = True
        elif not self.gateways:
            return new
        asked = None if new.gateway is None else self.gateway(new.gateway)
        port = None if moving or (old is not None and new.port == old.port) else new.port
        candidates = self._candidates(asked, (None, None) if moving else _given(old, new))
        taken = tx.live_ports(now - self.quarantine)
        gateway, port = self._allocate(candidates, port, taken)
        return replace(new, gateway=gateway.name, ipv4=gateway.ipv4, ipv6=gateway.ipv6, port=port)

    def _pinned(self, old: Installation, new: Installation) -> Installation:
        gateway = self._by_name.get(old.gateway or "")
        if gateway is None:
            return replace(new, ipv4=old.ipv4, ipv6=old.ipv6, port=old.port)
        return replace(new, ipv4=gateway.ipv4, ipv6=gateway.ipv6, port=old.port)

    def _candidates(
        self, asked: LiveGateway | None, given: tuple[str | None, str | None]
    ) -> list[LiveGateway]:
        """The gateways a placement may use: the one asked for, else those having every
        address given (a ValidationError on `ip` when none has)."""
        pool = [asked] if asked is not None else list(self.gateways)
        ipv4, ipv6 = given
        if ipv4 is None and ipv6 is None:
            return pool
        matching = [
            g for g in pool if (ipv4 is None or ipv4 == g.ipv4) and (ipv6 is None or ipv6 == g.ipv6)
        ]
        if not matching:
            addresses = " ".join(a for a in given if a is not None)
            where = ", ".join(f"{g.name} {_addresses(g)}" for g in pool)
            raise ValidationError(
                "ip" if ipv4 is not None else "ipv6",
                f"a Live installation is reached at its gateway's addresses, and {addresses}"
                f" is no gateway's: give no address, or a gateway's ({where})",
            )
        return matching

    def _allocate(
        self, candidates: Sequence[LiveGateway], port: int | None, taken: Sequence[PortUse]
    ) -> tuple[LiveGateway, int]:
        if port is not None:
            return self._requested(candidates, port, taken)
        gateway = max(candidates, key=lambda g: free_count(g, taken))  # the first of the most
        ports = free_ports(gateway, taken)
        if not ports:
            raise PoolExhaustedError(
                "no free port is left on the Live gateway(s) "
                + ", ".join(f"{g.name} ({g.ports_text}, capacity {g.size})" for g in candidates)
                + f": every port is held, in quarantine ({_seconds(self.quarantine)}) or"
                " beyond the capacity"
            )
        return gateway, self._rng.choice(ports)

    def _requested(
        self, candidates: Sequence[LiveGateway], port: int, taken: Sequence[PortUse]
    ) -> tuple[LiveGateway, int]:
        """`port` on the first of `candidates` where it is free; else why it is free on
        none, gateway by gateway (one gateway: its error's own kind)."""
        errors: list[ControparteError] = []
        for gateway in candidates:
            if port in free_ports(gateway, taken):
                return gateway, port
            errors.append(self._not_free(gateway, port, taken))
        if len(errors) == 1:
            raise errors[0]
        raise ConflictError(
            f"port: {port} is free on no Live gateway: " + "; ".join(map(str, errors))
        )

    def _not_free(
        self, gateway: LiveGateway, port: int, taken: Sequence[PortUse]
    ) -> ControparteError:
        """Why `port` is not free on `gateway`."""
        if not gateway.low <= port <= gateway.high:
            return ValidationError(
                "port",
                f"{port} is outside the ports of the Live gateway {gateway.name}"
                f" ({gateway.ports_text})",
            )
        holder = next((u for u in taken if (u.gateway, u.port) == (gateway.name, port)), None)
        if holder is None:
            return PoolExhaustedError(
                f"the Live gateway {gateway.name} is at its capacity ({gateway.size})"
            )
        if holder.code is not None:
            return ConflictError(
                f"port: {port} on the Live gateway {gateway.name} is held by {holder.code}"
            )
        assert holder.released is not None
        until = holder.released + self.quarantine
        return ConflictError(
            f"port: {port} on the Live gateway {gateway.name} is in quarantine until"
            f" {until.isoformat(timespec='seconds')}"
        )

    def check(self, old: Installation | None, new: Installation) -> None:
        """The pool's rule for storing `new` over `old` (pure; also checked before
        `place`, by `Registry.build`): a placement that is new or changed names a
        configured gateway, holds a Live installation, and a port (when it has one) of
        the gateway's range. What is stored and unchanged passes (a rule refuses new
        claims; it does not evict). The addresses are `place`'s to set."""
        if new.gateway is None:
            return
        if old is not None and _placed(old) == _placed(new):
            return
        gateway = self.gateway(new.gateway)
        if new.kind is not Kind.LIVE:
            raise ValidationError("gateway", "only a Live installation is placed on a gateway")
        if new.port is None:
            return
        if not gateway.low <= new.port <= gateway.high:
            raise ValidationError(
                "port",
                f"{new.port} is outside the ports of the Live gateway {gateway.name}"
                f" ({gateway.ports_text})",
            )

    # -- reads --------------------------------------------------------------------------

    def where(self, inst: Installation) -> Placement:
        """Where the Live installation `inst` is reached (NotFoundError when it is not a
        Live one): its gateway, that gateway's addresses and its port, as stored."""
        if inst.kind is not Kind.LIVE:
            raise NotFoundError(f"{inst.code} is not a Live installation")
        return Placement(inst.code, inst.label, inst.gateway, inst.ipv4, inst.ipv6, inst.port)

    def use(self, store: Store, now: datetime) -> list[GatewayUse]:
        """Each configured gateway's pairs at `now`, in the configuration's order."""
        taken = store.live_ports(now - self.quarantine)
        counts: dict[str, list[int]] = defaultdict(lambda: [0, 0])
        held = {(u.gateway, u.port) for u in taken if u.code is not None}
        for use in taken:
            if use.code is not None:
                counts[use.gateway][0] += 1
            elif (use.gateway, use.port) not in held:
                counts[use.gateway][1] += 1
        return [
            GatewayUse(g, counts[g.name][0], counts[g.name][1], free_count(g, taken))
            for g in self.gateways
        ]


def _placed(inst: Installation) -> tuple[object, ...]:
    return (inst.gateway, inst.port, inst.ipv4, inst.ipv6)


def _given(old: Installation | None, new: Installation) -> tuple[str | None, str | None]:
    """The addresses a change gives anew (those of a new installation, or those that
    differ from `old`'s)."""
    ipv4 = new.ipv4 if old is None or new.ipv4 != old.ipv4 else None
    ipv6 = new.ipv6 if old is None or new.ipv6 != old.ipv6 else None
    return ipv4, ipv6


def _addresses(gateway: LiveGateway) -> str:
    return " ".join(a for a in (gateway.ipv4, gateway.ipv6) if a is not None)


def _seconds(delta: timedelta) -> str:
    return f"{delta.total_seconds():g} s"
