"""`controparte doctor`'s judgement: for one plan, which steps and flows passed, failed or
could not be tested, on what evidence, and the one fix for each failure. Pure: the plan
and the facts in, a `Diagnosis` out (gathering the facts is `doctor_run.py`'s work).

"Here" is the installation doctor runs for (`--from`), on this machine, which is its
server or one of its clients (`MachineRole`). Every verdict rests on evidence, and says
where that evidence comes from (`evidence.Source`):

- **Record** (first): the service's registry. A counterpart whose heartbeats stopped
  (older than `stale_after`) is named before anything else: its agent is not running,
  or its address changed and nothing updated the record. It is a failure when a flow
  towards it failed (the address tried may not be its own any more), a warning when
  everything towards it worked. One never seen by a heartbeat has its address set by
  hand: a warning, since nothing keeps it current.
- **DNS**: MxServer finds the counterpart by name; the resolution's verdict (the
  system's resolver and the zone's name servers against the registry,
  `resolution.judge_resolution`) is a step of its own, ahead of any firewall advice.
  While DNS fails or serves another address, no flow towards the counterpart passes.
- **Flows** from here (this machine's connections): by `MachineRole`, a server tests
  the flows its server opens, a client those every client opens; the others are
  untested here, with the command to run where they can be tested. When a connection
  from here fails, the service's probe of the counterpart's registered address tells
  this machine's egress (the service gets through) from the counterpart's port forward
  or firewall (it does not either): one fix, not both.
- **Alternatives**: flows of one `any_of` group (the start-live hosts) pass when one
  answers; each that does not is a warning for the service's operator when a sibling
  answered on the same port from here, and all fail only when none answers.
- **Flows towards here**: from the counterpart's own agent when it takes relay
  requests (it dials this installation's registered public address and port: the
  flow as it really runs); else the service's probe of this installation's public
  port, which proves this side's port forward and inbound rules but not the
  counterpart's egress (untested, unless the counterpart is Live, whose egress on the
  Live range the cloud provides). A probe that fails while the counterpart gets
  through is an inbound rule that admits only the counterpart: the flow passes, and
  the note says how to let the probe in.
- Flows that leave from the counterpart to elsewhere (its start-live hosts) are
  untested here, with the command to run on its side.

Exit status (`Diagnosis.exit_code`): 1 when any step or flow failed, else 3 when
something could not be tested, else 0 (warnings included).
"""

from __future__ import annotations

import enum
import functools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime

from controparte.agent.evidence import Dial, Source, Status
from controparte.model.flowresult import MAX_DETAIL, MAX_FLOWS, duration_text
from controparte.model.probe import Reach
from controparte.plan.planner import Action, Flow, Initiator, Party, Plan, Role, Rule
from controparte.plan.wire import party_dict

SCHEMA = "controparte.doctor/2"
EXIT_OK = 0
EXIT_FAILED = 1
EXIT_UNTESTED = 3


class MachineRole(enum.StrEnum):
    """What this machine is to the installation: its server (MxServer's host) or one of
    its iDesk clients."""

    SERVER = "server"
    CLIENT = "client"


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
            "from": Source.HERE.value,
            "from_address": None,
            "target": self.target.host,
            "address": self.address or self.target.host,
            "port": self.target.port,
            "result": self.reach.value,
            "elapsed_ms": self.elapsed_ms,
            "nonce_verified": None,
            "agent_code": None,
            "detail": self.error or "",
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
class Record:
    """What the registry says of a party's liveness: when a heartbeat last came (None:
    never), whether that is longer ago than the service's `stale_after` seconds."""

    last_seen: datetime | None
    stale: bool
    stale_after: float | None = None
    now: datetime | None = None

    def age_text(self) -> str:
        if self.last_seen is None:
            return "never"
        if self.now is None:
            return self.last_seen.isoformat(timespec="seconds")
        return f"{duration_text((self.now - self.last_seen).total_seconds())} ago"


@dataclass(frozen=True, slots=True)
class DnsFinding:
    """The resolution's verdict (`resolution.judge_resolution`): its status, what was
    seen and the fix; `addresses` and `port`, what MxServer would dial (empty/None when
    it cannot resolve); `tests`, the DNS answers as evidence."""

    status: Status
    reason: str
    fix: str | None = None
    addresses: tuple[str, ...] = ()
    port: int | None = None
    tests: tuple[dict[str, object], ...] = ()


@dataclass(frozen=True, slots=True)
class BrokerFinding:
    """What the start-live brokers said when asked, with failover
    (`agent/startlive.py`), to start the Live counterpart for this installation:
    `broker`, the name that answered (None: none did, or they refused), with the
    placement it gave and whether the wake hook said ready; `skipped`, (name, what
    happened) of those tried before it; `refused`, the registry's refusal (the same from
    every broker: a token or a link)."""

    broker: str | None
    gateway: str | None = None
    port: int | None = None
    ready: bool = False
    detail: str = ""
    skipped: tuple[tuple[str, str], ...] = ()
    refused: str | None = None

    def tests(self) -> tuple[dict[str, object], ...]:
        """Each broker asked, as evidence (kind `start-live`)."""
        asked: list[dict[str, object]] = [
            {
                "kind": "start-live",
                "from": "here",
                "target": name,
                "result": "failed",
                "detail": why,
            }
            for name, why in self.skipped
        ]
        if self.broker is not None:
            asked.append(
                {
                    "kind": "start-live",
                    "from": "here",
                    "target": self.broker,
                    "address": self.gateway,
                    "port": self.port,
                    "result": "ready" if self.ready else "not ready",
                    "detail": self.detail,
                }
            )
        return tuple(asked)


