"""`controparte doctor`'s judgement without a network: what it tests for a plan, and the
verdict and fix for each kind of result (tables of plan + results -> flow verdicts)."""

from __future__ import annotations

import pytest

from controparte.agent.doctor import (
    SCHEMA,
    Attempt,
    Checklist,
    Diagnosis,
    ProbeFinding,
    Status,
    Target,
    checklist_for,
    diagnose,
    render_text,
    report_dict,
)
from controparte.model.probe import Reach
from controparte.plan.catalog import load_catalog
from controparte.plan.planner import Party, Plan, Role, plan

CATALOG = load_catalog()
HOSTS = CATALOG.live.start_live_hosts

SHOP = Party("A1", "shop-a", False, ("203.0.113.2",), 8443, 8000)
SHOP_DIRECT = Party("A1", "shop-a", False, ("203.0.113.2",), 9100, None)
SHOP_LIVE_RANGE = Party("A1", "shop-a", False, ("203.0.113.2",), 9443, 8000)
STUDIO = Party("B1", "studio-b", False, ("203.0.113.6",), 8443, None)
LIVE = Party("L1", "live-l", True, ("198.51.100.34",), 9100, None)

OPEN_PROBE = ProbeFinding(Reach.OPEN, "203.0.113.2", 8443, 3, True, "A1", "open")


def make(caller: Party, callee: Party, feature: str) -> Plan:
    return plan(caller, callee, CATALOG.feature(feature), CATALOG)


def attempts(*found: tuple[str, int, Reach]) -> dict[Target, Attempt]:
    return {Target(h, p): Attempt(Target(h, p), r, 5, None) for h, p, r in found}


def verdicts(diagnosis: Diagnosis) -> dict[str, Status]:
    return {c.flow.id: c.status for c in diagnosis.checks}


def check(diagnosis: Diagnosis, flow_id: str) -> tuple[Status, str, str | None]:
    found = next(c for c in diagnosis.checks if c.flow.id == flow_id)
    return found.status, found.reason, found.fix


# -- what to test -----------------------------------------------------------------------------


def test_checklist_for_an_on_premises_pair() -> None:
    assert checklist_for(make(SHOP, STUDIO, "einvoice"), Role.CALLER) == Checklist(
        (Target("203.0.113.6", 8443),), True, (8000, 8443)
    )


def test_checklist_for_a_live_callee_include_each_start_live_host() -> None:
    needed = checklist_for(make(SHOP_LIVE_RANGE, LIVE, "einvoice"), Role.CALLER)
    assert needed.connects == (
        Target("198.51.100.34", 9100),
        *(Target(host, 443) for host in HOSTS),
    )
    assert needed.probe


def test_remote_access_needs_no_probe() -> None:
    needed = checklist_for(make(SHOP, LIVE, "remote-access"), Role.CALLER)
    assert needed == Checklist((Target("198.51.100.34", 9100),), False, ())


def test_from_the_callee_side_the_roles_swap() -> None:
    needed = checklist_for(make(STUDIO, SHOP, "einvoice"), Role.CALLEE)
    assert needed == Checklist((Target("203.0.113.6", 8443),), True, (8000, 8443))


def test_blocked_flows_are_not_tested() -> None:
    # A Live callee answers a caller whose public port is outside the Live range.
    the_plan = make(SHOP, LIVE, "einvoice")
    assert any(f.blocked for f in the_plan.flows)
    assert not checklist_for(the_plan, Role.CALLER).probe


# -- verdicts ------------------------------------------------------------------------------------


def test_everything_open_passes() -> None:
    the_plan = make(SHOP, STUDIO, "realtime")
    found = diagnose(the_plan, Role.CALLER, attempts(("203.0.113.6", 8443, Reach.OPEN)), OPEN_PROBE)
    assert found.ok
    assert set(verdicts(found).values()) == {Status.PASSED}
    _status, reason, _fix = check(found, "return:B1->A1")
    assert "the agent here answered the nonce" in reason
    assert "studio-b's own egress towards it can only be tested from its side" in reason


@pytest.mark.parametrize(
    ("reach", "fix_start"),
    [
        (
            Reach.REFUSED,
            "on studio-b's side (run `controparte doctor` there): nothing answers on its"
            " registered public port 8443: add a port forward on studio-b's router: public"
            " 8443 -> the port MxServer listens on",
        ),
        (
            Reach.TIMEOUT,
            "open egress tcp 8443 on shop-a's firewall (this machine's, or the site's firewall"
            " or router), towards 203.0.113.6; if that is open already, on studio-b's side: add"
            " a port forward on studio-b's router: public 8443",
        ),
    ],
)
def test_outbound_to_an_on_premises_counterpart_fails(reach: Reach, fix_start: str) -> None:
    found = diagnose(
        make(SHOP, STUDIO, "einvoice"),
        Role.CALLER,
        attempts(("203.0.113.6", 8443, reach)),
        OPEN_PROBE,
    )
    assert not found.ok
    status, _reason, fix = check(found, "outbound:A1->B1")
    assert status is Status.FAILED
    assert fix is not None and fix.startswith(fix_start)


def test_outbound_to_a_live_counterpart_blames_egress_to_the_live_range() -> None:
    connects = attempts(
        ("198.51.100.34", 9100, Reach.TIMEOUT), *((host, 443, Reach.OPEN) for host in HOSTS)
    )
    found = diagnose(make(SHOP_LIVE_RANGE, LIVE, "einvoice"), Role.CALLER, connects, OPEN_PROBE)
    status, _reason, fix = check(found, "outbound:A1->L1")
    assert status is Status.FAILED
    assert fix is not None
    assert fix.startswith(
        "open egress tcp 9000-9999 on shop-a's firewall (this machine's, or the site's"
        " firewall or router), towards 198.51.100.34"
    )
    assert all(check(found, f"start-live:A1->{h}")[0] is Status.PASSED for h in HOSTS)


