"""`controparte doctor`'s judgement without a network: what it tests for a plan, and the
verdict, the evidence's source and the fix for each kind of fact (tables of plan + facts
-> verdicts). The same situations run on real networks in tests/netns/."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from importlib import resources

import jsonschema
import pytest

from controparte.agent.doctor import (
    SCHEMA,
    Attempt,
    BrokerFinding,
    Check,
    Diagnosis,
    DnsFinding,
    Facts,
    MachineRole,
    Record,
    Target,
    checklist_for,
    choose_machine,
    diagnose,
    exit_code,
    render_text,
    report_dict,
    wants_counterpart_probe,
)
from controparte.agent.evidence import Dial, Source, Status
from controparte.model.probe import Reach
from controparte.plan.catalog import load_catalog
from controparte.plan.planner import Party, Plan, Role, plan

CATALOG = load_catalog()
HOSTS = CATALOG.live.start_live_hosts
NOW = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)

SHOP = Party("A1", "shop-a", False, ("203.0.113.2",), 8443, 8000)
SHOP_DIRECT = Party("A1", "shop-a", False, ("203.0.113.2",), 9100, None)
SHOP_LIVE_RANGE = Party("A1", "shop-a", False, ("203.0.113.2",), 9443, 8000)
STUDIO = Party("B1", "studio-b", False, ("203.0.113.6",), 8443, 8000)
LIVE = Party("L1", "live-l", True, ("198.51.100.34",), 9100, None)

OPEN_PROBE = Dial(Source.SERVICE, Reach.OPEN, "203.0.113.2", 8443, 3, "198.51.100.2", True, "A1")
RELAY_OPEN = Dial(Source.COUNTERPART, Reach.OPEN, "203.0.113.2", 8443, 2, "203.0.113.6", True, "A1")
FRESH = Record(NOW - timedelta(seconds=30), False, 900, NOW)
DNS_OK = DnsFinding(Status.PASSED, "studio-b resolves to 203.0.113.6", None, ("203.0.113.6",), 8443)
DNS_LIVE = DnsFinding(Status.PASSED, "live-l resolves", None, ("198.51.100.34",), 9100)


def make(caller: Party, callee: Party, feature: str) -> Plan:
    return plan(caller, callee, CATALOG.feature(feature), CATALOG)


def attempts(*found: tuple[str, int, Reach]) -> dict[Target, Attempt]:
    return {Target(h, p): Attempt(Target(h, p), r, 5, None) for h, p, r in found}


def facts(*found: tuple[str, int, Reach], **more: object) -> Facts:
    """Facts with the connections `found`, a fresh record, DNS as registered, the probe
    of this port open and proven; `more` replaces any of them."""
    base = Facts(
        attempts=attempts(*found),
        self_probe=OPEN_PROBE,
        relay=RELAY_OPEN,
        record=FRESH,
        dns=DNS_OK,
        command="controparte doctor --server URL",
    )
    return replace(base, **more)  # type: ignore[arg-type]


def verdict(diagnosis: Diagnosis, check_id: str) -> Check:
    return next(c for c in diagnosis.all_checks if c.id == check_id)


# -- what to test -----------------------------------------------------------------------------


def test_checklist_for_an_on_premises_pair() -> None:
    needed = checklist_for(make(SHOP, STUDIO, "einvoice"), Role.CALLER, dns=DNS_OK)
    assert needed.connects == (Target("203.0.113.6", 8443),)
    assert (needed.probe, needed.relay, needed.local_ports) == (True, True, (8000, 8443))


def test_checklist_dials_what_dns_answers_not_the_registry() -> None:
    moved = replace(DNS_OK, addresses=("203.0.113.99",))
    needed = checklist_for(make(SHOP, STUDIO, "einvoice"), Role.CALLER, dns=moved)
    assert needed.connects == (Target("203.0.113.99", 8443),)


def test_a_live_counterpart_is_not_asked_to_relay() -> None:
    needed = checklist_for(make(SHOP_LIVE_RANGE, LIVE, "einvoice"), Role.CALLER)
    assert needed.connects == (
        Target("198.51.100.34", 9100),
        *(Target(host, 443) for host in HOSTS),
    )
    assert needed.probe and not needed.relay


def test_a_client_tests_only_what_its_clients_open() -> None:
    needed = checklist_for(make(SHOP, LIVE, "einvoice"), Role.CALLER, MachineRole.CLIENT)
    assert needed.connects == ()
    remote = checklist_for(make(SHOP, LIVE, "remote-access"), Role.CALLER, MachineRole.CLIENT)
    assert remote.connects == (Target("198.51.100.34", 9100),)


def test_the_counterpart_probe_is_asked_only_after_a_failed_connection() -> None:
    the_plan = make(SHOP, STUDIO, "einvoice")
    ok = attempts(("203.0.113.6", 8443, Reach.OPEN))
    bad = attempts(("203.0.113.6", 8443, Reach.TIMEOUT))
    assert not wants_counterpart_probe(the_plan, Role.CALLER, ok, DNS_OK)
    assert wants_counterpart_probe(the_plan, Role.CALLER, bad, DNS_OK)


@pytest.mark.parametrize(
    ("feature", "local", "asked", "role"),
    [
        ("remote-access", {8000: False, 8443: False}, None, MachineRole.CLIENT),
        ("remote-access", {8000: True}, None, MachineRole.SERVER),
        ("einvoice", {8000: False}, None, MachineRole.SERVER),
        ("remote-access", {8000: True}, MachineRole.CLIENT, MachineRole.CLIENT),
    ],
)
def test_this_machines_role(
    feature: str, local: dict[int, bool], asked: MachineRole | None, role: MachineRole
) -> None:
    found, why = choose_machine(make(SHOP, LIVE, feature), Role.CALLER, local, asked)
    assert found is role
    assert why


# -- flows from here ------------------------------------------------------------------------------


def test_everything_open_passes_each_from_its_source() -> None:
    found = diagnose(
        make(SHOP, STUDIO, "realtime"), Role.CALLER, facts(("203.0.113.6", 8443, Reach.OPEN))
    )
    assert found.ok and found.exit_code == 0
    assert {c.status for c in found.all_checks} == {Status.PASSED}
    assert verdict(found, "outbound:A1->B1").tested_from == ("here",)
    assert verdict(found, "return:B1->A1").tested_from == ("counterpart-agent",)
    assert verdict(found, "outbound:B1->A1").tested_from == ("counterpart-agent",)


def _outbound(reach: Reach, probe: tuple[Dial, ...] | None) -> Check:
    found = diagnose(
        make(SHOP, STUDIO, "einvoice"),
        Role.CALLER,
        facts(("203.0.113.6", 8443, reach), counterpart_probe=probe),
    )
    return verdict(found, "outbound:A1->B1")


def _service(reach: Reach) -> tuple[Dial, ...]:
    return (Dial(Source.SERVICE, reach, "203.0.113.6", 8443, 3000, "198.51.100.2"),)


@pytest.mark.parametrize(
    ("here", "service", "starts", "absent"),
    [
        (
            Reach.TIMEOUT,
            _service(Reach.OPEN),
            "open egress tcp 8443 on shop-a's firewall",
            ("studio-b's side",),
        ),
        (
            Reach.TIMEOUT,
            _service(Reach.TIMEOUT),
            "on studio-b's side (run `controparte doctor` there): its router or firewall drops"
            " connections to public port 8443: add a port forward on studio-b's router: public"
            " 8443 -> MxServer's port 8000",
            ("open egress",),
        ),
        (
            Reach.REFUSED,
            _service(Reach.REFUSED),
            "on studio-b's side (run `controparte doctor` there): nothing answers on its public"
            " port 8443: add a port forward on studio-b's router: public 8443 -> MxServer's"
            " port 8000",
            ("open egress",),
        ),
        (
            Reach.TIMEOUT,
            (Dial.none(Source.SERVICE, "not linked"),),
            "either this side's egress or studio-b's inbound (the service could not probe it"
            " (not linked)",
            (),
        ),
    ],
    ids=["egress here", "inbound there", "no forward there", "no evidence: both named"],
)
def test_a_failed_connection_blames_one_side_on_the_services_evidence(
    here: Reach, service: tuple[Dial, ...], starts: str, absent: tuple[str, ...]
) -> None:
    found = _outbound(here, service)
    assert found.status is Status.FAILED
    assert found.fix is not None and found.fix.startswith(starts), found.fix
    for words in absent:
        assert words not in found.fix


def test_a_failed_connection_to_a_stale_counterpart_blames_the_record_first() -> None:
    stale = Record(NOW - timedelta(hours=2), True, 900, NOW)
    found = diagnose(
        make(SHOP, STUDIO, "einvoice"),
        Role.CALLER,
        facts(
            ("203.0.113.6", 8443, Reach.REFUSED),
            record=stale,
            counterpart_probe=_service(Reach.REFUSED),
        ),
    )
    record = verdict(found, "record:B1")
    assert record.status is Status.FAILED
    assert "sent its last heartbeat 2 h ago (stale after 15 min)" in record.reason
    assert found.first_to_fix is record
    assert "record is stale" in (verdict(found, "outbound:A1->B1").fix or "")


@pytest.mark.parametrize(
    ("record", "status", "words"),
    [
        (Record(NOW - timedelta(hours=2), True, 900, NOW), Status.WARNING, "still work"),
        (Record(None, False, 900, NOW), Status.WARNING, "never sent a heartbeat"),
        (FRESH, Status.PASSED, "last heartbeat 30 s ago"),
    ],
)
def test_the_counterparts_record_when_its_flows_work(
    record: Record, status: Status, words: str
) -> None:
    found = diagnose(
        make(SHOP, STUDIO, "einvoice"),
        Role.CALLER,
        facts(("203.0.113.6", 8443, Reach.OPEN), record=record),
    )
    step = verdict(found, "record:B1")
    assert step.status is status
    assert words in step.reason
    assert found.exit_code == 0


def test_dns_that_fails_fails_the_flows_towards_the_counterpart_whatever_the_ports_say() -> None:
    broken = DnsFinding(Status.FAILED, "no answer from this machine's resolver", "fix the resolver")
    found = diagnose(
        make(SHOP, STUDIO, "einvoice"),
        Role.CALLER,
        facts(("203.0.113.6", 8443, Reach.OPEN), dns=broken),
    )
    assert found.exit_code == 1
    assert found.first_to_fix is not None and found.first_to_fix.id == "dns:B1"
    flow = verdict(found, "outbound:A1->B1")
    assert flow.status is Status.FAILED
    assert flow.fix == "DNS first: fix the resolver"
    assert "the address tried answers from here" in flow.reason


# -- alternatives ---------------------------------------------------------------------------------


def _start_live(*reaches: Reach) -> Diagnosis:
    found = [("198.51.100.34", 9100, Reach.OPEN)]
    found += [(host, 443, reach) for host, reach in zip(HOSTS, reaches, strict=True)]
    return diagnose(
        make(SHOP_LIVE_RANGE, LIVE, "einvoice"), Role.CALLER, facts(*found, dns=DNS_LIVE)
    )


def test_one_start_live_host_down_is_a_warning_for_the_operator() -> None:
    found = _start_live(Reach.OPEN, Reach.TIMEOUT, Reach.OPEN)
    down = verdict(found, f"start-live:A1->{HOSTS[1]}")
    assert down.status is Status.WARNING
    assert down.fix is not None and down.fix.startswith("tell the service's operator")
    assert "egress" not in down.fix
    assert HOSTS[0] in down.reason
    assert found.exit_code == 0


def test_every_start_live_host_silent_blames_egress_443() -> None:
    found = _start_live(Reach.UNREACHABLE, Reach.UNREACHABLE, Reach.UNREACHABLE)
    for host in HOSTS:
        check = verdict(found, f"start-live:A1->{host}")
        assert check.status is Status.FAILED
        assert check.fix is not None and "open egress tcp 443 on shop-a's firewall" in check.fix


def test_every_start_live_host_refusing_is_the_operators() -> None:
    found = _start_live(Reach.REFUSED, Reach.REFUSED, Reach.REFUSED)
    fix = verdict(found, f"start-live:A1->{HOSTS[0]}").fix
    assert fix is not None and fix.startswith("every start-live host refuses port 443")


# -- flows towards here ---------------------------------------------------------------------------


def _inbound(**more: object) -> Check:
    found = diagnose(
        make(SHOP, STUDIO, "einvoice"),
        Role.CALLER,
        facts(("203.0.113.6", 8443, Reach.OPEN), **more),
    )
    return verdict(found, "return:B1->A1")


def test_a_probe_that_is_not_let_in_while_the_counterpart_is() -> None:
    probe = Dial(Source.SERVICE, Reach.TIMEOUT, "203.0.113.2", 8443, 3000, "198.51.100.2")
    found = _inbound(self_probe=probe)
    assert found.status is Status.PASSED
    assert found.tested_from == ("counterpart-agent",)
    assert "admit from 198.51.100.2 on 8000" in found.reason


def test_the_counterparts_egress_blocked_is_named_on_its_side() -> None:
    relay = Dial(Source.COUNTERPART, Reach.TIMEOUT, "203.0.113.2", 8443, 3000, "203.0.113.6")
    found = _inbound(relay=relay)
    assert found.status is Status.FAILED
    assert found.fix == (
        "on studio-b's side: open egress tcp 8443 on studio-b's firewall (this machine's, or"
        " the site's firewall or router), towards 203.0.113.2"
    )
    assert found.tested_from == ("counterpart-agent", "service")


def test_without_the_relay_the_counterparts_egress_is_untested() -> None:
    found = _inbound(
        relay=Dial.none(Source.COUNTERPART, "studio-b's agent does not take relay requests")
    )
    assert found.status is Status.UNTESTED
    assert found.fix == (
        "on the server of studio-b: `controparte doctor --server URL --from B1 --to A1"
        " --feature einvoice`"
    )


FORWARD = "add a port forward on shop-a's router: public 8443 -> MxServer's 8000"
START = (
    "start MxServer (or `controparte agent listen --port 8000`): nothing listens on port 8000"
    " on this machine; then the router must forward public 8443 -> MxServer's 8000"
)
NOT_FORWARDED = (
    "the public port registered (9100) is not the one forwarded: nothing answers on 9100"
    " from outside and nothing listens on 9100 on this machine. Register the public port"
    " that shop-a's router forwards to MxServer (`controparte agent --port PUBLIC"
    " --private-port MXSERVER-PORT`), or forward 9100 to MxServer's port"
)


@pytest.mark.parametrize(
    ("me", "local", "fix"),
    [
        (SHOP, {8000: True}, FORWARD),
        (SHOP, {8000: False}, START),
        (SHOP_DIRECT, {9100: False}, NOT_FORWARDED),
    ],
)
def test_own_port_not_reached_from_outside(me: Party, local: dict[int, bool], fix: str) -> None:
    refused = Dial(Source.SERVICE, Reach.REFUSED, "203.0.113.2", me.port, 1)
    relay = replace(RELAY_OPEN, reach=Reach.REFUSED, port=me.port)
    found = diagnose(
        make(me, STUDIO, "einvoice"),
        Role.CALLER,
        facts(("203.0.113.6", 8443, Reach.OPEN), self_probe=refused, relay=relay, local=local),
    )
    assert verdict(found, "return:B1->A1").fix == fix
    assert verdict(found, "outbound:A1->B1").status is Status.PASSED


def test_another_agent_answering_is_a_wrong_forward() -> None:
    wrong = replace(OPEN_PROBE, nonce_verified=False, agent_code="B1")
    found = _inbound(self_probe=wrong, relay=None)
    assert found.status is Status.FAILED
    assert found.fix == (
        "correct the port forward on shop-a's router: public 8443 must go to this machine,"
        " MxServer's port 8000"
    )


def test_a_live_counterparts_return_passes_on_the_probe() -> None:
    found = diagnose(
        make(SHOP_LIVE_RANGE, LIVE, "sprix"),
        Role.CALLER,
        facts(
            ("198.51.100.34", 9100, Reach.OPEN), *((h, 443, Reach.OPEN) for h in HOSTS), relay=None
        ),
    )
    check = verdict(found, "return:L1->A1")
    assert check.status is Status.PASSED
    assert check.tested_from == ("service",)


def test_remote_access_from_the_server_is_untested_with_the_command_for_a_client() -> None:
    found = diagnose(
        make(SHOP, LIVE, "remote-access"),
        Role.CALLER,
        facts(),
        machine=MachineRole.SERVER,
        machine_why="MxServer's port 8000 accepts connections here",
    )
    check = verdict(found, "outbound:A1->L1")
    assert check.status is Status.UNTESTED
    assert check.fix is not None and "--role client" in check.fix
    assert found.exit_code == 3


# -- the start-live brokers, asked to start a Live counterpart ---------------------------------

ANSWERED = BrokerFinding(HOSTS[0], "198.51.100.34", 9100, True)


def _brokers(found: BrokerFinding) -> Check:
    """The step of the brokers' `found`, every start-live host answering on 443."""
    seen = [("198.51.100.34", 9100, Reach.OPEN)] + [(h, 443, Reach.OPEN) for h in HOSTS]
    diagnosis = diagnose(
        make(SHOP_LIVE_RANGE, LIVE, "einvoice"),
        Role.CALLER,
        facts(*seen, dns=DNS_LIVE, broker=found),
    )
    return verdict(diagnosis, "start-live:L1")


