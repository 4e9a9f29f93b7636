"""The JSON bodies of the v1 API (pydantic), which the OpenAPI document describes.

Input models check only shapes and ranges; the rules of the registry (code, label,
addresses) are checked once, by the model, and come back as 422 with the field named.
Output models never carry a secret, except the `token` fields, which are shown once.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from controparte.errors import ValidationError
from controparte.model import Installation, InstallationChange
from controparte.model.flowresult import MAX_DETAIL, MAX_FLOW_ID, MAX_FLOWS, MAX_PLANS
from controparte.service.health import HealthReport, ServedZone
from controparte.service.status import fqdn, is_stale

Port = int


class InstallationCreate(BaseModel):
    """A new installation. `ip` / `ipv6` / `port` may be set now or left to heartbeats."""

    model_config = ConfigDict(extra="forbid")

    code: str = Field(description="Unique, stable code: 1-64 of A-Z a-z 0-9 . _ -")
    label: str = Field(description="DNS label: the installation is <label>.<zone>")
    kind: Literal["onprem", "live"] = "onprem"
    ip: str | None = Field(default=None, description="Public IPv4 address")
    ipv6: str | None = Field(default=None, description="Public IPv6 address")
    port: int | None = Field(
        default=None,
        ge=1,
        le=65535,
        description="Public port; a Live installation without one is given a free one",
    )
    gateway: str | None = Field(
        default=None,
        max_length=63,
        description="A Live installation's gateway (default: the one with most free ports)",
    )


class InstallationPatch(BaseModel):
    """A partial change: a field left out stays as it is; `ip`, `ipv6` or `port` given
    as null is cleared. `label` and `kind` cannot be null."""

    model_config = ConfigDict(extra="forbid")

    label: str | None = None
    kind: Literal["onprem", "live"] | None = None
    ip: str | None = None
    ipv6: str | None = None
    port: int | None = Field(default=None, ge=1, le=65535)

    def to_change(self) -> InstallationChange:
        given = self.model_fields_set
        for name in ("label", "kind"):
            if name in given and getattr(self, name) is None:
                raise ValidationError(name, "cannot be null")

        def optional(name: str) -> str | None:
            if name not in given:
                return None
            value = getattr(self, name)
            return "" if value is None else str(value)

        return InstallationChange(
            label=self.label,
            kind=self.kind,
            ipv4=optional("ip"),
            ipv6=optional("ipv6"),
            port=optional("port"),
        )


class _Published(BaseModel):
    """The fields DNS publishes about an installation, first in every body that
    describes one (`InstallationOut`, `ResolveOut`)."""

    code: str
    label: str
    fqdn: str
    kind: str
    ip: str | None
    ipv6: str | None
    port: int | None


class InstallationOut(_Published):
    """An installation as the registry holds it, with `fqdn` and `stale` added."""

    created: datetime
    updated: datetime
    last_seen: datetime | None
    private_port: int | None
    agent_version: str | None
    gateway: str | None = Field(
        description="The Live gateway the installation is placed on (then ip, ipv6 and port"
        " are the gateway's addresses and the port allocated there)"
    )
    stale: bool

    @classmethod
    def of(cls, inst: Installation, zone: str, stale_after: float) -> InstallationOut:
        return cls(
            code=inst.code,
            label=inst.label,
            fqdn=fqdn(inst, zone),
            kind=inst.kind.value,
            ip=inst.ipv4,
            ipv6=inst.ipv6,
            port=inst.port,
            created=inst.created,
            updated=inst.updated,
            last_seen=inst.last_seen,
            private_port=inst.private_port,
            agent_version=inst.agent_version,
            gateway=inst.gateway,
            stale=is_stale(inst, stale_after),
        )


class InstallationCreated(InstallationOut):
    """The new installation and its token: shown this once, never stored in clear."""

    token: str


class InstallationList(BaseModel):
    installations: list[InstallationOut]
    total: int = Field(description="How many installations the registry holds")
    limit: int | None
    offset: int


class TokenOut(BaseModel):
    """A new token for `code`, replacing the old one: shown this once."""

    code: str
    token: str


class HeartbeatIn(BaseModel):
    """A heartbeat. The public address is never sent: it is where the request comes
    from. Unknown fields are ignored (newer agents may send more)."""

    model_config = ConfigDict(extra="ignore")

    port: Port = Field(ge=1, le=65535, description="Public port (after NAT)")
    private_port: Port | None = Field(
        default=None, ge=1, le=65535, description="Port MxServer listens on behind NAT"
    )
    version: str | None = Field(
        default=None, max_length=64, pattern=r"^[\x21-\x7e]+$", description="Agent version"
    )


class HeartbeatOut(BaseModel):
    """How the world sees the installation after the heartbeat."""

    code: str
    label: str
    fqdn: str
    ip: str | None = Field(description="The IPv4 address the heartbeat came from, if IPv4")
    ipv6: str | None = Field(description="The IPv6 address the heartbeat came from, if IPv6")
    port: int | None = Field(description="The public port now published")
    changed: bool = Field(description="Did what DNS serves change?")
    serial: int = Field(description="The zone serial after the heartbeat")
    stale_after: float = Field(description="Seconds without a heartbeat before 'stale'")
    heartbeat_interval: float = Field(description="Seconds between heartbeats, advised")


class ResolveOut(_Published):
    """What DNS publishes about one installation (no credentials, no private port)."""

    last_seen: datetime | None
    stale: bool


class ProbeOut(BaseModel):
    """What the service found when it dialled the installation's registered public
    address and port from outside (see `service/probe.py` and `model/probe.py`)."""

    result: Literal["open", "refused", "timeout", "unreachable"] = Field(
        description="open: connected; refused: a TCP reset (nothing listens, no port"
        " forward); timeout: no answer (a firewall drops it); unreachable: rejected on"
        " the way (ICMP, no route)"
    )
    address: str = Field(
        description="The registered address dialled (the request's own; for a"
        " counterpart, one of its registered addresses)"
    )
    port: int = Field(description="The registered public port dialled")
    elapsed_ms: int = Field(description="Milliseconds until connected, or until it failed")
    nonce_verified: bool | None = Field(
        description="true: a controparte agent answered the nonce as this installation;"
        " false: an agent answered, but not as this installation; null: nothing answered"
        " the nonce (MxServer or another service), or not connected"
    )
    agent_code: str | None = Field(
        default=None, description="The installation code the answering agent claimed"
    )
    detail: str = Field(description="What the result means, in words")
    source: str | None = Field(
        default=None,
        description="The address the connection left from: the setting probe_sources'"
        " address of the target's family (the service's public address behind NAT),"
        " else the local address the service's host dials from; for a relay, the"
        " address the counterpart agent's report came from; null when unknown",
    )


class ProbeCounterpartIn(BaseModel):
    """Which counterpart to probe: never an address, only an installation linked to the
    requester, which the service dials at its registered address(es) and port."""

    model_config = ConfigDict(extra="forbid")

    counterpart: str = Field(
        min_length=1, max_length=253, description="Code, label or <label>.<zone>"
    )


class ProbeCounterpartOut(BaseModel):
    """The service's connections to a counterpart's registered public port: one per
    registered address (IPv4, then IPv6), connect only (`nonce_verified` null)."""

    reports: list[ProbeOut]


class CounterpartLinkOut(BaseModel):
    """A link between the installation and this counterpart: `a` calls `b`."""

    feature: str
    a: str
    b: str


class CounterpartOut(_Published):
    """An installation linked to the one asking, as the registry holds it: what DNS
    publishes, and what the doctor needs besides (`service/counterparts.py`)."""

    private_port: int | None = Field(description="The port MxServer listens on behind NAT")
    gateway: str | None = Field(
        None,
        description="The Live gateway the Live pool placed it on: ip, ipv6 and port are"
        " the gateway's addresses and the port allocated there (null: none)",
    )
    last_seen: datetime | None = Field(description="The last heartbeat, null: never")
    stale: bool = Field(description="Not seen for longer than stale_after")
    stale_after: float = Field(description="Seconds without a heartbeat before 'stale'")
    updated: datetime = Field(description="When the record last changed")
    agent_version: str | None
    links: list[CounterpartLinkOut]


class CounterpartsOut(BaseModel):
    """Every installation linked to `code`, either direction, by code."""

    code: str
    counterparts: list[CounterpartOut]


class RelayCreate(BaseModel):
    """Ask a linked counterpart's agent to dial this installation's registered public
    address and port (the relay: `service/relay.py`)."""

    model_config = ConfigDict(extra="forbid")

    counterpart: str = Field(
        description="The linked installation whose agent dials: code, label or <label>.<zone>"
    )
    family: Literal[4, 6] | None = Field(
        default=None,
        description="Dial the registered IPv4 (4) or IPv6 (6) address; default: IPv4 when"
        " one is registered, else IPv6",
    )


class RelayCreated(BaseModel):
    """A relay request taken: read its outcome at `.../relay/{id}` before `expires`."""

    id: str = Field(description="The request's id (32 hex digits)")
    expires: datetime = Field(description="When the request lapses unless reported")
    agent: str = Field(description="The code of the installation whose agent dials")
    address: str = Field(description="The registered address it dials (this installation's)")
    port: int = Field(description="The registered public port it dials")


class RelayOut(BaseModel):
    """A relay request's state, and the dial report once the agent sent it."""

    state: Literal["pending", "done", "expired"] = Field(
        description="pending: the agent has not reported yet; done: see report; expired:"
        " no report came in time"
    )
    report: ProbeOut | None = Field(
        description="The dial, judged against this request's token (null unless done)"
    )


