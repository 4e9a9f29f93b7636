"""`controparte doctor`'s judgement: which flows of a plan passed, failed or could not be
tested from here, and the concrete fix for each failure. Pure: the plan and the results
of the tests in, a `Diagnosis` out (the tests themselves are in `doctor_run.py`).

"Here" is the installation doctor runs for (`--from`): its machine is where the tests
run. For every flow of the plan:

- a flow that the plan itself marks blocked (a Live rule makes it impossible as
  registered) fails with the plan's reason and fix, untested;
- a flow whose source is here is tested by connecting from this machine to the
  destination: each published address of the counterpart on its published public port,
  or the start-live host on 443;
- a flow whose destination is here is tested by the service's probe of this
  installation's own public port, from outside (`POST .../probe`): it tests the port
  forward and the inbound firewall of this side; the counterpart's egress towards it can
  only be tested from the counterpart's side;
- any other flow (the counterpart towards a start-live host) is untested: only the
  counterpart's side can test it.

A failure's fix comes from the plan's rules and what the failure looked like: a TCP reset
means the destination answered but nothing listens on the port (its port forward or
MxServer); silence or an ICMP rejection means a firewall on the way, most often this
side's egress for Live destinations and start-live hosts. For this installation's own
port, whether MxServer's port listens on this machine tells a missing port forward from
a registered public port that is not the forwarded one.

Every flow of a plan is required: `Diagnosis.ok` is false when any failed.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from controparte.model.probe import Reach
from controparte.plan.planner import Action, Flow, Party, Plan, Role, Rule
from controparte.plan.wire import party_dict

SCHEMA = "controparte.doctor/1"


class Status(enum.StrEnum):
    """How a flow's check came out (UNTESTED: not tested, or not fully; the check says why)."""

    PASSED = "passed"
    FAILED = "failed"
    UNTESTED = "untested"