@pytest.mark.parametrize(
    ("found", "status", "reason", "fix"),
    [
        (
            ANSWERED,
            Status.PASSED,
            f"{HOSTS[0]} answered: live-l is reached on 198.51.100.34:9100, ready",
            None,
        ),
        (
            replace(ANSWERED, broker=HOSTS[1], skipped=((HOSTS[0], "connection refused"),)),
            Status.WARNING,
            f"before it: {HOSTS[0]}: connection refused",
            f"tell the service's operator that {HOSTS[0]} did not answer",
        ),
        (
            replace(ANSWERED, ready=False, detail="the wake hook did not finish within 30 s"),
            Status.WARNING,
            "not ready (the wake hook did not finish within 30 s)",
            "live-l did not wake up in time",
        ),
        (
            replace(ANSWERED, port=9200),
            Status.WARNING,
            "reached on 198.51.100.34:9200",
            "is not the registry's",
        ),
        (
            BrokerFinding(None, skipped=tuple((h, "timed out") for h in HOSTS)),
            Status.FAILED,
            f"no start-live broker answered from this machine ({HOSTS[0]}: timed out",
            "let this machine out on tcp 443 to the start-live hosts",
        ),
        (
            BrokerFinding(None, refused="start-live broker x: installation 'L1' is not linked"),
            Status.FAILED,
            "the start-live brokers refused: start-live broker x",
            "link shop-a to it",
        ),
    ],
)
def test_the_brokers_verdict(
    found: BrokerFinding, status: Status, reason: str, fix: str | None
) -> None:
    check = _brokers(found)
    assert check.status is status
    assert reason in check.reason
    assert (check.fix is None) if fix is None else (fix in (check.fix or ""))
    assert check.tested_from == ("here",)
    assert [t["target"] for t in check.tests] == [n for n, _ in found.skipped] + (
        [found.broker] if found.broker else []
    )


