"""The JSON form of a plan (`controparte plan --format json`, `GET /v1/plan`): one
stable, documented schema, `controparte.plan/1`. Pure: a `Plan` in, plain dicts out.

    {
      "schema": "controparte.plan/1",
      "feature": {"id", "name", "topology"},
      "caller": PARTY, "callee": PARTY,
      "side": null | "caller" | "callee",     # rules limited to that side when set
      "blocked": bool,                        # true when any flow is blocked
      "flows": [FLOW, ...],
      "notes": [str, ...]
    }
    PARTY = {"code", "label", "live": bool, "addresses": [str], "port": int | null,
             "private_port": int | null, "gateway": str | null}
    FLOW  = {"id", "direction": "outbound" | "return", "description",
             "source": {"role", "origin": "server" | "clients", "code", "label"},
             "destination": {"role", "code", "label", "host": str | null,
                             "addresses": [str], "ports": PORTS | null},
             "rules": [RULE, ...],
             "blocked": str | null, "fix": str | null,
             "any_of": str | null}                 # a group of alternatives
    RULE  = {"side": "caller" | "callee", "action": "egress" | "inbound" | "port-forward",
             "origin": "server" | "clients",
             "peer": {"name", "addresses": [str], "hosts": [str]},
             "ports": PORTS, "to_port": int | null, "why"}
    PORTS = {"low": int, "high": int}

A Live party placed by the Live pool has `gateway`, the gateway's name: its
`addresses` are the gateway's and its `port` the one allocated there (`gateway` null: a
Live party placed by hand, or an on-premises one). A flow to a Live party has its
`ports` set to that port when it lies in the Live range (else the whole range), while
the source's egress rule covers the whole range, to the same addresses (a move to
another port does not break the caller's firewall). A flow to a start-live host has
`host` set; its destination `role`, `code` and `label`
are the Live party it leads to. Flows with the same `any_of` are alternatives (the
start-live hosts of one source, `start-live:<code>`, unless the catalog needs them
all): the group is possible when one of them is; `null`: the flow itself is required.
`peer.addresses` empty means the peer's address is unknown (any); `peer.hosts` names
peers known only by name. New keys may be added to objects in later versions of the
same schema; existing keys keep their meaning.
"""

from __future__ import annotations

from typing import Any

from controparte.plan.planner import Flow, Party, Plan, Role, Rule

SCHEMA = "controparte.plan/1"


def _ports(low: int | None, high: int | None) -> dict[str, int] | None:
    return None if low is None or high is None else {"low": low, "high": high}


def party_dict(party: Party) -> dict[str, Any]:
    """PARTY: what the plan knew of one installation."""
    return {
        "code": party.code,
        "label": party.label,
        "live": party.live,
        "addresses": list(party.addresses),
        "port": party.port,
        "private_port": party.private_port,
        "gateway": party.gateway,
    }


def rule_dict(rule: Rule) -> dict[str, Any]:
    """RULE: one thing one side must allow."""
    return {
        "side": rule.side.value,
        "action": rule.action.value,
        "origin": rule.origin.value,
        "peer": {
            "name": rule.peer_name,
            "addresses": list(rule.peer_addresses),
            "hosts": list(rule.names),
        },
        "ports": _ports(rule.port_low, rule.port_high),
        "to_port": rule.to_port,
        "why": rule.why,
    }


def flow_dict(plan: Plan, flow: Flow, side: Role | None = None) -> dict[str, Any]:
    """FLOW, with only `side`'s rules when `side` is given."""
    source, destination = plan.party(flow.source), plan.party(flow.destination)
    return {
        "id": flow.id,
        "direction": flow.direction.value,
        "description": flow.description,
        "source": {
            "role": flow.source.value,
            "origin": flow.origin.value,
            "code": source.code,
            "label": source.label,
        },
        "destination": {
            "role": flow.destination.value,
            "code": destination.code,
            "label": destination.label,
            "host": flow.host,
            "addresses": list(flow.addresses),
            "ports": _ports(flow.port_low, flow.port_high),
        },
        "rules": [rule_dict(r) for r in flow.rules if side is None or r.side is side],
        "blocked": flow.blocked,
        "fix": flow.fix,
        "any_of": flow.any_of,
    }


def plan_dict(plan: Plan, side: Role | None = None) -> dict[str, Any]:
    """The whole plan in schema `controparte.plan/1`; with `side`, each flow lists only
    the rules of that side (the flows themselves are all listed)."""
    return {
        "schema": SCHEMA,
        "feature": {
            "id": plan.feature.id,
            "name": plan.feature.name,
            "topology": plan.feature.topology.value,
        },
        "caller": party_dict(plan.caller),
        "callee": party_dict(plan.callee),
        "side": None if side is None else side.value,
        "blocked": bool(plan.blocked),
        "flows": [flow_dict(plan, f, side) for f in plan.flows],
        "notes": list(plan.notes),
    }