@dataclass(frozen=True, slots=True)
class Facts:
    """Everything doctor found for one plan. `self_probe`: the service's probe of this
    installation's public port; `relay`: the counterpart's agent dialling it;
    `counterpart_probe`: the service's probe of the counterpart's registered address;
    `local`: which of this machine's ports accept connections. None: not asked."""

    attempts: Mapping[Target, Attempt] = field(default_factory=dict)
    self_probe: Dial | None = None
    relay: Dial | None = None
    counterpart_probe: tuple[Dial, ...] | None = None
    local: Mapping[int, bool] = field(default_factory=dict)
    record: Record | None = None
    own_record: Record | None = None
    dns: DnsFinding | None = None
    broker: BrokerFinding | None = None
    command: str = "controparte doctor"
    """How doctor was started here, to tell the other side what to run."""
    server: str = "URL"
    """The service's URL, for the commands doctor suggests."""


@dataclass(frozen=True, slots=True)
class Checklist:
    """What to test from here for a plan: connections, whether to ask for the service's
    probe of this installation's port and for the counterpart's relay, and which local
    ports to look for a listener on."""

    connects: tuple[Target, ...]
    probe: bool
    relay: bool
    local_ports: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class Check:
    """The verdict on one step or flow: `reason` says what was seen, `fix` what to
    change, `tested_from` where the evidence comes from."""

    id: str
    title: str
    status: Status
    reason: str
    fix: str | None = None
    tested_from: tuple[str, ...] = ()
    tests: tuple[dict[str, object], ...] = ()
    flow: Flow | None = None


@dataclass(frozen=True, slots=True)
class Diagnosis:
    """What `doctor` found for `plan`, seen from the side `here` on a machine of
    `machine` role: the steps (record, DNS), then a check per flow."""

    plan: Plan
    here: Role
    machine: MachineRole
    machine_why: str
    steps: tuple[Check, ...]
    checks: tuple[Check, ...]
    notes: tuple[str, ...] = ()

    @property
    def all_checks(self) -> tuple[Check, ...]:
        return self.steps + self.checks

    @property
    def ok(self) -> bool:
        return all(c.status is not Status.FAILED for c in self.all_checks)

    def count(self, status: Status) -> int:
        return sum(1 for c in self.all_checks if c.status is status)

    @property
    def exit_code(self) -> int:
        return exit_code([self])

    @property
    def first_to_fix(self) -> Check | None:
        """The first failure in order (record, DNS, flows), else the first untested."""
        for wanted in (Status.FAILED, Status.UNTESTED):
            for check in self.all_checks:
                if check.status is wanted:
                    return check
        return None


def exit_code(diagnoses: Iterable[Diagnosis]) -> int:
    """1 when anything failed, else 3 when anything could not be tested, else 0."""
    statuses = {c.status for d in diagnoses for c in d.all_checks}
    if Status.FAILED in statuses:
        return EXIT_FAILED
    return EXIT_UNTESTED if Status.UNTESTED in statuses else EXIT_OK


# -- what to test -------------------------------------------------------------------------


def _dns_addresses(flow: Flow, dns: DnsFinding | None) -> tuple[str, ...]:
    """The addresses MxServer would dial for `flow`'s destination: what DNS answers, or,
    when DNS gave none, the registered ones (tested for evidence, never passed)."""
    if dns is not None and dns.addresses:
        return dns.addresses
    return flow.addresses


def _targets(plan: Plan, flow: Flow, dns: DnsFinding | None = None) -> tuple[Target, ...]:
    """Where to connect to test `flow` from its source; empty when it cannot be."""
    if flow.host is not None:
        return () if flow.port_low is None else (Target(flow.host, flow.port_low),)
    destination = plan.party(flow.destination)
    port = destination.port
    if dns is not None and dns.port is not None and not destination.live:
        port = dns.port
    if port is None:
        return ()
    return tuple(Target(address, port) for address in _dns_addresses(flow, dns))


def local_ports(party: Party) -> tuple[int, ...]:
    """The ports MxServer may listen on at this party's server (none for Live)."""
    if party.live:
        return ()
    ports = [p for p in (party.private_port, party.port) if p is not None]
    return tuple(dict.fromkeys(ports))


def _runs_here(flow: Flow, machine: MachineRole) -> bool:
    """Whether a flow leaving from this installation leaves from this machine."""
    wanted = Initiator.CLIENTS if machine is MachineRole.CLIENT else Initiator.SERVER
    return flow.origin is wanted


