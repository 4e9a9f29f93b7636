"""What was last seen of each flow: the service records the outcome of its outside-in
probes, of the relay's dials and of the doctor runs agents report, per flow of a plan
(`model/flowresult.py`), and reads them back for a pair.

Which flows a test speaks for (pure: `probed_flows`, `dialled_flows`):
- the service's probe of installation X's registered port (asked by X itself, by a
  linked counterpart, or from the dashboard by an account: as X itself, the account
  named): every flow towards X's public port (not a start-live host's) in
  the plans of X's links, or only of the links between X and the counterpart that
  asked. It proves X's port forward and inbound rule for the service, not the source's
  egress: the detail says so. A listener that answered without X's proof (the port
  reaches another machine) is a failure.
- the relay (B's agent dialled A's registered address and port): the flows from B's
  server to A in the plans of the links between them: the flow as it really runs. Its
  outcome is the connection's; whether A's agent answered the nonce is judged when A
  reads the request (`service/relay.py`).
- a doctor run: the reporter must be the caller or the callee of each plan it reports
  (else ForbiddenError); a plan that is not a link (caller to callee for the feature),
  a flow that is not in the service's plan now, or one tested on other ports than the
  plan's now, is skipped and named in the answer. A warning is a pass (with its
  words); a flow the plan blocks is a failure.

Each flow keeps its newest `HISTORY_KEEP` results (`Store.add_flow_results`). The
results of one test or report share one time.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

from controparte.errors import ForbiddenError, ValidationError
from controparte.model import Installation, Link
from controparte.model.flowresult import FlowResult, Outcome, ResultSource, latest, reach_outcome
from controparte.model.installation import utcnow
from controparte.model.probe import Reach
from controparte.plan.planner import Flow, Initiator, Plan
from controparte.service.plans import Plans
from controparte.service.probe import ProbeReport
from controparte.service.registry import Registry

HISTORY_KEEP = 20
"""Results kept per flow."""

DOCTOR_OUTCOMES = {
    "passed": Outcome.PASSED,
    "warning": Outcome.PASSED,
    "failed": Outcome.FAILED,
    "untested": Outcome.UNTESTED,
}
"""A doctor check's status (`agent/evidence.Status`) as a flow's outcome."""


def _is(code: str, other: str) -> bool:
    return code.lower() == other.lower()


def _on(flow: Flow, port: int) -> bool:
    low, high = flow.port_low, flow.port_high
    return low is not None and high is not None and low <= port <= high


def probed_flows(plan: Plan, code: str, port: int) -> tuple[Flow, ...]:
    """The flows of `plan` towards installation `code`'s public port `port`."""
    return tuple(
        f
        for f in plan.flows
        if f.host is None and _is(plan.party(f.destination).code, code) and _on(f, port)
    )


def dialled_flows(plan: Plan, source: str, destination: str, port: int) -> tuple[Flow, ...]:
    """The flows of `plan` from `source`'s server to `destination`'s port `port`."""
    return tuple(
        f
        for f in probed_flows(plan, destination, port)
        if f.origin is Initiator.SERVER and _is(plan.party(f.source).code, source)
    )


@dataclass(frozen=True, slots=True)
class ReportedFlow:
    """One flow of a doctor run: its id and ports as the agent's plan had them, the
    check's status and its words."""

    id: str
    ports: str
    status: str
    reason: str


@dataclass(frozen=True, slots=True)
class ReportedPlan:
    """The flows of one plan (caller, callee, feature) a doctor run reports."""

    caller: str
    callee: str
    feature: str
    flows: tuple[ReportedFlow, ...]


@dataclass(frozen=True, slots=True)
class Skipped:
    """A part of a doctor report not recorded, and why."""

    caller: str
    callee: str
    feature: str
    flow: str | None
    why: str


@dataclass(frozen=True, slots=True)
class PairResults:
    """A plan and what was last seen of its flows: `shown` by flow id (the flow's
    result on its ports now, `model.flowresult.latest`), and every result kept,
    newest first."""

    plan: Plan
    shown: dict[str, FlowResult]
    history: tuple[FlowResult, ...]

    def outcome(self, flow: Flow) -> Outcome:
        found = self.shown.get(flow.id)
        return Outcome.UNKNOWN if found is None else found.outcome


