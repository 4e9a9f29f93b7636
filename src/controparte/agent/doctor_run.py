"""`controparte doctor`: gather the facts, run the tests, hand both to the pure judge
(`doctor.py`). Run on the installation's own machine (its MxServer host; for remote
access, a client machine).

Where the facts come from:
- this installation (`--from`): `GET /v1/installations/{code}` with its token (the
  service's view: registered addresses, public and private port, kind); without a
  token, the public view `GET /v1/resolve/{code}`;
- a counterpart: its code and kind from `GET /v1/resolve/{name}`; its addresses and
  public port from DNS, as MxServer finds them (A, AAAA and the `_mxserver._tcp` SRV of
  its name), asked of `--dns HOST:PORT`, else of this machine's resolver; if DNS gives
  nothing, the registry's view, with a note;
- the plan: the pure planner over those parties, with the feature catalog given;
- without `--to`: the links of this installation, `GET /v1/links?code=CODE`.

The tests: TCP connections from here (all at once, each bounded by `timeout`); the
service's probe of this installation's own public port (needs the token; asked once per
run, retried once after a short Retry-After); and whether MxServer's ports have a
listener on this machine (loopback and the address that faces the service).
"""

from __future__ import annotations

import ipaddress
import socket
import time
import urllib.parse
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import dns.exception
import dns.name
import dns.rdatatype
import dns.resolver

from controparte.agent.doctor import (
    Attempt,
    Diagnosis,
    ProbeFinding,
    Target,
    checklist_for,
    diagnose,
)
from controparte.agent.service_api import ServiceApi
from controparte.errors import (
    NotFoundError,
    ValidationError,
)
from controparte.model.probe import Reach, classify_error
from controparte.model.zone import SRV_SERVICE
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


@dataclass(frozen=True, slots=True)
class DnsView:
    ipv4: tuple[str, ...] = ()
    ipv6: tuple[str, ...] = ()
    port: int | None = None
    problem: str | None = None


def dns_view(fqdn: str, server: tuple[str, int] | None, timeout: float = 5.0) -> DnsView:
    """The A, AAAA and `_mxserver._tcp` SRV records of `fqdn`, from `server` or this
    machine's resolver; `problem` says what went wrong instead of raising."""
    try:
        resolver = dns.resolver.Resolver(configure=server is None)
        if server is not None:
            resolver.nameservers = [server[0]]
            resolver.port = server[1]
        resolver.lifetime = timeout
        name = dns.name.from_text(fqdn)
        found: dict[str, list[str]] = {}
        for rdtype in ("A", "AAAA"):
            answer = resolver.resolve(name, rdtype, raise_on_no_answer=False)
            found[rdtype] = sorted(rd.to_text() for rd in answer.rrset or ())
        srv = resolver.resolve(
            dns.name.from_text(SRV_SERVICE, origin=name), "SRV", raise_on_no_answer=False
        )
    except dns.resolver.NXDOMAIN:
        return DnsView(problem=f"{fqdn} does not exist in DNS (NXDOMAIN)")
    except dns.exception.DNSException as exc:
        via = "" if server is None else f" from {_endpoint(*server)}"
        return DnsView(problem=f"no DNS answer for {fqdn}{via}: {exc}")
    port: int | None = None
    if srv.rrset is not None and srv.rrset.rdtype == dns.rdatatype.SRV:
        first = sorted(srv.rrset, key=lambda rd: (rd.priority, -rd.weight))[0]
        port = int(first.port)
    return DnsView(tuple(found["A"]), tuple(found["AAAA"]), port)


# -- the parties -------------------------------------------------------------------------------