def test_a_start_live_host_rejected_names_egress_443_to_it() -> None:
    connects = attempts(
        ("198.51.100.34", 9100, Reach.OPEN),
        *((host, 443, Reach.UNREACHABLE) for host in HOSTS),
    )
    found = diagnose(make(SHOP_LIVE_RANGE, LIVE, "einvoice"), Role.CALLER, connects, OPEN_PROBE)
    for host in HOSTS:
        status, _reason, fix = check(found, f"start-live:A1->{host}")
        assert status is Status.FAILED
        assert fix is not None and "open egress tcp 443 on shop-a's firewall" in fix
        assert fix.split("; ")[0].endswith(f"towards {host}")


def towards_studio(
    probe: ProbeFinding | None, *, me: Party = SHOP, local: dict[int, bool] | None = None
) -> Diagnosis:
    """Doctor on `me`'s machine for einvoice towards studio-b, whose public port 8443
    answered, with the service's `probe` of `me`'s own port."""
    attempted = attempts(("203.0.113.6", 8443, Reach.OPEN))
    return diagnose(make(me, STUDIO, "einvoice"), Role.CALLER, attempted, probe, local=local)


def refused() -> ProbeFinding:
    return ProbeFinding(Reach.REFUSED, "203.0.113.2", 8443, 1)


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
FORWARD_SAME = (
    "add a port forward on shop-a's router: public 9100 -> this machine's port 9100"
    " (MxServer listens on it here), and allow inbound tcp 9100 on the firewalls on the way"
)


@pytest.mark.parametrize(
    ("me", "local", "fix"),
    [
        (SHOP, {8000: True}, FORWARD),
        (SHOP, {}, FORWARD),
        (SHOP, {8000: False}, START),
        (SHOP_DIRECT, {9100: False}, NOT_FORWARDED),
        (SHOP_DIRECT, {9100: True}, FORWARD_SAME),
    ],
)
def test_own_port_not_reached_from_outside(me: Party, local: dict[int, bool], fix: str) -> None:
    found = towards_studio(refused(), me=me, local=local)
    assert check(found, "return:B1->A1")[2] == fix
    assert check(found, "outbound:A1->B1")[0] is Status.PASSED


@pytest.mark.parametrize(
    ("probe", "local", "status", "reason", "fix"),
    [
        (
            ProbeFinding(Reach.TIMEOUT, "203.0.113.2", 8443, 3000),
            {8000: True},
            Status.FAILED,
            "got no answer in 3.0 s",
            "add a port forward on shop-a's router: public 8443 -> MxServer's 8000; if it"
            " exists, allow inbound tcp 8000 on this machine's firewall (and 8443 on the"
            " router's)",
        ),
        (
            ProbeFinding(Reach.OPEN, "203.0.113.2", 8443, 2, None),
            None,
            Status.PASSED,
            "not proven to reach this machine",
            None,
        ),
        (
            ProbeFinding(Reach.OPEN, "203.0.113.2", 8443, 2, False, "B1"),
            None,
            Status.FAILED,
            "answered as 'B1' without this installation's proof",
            "correct the port forward on shop-a's router: public 8443 must go to this"
            " machine, MxServer's 8000",
        ),
    ],
    ids=["timeout: the inbound firewall too", "open without the nonce", "another agent"],
)
def test_own_port_reached_from_outside_or_not(
    probe: ProbeFinding, local: dict[int, bool] | None, status: Status, reason: str, fix: str
) -> None:
    found_status, found_reason, found_fix = check(
        towards_studio(probe, local=local), "return:B1->A1"
    )
    assert (found_status, found_fix) == (status, fix)
    assert reason in found_reason


def test_no_probe_leaves_return_flows_untested() -> None:
    found = towards_studio(
        ProbeFinding.none("no --token-file: the probe needs this installation's token")
    )
    status, reason, fix = check(found, "return:B1->A1")
    assert (status, fix) == (Status.UNTESTED, None)
    assert reason.endswith("no --token-file: the probe needs this installation's token")
    assert found.ok  # untested is not failed


# -- output --------------------------------------------------------------------------------------


def test_report_and_text() -> None:
    found = towards_studio(refused(), local={8000: True})
    report = report_dict([found])
    assert report["schema"] == SCHEMA
    assert report["ok"] is False
    checks = report["checks"]
    assert isinstance(checks, list)
    flows = checks[0]["flows"]
    assert [(f["id"], f["status"]) for f in flows] == [
        ("outbound:A1->B1", "passed"),
        ("return:B1->A1", "failed"),
    ]
    assert flows[1]["tests"][0]["kind"] == "probe"
    text = render_text(found).splitlines()
    assert text[0] == "doctor: einvoice (Electronic invoice), from shop-a (A1), the caller"
    assert (
        text[1]
        == "  caller shop-a (A1): on-premises, 203.0.113.2, public port 8443 -> MxServer's 8000"
    )
    assert "FAILED    einvoice return: studio-b (B1) -> shop-a (A1)" in text
    assert (
        "          fix: add a port forward on shop-a's router: public 8443 -> MxServer's 8000"
        in text
    )
    assert text[-1] == "1 failed, 1 passed, 0 untested"
