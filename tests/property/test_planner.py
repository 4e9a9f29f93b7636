"""The planner against the seed's rules (../shared/seed/README.md, "The rules, as a
table"), over random pairs of installations: Live or not, public ports inside and
outside the Live range or missing, with and without addresses and private ports, for
every feature of the packaged catalog.

Then a table-driven test: the six seed features times the four Live combinations,
each compared with the seed's table written out below as data.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from controparte.plan.catalog import Catalog, LiveSettings, Needed, Topology, load_catalog
from controparte.plan.planner import (
    Action,
    Direction,
    Flow,
    Initiator,
    Party,
    Plan,
    Role,
    Rule,
    plan,
)

CATALOG = load_catalog()
LIVE = CATALOG.live
FEATURES = sorted(CATALOG.features)

# -- strategies --------------------------------------------------------------------------

ports_inside = st.integers(LIVE.port_low, LIVE.port_high)
ports_outside = st.integers(1, LIVE.port_low - 1) | st.integers(LIVE.port_high + 1, 65535)
ports = st.none() | ports_inside | ports_outside
addresses = st.tuples(
    st.none() | st.sampled_from(["203.0.113.10", "198.51.100.20", "192.0.2.30"]),
    st.none() | st.sampled_from(["2001:db8::10", "2001:db8:1::20"]),
).map(lambda pair: tuple(a for a in pair if a is not None))


def parties(code: str) -> st.SearchStrategy[Party]:
    return st.builds(
        Party,
        code=st.just(code),
        label=st.just(code.lower()),
        live=st.booleans(),
        addresses=addresses,
        port=ports,
        private_port=st.none() | st.integers(1, 65535),
    )


# -- helpers -----------------------------------------------------------------------------


def party_flows(p: Plan) -> list[Flow]:
    """The flows between the two installations (not to the start-live hosts)."""
    return [f for f in p.flows if f.host is None]


def start_live_flows(p: Plan) -> list[Flow]:
    return [f for f in p.flows if f.host is not None]


def rules_of(flow: Flow, side: Role, action: Action) -> list[Rule]:
    return [r for r in flow.rules if r.side is side and r.action is action]


def assert_flows_of_topology(p: Plan, topology: Topology) -> None:
    """Which flows: counted by direction, from whom, and who opens them."""
    flows = party_flows(p)
    outbound = [f for f in flows if f.direction is Direction.OUTBOUND]
    returns = [f for f in flows if f.direction is Direction.RETURN]
    if topology is Topology.CLIENTS:
        assert len(outbound) == 1 and returns == []
        assert outbound[0].origin is Initiator.CLIENTS
        assert (outbound[0].source, outbound[0].destination) == (Role.CALLER, Role.CALLEE)
        return
    if topology is Topology.SERVER_ASYNC:
        assert [(f.source, f.destination) for f in outbound] == [(Role.CALLER, Role.CALLEE)]
        assert [(f.source, f.destination) for f in returns] == [(Role.CALLEE, Role.CALLER)]
    else:
        both = {(Role.CALLER, Role.CALLEE), (Role.CALLEE, Role.CALLER)}
        assert len(outbound) == 2 and {(f.source, f.destination) for f in outbound} == both
        assert len(returns) == 2 and {(f.source, f.destination) for f in returns} == both
    assert all(f.origin is Initiator.SERVER for f in p.flows)


def assert_rules_of_flow(p: Plan, flow: Flow) -> None:
    """The rules of one flow between the two installations, as the seed puts them."""
    src, dst = p.party(flow.source), p.party(flow.destination)
    # Rules sit where the seed puts them: egress at the source, the rest at the
    # destination, and never on a Live side (the cloud's network is not ours).
    for rule in flow.rules:
        expected_side = flow.source if rule.action is Action.EGRESS else flow.destination
        assert rule.side is expected_side
        assert not p.party(rule.side).live
        assert rule.origin is flow.origin
    if src.live and dst.live:
        assert flow.rules == ()
    if dst.live:
        assert_reached_on_the_live_range(flow, src, dst)
    elif dst.port is None:
        # Nothing to forward to: blocked, with a fix, and no rule can be written.
        assert flow.blocked and flow.fix
        assert flow.rules == ()
    else:
        assert_forwarded(flow, src, dst)
    if flow.blocked:
        assert flow.fix


def assert_reached_on_the_live_range(flow: Flow, src: Party, dst: Party) -> None:
    """A Live destination: the flow names its port when it lies in the Live range (else
    the range); the non-Live source may go out on all of the range."""
    if dst.port is not None and LIVE.in_range(dst.port):
        assert (flow.port_low, flow.port_high) == (dst.port, dst.port)
    else:
        assert (flow.port_low, flow.port_high) == (LIVE.port_low, LIVE.port_high)
    egress = rules_of(flow, flow.source, Action.EGRESS)
    if src.live:
        assert egress == []
    else:
        assert [(r.port_low, r.port_high, r.peer_addresses) for r in egress] == [
            (LIVE.port_low, LIVE.port_high, dst.addresses)
        ]
    assert rules_of(flow, flow.destination, Action.INBOUND) == []
    assert rules_of(flow, flow.destination, Action.PORT_FORWARD) == []
    assert bool(flow.blocked) == (not LIVE.in_range(dst.port))


def assert_forwarded(flow: Flow, src: Party, dst: Party) -> None:
    """A non-Live destination with a public port: forwarded to the listening port and
    let in there, from the source's addresses when its server opens the connection."""
    assert dst.port is not None
    listening = dst.private_port or dst.port
    source_addresses = src.addresses if flow.origin is Initiator.SERVER else ()
    forwards = rules_of(flow, flow.destination, Action.PORT_FORWARD)
    inbound = rules_of(flow, flow.destination, Action.INBOUND)
    assert [(r.port_low, r.port_high, r.to_port) for r in forwards] == [
        (dst.port, dst.port, listening)
    ]
    assert [(r.port_low, r.port_high) for r in inbound] == [(listening, listening)]
    assert [r.peer_addresses for r in forwards + inbound] == [source_addresses] * 2
    egress = rules_of(flow, flow.source, Action.EGRESS)
    if src.live:
        assert egress == []
        # Live servers dial only the Live range.
        assert bool(flow.blocked) == (not LIVE.in_range(dst.port))
    else:
        assert [(r.port_low, r.port_high, r.peer_addresses) for r in egress] == [
            (dst.port, dst.port, dst.addresses)
        ]
        assert flow.blocked is None