@dataclass(frozen=True, slots=True)
class Target:
    """Where a connection test goes: an address or a host name, and a port."""

    host: str
    port: int

    @property
    def text(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


@dataclass(frozen=True, slots=True)
class Attempt:
    """One TCP connection attempted from this machine. `address`: what a host name
    resolved to; `error`: the system's words when it failed."""

    target: Target
    reach: Reach
    elapsed_ms: int
    address: str | None = None
    error: str | None = None

    def to_json(self) -> dict[str, object]:
        return {
            "kind": "connect",
            "from": "here",
            "target": self.target.host,
            "address": self.address,
            "port": self.target.port,
            "result": self.reach.value,
            "elapsed_ms": self.elapsed_ms,
            "error": self.error,
        }

    @property
    def text(self) -> str:
        where = self.target.text
        if self.address is not None and self.address != self.target.host:
            where += f" ({self.address})"
        if self.reach is Reach.OPEN:
            return f"connected to {where} in {self.elapsed_ms} ms"
        words = {
            Reach.REFUSED: "refused (a TCP reset: nothing listens there)",
            Reach.TIMEOUT: f"no answer in {self.elapsed_ms / 1000:.1f} s (dropped on the way)",
            Reach.UNREACHABLE: "rejected on the way (unreachable or prohibited)",
        }[self.reach]
        said = f"; {self.error}" if self.error and self.reach is Reach.UNREACHABLE else ""
        return f"connecting to {where}: {words}{said}"


@dataclass(frozen=True, slots=True)
class ProbeFinding:
    """The service's probe of this installation's own public port (`reach` set), or the
    reason there is none (`unavailable`)."""

    reach: Reach | None
    address: str | None = None
    port: int | None = None
    elapsed_ms: int | None = None
    nonce_verified: bool | None = None
    agent_code: str | None = None
    detail: str = ""
    unavailable: str | None = None

    @classmethod
    def none(cls, reason: str) -> ProbeFinding:
        return cls(None, unavailable=reason)

    @classmethod
    def from_json(cls, body: Mapping[str, object]) -> ProbeFinding:
        """From the body of a 200 answer to `POST .../probe`; `ValueError` if it is not
        one."""
        try:
            reach = Reach(str(body["result"]))
            port = body["port"]
            elapsed = body["elapsed_ms"]
        except (KeyError, ValueError):
            raise ValueError("not a probe answer") from None
        if not isinstance(port, int) or not isinstance(elapsed, int):
            raise ValueError("not a probe answer")
        verified = body.get("nonce_verified")
        agent = body.get("agent_code")
        return cls(
            reach,
            address=str(body.get("address")),
            port=port,
            elapsed_ms=elapsed,
            nonce_verified=verified if isinstance(verified, bool) else None,
            agent_code=agent if isinstance(agent, str) else None,
            detail=str(body.get("detail") or ""),
        )

    def to_json(self) -> dict[str, object]:
        return {
            "kind": "probe",
            "from": "service",
            "address": self.address,
            "port": self.port,
            "result": None if self.reach is None else self.reach.value,
            "elapsed_ms": self.elapsed_ms,
            "nonce_verified": self.nonce_verified,
            "agent_code": self.agent_code,
            "detail": self.unavailable if self.reach is None else self.detail,
        }

    @property
    def text(self) -> str:
        if self.reach is None:
            return f"no probe: {self.unavailable}"
        where = f"{self.address}:{self.port}" if self.address else f"port {self.port}"
        seen = {
            Reach.OPEN: f"connected in {self.elapsed_ms} ms",
            Reach.REFUSED: "was refused (a TCP reset: nothing listens there)",
            Reach.TIMEOUT: f"got no answer in {(self.elapsed_ms or 0) / 1000:.1f} s (dropped"
            " on the way)",
            Reach.UNREACHABLE: "was rejected on the way (unreachable or prohibited)",
        }[self.reach]
        if self.reach is Reach.OPEN and self.nonce_verified is False:
            claimed = f" as {self.agent_code!r}" if self.agent_code else ""
            seen += (
                f", but the controparte agent there answered{claimed} without this"
                " installation's proof"
            )
        return f"the service's probe of {where} from outside {seen}"


@dataclass(frozen=True, slots=True)
class Checklist:
    """What to test from here for a plan: connections, whether to ask for the probe,
    and which local ports to look for a listener on (MxServer's, this machine)."""

    connects: tuple[Target, ...]
    probe: bool
    local_ports: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class FlowCheck:
    """The verdict on one flow: `reason` says what was seen, `fix` what to change."""

    flow: Flow
    status: Status
    reason: str
    fix: str | None = None
    tests: tuple[dict[str, object], ...] = ()


@dataclass(frozen=True, slots=True)
class Diagnosis:
    """What `doctor` found for `plan`, seen from the side `here`: a check per flow."""

    plan: Plan
    here: Role
    checks: tuple[FlowCheck, ...]
    notes: tuple[str, ...] = field(default=())

    @property
    def ok(self) -> bool:
        return all(c.status is not Status.FAILED for c in self.checks)

    def count(self, status: Status) -> int:
        return sum(1 for c in self.checks if c.status is status)


# -- what to test -------------------------------------------------------------------------


def _targets(plan: Plan, flow: Flow) -> tuple[Target, ...]:
    """Where to connect to test `flow` from its source; empty when it cannot be."""
    if flow.host is not None:
        return () if flow.port_low is None else (Target(flow.host, flow.port_low),)
    destination = plan.party(flow.destination)
    if destination.port is None:
        return ()
    return tuple(Target(address, destination.port) for address in flow.addresses)


def _local_ports(party: Party) -> tuple[int, ...]:
    if party.live:
        return ()
    ports = [p for p in (party.private_port, party.port) if p is not None]
    return tuple(dict.fromkeys(ports))


def checklist_for(plan: Plan, here: Role) -> Checklist:
    """The tests that `diagnose` will look for, for `plan` run from `here`'s machine."""
    connects: list[Target] = []
    probe = False
    for flow in plan.flows:
        if flow.blocked:
            continue
        if flow.source is here:
            connects.extend(t for t in _targets(plan, flow) if t not in connects)
        elif flow.destination is here and flow.host is None:
            probe = True
    local = _local_ports(plan.party(here)) if probe else ()
    return Checklist(tuple(connects), probe, local)


# -- fixes ----------------------------------------------------------------------------------


def _ports(rule: Rule) -> str:
    return rule.ports_text


def _towards(rule: Rule) -> str:
    peers = list(rule.names) or list(rule.peer_addresses)
    return f", towards {', '.join(peers)}" if peers else ""


def egress_fix(rule: Rule, party: Party) -> str:
    """`open egress tcp <ports> on <label>'s firewall ...` for an EGRESS rule."""
    return (
        f"open egress tcp {_ports(rule)} on {party.label}'s firewall (this machine's, or"
        f" the site's firewall or router){_towards(rule)}"
    )


def _forward_target(party: Party) -> str:
    return (
        f"MxServer's {party.private_port}"
        if party.private_port is not None
        else "the port MxServer listens on"
    )


def _outbound_fix(plan: Plan, flow: Flow, here: Role, reach: Reach) -> str:
    """The fix for a flow from here whose connection came out as `reach` (not open)."""
    me = plan.party(here)
    egress = [r for r in flow.rules if r.side is here and r.action is Action.EGRESS]
    egress_text = "; ".join(egress_fix(r, me) for r in egress) or (
        f"let {me.label}'s connections out on tcp {flow.ports_text}"
    )
    if flow.host is not None:  # a start-live host
        if reach is Reach.REFUSED:
            return (
                f"{flow.host} refuses port {flow.ports_text}: the start-live service is"
                " down there, or the name resolves to the wrong address; tell the"
                " service's operator"
            )
        return (
            f"{egress_text}; if that is open already, {flow.host} is not answering: tell"
            " the service's operator"
        )
    other = plan.party(flow.destination)
    if other.live:
        if reach is Reach.REFUSED:
            return (
                f"{other.label} (Live) does not listen on its assigned port {other.port}:"
                " tell the Live operator"
            )
        return (
            f"{egress_text}; if that is open already, {other.label} (Live) is not"
            f" answering on its port {other.port}: tell the Live operator"
        )
    forward = (
        f"add a port forward on {other.label}'s router: public {other.port} ->"
        f" {_forward_target(other)}"
    )
    if reach is Reach.REFUSED:
        return (
            f"on {other.label}'s side (run `controparte doctor` there): nothing answers"
            f" on its registered public port {other.port}: {forward}, and make sure"
            f" MxServer runs; if {other.port} is not the port its router forwards,"
            " register the right one (`controparte agent --port N`)"
        )
    return (
        f"{egress_text}; if that is open already, on {other.label}'s side: {forward}"
        f" and allow it in through its firewall (inbound tcp {other.port})"
    )


def _inbound_fix(me: Party, finding: ProbeFinding, local: Mapping[int, bool]) -> str:
    """The fix when the service's probe of this installation's public port failed."""
    public = me.port
    private = me.private_port
    if public is None:
        return f"register {me.label}'s public port (`controparte agent --port N`)"
    if me.live:
        return (
            f"{me.label} (Live) does not answer on its port {public} from outside: tell the"
            " Live operator"
        )
    if private is not None and private != public:
        if local.get(private) is False:
            return (
                f"start MxServer (or `controparte agent listen --port {private}`): nothing"
                f" listens on port {private} on this machine; then the router must"
                f" forward public {public} -> MxServer's {private}"
            )
        text = f"add a port forward on {me.label}'s router: public {public} -> MxServer's {private}"
        if finding.reach is not Reach.REFUSED:
            text += (
                f"; if it exists, allow inbound tcp {private} on this machine's firewall"
                f" (and {public} on the router's)"
            )
        return text
    if local.get(public) is False:
        return (
            f"the public port registered ({public}) is not the one forwarded: nothing"
            f" answers on {public} from outside and nothing listens on {public} on this"
            f" machine. Register the public port that {me.label}'s router forwards to"
            " MxServer (`controparte agent --port PUBLIC --private-port MXSERVER-PORT`),"
            f" or forward {public} to MxServer's port"
        )
    listening = " (MxServer listens on it here)" if local.get(public) else ""
    return (
        f"add a port forward on {me.label}'s router: public {public} -> this machine's"
        f" port {public}{listening}, and allow inbound tcp {public} on the firewalls"
        " on the way"
    )


# -- the verdicts ---------------------------------------------------------------------------


def _check_outbound(
    plan: Plan, flow: Flow, here: Role, attempts: Mapping[Target, Attempt]
) -> FlowCheck:
    targets = _targets(plan, flow)
    destination = plan.party(flow.destination)
    if not targets:
        missing = "public port" if destination.port is None else "public address"
        return FlowCheck(
            flow, Status.UNTESTED, f"{destination.label} has no {missing} published to test"
        )
    done = [attempts[t] for t in targets if t in attempts]
    tests = tuple(a.to_json() for a in done)
    if len(done) < len(targets):
        return FlowCheck(flow, Status.UNTESTED, "not every destination was tested", None, tests)
    failed = [a for a in done if a.reach is not Reach.OPEN]
    if not failed:
        return FlowCheck(flow, Status.PASSED, "; ".join(a.text for a in done), None, tests)
    worst = failed[0]
    reason = "; ".join(a.text for a in failed)
    return FlowCheck(
        flow, Status.FAILED, reason, _outbound_fix(plan, flow, here, worst.reach), tests
    )


def _check_inbound(
    plan: Plan, flow: Flow, here: Role, probe: ProbeFinding | None, local: Mapping[int, bool]
) -> FlowCheck:
    me, other = plan.party(here), plan.party(flow.source)
    if probe is None or probe.reach is None:
        why = "no probe was asked for" if probe is None else probe.unavailable
        return FlowCheck(
            flow,
            Status.UNTESTED,
            f"it comes in from {other.label}; the service could not probe {me.label}'s"
            f" public port: {why}",
            None,
            () if probe is None else (probe.to_json(),),
        )
    tests = (probe.to_json(),)
    other_side = (
        f"{other.label}'s own egress towards it can only be tested from its side"
        if not other.live
        else f"{other.label} is Live: the cloud lets it out on the Live range"
    )
    if probe.reach is Reach.OPEN and probe.nonce_verified is False:
        return FlowCheck(
            flow,
            Status.FAILED,
            f"{probe.text}: public port {me.port} reaches another machine, not this one",
            f"correct the port forward on {me.label}'s router: public {me.port} must go to"
            f" this machine, {_forward_target(me)}",
            tests,
        )
    if probe.reach is Reach.OPEN:
        proven = (
            "the agent here answered the nonce: the port reaches this machine"
            if probe.nonce_verified
            else "not proven to reach this machine (run `controparte agent listen` while"
            " MxServer is not installed, to prove it)"
        )
        return FlowCheck(
            flow,
            Status.PASSED,
            f"{probe.text}; {proven}; {other_side}",
            None,
            tests,
        )
    return FlowCheck(flow, Status.FAILED, probe.text, _inbound_fix(me, probe, local), tests)


def diagnose(
    plan: Plan,
    here: Role,
    attempts: Mapping[Target, Attempt],
    probe: ProbeFinding | None,
    *,
    local: Mapping[int, bool] | None = None,
    notes: Iterable[str] = (),
) -> Diagnosis:
    """Judge every flow of `plan` from `here`'s machine, given the connection
    `attempts` made from it (by target), the service's `probe` of its own public port
    (None when none was asked for) and which of its `local` ports have a listener."""
    local = local or {}
    checks: list[FlowCheck] = []
    for flow in plan.flows:
        other = plan.party(here.other)
        if flow.blocked:
            checks.append(
                FlowCheck(flow, Status.FAILED, f"blocked by the plan: {flow.blocked}", flow.fix)
            )
        elif flow.source is here:
            checks.append(_check_outbound(plan, flow, here, attempts))
        elif flow.destination is here and flow.host is None:
            checks.append(_check_inbound(plan, flow, here, probe, local))
        else:
            checks.append(
                FlowCheck(
                    flow,
                    Status.UNTESTED,
                    f"it leaves from {other.label}: only its side can test it (run"
                    f" `controparte doctor --from {other.code}` there)",
                )
            )
    return Diagnosis(plan, here, tuple(checks), tuple(plan.notes) + tuple(notes))


# -- output ---------------------------------------------------------------------------------


def diagnosis_dict(diagnosis: Diagnosis) -> dict[str, object]:
    """One diagnosis as JSON (schema `controparte.doctor/1`, see docs)."""
    plan = diagnosis.plan
    return {
        "feature": {"id": plan.feature.id, "name": plan.feature.name},
        "here": diagnosis.here.value,
        "caller": party_dict(plan.caller),
        "callee": party_dict(plan.callee),
        "ok": diagnosis.ok,
        "flows": [
            {
                "id": c.flow.id,
                "description": c.flow.description,
                "direction": c.flow.direction.value,
                "source": c.flow.source.value,
                "destination": c.flow.host or c.flow.destination.value,
                "ports": c.flow.ports_text,
                "status": c.status.value,
                "reason": c.reason,
                "fix": c.fix,
                "tests": list(c.tests),
            }
            for c in diagnosis.checks
        ],
        "notes": list(diagnosis.notes),
    }


def report_dict(diagnoses: Iterable[Diagnosis]) -> dict[str, object]:
    """Every diagnosis of one doctor run: `{"schema", "ok", "checks": [...]}`."""
    found = list(diagnoses)
    return {
        "schema": SCHEMA,
        "ok": all(d.ok for d in found),
        "checks": [diagnosis_dict(d) for d in found],
    }


def _party_line(party: Party) -> str:
    where = ", ".join(party.addresses) or "no address"
    kind = "Live" if party.live else "on-premises"
    port = "no public port" if party.port is None else f"public port {party.port}"
    if party.private_port is not None and party.private_port != party.port:
        port += f" -> MxServer's {party.private_port}"
    return f"{party.label} ({party.code}): {kind}, {where}, {port}"


def render_text(diagnosis: Diagnosis) -> str:
    """The human form: the two parties, each flow's verdict with its reason and fix,
    the notes and a count."""
    plan = diagnosis.plan
    me = plan.party(diagnosis.here)
    lines = [
        f"doctor: {plan.feature.id} ({plan.feature.name}), from {me.label} ({me.code}),"
        f" the {diagnosis.here.value}",
        f"  caller {_party_line(plan.caller)}",
        f"  callee {_party_line(plan.callee)}",
        "",
    ]
    for check in diagnosis.checks:
        lines.append(f"{check.status.value.upper():<9} {check.flow.description}")
        lines.append(f"          {check.reason}")
        if check.fix:
            lines.append(f"          fix: {check.fix}")
    for note in diagnosis.notes:
        lines.append(f"note: {note}")
    failed = diagnosis.count(Status.FAILED)
    lines.append(
        f"{failed} failed, {diagnosis.count(Status.PASSED)} passed,"
        f" {diagnosis.count(Status.UNTESTED)} untested"
        + ("" if failed else ": nothing to fix from here")
    )
    return "\n".join(lines) + "\n"
