"""What was last seen of a flow: one result of a test of one flow of a plan, with its
time and where it came from. Pure values and rules; no I/O.

A flow is known by the plan it belongs to (caller, callee, feature), its id in that
plan (`plan.planner.Flow.id`: direction, source and destination, or the start-live
host) and its ports (`Flow.ports_text`): a result tested on other ports says nothing
of the flow as planned now, so it is another flow's.

Results come from the service's outside-in probes (of an installation's own port, of
a counterpart's, and a counterpart agent's relayed dial) and from `controparte
doctor` runs an agent reports. `latest` picks what a flow is shown as: its newest
conclusive result (passed or failed); only when there is none, its newest untested
one (a doctor that could not test a flow from its side does not hide what the other
side saw).
"""

from __future__ import annotations

import enum
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from controparte.errors import ValidationError
from controparte.model.installation import validate_code
from controparte.model.link import validate_feature_id
from controparte.model.probe import Reach

MAX_FLOW_ID = 300
"""The longest flow id kept (a start-live host name is part of one)."""
PORTS_RE = re.compile(r"\?|[0-9]{1,5}(?:-[0-9]{1,5})?")
"""A flow's ports as `Flow.ports_text` writes them: a port, `low-high`, or `?`."""
MAX_DETAIL = 1000
"""A result's detail is cut to this many characters."""
MAX_PLANS = 64
"""Plans in one doctor report, at most (a run with more sends several)."""
MAX_FLOWS = 64
"""Flows of one plan in one doctor report, at most."""


class Outcome(enum.StrEnum):
    """How a flow's test came out; `UNKNOWN` is what a flow with no result is shown as,
    never stored."""

    PASSED = "passed"
    FAILED = "failed"
    UNTESTED = "untested"
    UNKNOWN = "unknown"


class ResultSource(enum.StrEnum):
    """Who tested the flow: the service's probe of the destination's registered port
    (asked by the destination itself, or by a linked counterpart), a counterpart's
    agent dialling through the relay, a doctor run on one end, or the service's probe
    asked from the dashboard by an account."""

    PROBE = "probe"
    COUNTERPART_PROBE = "counterpart-probe"
    RELAY = "relay"
    DOCTOR = "doctor"
    DASHBOARD = "dashboard"


def reach_outcome(reach: Reach) -> Outcome:
    """A connection that was made passed; refused, dropped or rejected failed."""
    return Outcome.PASSED if reach is Reach.OPEN else Outcome.FAILED


@dataclass(frozen=True, slots=True)
class FlowResult:
    """One result of flow `flow` (on `ports`) of the plan (`caller`, `callee`,
    `feature`), seen at `at` (UTC) by `source` on behalf of installation `reporter`,
    with what was seen (`detail`); `account`: the dashboard account that asked (a
    `DASHBOARD` result's; its reporter is the installation probed). Built through
    `create`, which validates."""

    caller: str
    callee: str
    feature: str
    flow: str
    ports: str
    outcome: Outcome
    at: datetime
    source: ResultSource
    reporter: str
    detail: str = ""
    account: str | None = None

    @classmethod
    def create(
        cls,
        *,
        caller: str,
        callee: str,
        feature: str,
        flow: str,
        ports: str,
        outcome: Outcome,
        at: datetime,
        source: ResultSource,
        reporter: str,
        detail: str = "",
        account: str | None = None,
    ) -> FlowResult:
        """Validate and build (ValidationError naming the field); `detail` is cut to
        `MAX_DETAIL` characters; `UNKNOWN` is no result and is refused."""
        if outcome is Outcome.UNKNOWN:
            raise ValidationError("status", "a result is passed, failed or untested")
        if not flow or len(flow) > MAX_FLOW_ID or not flow.isprintable():
            raise ValidationError("id", f"a flow id of 1-{MAX_FLOW_ID} printable characters")
        if not PORTS_RE.fullmatch(ports):
            raise ValidationError("ports", "a port, a range low-high, or ?")
        return cls(
            validate_code(caller),
            validate_code(callee),
            validate_feature_id(feature),
            flow,
            ports,
            outcome,
            at,
            source,
            validate_code(reporter),
            detail[:MAX_DETAIL],
            account,
        )

    @property
    def by(self) -> str:
        """Who saw it, as shown: `doctor (ACME-0001)`, `dashboard (account olivia)`."""
        who = self.reporter if self.account is None else f"account {self.account}"
        return f"{self.source.value} ({who})"

    @property
    def key(self) -> tuple[str, str]:
        """The flow this result is of, within its plan: (flow id, ports)."""
        return self.flow, self.ports


def latest(results: Iterable[FlowResult]) -> dict[tuple[str, str], FlowResult]:
    """What each flow (`FlowResult.key`) is shown as: its newest passed or failed
    result, else its newest untested one."""
    shown: dict[tuple[str, str], FlowResult] = {}
    for result in results:
        held = shown.get(result.key)
        if held is None or _rank(result) > _rank(held):
            shown[result.key] = result
    return shown


def _rank(result: FlowResult) -> tuple[bool, datetime]:
    return result.outcome is not Outcome.UNTESTED, result.at


def duration_text(seconds: float) -> str:
    """`45 s`, `12 min`, `3 h`, `2 d` (never negative)."""
    seconds = max(0.0, seconds)
    for size, unit in ((86_400, "d"), (3_600, "h"), (60, "min")):
        if seconds >= size:
            return f"{seconds / size:.0f} {unit}"
    return f"{seconds:.0f} s"