class FlowResults:
    """Records and reads flow results over the registry's store; `clock` is injected."""

    def __init__(
        self, registry: Registry, plans: Plans, clock: Callable[[], datetime] = utcnow
    ) -> None:
        self.registry = registry
        self.store = registry.store
        self.plans = plans
        self.clock = clock

    def _plans(self, links: Iterable[Link]) -> list[tuple[Link, Plan]]:
        """The plan of each link whose feature the catalog still has."""
        found = []
        for link in links:
            try:
                found.append((link, self.plans.plan(link.a, link.b, link.feature)))
            except ValidationError:
                continue  # a feature no longer in the catalog: no plan to speak for
        return found

    def _result(
        self,
        link: Link,
        flow: Flow,
        outcome: Outcome,
        *,
        at: datetime,
        source: ResultSource,
        by: str,
        detail: str,
        account: str | None = None,
    ) -> FlowResult:
        return FlowResult.create(
            caller=link.a,
            callee=link.b,
            feature=link.feature,
            flow=flow.id,
            ports=flow.ports_text,
            outcome=outcome,
            at=at,
            source=source,
            reporter=by,
            detail=detail,
            account=account,
        )

    def record_probe(
        self,
        target: Installation,
        reports: Sequence[ProbeReport],
        requester: Installation,
        *,
        account: str | None = None,
    ) -> int:
        """Record the service's probe of `target` (`reports`: one per address dialled)
        as the outcome of the flows towards it: of all its links when `requester` is
        `target` itself, else of the links between the two. `account`: the dashboard
        account that asked (then `requester` is `target`; the source is `DASHBOARD`).
        How many were recorded."""
        own = _is(requester.code, target.code)
        links = [
            link for link in self.store.links(target.code) if own or link.involves(requester.code)
        ]
        source = ResultSource.PROBE if own else ResultSource.COUNTERPART_PROBE
        if account is not None:
            source = ResultSource.DASHBOARD
        now = self.clock()
        results = []
        for link, plan in self._plans(links):
            for report in reports:
                failed = report.result is not Reach.OPEN or report.nonce_verified is False
                outcome = Outcome.FAILED if failed else Outcome.PASSED
                where = f" from {report.source}" if report.source else ""
                detail = (
                    f"the service{where} probed {target.code}'s registered port: "
                    f"{report.detail} (the source's egress is not tested so)"
                )
                results += [
                    self._result(
                        link,
                        flow,
                        outcome,
                        at=now,
                        source=source,
                        by=requester.code,
                        detail=detail,
                        account=account,
                    )
                    for flow in probed_flows(plan, target.code, report.port)
                ]
        self.store.add_flow_results(results, HISTORY_KEEP)
        return len(results)

    def record_relay(
        self, agent: Installation, request_id: str, result: Reach, elapsed_ms: int
    ) -> int:
        """Record the dial `agent`'s agent reported for relay request `request_id` as
        the outcome of the flows from its server to the requester, in the plans of the
        links between the two. How many were recorded (none for an unknown request)."""
        request = self.store.relay(request_id)
        if request is None:
            return 0
        detail = (
            f"{agent.code}'s agent dialled {request.requester}'s registered"
            f" {request.address} port {request.port}: {result.value} in {elapsed_ms} ms"
        )
        links = [link for link in self.store.links(agent.code) if link.involves(request.requester)]
        now = self.clock()
        results = [
            self._result(
                link,
                flow,
                reach_outcome(result),
                at=now,
                source=ResultSource.RELAY,
                by=agent.code,
                detail=detail,
            )
            for link, plan in self._plans(links)
            for flow in dialled_flows(plan, agent.code, request.requester, request.port)
        ]
        self.store.add_flow_results(results, HISTORY_KEEP)
        return len(results)

    def record_doctor(
        self, reporter: Installation, reported: Sequence[ReportedPlan]
    ) -> tuple[int, list[Skipped]]:
        """Record a doctor run of `reporter` (see the module): how many results were
        recorded, and what was skipped and why. ForbiddenError, with nothing recorded,
        when `reporter` is not an end of every plan reported."""
        for part in reported:
            if not (_is(part.caller, reporter.code) or _is(part.callee, reporter.code)):
                raise ForbiddenError(
                    f"{reporter.code} reports the plan {part.caller} -> {part.callee}"
                    f" ({part.feature}): an installation reports only the flows of plans"
                    " it is the caller or the callee of"
                )
        links = self.store.links(reporter.code)
        now = self.clock()
        results: list[FlowResult] = []
        skipped: list[Skipped] = []
        for part in reported:
            found = self._plans(
                k
                for k in links
                if _is(k.a, part.caller) and _is(k.b, part.callee) and k.feature == part.feature
            )
            if not found:
                why = f"{part.caller} is not linked to {part.callee} for {part.feature}"
                skipped.append(Skipped(part.caller, part.callee, part.feature, None, why))
                continue
            link, plan = found[0]
            flows = {f.id: f for f in plan.flows}
            for item in part.flows:
                flow = flows.get(item.id)
                if flow is None or flow.ports_text != item.ports:
                    why = (
                        "not a flow of the plan"
                        if flow is None
                        else f"tested on ports {item.ports}; the plan's are {flow.ports_text} now"
                    )
                    skipped.append(Skipped(link.a, link.b, link.feature, item.id, why))
                    continue
                words = f"warning: {item.reason}" if item.status == "warning" else item.reason
                results.append(
                    self._result(
                        link,
                        flow,
                        DOCTOR_OUTCOMES[item.status],
                        at=now,
                        source=ResultSource.DOCTOR,
                        by=reporter.code,
                        detail=f"doctor on {reporter.code}: {words}",
                    )
                )
        self.store.add_flow_results(results, HISTORY_KEEP)
        return len(results), skipped

    def for_pair(self, caller: str, callee: str, feature: str) -> PairResults:
        """The plan of `feature` from `caller` to `callee` (codes or labels, as
        `Plans.plan`) and what was last seen of each of its flows."""
        plan = self.plans.plan(caller, callee, feature)
        kept = self.store.flow_results(plan.caller.code, plan.callee.code, plan.feature.id)
        shown = latest(kept)
        by_flow = {
            flow.id: found
            for flow in plan.flows
            if (found := shown.get((flow.id, flow.ports_text))) is not None
        }
        return PairResults(plan, by_flow, tuple(kept))
