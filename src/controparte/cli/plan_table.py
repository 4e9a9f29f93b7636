"""The human form of a plan (`controparte plan`, the default `--format table`): a rich
table with one row per flow, then the blocked flows with their fixes, then the notes.
Builds renderables only; printing is the caller's.

Row: `#`, the flow (direction, then from -> to), port(s), what the caller must allow,
what the callee must allow, and `ok` or `BLOCKED` (the reason and the fix follow the
table, by number). A flow that is one of several alternatives says `any of N` after its
direction (the plan's notes say which). A rule reads `out tcp PORTS to PEER`, `in tcp
PORT from PEER` or `NAT tcp PUBLIC -> PRIVATE` (the port forward to MxServer's listening
port); `clients:` marks a rule for the network of every iDesk client rather than the
server's.
"""

from __future__ import annotations

from rich.console import Group, RenderableType
from rich.padding import Padding
from rich.table import Table
from rich.text import Text

from controparte.plan.planner import Action, Flow, Initiator, Party, Plan, Role, Rule


def _peer(rule: Rule) -> str:
    if rule.names:
        return ", ".join(rule.names)
    if rule.peer_addresses:
        return ", ".join(rule.peer_addresses)
    return "any"


def rule_text(rule: Rule) -> str:
    """One rule in a few words (see the module)."""
    prefix = (
        "clients: " if rule.origin is Initiator.CLIENTS and rule.action is Action.EGRESS else ""
    )
    if rule.action is Action.EGRESS:
        return f"{prefix}out tcp {rule.ports_text} to {_peer(rule)}"
    if rule.action is Action.INBOUND:
        return f"in tcp {rule.ports_text} from {_peer(rule)}"
    return f"NAT tcp {rule.ports_text} -> {rule.to_port}"


def _party_line(role: Role, party: Party) -> Text:
    where = "Live" if party.live else "on-premises"
    addresses = ", ".join(party.addresses) or "no address"
    port = party.placement
    if party.private_port and party.private_port != party.port:
        port += f" (MxServer listens on {party.private_port})"
    text = Text(f"{role.value:<7}", style="bold")
    text.append(f" {party.label} ({party.code}): {where}, {addresses}, {port}")
    return text


def _end(plan: Plan, flow: Flow, role: Role, *, source: bool) -> str:
    if not source and flow.host is not None:
        return flow.host
    label = plan.party(role).label
    return f"clients of {label}" if source and flow.origin is Initiator.CLIENTS else label


def plan_view(plan: Plan, side: Role | None = None) -> RenderableType:
    """The plan as rich renderables; with `side`, only that side's column of rules."""
    feature = plan.feature
    parts: list[RenderableType] = [
        Text(f"{feature.id}: {feature.name}", style="bold"),
        _party_line(Role.CALLER, plan.caller),
        _party_line(Role.CALLEE, plan.callee),
    ]
    sides = [Role.CALLER, Role.CALLEE] if side is None else [side]
    table = Table(show_lines=True)
    table.add_column("#", justify="right")
    table.add_column("flow", overflow="fold")
    table.add_column("port", no_wrap=True)
    for role in sides:
        table.add_column(f"{role.value} must allow", overflow="fold")
    table.add_column("status", no_wrap=True)
    for number, flow in enumerate(plan.flows, start=1):
        allow = [
            "\n".join(rule_text(r) for r in flow.rules if r.side is role) or "-" for role in sides
        ]
        source = _end(plan, flow, flow.source, source=True)
        destination = _end(plan, flow, flow.destination, source=False)
        status = Text("BLOCKED", style="bold red") if flow.blocked else Text("ok", style="green")
        kind = flow.direction.value
        if flow.any_of is not None:
            kind += f", any of {len(plan.alternatives(flow.any_of))}"
        table.add_row(
            str(number),
            f"{kind}\n{source} -> {destination}",
            flow.ports_text,
            *allow,
            status,
        )
    parts.append(table)
    for number, flow in enumerate(plan.flows, start=1):
        if flow.blocked:
            line = Text(f"BLOCKED #{number}", style="bold red")
            line.append(f": {flow.blocked}.")
            parts += [line, Padding(Text(f"fix: {flow.fix}"), (0, 0, 0, 2))]
    for note in plan.notes:
        parts.append(Text(f"note: {note}"))
    return Group(*parts)