def choose_machine(
    plan: Plan, here: Role, local: Mapping[int, bool], asked: MachineRole | None
) -> tuple[MachineRole, str]:
    """This machine's role, and why: `asked` (`--role`) when given; else a client when
    every flow from here starts at the clients and nothing listens on MxServer's port
    here; else the server."""
    if asked is not None:
        return asked, f"--role {asked.value}"
    me = plan.party(here)
    ports = local_ports(me)
    listening = [p for p in ports if local.get(p)]
    from_here = [f for f in plan.flows if f.source is here]
    clients_only = bool(from_here) and all(f.origin is Initiator.CLIENTS for f in from_here)
    if clients_only and not listening:
        where = f" on port {', '.join(map(str, ports))}" if ports else ""
        return MachineRole.CLIENT, (
            f"nothing listens{where} here, so this is taken for a client of {me.label};"
            " `--role server` if it is the server"
        )
    if listening:
        return MachineRole.SERVER, f"MxServer's port {listening[0]} accepts connections here"
    return MachineRole.SERVER, "assumed (`--role client` on an iDesk client)"


def checklist_for(
    plan: Plan, here: Role, machine: MachineRole = MachineRole.SERVER, dns: DnsFinding | None = None
) -> Checklist:
    """The tests that `diagnose` will look for, for `plan` run from `here`'s machine."""
    connects: list[Target] = []
    probe = relay = False
    for flow in plan.flows:
        if flow.blocked:
            continue
        if flow.source is here:
            if _runs_here(flow, machine):
                connects.extend(t for t in _targets(plan, flow, dns) if t not in connects)
        elif flow.destination is here and flow.host is None:
            probe = True
            relay = relay or not plan.party(flow.source).live
    local = local_ports(plan.party(here))
    return Checklist(tuple(connects), probe, relay, local)


def wants_counterpart_probe(
    plan: Plan, here: Role, attempts: Mapping[Target, Attempt], dns: DnsFinding | None = None
) -> bool:
    """True when a connection from here to the counterpart failed: the service's probe
    of its registered address then tells whose side drops it."""
    for flow in plan.flows:
        if flow.source is here and flow.host is None and not flow.blocked:
            for target in _targets(plan, flow, dns):
                found = attempts.get(target)
                if found is not None and found.reach is not Reach.OPEN:
                    return True
    return False


# -- the steps: the counterpart's record, DNS ---------------------------------------------


def _record_step(
    party: Party, record: Record | None, towards_failed: bool, *, mine: bool, server: str
) -> Check | None:
    """Whether the registry's record of `party` is kept current by its agent (None:
    the service did not say when it was last seen)."""
    step_id = f"record:{party.code}"
    title = f"registry: {party.name} is kept current"
    if record is None:
        return None
    command = f"`controparte agent --server {server} --code {party.code} --token-file FILE`"
    agent = f"on this server: {command}" if mine else f"on {party.label}'s server: {command}"
    if record.last_seen is None:
        if party.live:
            return Check(
                step_id,
                title,
                Status.PASSED,
                f"{party.name} is Live: its address is the Live operator's to keep",
                tested_from=("service",),
            )
        reason = (
            f"{party.name} has never sent a heartbeat: its address was registered by hand,"
            " and nothing updates it when it changes"
        )
        if towards_failed:
            reason += "; the address tried may no longer be its own"
        return Check(
            step_id,
            title,
            Status.WARNING,
            reason,
            f"run the agent {agent} (or check its registered address by hand)",
            ("service",),
        )
    seen = f"last heartbeat {record.age_text()}"
    said = f"{party.name} sent its last heartbeat {record.age_text()}"
    if not record.stale:
        return Check(step_id, title, Status.PASSED, seen, tested_from=("service",))
    limit = (
        "" if record.stale_after is None else f" (stale after {duration_text(record.stale_after)})"
    )
    reason = (
        f"{said}{limit}: its agent is not running, or its address changed and nothing"
        " updated the record"
    )
    fix = f"start its agent {agent}; until it beats, its registered address may be wrong"
    if not towards_failed:
        reason += "; the flows towards it still work, so the address is right for now"
        return Check(step_id, title, Status.WARNING, reason, fix, ("service",))
    return Check(step_id, title, Status.FAILED, reason, fix, ("service",))


def _dns_step(party: Party, dns: DnsFinding | None) -> Check | None:
    if dns is None:
        return None
    return Check(
        f"dns:{party.code}",
        f"DNS: {party.name} resolves as the registry holds it",
        dns.status,
        dns.reason,
        dns.fix if dns.status in (Status.FAILED, Status.WARNING, Status.UNTESTED) else None,
        ("here",),
        dns.tests,
    )


