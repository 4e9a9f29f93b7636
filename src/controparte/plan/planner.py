"""The planner: (caller, callee, feature) -> the flows that must be possible, and what
each side must allow for each. Pure: plain values in, plain values out.

The rules are the seed's (see ../shared/seed/README.md):
- the outbound flow goes from the caller's server (or, for remote access, from every
  client of the caller) to the callee's public port; server features have an
  asynchronous return flow from the callee's server to the caller's public port; Real
  Time runs both ways;
- a non-Live destination must accept the flow inbound on its public port, through its
  NAT (port forward: public port -> the port MxServer listens on) and firewall;
- a Live destination is reached on a port of the Live range: the flow names the port
  it really has (the one the Live pool allocated on its gateway, `Party.gateway`, or
  set by hand), while the non-Live source's egress rule stays on that whole range, to
  the destination's (gateway's) addresses, so that a move to another port does not
  break the caller's firewall (the seed's rule: callers go out on the range); for
  server features, on 443 to each start-live host too; the start-live hosts are
  alternatives unless the catalog says otherwise
  (`live.start_live_hosts_needed`): their flows form one "any of" group, possible when
  one of them is, yet each keeps its rule (the launcher fails over to the others);
- Live servers may only open connections to ports in the Live range: a flow from a Live
  server to a non-Live destination whose public port lies outside it cannot happen;
- where both ends are Live the cloud's own network carries the flow.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from controparte.model import Installation, Kind
from controparte.plan.catalog import Catalog, Feature, LiveSettings, Needed, Topology


class Role(enum.StrEnum):
    """The two ends of a plan: the installation that uses the feature and the one it
    uses it with."""

    CALLER = "caller"
    CALLEE = "callee"

    @property
    def other(self) -> Role:
        return Role.CALLEE if self is Role.CALLER else Role.CALLER


class Direction(enum.StrEnum):
    """A flow of the feature itself, or the asynchronous return of a server feature."""

    OUTBOUND = "outbound"
    RETURN = "return"


class Initiator(enum.StrEnum):
    """Who, at a flow's source installation, opens the connection: its server, or every
    one of its clients (`origin` of a `Flow` or `Rule`, and of the plan's JSON)."""

    SERVER = "server"
    CLIENTS = "clients"  # every iDesk client of the installation


class Action(enum.StrEnum):
    """What a rule asks of one side's network."""

    EGRESS = "egress"  # the source side lets the connection out
    INBOUND = "inbound"  # the destination's firewall lets it in (on the listening port)
    PORT_FORWARD = "port-forward"  # the destination's NAT: public port -> listening port


def _ports_text(low: int, high: int) -> str:
    """A port, or a range of ports as `low-high`."""
    return str(low) if low == high else f"{low}-{high}"


@dataclass(frozen=True, slots=True)
class Rule:
    """One thing one side's network must allow, for TCP."""

    side: Role
    action: Action
    origin: Initiator  # who opens the connection (server, or every client)
    peer_addresses: tuple[str, ...]  # remote end; empty = unknown (any)
    peer_name: str
    port_low: int  # destination port(s): the public port, or a range
    port_high: int
    to_port: int | None = None  # PORT_FORWARD: the listening (private) port
    names: tuple[str, ...] = ()  # peers known by name only (start-live hosts)
    why: str = ""

    @property
    def ports_text(self) -> str:
        return _ports_text(self.port_low, self.port_high)


@dataclass(frozen=True, slots=True)
class Flow:
    """One TCP connection that must be possible; or, when `any_of` names a group, one of
    several alternatives of which one must be possible (the flows with the same `any_of`
    in a plan: the start-live hosts of one source, `start-live:<code>`)."""

    id: str
    direction: Direction
    source: Role
    origin: Initiator
    destination: Role
    host: str | None  # a destination known by name (start-live host) instead of a party
    addresses: tuple[str, ...]  # destination public addresses (registered)
    port_low: int | None  # destination port (a Live one's, when in the Live range; else
    # the range itself); None when unknown
    port_high: int | None
    description: str
    rules: tuple[Rule, ...] = ()
    blocked: str | None = None  # why the rules make this flow impossible as registered
    fix: str | None = None
    any_of: str | None = None  # the group of alternatives this flow belongs to, if any

    @property
    def ports_text(self) -> str:
        if self.port_low is None or self.port_high is None:
            return "?"
        return _ports_text(self.port_low, self.port_high)


@dataclass(frozen=True, slots=True)
class Party:
    """What the planner needs of an installation. `gateway`: the Live gateway the Live
    pool placed it on (`Installation.gateway`): then `addresses` are the gateway's and
    `port` the one allocated there; None: placed by hand, or not Live."""

    code: str
    label: str
    live: bool
    addresses: tuple[str, ...]
    port: int | None
    private_port: int | None
    gateway: str | None = None

    @classmethod
    def of(cls, inst: Installation) -> Party:
        addresses = tuple(a for a in (inst.ipv4, inst.ipv6) if a is not None)
        return cls(
            inst.code,
            inst.label,
            inst.kind is Kind.LIVE,
            addresses,
            inst.port,
            inst.private_port,
            inst.gateway,
        )

    @property
    def name(self) -> str:
        return f"{self.label} ({self.code})"

    @property
    def placement(self) -> str:
        """Where the party is reached, in words: `gateway gw1 port 9042` (placed by the
        Live pool), `port 9042`, or `no port`."""
        port = "no port" if self.port is None else f"port {self.port}"
        return port if self.gateway is None else f"gateway {self.gateway} {port}"


@dataclass(frozen=True, slots=True)
class Plan:
    """The flows of `feature` between `caller` and `callee`, with their rules, and
    notes for the reader."""

    feature: Feature
    caller: Party
    callee: Party
    flows: tuple[Flow, ...]
    notes: tuple[str, ...] = field(default=())

    def party(self, role: Role) -> Party:
        return self.caller if role is Role.CALLER else self.callee

    @property
    def blocked(self) -> tuple[Flow, ...]:
        return tuple(f for f in self.flows if f.blocked)

    def alternatives(self, group: str) -> tuple[Flow, ...]:
        """The flows of the "any of" group `group`, in plan order."""
        return tuple(f for f in self.flows if f.any_of == group)

    def rules_for(self, side: Role) -> tuple[Rule, ...]:
        """Every rule `side` must have, each once, in flow order."""
        seen: list[Rule] = []
        for flow in self.flows:
            for rule in flow.rules:
                if rule.side is side and rule not in seen:
                    seen.append(rule)
        return tuple(seen)


def _party_flow(
    direction: Direction,
    *,
    src: Party,
    src_role: Role,
    dst: Party,
    dst_role: Role,
    origin: Initiator,
    feature: Feature,
    live: LiveSettings,
) -> Flow:
    """The flow from `src` (its server or its clients) to `dst`'s public port."""
    who = "every client of " + src.name if origin is Initiator.CLIENTS else src.name
    text = f"{feature.id} {direction.value}: {who} -> {dst.name}"
    rules: list[Rule] = []
    blocked: str | None = None
    fix: str | None = None
    port_low: int | None
    port_high: int | None
    if dst.live:
        port_low, port_high = live.port_low, live.port_high
        why = f"{dst.name} is Live: reached on a port of {live.range_text}"
        if dst.port is not None and live.in_range(dst.port):
            port_low = port_high = dst.port  # the flow names the port really dialled
            why = (
                f"{dst.name} is Live, reached on {dst.placement}: the whole range"
                f" {live.range_text} is allowed, so that a move to another port keeps working"
            )
        if not src.live:
            rules.append(_egress(src_role, origin, dst, live.port_low, live.port_high, why=why))
        if dst.port is None:
            blocked = f"{dst.name} is Live but has no public port assigned"
            fix = f"assign {dst.name} a port of {live.range_text} and register it"
        elif not live.in_range(dst.port):
            blocked = (
                f"{dst.name} is Live but its public port {dst.port} is outside {live.range_text}"
            )
            fix = f"assign {dst.name} a port of {live.range_text}"
    else:
        port_low = port_high = dst.port
        if dst.port is None:
            blocked = f"{dst.name} has no public port registered"
            fix = (
                f"register {dst.name}'s public port (the one forwarded to MxServer): "
                f"`controparte agent --port N` on it, or `installation update "
                f"{dst.code} --port N`"
            )
        else:
            listening = dst.private_port or dst.port
            if not src.live:
                why = f"out to {dst.name}'s public port"
                rules.append(_egress(src_role, origin, dst, dst.port, dst.port, why=why))
            source_addresses = src.addresses if origin is Initiator.SERVER else ()
            rules += _let_in(
                dst_role,
                origin,
                peers=source_addresses,
                who=who,
                public=dst.port,
                listening=listening,
            )
            if src.live and not live.in_range(dst.port):
                blocked = (
                    f"{src.name} is Live: Live servers may open connections only to "
                    f"ports {live.range_text}, and {dst.name}'s public port is "
                    f"{dst.port}"
                )
                fix = (
                    f"give {dst.name} a public port in {live.range_text}: forward it on "
                    f"its router to MxServer's port {listening} and register it "
                    f"(`controparte agent --port N`)"
                )
    return Flow(
        f"{direction.value}:{src.code}->{dst.code}",
        direction,
        src_role,
        origin,
        dst_role,
        None,
        dst.addresses,
        port_low,
        port_high,
        text,
        tuple(rules),
        blocked,
        fix,
    )


def _egress(side: Role, origin: Initiator, dst: Party, low: int, high: int, *, why: str) -> Rule:
    """`side` lets the connections `origin` opens to `dst` out on ports `low`-`high`."""
    return Rule(side, Action.EGRESS, origin, dst.addresses, dst.name, low, high, why=why)


def _let_in(
    side: Role, origin: Initiator, *, peers: tuple[str, ...], who: str, public: int, listening: int
) -> tuple[Rule, Rule]:
    """The destination `side` forwards its `public` port to MxServer's `listening` one
    (NAT) and lets `who` (at `peers`; none: anywhere) in on it."""
    nat = f"NAT: public {public} -> MxServer's port {listening}"
    let_in = f"in from {who} on MxServer's port {listening}"
    return (
        Rule(side, Action.PORT_FORWARD, origin, peers, who, public, public, listening, why=nat),
        Rule(side, Action.INBOUND, origin, peers, who, listening, listening, why=let_in),
    )


def _start_live_flows(
    src: Party, src_role: Role, dst: Party, origin: Initiator, live: LiveSettings
) -> list[Flow]:
    """A non-Live server that calls a Live one also needs 443 to the start-live hosts:
    to any one of them (one group, `start-live:<code>`, when there are several), or to
    each when the catalog says all are needed."""
    several = len(live.start_live_hosts) > 1
    group = (
        f"start-live:{src.code}"
        if several and live.start_live_hosts_needed is Needed.ANY_OF
        else None
    )
    flows = []
    for host in live.start_live_hosts:
        rule = Rule(
            src_role,
            Action.EGRESS,
            origin,
            (),
            host,
            live.start_live_port,
            live.start_live_port,
            names=(host,),
            why=f"{dst.name} is Live: the start-live broker answers on {host}",
        )
        flows.append(
            Flow(
                f"start-live:{src.code}->{host}",
                Direction.OUTBOUND,
                src_role,
                origin,
                src_role.other,
                host,
                (),
                live.start_live_port,
                live.start_live_port,
                f"start-live: {src.name} -> {host}:{live.start_live_port}",
                (rule,),
                any_of=group,
            )
        )
    return flows


def plan(
    caller: Installation | Party, callee: Installation | Party, feature: Feature, catalog: Catalog
) -> Plan:
    """The flows of `feature` between `caller` and `callee`, with every rule."""
    a = caller if isinstance(caller, Party) else Party.of(caller)
    b = callee if isinstance(callee, Party) else Party.of(callee)
    live = catalog.live
    if feature.topology is Topology.CLIENTS:
        flows = [
            _party_flow(
                Direction.OUTBOUND,
                src=a,
                src_role=Role.CALLER,
                dst=b,
                dst_role=Role.CALLEE,
                origin=Initiator.CLIENTS,
                feature=feature,
                live=live,
            )
        ]
    else:
        flows = _server_flows(a, b, feature, live)
    # Flows with the same ends, port and direction are listed once.
    unique: dict[str, Flow] = {}
    for flow in flows:
        unique.setdefault(flow.id, flow)
    found = tuple(unique.values())
    return Plan(feature, a, b, found, _notes(a, b) + _alternatives_notes(a, b, found))


def _server_flows(a: Party, b: Party, feature: Feature, live: LiveSettings) -> list[Flow]:
    """The flows of a server feature between caller `a` and callee `b`: outbound (both
    ways for SERVER_BOTH) and their return flows, each with the start-live flows a
    non-Live server calling a Live one needs."""
    flows: list[Flow] = []

    def server_pair(
        src: Party, src_role: Role, dst: Party, dst_role: Role, direction: Direction
    ) -> None:
        flows.append(
            _party_flow(
                direction,
                src=src,
                src_role=src_role,
                dst=dst,
                dst_role=dst_role,
                origin=Initiator.SERVER,
                feature=feature,
                live=live,
            )
        )
        if dst.live and not src.live:
            flows.extend(_start_live_flows(src, src_role, dst, Initiator.SERVER, live))

    server_pair(a, Role.CALLER, b, Role.CALLEE, Direction.OUTBOUND)
    if feature.topology is Topology.SERVER_BOTH:
        server_pair(b, Role.CALLEE, a, Role.CALLER, Direction.OUTBOUND)
    server_pair(b, Role.CALLEE, a, Role.CALLER, Direction.RETURN)
    if feature.topology is Topology.SERVER_BOTH:
        server_pair(a, Role.CALLER, b, Role.CALLEE, Direction.RETURN)
    return flows


def _notes(a: Party, b: Party) -> tuple[str, ...]:
    """What the plan's reader should know about its two ends."""
    notes: list[str] = []
    if a.live and b.live:
        notes.append("both ends are Live: the cloud's own network carries these flows")
    for party in (a, b):
        if not party.addresses:
            notes.append(
                f"{party.name} has no public address registered yet: rules for "
                "it cannot name its address"
            )
        if (
            party.private_port
            and party.port
            and party.private_port != party.port
            and not party.live
        ):
            notes.append(
                f"{party.name}: public port {party.port} differs from MxServer's "
                f"port {party.private_port}: the router must forward "
                f"{party.port} -> {party.private_port}, and {party.port} is the one "
                "to register"
            )
    return tuple(notes)


def _alternatives_notes(a: Party, b: Party, flows: tuple[Flow, ...]) -> tuple[str, ...]:
    """One note per "any of" group: which flows are alternatives, and why each keeps
    its rule."""
    notes: list[str] = []
    for group in dict.fromkeys(f.any_of for f in flows if f.any_of is not None):
        members = [f for f in flows if f.any_of == group]
        source = a if members[0].source is Role.CALLER else b
        hosts = ", ".join(f.host for f in members if f.host)
        notes.append(
            f"{source.name} needs port {members[0].ports_text} on any one of {hosts}:"
            " they are alternatives (the Live launcher fails over from one to the next),"
            " and each is allowed so that the failover works"
        )
    return tuple(notes)