class RelayTask(BaseModel):
    """A dial an agent is asked to make: connect to `address`:`port`, send
    `CONTROPARTE-PROBE <nonce>`, read one line, report."""

    id: str
    address: str = Field(description="An IP address: the requester's registered one")
    port: int
    nonce: str = Field(description="32 hex digits, for the probe line")
    requester: str = Field(description="The code of the installation that asked")
    expires: datetime


class RelayTasks(BaseModel):
    """The relay requests handed to an agent (claimed by this answer)."""

    requests: list[RelayTask]


class RelayDone(BaseModel):
    """An agent's report of one dial."""

    model_config = ConfigDict(extra="forbid")

    result: Literal["open", "refused", "timeout", "unreachable"] = Field(
        description="As the probe's `result`"
    )
    elapsed_ms: int = Field(ge=0, le=600_000, description="Milliseconds until connected or failed")
    line: str = Field(
        default="",
        max_length=256,
        description="The one line the dialled port answered (empty: nothing, or not open)",
    )


class DoctorFlowIn(BaseModel):
    """One flow of a doctor run: its id and ports as the agent's plan had them, and the
    check's verdict."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(min_length=1, max_length=MAX_FLOW_ID, description="The plan's flow id")
    ports: str = Field(
        min_length=1, max_length=11, description="The flow's port(s) tested: N, LOW-HIGH or ?"
    )
    status: Literal["passed", "warning", "failed", "untested"] = Field(
        description="The check's status (a warning is recorded as passed)"
    )
    reason: str = Field(default="", max_length=MAX_DETAIL, description="What was seen, in words")


class DoctorPlanIn(BaseModel):
    """The flows of one plan (caller, callee, feature) a doctor run tested; the
    reporting installation must be the caller or the callee."""

    model_config = ConfigDict(extra="forbid")

    caller: str = Field(min_length=1, max_length=64, description="The caller's code")
    callee: str = Field(min_length=1, max_length=64, description="The callee's code")
    feature: str = Field(min_length=1, max_length=64, description="The feature id")
    flows: list[DoctorFlowIn] = Field(max_length=MAX_FLOWS)


class DoctorReportIn(BaseModel):
    """What a `controparte doctor --report` run found, plan by plan."""

    model_config = ConfigDict(extra="forbid")

    plans: list[DoctorPlanIn] = Field(max_length=MAX_PLANS)


class SkippedOut(BaseModel):
    """A part of the report not recorded (`flow` null: the whole plan), and why."""

    caller: str
    callee: str
    feature: str
    flow: str | None
    why: str


class DoctorReportOut(BaseModel):
    """How many flow results were recorded, and what was not."""

    recorded: int
    skipped: list[SkippedOut]


class FlowResultOut(BaseModel):
    """One result of a flow's test: when, by what, on whose behalf, and what was seen."""

    flow: str = Field(description="The plan's flow id")
    ports: str = Field(description="The port(s) tested")
    outcome: Literal["passed", "failed", "untested"]
    at: datetime
    source: Literal["probe", "counterpart-probe", "relay", "doctor", "dashboard"] = Field(
        description="probe: the service's probe asked by the destination itself;"
        " counterpart-probe: asked by a linked counterpart; relay: the counterpart's"
        " agent dialled; doctor: a doctor run reported by the agent of `reporter`;"
        " dashboard: the service's probe asked from the dashboard by `account`"
    )
    reporter: str = Field(
        description="The installation that asked or reported (the one probed, for dashboard)"
    )
    detail: str
    account: str | None = Field(
        None, description="The dashboard account that asked (dashboard only)"
    )