def test_no_broker_step_unless_asked() -> None:
    assert all(not c.id.startswith("start-live:L1") for c in _start_live(*[Reach.OPEN] * 3).steps)


# -- output --------------------------------------------------------------------------------------


def _schema() -> dict[str, object]:
    text = resources.files("controparte.agent").joinpath("doctor.schema.json").read_text()
    found = json.loads(text)
    assert isinstance(found, dict)
    return found


@pytest.mark.parametrize(
    "diagnosis",
    [
        pytest.param(lambda: _start_live(Reach.OPEN, Reach.TIMEOUT, Reach.OPEN), id="warning"),
        pytest.param(
            lambda: diagnose(
                make(SHOP_LIVE_RANGE, LIVE, "einvoice"),
                Role.CALLER,
                facts(dns=DNS_LIVE, broker=replace(ANSWERED, skipped=((HOSTS[1], "refused"),))),
            ),
            id="brokers",
        ),
        pytest.param(
            lambda: diagnose(
                make(SHOP, STUDIO, "einvoice"),
                Role.CALLER,
                facts(("203.0.113.6", 8443, Reach.TIMEOUT), counterpart_probe=_service(Reach.OPEN)),
            ),
            id="failed",
        ),
    ],
)
def test_the_report_follows_its_json_schema(diagnosis: object) -> None:
    assert callable(diagnosis)
    report = report_dict([diagnosis()])
    jsonschema.validate(report, _schema())
    assert report["schema"] == SCHEMA