def assert_start_live_flows(p: Plan, server: bool) -> None:
    """443 to every start-live host: exactly for a non-Live server that calls a Live one;
    the hosts of one source are one group of alternatives (the packaged catalog needs
    any one of its three)."""
    expected_starts = {
        (p.party(f.source).code, host)
        for f in party_flows(p)
        if server and p.party(f.destination).live and not p.party(f.source).live
        for host in LIVE.start_live_hosts
    }
    starts = start_live_flows(p)
    assert {(p.party(f.source).code, f.host) for f in starts} == expected_starts
    for flow in starts:
        assert flow.host is not None
        (rule,) = flow.rules
        assert rule.side is flow.source and rule.action is Action.EGRESS
        assert (rule.port_low, rule.port_high) == (LIVE.start_live_port,) * 2
        assert rule.names == (flow.host,)
        assert flow.blocked is None
        group = f"start-live:{p.party(flow.source).code}"
        assert flow.any_of == group
        assert [f.host for f in p.alternatives(group)] == list(LIVE.start_live_hosts)
    assert all(f.any_of is None for f in party_flows(p))


# -- properties --------------------------------------------------------------------------


@settings(max_examples=400)
@given(a=parties("A-1"), b=parties("B-2"), feature=st.sampled_from(FEATURES))
def test_the_seed_rules_hold_for_any_pair(a: Party, b: Party, feature: str) -> None:
    chosen = CATALOG.feature(feature)
    p = plan(a, b, chosen, CATALOG)
    assert_flows_of_topology(p, chosen.topology)
    for flow in party_flows(p):
        assert_rules_of_flow(p, flow)
    assert_start_live_flows(p, server=chosen.topology is not Topology.CLIENTS)
    # Flows are listed once each.
    assert len({f.id for f in p.flows}) == len(p.flows)


@settings(max_examples=100)
@given(a=parties("A-1"), b=parties("B-2"), feature=st.sampled_from(FEATURES))
def test_both_live_needs_no_rules(a: Party, b: Party, feature: str) -> None:
    a, b = replace(a, live=True), replace(b, live=True)
    p = plan(a, b, CATALOG.feature(feature), CATALOG)
    assert p.rules_for(Role.CALLER) == () and p.rules_for(Role.CALLEE) == ()
    assert start_live_flows(p) == []
    assert any("both ends are Live" in note for note in p.notes)


