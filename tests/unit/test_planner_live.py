"""The planner towards a Live installation the Live pool placed: the flow names the port
allocated on the gateway, the egress rule keeps the whole Live range to the gateway's
addresses (the seed's rule) and says why, naming the gateway and port; the JSON plan,
the table and the doctor's parties carry the gateway."""

from __future__ import annotations

from dataclasses import replace

import pytest
from rich.console import Console

from controparte.agent.doctor_run import party_of
from controparte.cli.plan_table import plan_view
from controparte.model import Installation
from controparte.plan.catalog import load_catalog
from controparte.plan.firewall import render_many
from controparte.plan.planner import Action, Party, Role, plan
from controparte.plan.wire import plan_dict

CATALOG = load_catalog()
COMPANY = Party("AZ-1", "azienda", False, ("203.0.113.30",), 9443, None)
PLACED = Party("LV-3", "verdi", True, ("192.0.2.10", "2001:db8::10"), 9042, None, "gw1")
RANGE = (CATALOG.live.port_low, CATALOG.live.port_high)


@pytest.mark.parametrize(
    ("live", "ports", "why"),
    [
        (
            PLACED,
            (9042, 9042),
            "verdi (LV-3) is Live, reached on gateway gw1 port 9042: the whole range"
            " 9000-9999 is allowed, so that a move to another port keeps working",
        ),
        (
            replace(PLACED, gateway=None),
            (9042, 9042),
            "verdi (LV-3) is Live, reached on port 9042: the whole range 9000-9999 is"
            " allowed, so that a move to another port keeps working",
        ),
        (
            replace(PLACED, gateway=None, port=None),
            RANGE,
            "verdi (LV-3) is Live: reached on a port of 9000-9999",
        ),
        (
            replace(PLACED, gateway=None, port=443),
            RANGE,
            "verdi (LV-3) is Live: reached on a port of 9000-9999",
        ),
    ],
    ids=["placed", "by-hand", "no-port", "outside-the-range"],
)
def test_the_flow_names_the_live_port_and_the_egress_rule_keeps_the_range(
    live: Party, ports: tuple[int, int], why: str
) -> None:
    found = plan(COMPANY, live, CATALOG.feature("einvoice"), CATALOG)
    outbound = next(f for f in found.flows if f.id == "outbound:AZ-1->LV-3")
    assert (outbound.port_low, outbound.port_high) == ports
    assert outbound.addresses == live.addresses
    (egress,) = outbound.rules
    assert (egress.side, egress.action) == (Role.CALLER, Action.EGRESS)
    assert (egress.port_low, egress.port_high) == RANGE
    assert egress.peer_addresses == live.addresses
    assert egress.why == why
    assert bool(outbound.blocked) == (ports == RANGE)


@pytest.mark.parametrize(
    ("party", "words"),
    [
        (PLACED, "gateway gw1 port 9042"),
        (replace(PLACED, gateway=None), "port 9042"),
        (replace(PLACED, port=None), "gateway gw1 no port"),
        (COMPANY, "port 9443"),
    ],
)
def test_placement_in_words(party: Party, words: str) -> None:
    assert party.placement == words


def test_a_party_of_an_installation_or_a_service_view_carries_the_gateway() -> None:
    inst = replace(
        Installation.create(
            "LV-3", "verdi", kind="live", ipv4="192.0.2.10", port=9042, allow_non_global=True
        ),
        gateway="gw1",
    )
    assert Party.of(inst).gateway == "gw1"
    view = {**inst.to_dict(), "fqdn": "verdi.bp.controparte.test."}
    assert party_of(view) == Party.of(inst)
    assert party_of({**view, "gateway": None}).gateway is None
    assert party_of({k: v for k, v in view.items() if k != "gateway"}).gateway is None


def test_the_json_plan_and_the_table_name_the_gateway_and_the_port() -> None:
    found = plan(COMPANY, PLACED, CATALOG.feature("einvoice"), CATALOG)
    doc = plan_dict(found)
    assert doc["callee"]["gateway"] == "gw1" and doc["caller"]["gateway"] is None
    outbound = doc["flows"][0]
    assert outbound["destination"]["ports"] == {"low": 9042, "high": 9042}
    assert outbound["rules"][0]["ports"] == {"low": 9000, "high": 9999}
    console = Console(width=160, record=True)
    console.print(plan_view(found))
    text = console.export_text()
    assert "callee  verdi (LV-3): Live, 192.0.2.10, 2001:db8::10, gateway gw1 port 9042" in text
    assert "│ 9042 │ out tcp 9000-9999 to 192.0.2.10, 2001:db8::10" in text


def test_rules_towards_one_gateway_for_several_features_are_one_line() -> None:
    """The `why` names the gateway and port, the comment does not: the rules of
    several features towards one Live installation still merge."""
    parts = [
        (p, p.rules_for(Role.CALLER))
        for p in (
            plan(COMPANY, PLACED, CATALOG.feature(feature), CATALOG)
            for feature in ("einvoice", "sprix")
        )
    ]
    script = render_many([], parts, "nftables").splitlines()
    egress = [line for line in script if "9000-9999" in line]
    assert egress == [
        "add rule inet filter output ip daddr { 192.0.2.10 } tcp dport 9000-9999 ct state new"
        ' accept comment "controparte einvoice,sprix: egress verdi (LV-3)"',
        "add rule inet filter output ip6 daddr { 2001:db8::10 } tcp dport 9000-9999 ct state"
        ' new accept comment "controparte einvoice,sprix: egress verdi (LV-3)"',
    ]