class FlowStateOut(BaseModel):
    """A flow of the plan as it stands now, and the result it is shown with."""

    id: str
    description: str
    direction: Literal["outbound", "return"]
    ports: str
    outcome: Literal["passed", "failed", "untested", "unknown"] = Field(
        description="The newest passed or failed result, else the newest untested one;"
        " unknown: none recorded on these ports"
    )
    result: FlowResultOut | None


class FlowResultsOut(BaseModel):
    """The flows of a plan with what was last seen of each, and every result kept of
    the plan (newest first; each flow keeps its newest 20)."""

    caller: str
    callee: str
    feature: str
    flows: list[FlowStateOut]
    history: list[FlowResultOut]


class HistoryEntry(BaseModel):
    at: str
    action: str = Field(description="add, update, remove, token, tsig-key, link or unlink")
    actor: str
    via: str = Field(description="cli, api, heartbeat, dyndns2, rfc2136, import, ...")
    source: str | None = Field(description="Client address, when the change came over a network")
    old: dict[str, Any] | None
    new: dict[str, Any] | None


class HistoryOut(BaseModel):
    code: str
    history: list[HistoryEntry]


class DatabaseOut(BaseModel):
    """The database as this process last saw it (`service/health.py`)."""

    state: Literal["reachable", "unreachable"]
    since: datetime = Field(description="When it became so, as this process saw it")
    detail: str | None = Field(default=None, description="Why it cannot be reached")


