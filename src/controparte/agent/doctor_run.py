"""`controparte doctor`: gather the facts, run the tests, hand both to the pure judge
(`doctor.py`). Run on the installation's own machine (its MxServer host; for remote
access, a client machine).

Where the facts come from:
- this installation (`--from`): `GET /v1/installations/{code}` with its token (its
  registered addresses, public and private port, kind, last heartbeat); without a
  token, the public view `GET /v1/resolve/{code}`;
- the counterparts: `GET /v1/installations/{code}/counterparts` (every linked one, with
  its private port, last heartbeat and the links), narrowed by `--to` and `--feature`;
  a counterpart that is not linked, from its public view `GET /v1/resolve/{name}`;
- DNS, as MxServer finds the counterpart: this machine's resolver, and the zone's name
  servers (or `--dns HOST:PORT`) asked directly (`resolution.py`);
- the plan: the pure planner over those parties, with the feature catalog given.

The tests: this machine's role (a listener on MxServer's port, or `--role`); TCP
connections from here to what DNS answers (all at once, each bounded by `timeout`; a
Live counterpart on its registered port, the one the Live pool allocated on the gateway
whose addresses DNS answers);
when one fails, the service's probe of the counterpart's registered address; the
service's probe of this installation's own public port (once per run); the counterpart
agent's dial of it (the relay); whether MxServer's ports listen on this machine; with
`start_live`, for a Live counterpart (and a token), the start-live brokers asked to
start it, with failover (`startlive.py`), TLS checked against `broker_ca`.
"""

from __future__ import annotations

import ipaddress
import socket
import time
import urllib.parse
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from controparte.agent.doctor import (
    Attempt,
    BrokerFinding,
    Diagnosis,
    DnsFinding,
    Facts,
    MachineRole,
    Record,
    Target,
    checklist_for,
    choose_machine,
    diagnose,
    local_ports,
    wants_counterpart_probe,
)
from controparte.agent.evidence import Dial
from controparte.agent.resolution import (
    ask_servers,
    judge_resolution,
    system_lookup,
    zone_servers,
)
from controparte.agent.service_api import ServiceApi
from controparte.agent.startlive import NoBrokerError, StartLive
from controparte.errors import (
    ControparteError,
    NotFoundError,
    ValidationError,
)
from controparte.model.probe import Reach, classify_error
from controparte.plan.catalog import Catalog
from controparte.plan.planner import Party, Role, plan

CONNECT_TIMEOUT = 3.0
LOCAL_TIMEOUT = 0.5


@dataclass(frozen=True, slots=True)
class DoctorConfig:
    """One doctor run. `to` None: every linked counterpart (its features, or only
    `feature`). `token` None: no probe, and the public view of this installation."""

    code: str
    server: str
    catalog: Catalog
    token: str | None = None
    to: str | None = None
    feature: str | None = None
    dns: tuple[str, int] | None = None
    """(address, port) of the DNS server to ask; None: this machine's resolver."""
    timeout: float = CONNECT_TIMEOUT
    role: MachineRole | None = None
    """What this machine is (`--role`); None: found out (`doctor.choose_machine`)."""
    start_live: bool = False
    """Ask the start-live brokers to start each Live counterpart (`--start-live`)."""
    broker_ca: Path | None = None
    """The CA file the start-live brokers' certificates are checked against
    (`--broker-ca`); None: the system's trust store."""

    def __post_init__(self) -> None:
        if not self.server.startswith(("http://", "https://")):
            raise ValidationError("server", f"{self.server!r} is not an http:// or https:// URL")
        if not 0.1 <= self.timeout <= 60:
            raise ValidationError("timeout", "must be 0.1-60 seconds")


@dataclass(frozen=True, slots=True)
class Counterpart:
    """One check to make: the counterpart's name, the feature, and which role this
    installation plays in it."""

    name: str
    feature: str
    here: Role


# -- DNS, as MxServer finds the counterpart --------------------------------------------------


def resolve_counterpart(
    fqdn: str, other: Party, server: tuple[str, int] | None, *, timeout: float
) -> DnsFinding:
    """How MxServer on this machine would find the counterpart by name (the system's
    resolver), what the zone's name servers (or `server`) say, judged against the
    registry (`resolution.judge_resolution`)."""
    zone = fqdn[len(other.label) + 1 :] if fqdn.startswith(other.label + ".") else fqdn
    system = system_lookup(fqdn, timeout)
    servers = ask_servers(zone_servers(zone, timeout, override=server), fqdn, timeout)
    verdict = judge_resolution(
        fqdn,
        zone,
        system,
        servers,
        registry_addresses=other.addresses,
        registry_port=other.port,
    )
    tests: tuple[dict[str, object], ...] = tuple(
        {"kind": "dns", "from": "here", "detail": line} for line in verdict.evidence
    )
    return DnsFinding(
        verdict.status, verdict.reason, verdict.fix, verdict.addresses, verdict.port, tests
    )


# -- the parties -------------------------------------------------------------------------------