def _broker_step(me: Party, live: Party, found: BrokerFinding | None) -> Check | None:
    """The start-live brokers asked to start the Live counterpart `live`: passed when
    one answered with the registry's placement and ready; a warning when one answered
    but another did not first, the wake hook did not say ready, or the placement is not
    the registry's; failed when none answered or they refused."""
    if found is None:
        return None
    check = functools.partial(
        Check,
        f"start-live:{live.code}",
        f"start-live: a broker starts {live.name} for {me.label}",
        tested_from=("here",),
        tests=found.tests(),
    )
    said = "; ".join(f"{name}: {why}" for name, why in found.skipped)
    if found.refused is not None:
        return check(
            Status.FAILED,
            f"the start-live brokers refused: {found.refused}",
            f"the brokers start {live.label} for its linked counterparts, with their own"
            f" token: link {me.label} to it (`controparte link add`) and check the token"
            " given to doctor is current",
        )
    if found.broker is None:
        return check(
            Status.FAILED,
            f"no start-live broker answered from this machine ({said or 'none tried'})",
            "let this machine out on tcp 443 to the start-live hosts (see the start-live"
            " flows); if it is, tell the service's operator that no broker answers",
        )
    where = f"{found.gateway}:{found.port}"
    reason = f"{found.broker} answered: {live.label} is reached on {where}"
    reason += ", ready" if found.ready else f", not ready ({found.detail or 'no reason given'})"
    problems = []
    if said:
        reason += f"; before it: {said}"
        problems.append(
            f"tell the service's operator that {', '.join(n for n, _ in found.skipped)} did"
            " not answer (one broker is enough: nothing to change here)"
        )
    if not found.ready:
        problems.append(f"{live.label} did not wake up in time: ask again, or tell its operator")
    if found.port != live.port or found.gateway not in live.addresses:
        problems.append(
            f"the broker's placement {where} is not the registry's"
            f" ({', '.join(live.addresses) or 'no address'}, port {live.port}): tell the"
            " service's operator"
        )
    if problems:
        return check(Status.WARNING, reason, "; ".join(problems))
    return check(Status.PASSED, reason, None)


# -- fixes ----------------------------------------------------------------------------------


def _towards(rule: Rule) -> str:
    peers = list(rule.names) or list(rule.peer_addresses)
    return f", towards {', '.join(peers)}" if peers else ""


def egress_fix(rule: Rule, party: Party) -> str:
    """`open egress tcp <ports> on <label>'s firewall ...` for an EGRESS rule."""
    return (
        f"open egress tcp {rule.ports_text} on {party.label}'s firewall (this machine's, or"
        f" the site's firewall or router){_towards(rule)}"
    )


def _listening_port(party: Party) -> str:
    """MxServer's port at `party`, as registered, or words that say it is not known."""
    if party.private_port is not None:
        return f"MxServer's port {party.private_port}"
    return "MxServer's port (not registered: the agent reports it with --private-port)"


def _forward(party: Party) -> str:
    return (
        f"a port forward on {party.label}'s router: public {party.port} -> {_listening_port(party)}"
    )


def _egress_text(plan: Plan, flow: Flow, here: Role) -> str:
    me = plan.party(here)
    egress = [r for r in flow.rules if r.side is here and r.action is Action.EGRESS]
    return "; ".join(egress_fix(r, me) for r in egress) or (
        f"let {me.label}'s connections out on tcp {flow.ports_text}"
    )


def _probe_says(dials: tuple[Dial, ...]) -> Reach | None:
    """What the service's probe of the counterpart found: OPEN when any address was
    reached, else the first failure; None when no probe was made."""
    made = [d for d in dials if d.reach is not None]
    if not made:
        return None
    if any(d.reach is Reach.OPEN for d in made):
        return Reach.OPEN
    return made[0].reach


def _dial_text(dial: Dial) -> str:
    """One dial by the service or the counterpart's agent, in words."""
    if dial.reach is None:
        return f"not tested: {dial.unavailable}"
    who = {
        Source.SERVICE: "the service's probe",
        Source.COUNTERPART: "the counterpart's agent",
        Source.HERE: "this machine",
    }[dial.source]
    origin = f" (from {dial.from_address})" if dial.from_address else ""
    where = (
        f"[{dial.address}]:{dial.port}"
        if dial.address and ":" in dial.address
        else f"{dial.address}:{dial.port}"
    )
    seen = {
        Reach.OPEN: f"connected in {dial.elapsed_ms} ms",
        Reach.REFUSED: "was refused (a TCP reset: nothing listens there)",
        Reach.TIMEOUT: f"got no answer in {(dial.elapsed_ms or 0) / 1000:.1f} s (dropped"
        " on the way)",
        Reach.UNREACHABLE: "was rejected on the way (unreachable or prohibited)",
    }[dial.reach]
    if dial.reach is Reach.OPEN and dial.nonce_verified is False:
        claimed = f" as {dial.agent_code!r}" if dial.agent_code else ""
        seen += (
            f", but the controparte agent there answered{claimed} without this installation's proof"
        )
    return f"{who}{origin} to {where} {seen}"


def _counterpart_side_fix(other: Party, reach: Reach, me: Party) -> str:
    """The fix on the counterpart's side when neither here nor the service gets in."""
    if other.live:
        return (
            f"{other.label} (Live) does not answer on its {other.placement} from outside:"
            " tell the Live operator"
        )
    if reach is Reach.REFUSED:
        return (
            f"on {other.label}'s side (run `controparte doctor` there): nothing answers on"
            f" its public port {other.port}: add {_forward(other)}, and make sure MxServer"
            f" runs; if {other.port} is not the port its router forwards, register the"
            " right one (`controparte agent --port N`)"
        )
    return (
        f"on {other.label}'s side (run `controparte doctor` there): its router or firewall"
        f" drops connections to public port {other.port}: add {_forward(other)}, and let"
        f" {me.label} ({', '.join(me.addresses) or 'its address'}) and the service's probe"
        f" in on {other.private_port or other.port} (`controparte firewall {other.code}`"
        " writes the rules)"
    )