def test_report_and_text() -> None:
    found = diagnose(
        make(SHOP, STUDIO, "einvoice"),
        Role.CALLER,
        facts(("203.0.113.6", 8443, Reach.TIMEOUT), counterpart_probe=_service(Reach.OPEN)),
        machine_why="MxServer's port 8000 accepts connections here",
    )
    report = report_dict([found])
    assert report["ok"] is False
    assert report["exit_code"] == exit_code([found]) == 1
    assert str(report["summary"]).startswith(
        "1 failed, 3 passed, 0 warning(s), 0 untested: first fix: einvoice outbound:"
    )
    text = render_text(found).splitlines()
    assert text[0] == "doctor: einvoice (Electronic invoice), from shop-a (A1), the caller"
    assert text[3] == ("  this machine: the server (MxServer's port 8000 accepts connections here)")
    assert "FAILED    einvoice outbound: shop-a (A1) -> studio-b (B1)" in text
    failed = text.index("FAILED    einvoice outbound: shop-a (A1) -> studio-b (B1)")
    assert text[failed + 1].endswith("[tested from this machine, the service]")
    assert text[-1] == str(report["summary"])


# -- a Live counterpart the Live pool placed --------------------------------------------------

PLACED = replace(LIVE, gateway="gw1", port=9042)
BY_HAND = replace(PLACED, gateway=None)
REFUSED = "connecting to 198.51.100.34:9042: refused (a TCP reset: nothing listens there)"