def _opt_int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _opt_str(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def party_of(view: Mapping[str, object]) -> Party:
    """An installation as the service shows it (its own record, a counterpart's, or the
    public view, which has no private port and no gateway)."""
    addresses = tuple(a for a in (_opt_str(view.get("ip")), _opt_str(view.get("ipv6"))) if a)
    return Party(
        str(view.get("code")),
        str(view.get("label")),
        view.get("kind") == "live",
        addresses,
        _opt_int(view.get("port")),
        _opt_int(view.get("private_port")),
        _opt_str(view.get("gateway")),
    )


def record_of(view: Mapping[str, object], now: datetime) -> Record | None:
    """When the registry last saw the installation, from its view (None: not said)."""
    if "stale" not in view:
        return None
    seen = _opt_str(view.get("last_seen"))
    after = view.get("stale_after")
    return Record(
        None if seen is None else datetime.fromisoformat(seen),
        view.get("stale") is True,
        float(after) if isinstance(after, (int, float)) else None,
        now,
    )


# -- the tests -----------------------------------------------------------------------------------


def connect(target: Target, timeout: float) -> Attempt:
    """One TCP connection to `target` (each address a name resolves to, in turn, until
    one accepts), closed at once; never raises."""
    start = time.monotonic()
    try:
        infos = socket.getaddrinfo(target.host, target.port, type=socket.SOCK_STREAM)
    except OSError as exc:
        return Attempt(target, Reach.UNREACHABLE, 0, None, f"cannot resolve {target.host}: {exc}")
    last: OSError | None = None
    address: str | None = None
    for family, kind, proto, _name, sockaddr in infos:
        address = str(sockaddr[0])
        sock = socket.socket(family, kind, proto)
        sock.settimeout(timeout)
        try:
            sock.connect(sockaddr)
        except OSError as exc:
            last = exc
            continue
        finally:
            sock.close()
        elapsed = round((time.monotonic() - start) * 1000)
        return Attempt(target, Reach.OPEN, elapsed, address)
    elapsed = round((time.monotonic() - start) * 1000)
    assert last is not None
    reach = classify_error(last)
    words = "timed out" if reach is Reach.TIMEOUT else (last.strerror or str(last))
    return Attempt(target, reach, elapsed, address, words)


def _facing_address(server: str) -> str | None:
    """The local address this machine uses towards the service (no packet is sent)."""
    host = urllib.parse.urlsplit(server).hostname
    if host is None:
        return None
    try:
        family, _kind, _proto, _name, sockaddr = socket.getaddrinfo(host, 80)[0]
        with socket.socket(family, socket.SOCK_DGRAM) as sock:
            sock.connect(sockaddr)
            return str(sock.getsockname()[0])
    except OSError:
        return None


def local_listening(ports: Iterable[int], addresses: Iterable[str]) -> dict[int, bool]:
    """For each port: True when a connection to it on one of `addresses` (of this
    machine) is accepted, False when none is and at least one is refused (an address
    this machine cannot use, such as ::1 without IPv6, does not count). A port for
    which the answer is unclear (a timeout: a local firewall) is left out."""
    found: dict[int, bool] = {}
    hosts = list(dict.fromkeys(addresses))
    for port in ports:
        outcomes = {connect(Target(host, port), LOCAL_TIMEOUT).reach for host in hosts}
        if Reach.OPEN in outcomes:
            found[port] = True
        elif Reach.REFUSED in outcomes and Reach.TIMEOUT not in outcomes:
            found[port] = False
    return found


@dataclass
class _Run:
    """Test results shared by the checks of one run (one probe of this installation,
    one look at each local port, one connection per target)."""

    config: DoctorConfig
    api: ServiceApi
    attempts: dict[Target, Attempt] = field(default_factory=dict)
    probe: Dial | None = None
    local: dict[int, bool] = field(default_factory=dict)
    looked: set[int] = field(default_factory=set)

    def connect_all(self, targets: Iterable[Target]) -> None:
        todo = [t for t in dict.fromkeys(targets) if t not in self.attempts]
        if not todo:
            return
        with ThreadPoolExecutor(max_workers=min(16, len(todo))) as pool:
            for attempt in pool.map(lambda t: connect(t, self.config.timeout), todo):
                self.attempts[attempt.target] = attempt

    def ask_probe(self) -> Dial:
        if self.probe is None:
            self.probe = self.api.probe(self.config.code)
        return self.probe

    def look_local(self, ports: Iterable[int]) -> None:
        todo = [p for p in ports if p not in self.looked]
        if not todo:
            return
        hosts = ["127.0.0.1", "::1"]
        facing = _facing_address(self.config.server)
        if facing is not None and not ipaddress.ip_address(facing).is_unspecified:
            hosts.append(facing)
        self.local.update(local_listening(todo, hosts))
        self.looked.update(todo)


@dataclass(frozen=True, slots=True)
class _Wanted:
    """One check to make: the counterpart's view, the feature, this installation's role."""

    view: Mapping[str, object]
    feature: str
    here: Role


def _counterparts(config: DoctorConfig, api: ServiceApi, me: Party) -> list[_Wanted]:
    """What to check: the links of this installation (the service's view of each
    counterpart, private port and last heartbeat included), narrowed by `--to` and
    `--feature`; `--to` with `--feature` and no such link: the counterpart's public
    view, as the caller."""
    linked = api.counterparts(me.code) if config.token is not None else []
    target = None if config.to is None else api.resolve(config.to)
    wanted: list[_Wanted] = []
    for view in linked:
        code = str(view.get("code"))
        if target is not None and code.lower() != str(target.get("code")).lower():
            continue
        links = view.get("links")
        for link in links if isinstance(links, list) else []:
            if not isinstance(link, dict):
                continue
            feature = str(link.get("feature"))
            if config.feature is not None and feature != config.feature:
                continue
            here = Role.CALLER if str(link.get("a")).lower() == me.code.lower() else Role.CALLEE
            wanted.append(_Wanted(view, feature, here))
    if not wanted and target is not None and config.feature is not None:
        wanted.append(_Wanted(target, config.feature, Role.CALLER))
    if not wanted:
        about = f" with {config.to}" if config.to is not None else ""
        raise NotFoundError(
            f"installation {me.code} has no links{about} to check: name the counterpart"
            " with --to and the feature with --feature"
        )
    return wanted


def _command(config: DoctorConfig) -> str:
    """How to run doctor on the other side, with this run's server."""
    return f"controparte doctor --server {config.server} --token-file ITS-TOKEN-FILE"


def run_doctor(config: DoctorConfig) -> list[Diagnosis]:
    """Check every counterpart of this run; one diagnosis each, in order. Raises
    `ControparteError` when the facts cannot be had (the service unreachable, an
    unknown installation or feature)."""
    api = ServiceApi(config.server, config.token)
    try:
        own = api.installation(config.code)
        me = party_of(own)
        run = _Run(config, api)
        run.look_local(local_ports(me))
        diagnoses = []
        for wanted in _counterparts(config, api, me):
            diagnoses.append(_check_one(config, run, me, own, wanted))
        return diagnoses
    finally:
        api.close()


def ask_brokers(config: DoctorConfig, me: Party, live: Party) -> BrokerFinding:
    """Ask the catalog's start-live brokers, with failover, to start `live` for `me`
    (with `me`'s token); what they said. A ValidationError when the CA file
    (`broker_ca`) cannot be used."""
    assert config.token is not None
    hosts, port = config.catalog.live.start_live_hosts, config.catalog.live.start_live_port
    try:
        with StartLive(
            hosts, port=port, ca=config.broker_ca, attempt_timeout=config.timeout
        ) as client:
            started = client.start(live.label, config.token, caller=me.code)
    except NoBrokerError as exc:
        return BrokerFinding(None, skipped=exc.skipped)
    except ControparteError as exc:  # the registry's answer, the same from every broker
        return BrokerFinding(None, refused=str(exc))
    except OSError as exc:  # the CA file: not PEM, unreadable
        raise ValidationError("broker_ca", f"cannot use {config.broker_ca}: {exc}") from None
    return BrokerFinding(
        started.broker,
        started.gateway,
        started.port,
        started.ready,
        started.detail,
        started.skipped,
    )


def _check_one(
    config: DoctorConfig, run: _Run, me: Party, own: Mapping[str, object], wanted: _Wanted
) -> Diagnosis:
    feature = config.catalog.feature(wanted.feature)
    other = party_of(wanted.view)
    caller, callee = (me, other) if wanted.here is Role.CALLER else (other, me)
    the_plan = plan(caller, callee, feature, config.catalog)
    machine, why = choose_machine(the_plan, wanted.here, run.local, config.role)
    now = datetime.now(UTC)
    found = resolve_counterpart(
        str(wanted.view.get("fqdn")), other, config.dns, timeout=config.timeout
    )
    needed = checklist_for(the_plan, wanted.here, machine, found)
    broker = (
        ask_brokers(config, me, other)
        if config.start_live and other.live and not me.live and config.token is not None
        else None
    )
    run.connect_all(needed.connects)
    counterpart_probe = None
    if wants_counterpart_probe(the_plan, wanted.here, run.attempts, found) and config.token:
        counterpart_probe = run.api.probe_counterpart(me.code, other.code)
    with ThreadPoolExecutor(max_workers=2) as pool:
        probe = pool.submit(run.ask_probe) if needed.probe else None
        relay = (
            pool.submit(run.api.relay, me.code, other.code)
            if needed.relay and config.token is not None
            else None
        )
        facts = Facts(
            attempts=dict(run.attempts),
            self_probe=None if probe is None else probe.result(),
            relay=None if relay is None else relay.result(),
            counterpart_probe=counterpart_probe,
            local=dict(run.local),
            record=record_of(wanted.view, now),
            own_record=record_of(own, now),
            dns=found,
            broker=broker,
            command=_command(config),
            server=config.server,
        )
    return diagnose(the_plan, wanted.here, facts, machine=machine, machine_why=why)


def _endpoint(host: str, port: int) -> str:
    """`host:port`, with an IPv6 address in brackets."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