class ZoneOut(BaseModel):
    """The zone DNS serves from this process."""

    serial: int = Field(description="The SOA serial served")
    age: float = Field(
        description="Seconds since the zone served was last found to be the newest in the"
        " database: it grows while the database cannot be read, DNS answering meanwhile"
    )


class Health(BaseModel):
    """This process's health: `ok` (200) while the database answers, else
    `unavailable` (503, `HealthDown`)."""

    status: Literal["ok", "unavailable"]
    serial: int | None = Field(description="The zone serial in the database, as last read")
    installations: int | None = Field(description="Installations in the registry, as last read")
    database: DatabaseOut
    zone: ZoneOut | None = Field(
        default=None, description="The zone DNS serves, from the process that serves it"
    )

    @classmethod
    def of(cls, report: HealthReport, zone: ServedZone | None) -> Health:
        database = report.database
        return cls(
            status="ok" if database.reachable else "unavailable",
            serial=report.serial,
            installations=report.installations,
            database=DatabaseOut(
                state="reachable" if database.reachable else "unreachable",
                since=database.since,
                detail=database.detail,
            ),
            zone=None if zone is None else ZoneOut(serial=zone.serial, age=round(zone.age, 3)),
        )


class HealthDown(Health):
    """503: `Health`, with the fields of every error answer (`ErrorOut`)."""

    error: str
    detail: str


