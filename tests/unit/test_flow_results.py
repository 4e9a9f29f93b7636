"""Flow results, the pure parts: what a result must be, what a flow is shown as
(`latest`), which flows a probe or a relayed dial speaks for, and what a doctor run
sends."""

from __future__ import annotations

from datetime import timedelta

import pytest

from controparte.agent.doctor import Check, Diagnosis, MachineRole, results_plans
from controparte.agent.evidence import Status
from controparte.errors import ValidationError
from controparte.model.flowresult import (
    MAX_DETAIL,
    FlowResult,
    Outcome,
    ResultSource,
    duration_text,
    latest,
)
from controparte.model.installation import utcnow
from controparte.plan.catalog import packaged_catalog
from controparte.plan.planner import Party, Role, plan
from controparte.service.results import dialled_flows, probed_flows

T0 = utcnow()
SHOP = Party("A1", "shop-a", False, ("203.0.113.2",), 8443, 8000)
STUDIO = Party("B1", "studio-b", False, ("203.0.113.6",), 4443, None)
LIVE = Party("L1", "live-l", True, ("198.51.100.34",), 9100, None)


def result(
    flow: str = "outbound:A1->B1",
    seconds: int = 0,
    outcome: Outcome = Outcome.PASSED,
    ports: str = "4443",
    detail: str = "",
) -> FlowResult:
    return FlowResult.create(
        caller="A1",
        callee="B1",
        feature="einvoice",
        flow=flow,
        ports=ports,
        outcome=outcome,
        at=T0 + timedelta(seconds=seconds),
        source=ResultSource.DOCTOR,
        reporter="A1",
        detail=detail,
    )


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"outcome": Outcome.UNKNOWN}, "status"),
        ({"flow": ""}, "id"),
        ({"flow": "a\nb"}, "id"),
        ({"ports": "44-"}, "ports"),
        ({"ports": "x"}, "ports"),
        ({"feature": "Bad Feature"}, "feature"),
        ({"reporter": "../x"}, "code"),
    ],
)
def test_a_result_is_checked_once(change: dict[str, object], field: str) -> None:
    given: dict[str, object] = {
        "caller": "A1",
        "callee": "B1",
        "feature": "einvoice",
        "flow": "outbound:A1->B1",
        "ports": "4443",
        "outcome": Outcome.PASSED,
        "at": T0,
        "source": ResultSource.PROBE,
        "reporter": "A1",
    }
    with pytest.raises(ValidationError) as caught:
        FlowResult.create(**{**given, **change})  # type: ignore[arg-type]
    assert caught.value.field == field


def test_a_results_detail_is_cut_and_ports_may_be_a_range_or_unknown() -> None:
    assert len(result(detail="x" * 5000).detail) == MAX_DETAIL
    assert result(ports="9000-9999").ports == "9000-9999"
    assert result(ports="?").ports == "?"


@pytest.mark.parametrize(
    ("history", "shown"),
    [
        ([], None),
        ([(1, Outcome.FAILED), (2, Outcome.PASSED)], (2, Outcome.PASSED)),
        ([(2, Outcome.FAILED), (1, Outcome.PASSED)], (2, Outcome.FAILED)),
        # an untested result never hides a conclusive one, older or not
        ([(1, Outcome.FAILED), (5, Outcome.UNTESTED)], (1, Outcome.FAILED)),
        ([(1, Outcome.UNTESTED), (3, Outcome.UNTESTED)], (3, Outcome.UNTESTED)),
    ],
)
def test_what_a_flow_is_shown_as(
    history: list[tuple[int, Outcome]], shown: tuple[int, Outcome] | None
) -> None:
    found = latest(result(seconds=s, outcome=o) for s, o in history)
    got = found.get(("outbound:A1->B1", "4443"))
    assert (None if got is None else (int((got.at - T0).total_seconds()), got.outcome)) == shown


def test_results_on_other_ports_are_another_flows() -> None:
    found = latest([result(ports="4443"), result(ports="5443", outcome=Outcome.FAILED)])
    assert found[("outbound:A1->B1", "4443")].outcome is Outcome.PASSED
    assert found[("outbound:A1->B1", "5443")].outcome is Outcome.FAILED


@pytest.mark.parametrize(
    ("seconds", "text"), [(-3, "0 s"), (45, "45 s"), (720, "12 min"), (3 * 3600, "3 h")]
)
def test_duration_text(seconds: float, text: str) -> None:
    assert duration_text(seconds) == text


def test_a_probe_speaks_for_the_flows_towards_the_port_it_dialled() -> None:
    catalog = packaged_catalog()
    both = plan(SHOP, STUDIO, catalog.feature("realtime"), catalog)
    assert [f.id for f in probed_flows(both, "b1", 4443)] == [
        "outbound:A1->B1",
        "return:A1->B1",
    ]
    assert probed_flows(both, "B1", 4444) == ()
    assert [f.id for f in dialled_flows(both, "B1", "A1", 8443)] == [
        "outbound:B1->A1",
        "return:B1->A1",
    ]
    live = plan(SHOP, LIVE, catalog.feature("einvoice"), catalog)
    # a Live destination is reached on the Live range; start-live hosts are no probe's
    assert [f.id for f in probed_flows(live, "L1", 9100)] == ["outbound:A1->L1"]
    remote = plan(SHOP, STUDIO, catalog.feature("remote-access"), catalog)
    assert [f.id for f in probed_flows(remote, "B1", 4443)] == ["outbound:A1->B1"]
    assert dialled_flows(remote, "A1", "B1", 4443) == ()  # its clients dial, not its server


def test_a_doctor_run_sends_its_flows_not_its_steps() -> None:
    catalog = packaged_catalog()
    found = plan(SHOP, STUDIO, catalog.feature("einvoice"), catalog)
    out, back = found.flows
    diagnosis = Diagnosis(
        found,
        Role.CALLER,
        MachineRole.SERVER,
        "",
        (Check("dns", "DNS", Status.FAILED, "no answer"),),
        (
            Check(out.id, out.description, Status.WARNING, "y" * 2000, flow=out),
            Check(back.id, back.description, Status.UNTESTED, "not from here", flow=back),
        ),
    )
    assert results_plans([diagnosis]) == [
        {
            "caller": "A1",
            "callee": "B1",
            "feature": "einvoice",
            "flows": [
                {"id": out.id, "ports": "4443", "status": "warning", "reason": "y" * MAX_DETAIL},
                {"id": back.id, "ports": "8443", "status": "untested", "reason": "not from here"},
            ],
        }
    ]