def _outbound_fix(
    plan: Plan, flow: Flow, here: Role, worst: Reach, probe: tuple[Dial, ...] | None
) -> tuple[str, tuple[str, ...]]:
    """The fix for a flow from here to the counterpart whose connection failed, and
    where the deciding evidence comes from."""
    me, other = plan.party(here), plan.party(flow.destination)
    egress = _egress_text(plan, flow, here)
    service = None if probe is None else _probe_says(probe)
    if service is Reach.OPEN:
        return (
            f"{egress}: the service reaches {other.label} on its public port {other.port},"
            " this machine does not",
            ("here", "service"),
        )
    if service is not None:
        return _counterpart_side_fix(other, service, me), ("here", "service")
    why = (
        "the service's probe of it was not made"
        if probe is None
        else f"the service could not probe it ({'; '.join(d.unavailable or '' for d in probe)})"
    )
    if worst is Reach.REFUSED:
        return _counterpart_side_fix(other, Reach.REFUSED, me), ("here",)
    return (
        f"either this side's egress or {other.label}'s inbound ({why}, so which one is not"
        f" known): {egress}; if that is open already, " + _counterpart_side_fix(other, worst, me),
        ("here",),
    )


def _inbound_fix(me: Party, reach: Reach, local: Mapping[int, bool]) -> str:
    """The fix when connections from outside to this installation's public port fail."""
    public, private = me.port, me.private_port
    if public is None:
        return f"register {me.label}'s public port (`controparte agent --port N`)"
    if me.live:
        return (
            f"{me.label} (Live) does not answer on its {me.placement} from outside: tell the"
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
        if reach is not Reach.REFUSED:
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


def _other_side_command(plan: Plan, flow: Flow, here: Role, facts: Facts) -> str:
    """What to run on the flow's source side to test it there."""
    source = plan.party(flow.source)
    dest = plan.party(flow.destination) if flow.host is None else plan.party(here)
    role = " --role client" if flow.origin is Initiator.CLIENTS else ""
    where = "an iDesk client" if flow.origin is Initiator.CLIENTS else "the server"
    return (
        f"on {where} of {source.label}: `{facts.command} --from {source.code} --to"
        f" {dest.code} --feature {plan.feature.id}{role}`"
    )


# -- the verdicts on flows --------------------------------------------------------------------


def _dns_blocks(facts: Facts) -> bool:
    return facts.dns is not None and facts.dns.status is Status.FAILED


def _check_outbound(plan: Plan, flow: Flow, here: Role, facts: Facts) -> Check:
    """A flow from here to the counterpart, tested by this machine's connections."""
    targets = _targets(plan, flow, facts.dns)
    destination = plan.party(flow.destination)
    if not targets:
        missing = "public port" if destination.port is None else "public address"
        return _flow_check(
            flow, Status.UNTESTED, f"{destination.label} has no {missing} published to test"
        )
    done = [facts.attempts[t] for t in targets if t in facts.attempts]
    tests = tuple(a.to_json() for a in done)
    if len(done) < len(targets):
        return _flow_check(flow, Status.UNTESTED, "not every destination was tested", tests=tests)
    failed = [a for a in done if a.reach is not Reach.OPEN]
    reason = "; ".join(a.text for a in (failed or done))
    if destination.live and destination.gateway is not None:
        reason += f" ({destination.label} is Live, on {destination.placement})"
    if _dns_blocks(facts):
        assert facts.dns is not None
        seen = "answers" if not failed else "does not answer either"
        return _flow_check(
            flow,
            Status.FAILED,
            f"MxServer would not reach {destination.label} by name (see the DNS step);"
            f" the address tried {seen} from here: {reason}",
            f"DNS first: {facts.dns.fix}",
            ("here",),
            tests=tests,
        )
    if not failed:
        return _flow_check(flow, Status.PASSED, reason, None, ("here",), tests=tests)
    probe = facts.counterpart_probe
    fix, sources = _outbound_fix(plan, flow, here, failed[0].reach, probe)
    made = tuple(d for d in probe or () if d.made)
    tests += tuple(d.to_json() for d in probe or ())
    if made:
        reason += "; " + "; ".join(_dial_text(d) for d in made)
    if facts.record is not None and facts.record.stale and not destination.live:
        fix = (
            f"{destination.name}'s record is stale (see the registry step): its address"
            " may not be its own any more; get its agent running first"
        )
        sources = ("here", "service") if made else ("here",)
    return _flow_check(flow, Status.FAILED, reason, fix, sources, tests=tests)


def _check_alternatives(plan: Plan, group: list[Flow], here: Role, facts: Facts) -> list[Check]:
    """Flows of one `any_of` group from here: passed when one answers."""
    me = plan.party(here)
    found: list[tuple[Flow, Attempt | None]] = []
    for flow in group:
        targets = _targets(plan, flow)
        found.append((flow, facts.attempts.get(targets[0]) if targets else None))
    good = [f.host for f, a in found if a is not None and a.reach is Reach.OPEN]
    checks: list[Check] = []
    for flow, attempt in found:
        if attempt is None:
            checks.append(_flow_check(flow, Status.UNTESTED, "not tested"))
            continue
        tests = (attempt.to_json(),)
        if attempt.reach is Reach.OPEN:
            checks.append(
                _flow_check(flow, Status.PASSED, attempt.text, None, ("here",), tests=tests)
            )
        elif good:
            checks.append(
                _flow_check(
                    flow,
                    Status.WARNING,
                    f"{attempt.text}; {', '.join(str(h) for h in good)} answered on the same"
                    f" port from this machine, and one of them is enough (the launcher"
                    " fails over)",
                    f"tell the service's operator that {flow.host} does not answer on"
                    f" {flow.ports_text}: nothing to change on {me.label}'s side",
                    ("here",),
                    tests=tests,
                )
            )
        elif all(a is not None and a.reach is Reach.REFUSED for _f, a in found):
            checks.append(
                _flow_check(
                    flow,
                    Status.FAILED,
                    attempt.text,
                    f"every start-live host refuses port {flow.ports_text}: the start-live"
                    " service is down, or the names resolve to the wrong addresses; tell"
                    " the service's operator",
                    ("here",),
                    tests=tests,
                )
            )
        else:
            checks.append(
                _flow_check(
                    flow,
                    Status.FAILED,
                    attempt.text + "; none of the alternatives answered from this machine",
                    f"{_egress_text(plan, flow, here)}; if that is open already, {flow.host}"
                    " is not answering: tell the service's operator",
                    ("here",),
                    tests=tests,
                )
            )
    return checks


def _check_inbound(plan: Plan, flow: Flow, here: Role, facts: Facts) -> Check:
    """A flow from the counterpart to this installation's public port."""
    me, other = plan.party(here), plan.party(flow.source)
    probe, relay = facts.self_probe, facts.relay
    tests = tuple(d.to_json() for d in (relay, probe) if d is not None)
    probe_made = probe is not None and probe.reach is not None
    relay_made = relay is not None and relay.reach is not None and not other.live
    if relay_made:
        assert relay is not None
        return _judge_relay(
            flow, me, other, relay, probe=probe if probe_made else None, facts=facts, tests=tests
        )
    if not probe_made:
        why = "no probe was asked for" if probe is None else probe.unavailable
        return _flow_check(
            flow,
            Status.UNTESTED,
            f"it comes in from {other.label}; the service could not probe {me.label}'s"
            f" public port: {why}",
            _other_side_command(plan, flow, here, facts),
            tests=tests,
        )
    assert probe is not None and probe.reach is not None
    text = _dial_text(probe)
    if probe.reach is Reach.OPEN and probe.nonce_verified is False:
        return _another_machine(flow, me, text, "service", tests)
    if probe.reach is not Reach.OPEN:
        fix = _inbound_fix(me, probe.reach, facts.local)
        if probe.reach is not Reach.REFUSED and probe.from_address:
            fix += (
                f"; if this machine's inbound rules admit only {other.label}, admit the"
                f" service's probe from {probe.from_address} too (`controparte firewall"
                f" {me.code}` writes it)"
            )
        return _flow_check(flow, Status.FAILED, text, fix, ("service",), tests=tests)
    proven = (
        "the agent here answered the nonce: the port reaches this machine"
        if probe.nonce_verified
        else "not proven to reach this machine (run `controparte agent listen` while"
        " MxServer is not installed, to prove it)"
    )
    if other.live:
        return _flow_check(
            flow,
            Status.PASSED,
            f"{text}; {proven}; {other.label} is Live: the cloud lets it out on the Live range",
            None,
            ("service",),
            tests=tests,
        )
    said = relay.unavailable if relay is not None else "no relay was asked for"
    return _flow_check(
        flow,
        Status.UNTESTED,
        f"{text}; {proven}: this side lets it in, but {other.label}'s own egress towards"
        f" it is not tested: its agent could not dial here ({said})",
        _other_side_command(plan, flow, here, facts),
        ("service",),
        tests=tests,
    )


def _another_machine(
    flow: Flow, me: Party, text: str, source: str, tests: tuple[dict[str, object], ...]
) -> Check:
    """A dial to this installation's public port answered by another installation's
    agent: the port forward goes to the wrong machine."""
    return _flow_check(
        flow,
        Status.FAILED,
        f"{text}: public port {me.port} reaches another machine, not this one",
        f"correct the port forward on {me.label}'s router: public {me.port} must go to"
        f" this machine, {_listening_port(me)}",
        (source,),
        tests=tests,
    )


def _judge_relay(
    flow: Flow,
    me: Party,
    other: Party,
    relay: Dial,
    *,
    probe: Dial | None,
    facts: Facts,
    tests: tuple[dict[str, object], ...],
) -> Check:
    """A flow towards here, dialled by the counterpart's own agent (the relay)."""
    assert relay.reach is not None
    text = _dial_text(relay).replace("the counterpart's agent", f"{other.label}'s agent", 1)
    if relay.reach is Reach.OPEN:
        if relay.nonce_verified is False:
            return _another_machine(flow, me, text, "counterpart-agent", tests)
        reason = text
        if probe is not None and probe.reach is not Reach.OPEN:
            source = f" from {probe.from_address}" if probe.from_address else ""
            reason += (
                f"; the service's probe{source} was not let in ({_dial_text(probe)}): this"
                f" machine's inbound rules admit {other.label} but not the probe. Nothing"
                f" to fix for the feature; to let the probe in as well, admit{source} on"
                f" {me.private_port or me.port} (`controparte firewall {me.code}` writes it)"
            )
        return _flow_check(flow, Status.PASSED, reason, None, ("counterpart-agent",), tests=tests)
    if probe is not None and probe.reach is Reach.OPEN:
        rule = next(
            (r for r in flow.rules if r.side is flow.source and r.action is Action.EGRESS), None
        )
        what = (
            egress_fix(rule, other)
            if rule is not None
            else f"let {other.label}'s connections out on tcp {flow.ports_text}"
        )
        return _flow_check(
            flow,
            Status.FAILED,
            f"{text}; {_dial_text(probe)}: this side lets it in, {other.label} cannot get out",
            f"on {other.label}'s side: {what}",
            ("counterpart-agent", "service"),
            tests=tests,
        )
    reach = probe.reach if probe is not None and probe.reach is not None else relay.reach
    reason = text + ("" if probe is None else f"; {_dial_text(probe)}")
    return _flow_check(
        flow,
        Status.FAILED,
        reason,
        _inbound_fix(me, reach, facts.local),
        ("counterpart-agent", "service") if probe is not None else ("counterpart-agent",),
        tests=tests,
    )


def _flow_check(
    flow: Flow,
    status: Status,
    reason: str,
    fix: str | None = None,
    tested_from: tuple[str, ...] = (),
    *,
    tests: tuple[dict[str, object], ...] = (),
) -> Check:
    return Check(flow.id, flow.description, status, reason, fix, tested_from, tests, flow)


def _check_flow(
    plan: Plan, flow: Flow, here: Role, facts: Facts, *, machine: MachineRole, why: str
) -> Check:
    """The verdict on one flow that is not part of an alternatives group."""
    if flow.blocked:
        return _flow_check(
            flow, Status.FAILED, f"blocked by the plan: {flow.blocked}", flow.fix, ("plan",)
        )
    if flow.source is here and not _runs_here(flow, machine):
        where = "an iDesk client" if flow.origin is Initiator.CLIENTS else "the server"
        this = "a client" if machine is MachineRole.CLIENT else "the server"
        return _flow_check(
            flow,
            Status.UNTESTED,
            f"it leaves from {where} of {plan.party(here).label}, and this machine is"
            f" {this} ({why})",
            _other_side_command(plan, flow, here, facts),
        )
    if flow.source is here:
        return _check_outbound(plan, flow, here, facts)
    if flow.destination is here and flow.host is None:
        return _check_inbound(plan, flow, here, facts)
    return _flow_check(
        flow,
        Status.UNTESTED,
        f"it leaves from {plan.party(flow.source).label}: only its side can test it",
        _other_side_command(plan, flow, here, facts),
    )


def diagnose(
    plan: Plan,
    here: Role,
    facts: Facts,
    *,
    machine: MachineRole = MachineRole.SERVER,
    machine_why: str = "",
    notes: Iterable[str] = (),
) -> Diagnosis:
    """Judge `plan` from `here`'s machine (of role `machine`) on `facts`."""
    other = plan.party(here.other)
    groups: dict[str, list[Flow]] = {}
    for flow in plan.flows:
        if flow.any_of and flow.source is here and flow.host is not None and not flow.blocked:
            groups.setdefault(flow.any_of, []).append(flow)
    checks: list[Check] = []
    for flow in plan.flows:
        group = groups.get(flow.any_of or "")
        if group is not None and not flow.blocked and _runs_here(flow, machine):
            if flow is group[0]:
                checks.extend(_check_alternatives(plan, group, here, facts))
            continue
        checks.append(_check_flow(plan, flow, here, facts, machine=machine, why=machine_why))
    towards_failed = any(
        c.status is Status.FAILED
        and c.flow is not None
        and c.flow.destination is here.other
        and c.flow.host is None
        for c in checks
    )
    steps = [
        step
        for step in (
            _record_step(other, facts.record, towards_failed, mine=False, server=facts.server),
        )
        if step is not None
    ]
    if facts.own_record is not None and facts.own_record.stale:
        towards_me = any(
            c.status is Status.FAILED and c.flow is not None and c.flow.destination is here
            for c in checks
        )
        mine = _record_step(
            plan.party(here), facts.own_record, towards_me, mine=True, server=facts.server
        )
        steps += [mine] if mine is not None else []
    dns = _dns_step(other, facts.dns)
    if dns is not None:
        steps.append(dns)
    broker = _broker_step(plan.party(here), other, facts.broker)
    if broker is not None:
        steps.append(broker)
    notes = tuple(plan.notes) + tuple(notes)
    return Diagnosis(plan, here, machine, machine_why, tuple(steps), tuple(checks), notes)


# -- output ---------------------------------------------------------------------------------


def _check_dict(check: Check) -> dict[str, object]:
    flow = check.flow
    return {
        "id": check.id,
        "title": check.title,
        "status": check.status.value,
        "reason": check.reason,
        "fix": check.fix,
        "tested_from": list(check.tested_from),
        "tests": list(check.tests),
        **(
            {}
            if flow is None
            else {
                "description": flow.description,
                "direction": flow.direction.value,
                "origin": flow.origin.value,
                "source": flow.source.value,
                "destination": flow.host or flow.destination.value,
                "ports": flow.ports_text,
                "any_of": flow.any_of,
            }
        ),
    }


def diagnosis_dict(diagnosis: Diagnosis) -> dict[str, object]:
    """One diagnosis as JSON (schema `controparte.doctor/2`, see docs)."""
    plan = diagnosis.plan
    first = diagnosis.first_to_fix
    return {
        "feature": {"id": plan.feature.id, "name": plan.feature.name},
        "here": diagnosis.here.value,
        "machine": {"role": diagnosis.machine.value, "why": diagnosis.machine_why},
        "caller": party_dict(plan.caller),
        "callee": party_dict(plan.callee),
        "ok": diagnosis.ok,
        "exit_code": diagnosis.exit_code,
        "first": None if first is None else first.id,
        "steps": [_check_dict(c) for c in diagnosis.steps],
        "flows": [_check_dict(c) for c in diagnosis.checks],
        "notes": list(diagnosis.notes),
    }


def report_dict(diagnoses: Iterable[Diagnosis]) -> dict[str, object]:
    """Every diagnosis of one doctor run: `{"schema", "ok", "exit_code", "summary",
    "checks": [...]}`."""
    found = list(diagnoses)
    return {
        "schema": SCHEMA,
        "ok": all(d.ok for d in found),
        "exit_code": exit_code(found),
        "summary": summary_line(found),
        "checks": [diagnosis_dict(d) for d in found],
    }


def results_plans(diagnoses: Iterable[Diagnosis]) -> list[dict[str, object]]:
    """What `doctor --report` sends (`POST /v1/installations/{code}/flow-results`, its
    `plans`): per plan, each flow's id, ports, status and reason (cut to the service's
    bound); the steps (record, DNS) are no flows and are not sent."""
    return [
        {
            "caller": d.plan.caller.code,
            "callee": d.plan.callee.code,
            "feature": d.plan.feature.id,
            "flows": [
                {
                    "id": c.flow.id,
                    "ports": c.flow.ports_text,
                    "status": c.status.value,
                    "reason": c.reason[:MAX_DETAIL],
                }
                for c in d.checks[:MAX_FLOWS]
                if c.flow is not None
            ],
        }
        for d in diagnoses
    ]


def summary_line(diagnoses: Iterable[Diagnosis]) -> str:
    """One line: the counts, and the first thing to fix (or to test elsewhere)."""
    found = list(diagnoses)
    counts = {s: sum(d.count(s) for d in found) for s in Status}
    text = (
        f"{counts[Status.FAILED]} failed, {counts[Status.PASSED]} passed,"
        f" {counts[Status.WARNING]} warning(s), {counts[Status.UNTESTED]} untested"
    )
    for wanted, words in ((Status.FAILED, "first fix"), (Status.UNTESTED, "not tested here")):
        for diagnosis in found:
            first = diagnosis.first_to_fix
            if first is not None and first.status is wanted:
                return f"{text}: {words}: {first.title}: {first.fix or first.reason}"
    return f"{text}: nothing to fix from here"


def _party_line(party: Party) -> str:
    where = ", ".join(party.addresses) or "no address"
    kind = "Live" if party.live else "on-premises"
    port = "no public port" if party.port is None else f"public port {party.port}"
    if party.gateway is not None:
        port = f"gateway {party.gateway} {port}"
    if party.private_port is not None and party.private_port != party.port:
        port += f" -> MxServer's {party.private_port}"
    return f"{party.label} ({party.code}): {kind}, {where}, {port}"


_FROM_WORDS = {
    "here": "this machine",
    "service": "the service",
    "counterpart-agent": "the counterpart's agent",
    "plan": "the plan",
}


def render_text(diagnosis: Diagnosis) -> str:
    """The human form: the two parties, this machine's role, each step's and flow's
    verdict with its evidence and fix, the notes and a count."""
    plan = diagnosis.plan
    me = plan.party(diagnosis.here)
    lines = [
        f"doctor: {plan.feature.id} ({plan.feature.name}), from {me.label} ({me.code}),"
        f" the {diagnosis.here.value}",
        f"  caller {_party_line(plan.caller)}",
        f"  callee {_party_line(plan.callee)}",
        "  this machine: "
        + ("the server" if diagnosis.machine is MachineRole.SERVER else "a client")
        + (f" ({diagnosis.machine_why})" if diagnosis.machine_why else ""),
        "",
    ]
    for check in diagnosis.all_checks:
        lines.append(f"{check.status.value.upper():<9} {check.title}")
        source = ", ".join(_FROM_WORDS.get(s, s) for s in check.tested_from)
        lines.append(f"          {check.reason}" + (f" [tested from {source}]" if source else ""))
        if check.fix:
            label = "fix" if check.status in (Status.FAILED, Status.WARNING) else "test it"
            lines.append(f"          {label}: {check.fix}")
    for note in diagnosis.notes:
        lines.append(f"note: {note}")
    lines.append(summary_line([diagnosis]))
    return "\n".join(lines) + "\n"
