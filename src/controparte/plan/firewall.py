"""Firewall rules for one side of a plan: nftables, iptables and Windows
(`New-NetFirewallRule`). Pure text renderers over `Rule` values.

The rules allow; they do not set policies. nftables rules are `add rule` statements
for the usual `inet filter` table (input/output chains) and `ip nat` / `ip6 nat`
prerouting (for the port forward when this host does the NAT itself; on a separate
router, forward the public port there instead). Peers known only by name (the
start-live hosts) are matched by port, with the names in the comment, since packet
filters match addresses. The egress rule towards a Live party is on the whole Live
range, to its (gateway's) addresses, though its flow names the one port allocated there:
a move to another port on the gateway keeps the caller's firewall right (the rule's
`why`, not its comment, names the gateway and port, so that the rules of several
features to one gateway still merge into one line).

Where an inbound rule admits only named peers (the counterparts), the service's
outside-in probe would be kept out: `probe_admissions` makes the rules that admit the
probe's source addresses on the same ports, which `render_many` writes last, under
their own comment (`PROBE_COMMENT`).
"""

from __future__ import annotations

import abc
import ipaddress
from collections.abc import Callable, Iterable, Sequence
from dataclasses import replace
from typing import ClassVar

from controparte.plan.planner import Action, Initiator, Plan, Role, Rule

FORMATS = ("nftables", "iptables", "windows")
NFT_COMMENT_MAX = 128  # nft refuses longer comments
IPTABLES_COMMENT_MAX = 256  # the comment match's limit
PROBE_COMMENT = "controparte probe: the service's outside-in probe"
PROBE_PEER = "the service's probe"


def _v(address: str) -> int:
    return ipaddress.ip_address(address).version


def _comment(feature_ids: Sequence[str], rule: Rule) -> str:
    text = f"controparte {','.join(feature_ids)}: {rule.action.value} {rule.peer_name}"
    if rule.names and list(rule.names) != [rule.peer_name]:
        text += " (" + ", ".join(rule.names) + ")"
    return text.replace('"', "'")


def limits_inbound(rule: Rule) -> bool:
    """Whether `rule` lets connections in from named peer addresses only."""
    return rule.action is Action.INBOUND and bool(rule.peer_addresses)


def probe_admissions(rules: Iterable[Rule], sources: Sequence[str]) -> tuple[Rule, ...]:
    """For each port (range) on which one of `rules` lets connections in from named
    peers only, a rule that lets the service's probe in from `sources` (the setting
    `probe_sources`) on the same port: in the order of `rules`, each port once. None
    without `sources`."""
    if not sources:
        return ()
    admitted: dict[tuple[Role, int, int], Rule] = {}
    for rule in rules:
        if limits_inbound(rule):
            admitted.setdefault(
                (rule.side, rule.port_low, rule.port_high),
                Rule(
                    rule.side,
                    Action.INBOUND,
                    Initiator.SERVER,
                    tuple(sources),
                    PROBE_PEER,
                    rule.port_low,
                    rule.port_high,
                    why=f"in from {PROBE_PEER} (setting probe_sources) on {rule.ports_text}",
                ),
            )
    return tuple(admitted.values())


def _forwards(rule: Rule, family: int) -> bool:
    """A port forward to render: the ports differ, and IPv4 (IPv6 needs no NAT)."""
    return rule.action is Action.PORT_FORWARD and rule.to_port != rule.port_low and family != 6


class _PacketFilter(abc.ABC):
    """What nftables and iptables share: a line per address family of a rule's peers
    (`unknown_families` when no peer address is known), accepting new connections for
    EGRESS and INBOUND, and redirecting an IPv4 port forward. Each dialect spells
    the lines."""

    unknown_families: ClassVar[tuple[int, ...]]

    def __call__(self, items: Sequence[tuple[str, Rule]]) -> list[str]:
        out = []
        for text, rule in items:
            comment = self.comment(text)
            families = sorted({_v(a) for a in rule.peer_addresses}) or self.unknown_families
            for family in families:
                peers = [a for a in rule.peer_addresses if _v(a) == family]
                if rule.action is Action.EGRESS or rule.action is Action.INBOUND:
                    out.append(self.accept(rule, family, peers, comment))
                elif _forwards(rule, family):
                    out.append(self.redirect(rule, comment))
        return out

    @abc.abstractmethod
    def comment(self, text: str) -> str:
        """The rule's comment, `text` cut to what the tool accepts."""

    @abc.abstractmethod
    def accept(self, rule: Rule, family: int, peers: Sequence[str], comment: str) -> str:
        """Accept new connections out to `peers` (EGRESS) or in from them (INBOUND) in
        address `family`; no peers: any address."""

    @abc.abstractmethod
    def redirect(self, rule: Rule, comment: str) -> str:
        """Redirect the public port to the listening one (`rule.to_port`), on IPv4."""