def _opt_int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _opt_str(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def own_party(view: Mapping[str, object]) -> Party:
    """This installation as the service holds it."""
    addresses = tuple(a for a in (_opt_str(view.get("ip")), _opt_str(view.get("ipv6"))) if a)
    return Party(
        str(view.get("code")),
        str(view.get("label")),
        view.get("kind") == "live",
        addresses,
        _opt_int(view.get("port")),
        _opt_int(view.get("private_port")),
    )


def counterpart_party(view: Mapping[str, object], published: DnsView) -> tuple[Party, list[str]]:
    """The counterpart: code and kind from the service, addresses and port from DNS
    (the registry's when DNS has none); notes on what disagrees."""
    notes: list[str] = []
    label = str(view.get("label"))
    registered = tuple(a for a in (_opt_str(view.get("ip")), _opt_str(view.get("ipv6"))) if a)
    registered_port = _opt_int(view.get("port"))
    addresses = published.ipv4 + published.ipv6
    port = published.port
    if published.problem is not None:
        notes.append(f"{published.problem}; the registry's view of {label} is used instead")
        addresses, port = registered, registered_port
    else:
        if set(addresses) != set(registered):
            notes.append(
                f"DNS publishes {', '.join(addresses) or 'no address'} for {label}, the"
                f" registry holds {', '.join(registered) or 'none'}: a cache or a secondary"
                " is behind; the test uses what DNS says"
            )
        if port != registered_port:
            notes.append(
                f"DNS publishes port {port} for {label}, the registry holds"
                f" {registered_port}; the test uses what DNS says"
            )
    party = Party(str(view.get("code")), label, view.get("kind") == "live", addresses, port, None)
    return party, notes


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
    """Test results shared by the checks of one run (one probe, one look at each port)."""

    config: DoctorConfig
    api: ServiceApi
    attempts: dict[Target, Attempt] = field(default_factory=dict)
    probe: ProbeFinding | None = None
    local: dict[int, bool] = field(default_factory=dict)
    looked: set[int] = field(default_factory=set)

    def connect_all(self, targets: Iterable[Target]) -> None:
        todo = [t for t in dict.fromkeys(targets) if t not in self.attempts]
        if not todo:
            return
        with ThreadPoolExecutor(max_workers=min(16, len(todo))) as pool:
            for attempt in pool.map(lambda t: connect(t, self.config.timeout), todo):
                self.attempts[attempt.target] = attempt

    def ask_probe(self) -> ProbeFinding:
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


def _counterparts(config: DoctorConfig, api: ServiceApi, me: Party) -> list[Counterpart]:
    """What to check: `--to` with `--feature`, else the links of this installation."""
    if config.to is not None and config.feature is not None:
        return [Counterpart(config.to, config.feature, Role.CALLER)]
    links = api.links(me.code)
    wanted: list[Counterpart] = []
    target = None
    if config.to is not None:
        target = api.resolve(config.to).get("code")
    for link in links:
        a, b, feature = str(link.get("a")), str(link.get("b")), str(link.get("feature"))
        if config.feature is not None and feature != config.feature:
            continue
        if a.lower() == me.code.lower():
            other, here = b, Role.CALLER
        elif b.lower() == me.code.lower():
            other, here = a, Role.CALLEE
        else:
            continue
        if target is not None and other.lower() != str(target).lower():
            continue
        wanted.append(Counterpart(other, feature, here))
    if not wanted:
        about = f" with {config.to}" if config.to is not None else ""
        raise NotFoundError(
            f"installation {me.code} has no links{about} to check: name the counterpart"
            " with --to and the feature with --feature"
        )
    return wanted


def run_doctor(config: DoctorConfig) -> list[Diagnosis]:
    """Check every counterpart of this run; one diagnosis each, in order. Raises
    `ControparteError` when the facts cannot be had (the service unreachable, an
    unknown installation or feature)."""
    api = ServiceApi(config.server, config.token)
    try:
        me = own_party(api.installation(config.code))
        run = _Run(config, api)
        diagnoses = []
        for counterpart in _counterparts(config, api, me):
            feature = config.catalog.feature(counterpart.feature)
            view = api.resolve(counterpart.name)
            fqdn = str(view.get("fqdn"))
            other, notes = counterpart_party(view, dns_view(fqdn, config.dns))
            caller, callee = (me, other) if counterpart.here is Role.CALLER else (other, me)
            the_plan = plan(caller, callee, feature, config.catalog)
            needed = checklist_for(the_plan, counterpart.here)
            run.connect_all(needed.connects)
            probe = run.ask_probe() if needed.probe else None
            run.look_local(needed.local_ports)
            diagnoses.append(
                diagnose(
                    the_plan, counterpart.here, run.attempts, probe, local=run.local, notes=notes
                )
            )
        return diagnoses
    finally:
        api.close()


def _endpoint(host: str, port: int) -> str:
    """`host:port`, with an IPv6 address in brackets."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