class ErrorOut(BaseModel):
    """Every error of the API: `error` is the kind, `detail` a message that stands alone."""

    error: str
    detail: str


# -- counterpart links and plans ----------------------------------------------------------

Role = Literal["caller", "callee"]
FlowOrigin = Literal["server", "clients"]


class LinkCreate(BaseModel):
    """Link caller `a` to callee `b` (codes or labels) for each of `features`."""

    model_config = ConfigDict(extra="forbid")

    a: str = Field(description="The caller: code or label (e.g. the company)")
    b: str = Field(description="The callee: code or label (e.g. its accountant's studio)")
    features: list[str] = Field(min_length=1, description="Feature ids of the catalog")


class LinkOut(BaseModel):
    """A link: `a` calls `b` for `feature` (Real Time runs both ways anyway)."""

    a: str
    b: str
    feature: str
    created: datetime


class LinkAdded(LinkOut):
    new: bool = Field(description="Made by this request (false: it was there already)")


class LinksAdded(BaseModel):
    links: list[LinkAdded]


class LinkList(BaseModel):
    links: list[LinkOut]


class PortsOut(BaseModel):
    low: int
    high: int


class FeatureOut(BaseModel):
    id: str
    name: str
    topology: Literal["server-async", "server-both", "clients"]


class PartyOut(BaseModel):
    """What the plan knew of one end."""

    code: str
    label: str
    live: bool
    addresses: list[str]
    port: int | None
    private_port: int | None
    gateway: str | None = Field(
        None, description="The Live gateway the Live pool placed it on (null: none)"
    )


class FlowSourceOut(BaseModel):
    role: Role
    origin: FlowOrigin = Field(description="server, or every iDesk client (remote access)")
    code: str
    label: str


class FlowDestinationOut(BaseModel):
    role: Role = Field(description="The party the flow goes to (or, with `host`, leads to)")
    code: str
    label: str
    host: str | None = Field(description="A destination known by name (a start-live host)")
    addresses: list[str]
    ports: PortsOut | None = Field(
        description="The public port (a Live party's, on its gateway); the Live range when"
        " a Live party has no port in it"
    )


class PeerOut(BaseModel):
    name: str
    addresses: list[str] = Field(description="Empty: the peer's address is unknown (any)")
    hosts: list[str] = Field(description="Peers known only by name")


class RuleOut(BaseModel):
    """One thing one side's network must allow, for TCP."""

    side: Role
    action: Literal["egress", "inbound", "port-forward"]
    origin: FlowOrigin
    peer: PeerOut
    ports: PortsOut
    to_port: int | None = Field(description="port-forward: MxServer's listening port")
    why: str


class FlowOut(BaseModel):
    """One TCP connection that must be possible."""

    id: str
    direction: Literal["outbound", "return"]
    description: str
    source: FlowSourceOut
    destination: FlowDestinationOut
    rules: list[RuleOut]
    blocked: str | None = Field(description="Why the flow cannot happen as registered")
    fix: str | None
    any_of: str | None = Field(
        None,
        description="The group of alternatives (flows with the same value): possible when"
        " one of them is",
    )


class PlanOut(BaseModel):
    """A plan in the schema `controparte.plan/1` (docs/connectivity.md)."""

    model_config = ConfigDict(populate_by_name=True)

    schema_id: Literal["controparte.plan/1"] = Field(alias="schema")
    feature: FeatureOut
    caller: PartyOut
    callee: PartyOut
    side: Role | None = Field(description="When set, the flows list only this side's rules")
    blocked: bool = Field(description="True when any flow is blocked")
    flows: list[FlowOut]
    notes: list[str]