@settings(max_examples=100)
@given(
    live_port=st.integers(1, 65535),
    low=st.integers(1, 65535),
    width=st.integers(0, 2000),
    feature=st.sampled_from(FEATURES),
)
def test_the_live_range_comes_from_the_catalog(
    live_port: int, low: int, width: int, feature: str
) -> None:
    """An operator's range is the one the rules use (nothing assumes 9000-9999)."""
    high = min(65535, low + width)
    catalog = Catalog(LiveSettings(low, high, 8443, ("broker.example.test",)), CATALOG.features)
    caller = Party("A-1", "a", False, ("192.0.2.1",), 4443, None)
    callee = Party("B-2", "b", True, ("198.51.100.2",), live_port, None)
    p = plan(caller, callee, catalog.feature(feature), catalog)
    outbound = party_flows(p)[0]
    assert [(r.port_low, r.port_high) for r in outbound.rules] == [(low, high)]
    assert bool(outbound.blocked) == (not low <= live_port <= high)
    for flow in start_live_flows(p):
        assert (flow.host, flow.port_low) == ("broker.example.test", 8443)


# -- the seed's table, feature by feature ------------------------------------------------

# "feature": (who opens the flows, the outbound flows, the return flows), as the seed's
# table states them; (source, destination) by role.
CALLER, CALLEE = Role.CALLER, Role.CALLEE
SEED_TABLE: dict[str, tuple[Initiator, list[tuple[Role, Role]], list[tuple[Role, Role]]]] = {
    "einvoice": (Initiator.SERVER, [(CALLER, CALLEE)], [(CALLEE, CALLER)]),
    "primanota": (Initiator.SERVER, [(CALLER, CALLEE)], [(CALLEE, CALLER)]),
    "sprix": (Initiator.SERVER, [(CALLER, CALLEE)], [(CALLEE, CALLER)]),
    "easypass": (Initiator.SERVER, [(CALLER, CALLEE)], [(CALLEE, CALLER)]),
    "realtime": (
        Initiator.SERVER,
        [(CALLER, CALLEE), (CALLEE, CALLER)],
        [(CALLEE, CALLER), (CALLER, CALLEE)],
    ),
    "remote-access": (Initiator.CLIENTS, [(CALLER, CALLEE)], []),
}

# The installations of the table: on-premises ends listen on 4443 behind NAT and are
# reached on public ports outside the Live range; Live ends have a port of the range.
ONPREM = {
    CALLER: Party("AZ-1", "azienda", False, ("203.0.113.10",), 5443, 4443),
    CALLEE: Party("ST-2", "studio", False, ("198.51.100.20",), 6443, 4443),
}
LIVE_END = {
    CALLER: Party("AZ-1", "azienda", True, ("192.0.2.10",), 9101, None),
    CALLEE: Party("ST-2", "studio", True, ("192.0.2.20",), 9102, None),
}
START_LIVE = [f"443 to {h}" for h in LIVE.start_live_hosts]


@dataclass(frozen=True)
class Expected:
    """One flow as the seed describes it: what each side must allow, and whether the
    Live farm's rule (servers dial only 9000-9999) blocks it."""

    direction: Direction
    source: Role
    destination: Role
    source_allows: tuple[str, ...]
    destination_allows: tuple[str, ...]
    blocked: bool


def seed_flow(
    direction: Direction, src: Role, dst: Role, origin: Initiator, ends: dict[Role, Party]
) -> Expected:
    """The seed's words, for one flow: a non-Live destination accepts the flow inbound
    on its public port (NAT to MxServer, then the firewall); a Live destination is
    reached on 9000-9999, which the non-Live source must be allowed out on, with 443 to
    each start-live host for every feature but remote access; Live servers dial only
    9000-9999; between two Live ends the cloud carries the flow."""
    source, destination = ends[src], ends[dst]
    source_allows: list[str] = []
    destination_allows: list[str] = []
    blocked = False
    if destination.live:
        if not source.live:
            source_allows.append("out 9000-9999")
            if origin is Initiator.SERVER:
                source_allows += START_LIVE
    else:
        if not source.live:
            source_allows.append(f"out {destination.port}")
        destination_allows += [f"forward {destination.port}->4443", "in 4443"]
        blocked = source.live and not 9000 <= (destination.port or 0) <= 9999
    return Expected(direction, src, dst, tuple(source_allows), tuple(destination_allows), blocked)