class _Nftables(_PacketFilter):
    unknown_families = (0,)  # one `inet` rule serves both families

    def comment(self, text: str) -> str:
        return f'comment "{text[:NFT_COMMENT_MAX]}"'

    def accept(self, rule: Rule, family: int, peers: Sequence[str], comment: str) -> str:
        chain, peer = ("output", "daddr") if rule.action is Action.EGRESS else ("input", "saddr")
        ip = "ip6" if family == 6 else "ip"
        match = f"{ip} {peer} {{ {', '.join(peers)} }} " if peers else ""
        return (
            f"add rule inet filter {chain} {match}tcp dport {rule.ports_text}"
            f" ct state new accept {comment}"
        )

    def redirect(self, rule: Rule, comment: str) -> str:
        return (
            f"add rule ip nat prerouting tcp dport {rule.port_low}"
            f" redirect to :{rule.to_port} {comment}"
        )


class _Iptables(_PacketFilter):
    unknown_families = (4, 6)  # iptables and ip6tables each need the rule

    def comment(self, text: str) -> str:
        return f'-m comment --comment "{text[:IPTABLES_COMMENT_MAX]}"'

    def accept(self, rule: Rule, family: int, peers: Sequence[str], comment: str) -> str:
        chain, peer = ("OUTPUT", "-d") if rule.action is Action.EGRESS else ("INPUT", "-s")
        match = f"{peer} {','.join(peers)} " if peers else ""
        ports = rule.ports_text.replace("-", ":")
        tool = "ip6tables" if family == 6 else "iptables"
        return (
            f"{tool} -A {chain} -p tcp {match}--dport {ports} -m conntrack"
            f" --ctstate NEW {comment} -j ACCEPT"
        )

    def redirect(self, rule: Rule, comment: str) -> str:
        return (
            f"iptables -t nat -A PREROUTING -p tcp --dport {rule.port_low}"
            f" {comment} -j REDIRECT --to-ports {rule.to_port}"
        )


def _windows(items: Sequence[tuple[str, Rule]]) -> list[str]:
    out = []
    for name, rule in items:
        remote = f" -RemoteAddress {','.join(rule.peer_addresses)}" if rule.peer_addresses else ""
        if rule.action is Action.EGRESS:
            out.append(
                f'New-NetFirewallRule -DisplayName "{name}" -Direction Outbound'
                f" -Protocol TCP{remote} -RemotePort {rule.ports_text} -Action Allow"
            )
        elif rule.action is Action.INBOUND:
            out.append(
                f'New-NetFirewallRule -DisplayName "{name}" -Direction Inbound'
                f" -Protocol TCP{remote} -LocalPort {rule.ports_text} -Action Allow"
            )
        elif rule.action is Action.PORT_FORWARD and rule.to_port != rule.port_low:
            out.append(
                f"# On the router: forward TCP {rule.port_low} to this host's port"
                f" {rule.to_port}. On this host itself, if it is the NAT:"
            )
            out.append(
                f"netsh interface portproxy add v4tov4 listenport={rule.port_low}"
                f" connectport={rule.to_port} connectaddress=127.0.0.1"
            )
    return out


_RENDERERS: dict[str, Callable[[Sequence[tuple[str, Rule]]], list[str]]] = {
    "nftables": _Nftables(),
    "iptables": _Iptables(),
    "windows": _windows,
}


def render_many(
    header: Sequence[str],
    parts: Sequence[tuple[Plan, Sequence[Rule]]],
    fmt: str,
    probe: Sequence[Rule] = (),
) -> str:
    """A script in `fmt` (one of FORMATS): the `header` lines as comments, then the
    rules of every (plan, rules) part in order, then the `probe` rules (see
    `probe_admissions`) under PROBE_COMMENT. A rule that several parts need (the
    same peer, ports and action for several features) is written once, its comment
    naming every feature; identical lines are written once."""
    if fmt not in _RENDERERS:
        raise ValueError(f"unknown firewall format {fmt!r} (known: {', '.join(FORMATS)})")
    merged: dict[Rule, list[str]] = {}
    for plan, rules in parts:
        for rule in rules:
            ids = merged.setdefault(replace(rule, why=""), [])
            if plan.feature.id not in ids:
                ids.append(plan.feature.id)
    items = [(_comment(ids, rule), rule) for rule, ids in merged.items()]
    items += [(PROBE_COMMENT, rule) for rule in probe]
    lines = [f"# {line}" if line else "#" for line in header]
    body = list(dict.fromkeys(_RENDERERS[fmt](items)))
    if not body:
        body = ["# nothing to allow on this side"]
    return "\n".join(lines + body) + "\n"


def render_rules(plan: Plan, side: Role, fmt: str) -> str:
    """The rules `side` of `plan` needs, in `fmt` (one of FORMATS), as a script."""
    rules = plan.rules_for(side)
    party = plan.party(side)
    header = [
        f"controparte: {plan.feature.id} ({plan.feature.name})",
        f"caller {plan.caller.name}, callee {plan.callee.name};"
        f" rules for the {side.value}, {party.name}",
    ]
    if any(
        r.origin is Initiator.CLIENTS and r.side is side and r.action is Action.EGRESS
        for r in rules
    ):
        header.append("the egress rules apply to every iDesk client's network")
    for flow in plan.blocked:
        header.append(f"BLOCKED {flow.description}: {flow.blocked}. Fix: {flow.fix}")
    return render_many(header, [(plan, rules)], fmt)