def test_a_live_counterpart_is_dialled_on_its_allocated_port_at_the_gateways_address() -> None:
    """The connection goes where DNS points (the gateway's address) on the registered
    port (the one allocated there), whatever the SRV says; the flow names that port."""
    the_plan = make(SHOP_LIVE_RANGE, PLACED, "einvoice")
    dns = replace(DNS_LIVE, port=9999)  # the registry's port wins for a Live counterpart
    needed = checklist_for(the_plan, Role.CALLER, MachineRole.SERVER, dns)
    assert Target("198.51.100.34", 9042) in needed.connects
    assert Target("198.51.100.34", 9999) not in needed.connects
    outbound = next(f for f in the_plan.flows if f.id == "outbound:A1->L1")
    assert outbound.ports_text == "9042"


@pytest.mark.parametrize(
    ("live", "reach", "reason", "fix"),
    [
        (
            PLACED,
            Reach.OPEN,
            "connected to 198.51.100.34:9042 in 5 ms (live-l is Live, on gateway gw1 port 9042)",
            None,
        ),
        (BY_HAND, Reach.OPEN, "connected to 198.51.100.34:9042 in 5 ms", None),
        (
            PLACED,
            Reach.REFUSED,
            f"{REFUSED} (live-l is Live, on gateway gw1 port 9042)",
            "live-l (Live) does not answer on its gateway gw1 port 9042 from outside: tell"
            " the Live operator",
        ),
        (
            BY_HAND,
            Reach.REFUSED,
            REFUSED,
            "live-l (Live) does not answer on its port 9042 from outside: tell the Live operator",
        ),
    ],
    ids=["placed-open", "by-hand-open", "placed-refused", "by-hand-refused"],
)
def test_the_evidence_names_the_gateway_and_port_the_pool_placed_it_on(
    live: Party, reach: Reach, reason: str, fix: str | None
) -> None:
    found = diagnose(
        make(SHOP_LIVE_RANGE, live, "einvoice"),
        Role.CALLER,
        facts(("198.51.100.34", 9042, reach), dns=DNS_LIVE),
    )
    check = verdict(found, "outbound:A1->L1")
    assert (check.reason, check.fix) == (reason, fix)
    assert (check.tests[0]["address"], check.tests[0]["port"]) == ("198.51.100.34", 9042)
    report = report_dict([found])
    jsonschema.validate(report, _schema())
    checks = report["checks"]
    assert isinstance(checks, list)
    assert checks[0]["callee"]["gateway"] == live.gateway
    shown = "gateway gw1 public port 9042" if live.gateway else "public port 9042"
    assert f"  callee live-l (L1): Live, 198.51.100.34, {shown}" in render_text(found)