def actual_flows(p: Plan) -> list[Expected]:
    """The plan in the same shape: start-live flows folded into the flow they serve."""
    out = []
    for flow in party_flows(p):
        src, dst = flow.source, flow.destination
        source_allows = [
            f"out {r.ports_text}" for r in rules_of(flow, src, Action.EGRESS) if not r.names
        ]
        if p.party(dst).live and not p.party(src).live:
            source_allows += [
                f"{f.port_low} to {f.host}" for f in start_live_flows(p) if f.source is src
            ]
        destination_allows = [
            f"forward {r.ports_text}->{r.to_port}" for r in rules_of(flow, dst, Action.PORT_FORWARD)
        ] + [f"in {r.ports_text}" for r in rules_of(flow, dst, Action.INBOUND)]
        out.append(
            Expected(
                flow.direction,
                src,
                dst,
                tuple(source_allows),
                tuple(destination_allows),
                flow.blocked is not None,
            )
        )
    return out


COMBINATIONS = [(False, False), (False, True), (True, False), (True, True)]


@pytest.mark.parametrize(
    ("feature", "caller_live", "callee_live"),
    [(f, c, e) for f in SEED_TABLE for c, e in COMBINATIONS],
    ids=[
        f"{f}-{'live' if c else 'onprem'}-to-{'live' if e else 'onprem'}"
        for f in SEED_TABLE
        for c, e in COMBINATIONS
    ],
)
def test_each_seed_feature_matches_the_seed_for_every_live_combination(
    feature: str, caller_live: bool, callee_live: bool
) -> None:
    assert set(SEED_TABLE) == set(CATALOG.features), "the packaged catalog is the seed's"
    ends = {
        CALLER: (LIVE_END if caller_live else ONPREM)[CALLER],
        CALLEE: (LIVE_END if callee_live else ONPREM)[CALLEE],
    }
    origin, outbound, returns = SEED_TABLE[feature]
    expected = [seed_flow(Direction.OUTBOUND, src, dst, origin, ends) for src, dst in outbound] + [
        seed_flow(Direction.RETURN, src, dst, origin, ends) for src, dst in returns
    ]
    p = plan(ends[CALLER], ends[CALLEE], CATALOG.feature(feature), CATALOG)
    assert sorted(actual_flows(p), key=repr) == sorted(expected, key=repr)
    assert all(f.origin is origin for f in p.flows)
    # Nothing else: every rule of the plan belongs to one of the flows above.
    if caller_live and callee_live:
        assert p.rules_for(CALLER) == p.rules_for(CALLEE) == ()


# -- alternatives: the start-live hosts ----------------------------------------------------

TWO_HOSTS = ("broker.example.test", "broker2.example.test")


@pytest.mark.parametrize(
    ("hosts", "needed", "group"),
    [
        (TWO_HOSTS, Needed.ANY_OF, "start-live:A-1"),
        (TWO_HOSTS, Needed.ALL_OF, None),
        (("broker.example.test",), Needed.ANY_OF, None),  # one host: simply required
        (("broker.example.test",), Needed.ALL_OF, None),
    ],
)
def test_start_live_hosts_are_one_group_of_alternatives_when_the_catalog_says_any_of(
    hosts: tuple[str, ...], needed: Needed, group: str | None
) -> None:
    catalog = Catalog(LiveSettings(9000, 9999, 443, hosts, needed), CATALOG.features)
    caller = Party("A-1", "a", False, ("192.0.2.1",), 4443, None)
    callee = Party("B-2", "b", True, ("198.51.100.2",), 9100, None)
    p = plan(caller, callee, catalog.feature("realtime"), catalog)
    starts = start_live_flows(p)
    assert [f.host for f in starts] == list(hosts)
    assert [f.any_of for f in starts] == [group] * len(hosts)
    # Each host keeps its own rule either way: the failover needs every one allowed.
    assert [r.names for f in starts for r in f.rules] == [(h,) for h in hosts]
    notes = [n for n in p.notes if "alternatives" in n]
    if group is None:
        assert notes == []
    else:
        assert p.alternatives(group) == tuple(starts)
        assert notes == [
            "a (A-1) needs port 443 on any one of broker.example.test, broker2.example.test:"
            " they are alternatives (the Live launcher fails over from one to the next), and"
            " each is allowed so that the failover works"
        ]
