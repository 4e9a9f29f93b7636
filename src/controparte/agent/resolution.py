"""Resolution as a checked step of `doctor`: resolve the counterpart as MxServer would,
ask the zone's name servers directly, and judge both against the registry.

The I/O shells never raise: every failure is an `Outcome` with its text.
- `system_lookup`: this machine's resolver, as MxServer uses it: the addresses through
  `getaddrinfo` (so /etc/hosts and nsswitch count), the `_mxserver._tcp` SRV (the port)
  through dnspython configured from /etc/resolv.conf;
- `zone_servers`: the zone's name servers (its NS, then each one's A and AAAA) through
  the same resolver, or only the one of `--dns HOST:PORT`;
- `ask_server` (`ask_servers` for all of them, at once): direct, non-recursive (RD=0)
  queries to one name server: A, AAAA, the SRV, and the zone's SOA (serial, negative TTL).

`judge_resolution` (pure) decides, so that doctor is never confidently wrong:
- FAILED whenever MxServer, on this machine, would not dial what the registry holds: the
  system resolver fails (whatever the name servers say: MxServer asks the resolver, not
  them), or it answers addresses or a port other than the registry's (MxServer would dial
  the old address). The name servers' answers only say why: the resolver or its upstream,
  the delegation or a cached negative answer, a secondary behind, a cache behind.
- WARNING when this machine resolves exactly what the registry holds, but something will
  fail elsewhere or later: a name server that does not answer, serves an older serial or
  other data, or the name servers could not be found or asked.
- PASSED only when the resolver and every name server asked agree with the registry.
- never UNTESTED: the resolver's answer is always a fact about this machine; what could not
  be asked is named in a WARNING.
"""

from __future__ import annotations

import enum
import ipaddress
import socket
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.query
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.resolver
import dns.rrset
import dns.serial

from controparte.agent.evidence import Status
from controparte.model.zone import SRV_SERVICE

SYSTEM = "this machine's resolver"


class Outcome(enum.StrEnum):
    """What a resolver or a name server said of one name (and type)."""

    ANSWER = "answer"  # records of the type asked
    NO_DATA = "no-data"  # the name exists, without records of that type
    NXDOMAIN = "nxdomain"  # the name does not exist
    TIMEOUT = "timeout"
    SERVFAIL = "servfail"
    REFUSED = "refused"
    OTHER = "other"  # anything else: unreachable, not authoritative, malformed, ...

    @property
    def answered(self) -> bool:
        """An authoritative statement about the name (records, no data, or no name)."""
        return self in (Outcome.ANSWER, Outcome.NO_DATA, Outcome.NXDOMAIN)


@dataclass(frozen=True, slots=True)
class Lookup:
    """What `via` said of a name: its addresses (A and AAAA together; `outcome`), the
    SRV port (`port_outcome`), and, from a name server, the zone's SOA serial, the
    addresses' TTL and the zone's negative TTL. `text`: what went wrong, in words."""

    via: str
    outcome: Outcome
    addresses: tuple[str, ...] = ()
    port_outcome: Outcome = Outcome.OTHER
    port: int | None = None
    text: str = ""
    serial: int | None = None
    ttl: int | None = None
    negative_ttl: int | None = None

    @property
    def published(self) -> tuple[tuple[str, ...], int | None]:
        """(addresses, port) as published: no SRV record means no port."""
        return self.addresses, self.port

    def describe(self) -> str:
        """One line of evidence: what `via` said."""
        serial = "" if self.serial is None else f" (serial {self.serial})"
        if self.outcome is not Outcome.ANSWER:
            return f"{self.via}{serial}: {self.outcome.value}: {self.text}"
        if self.port_outcome is Outcome.ANSWER:
            port = str(self.port)
        elif self.port_outcome.answered:
            port = "none (no SRV record)"
        else:
            port = f"unknown (SRV: {self.port_outcome.value})"
        return f"{self.via}{serial}: {', '.join(self.addresses)}, port {port}"


@dataclass(frozen=True, slots=True)
class NameServer:
    """One name server of the zone: its name, its addresses, or why they are unknown."""

    name: str
    addresses: tuple[str, ...]
    port: int = 53
    problem: str | None = None


@dataclass(frozen=True, slots=True)
class ZoneServers:
    """The zone's name servers, or why they could not be found (`problem`)."""

    zone: str
    servers: tuple[NameServer, ...]
    problem: str | None = None


# -- helpers -----------------------------------------------------------------------------


def _normal(addresses: Sequence[str]) -> tuple[str, ...]:
    """Addresses in one form (compressed IPv6), IPv4 first, each once."""
    parsed = {ipaddress.ip_address(a) for a in addresses}
    return tuple(str(a) for a in sorted(parsed, key=lambda a: (a.version, a)))


def _combine(a: tuple[Outcome, str], aaaa: tuple[Outcome, str]) -> tuple[Outcome, str]:
    """The addresses' outcome from A's and AAAA's: records if either has some; else no
    name if either says so; else a failure (one type's data is unknown); else no data."""
    outcomes = (a[0], aaaa[0])
    texts = "; ".join(dict.fromkeys(t for _o, t in (a, aaaa) if t))
    for wanted in (Outcome.ANSWER, Outcome.NXDOMAIN):
        if wanted in outcomes:
            return wanted, texts if wanted is not Outcome.ANSWER else ""
    failed = [o for o in outcomes if o is not Outcome.NO_DATA]
    return (failed[0] if failed else Outcome.NO_DATA), texts


def _system_resolver(timeout: float) -> dns.resolver.Resolver:
    """dnspython configured from /etc/resolv.conf; a DNSException when it cannot be."""
    resolver = dns.resolver.Resolver(configure=True)
    resolver.lifetime = timeout
    resolver.cache = None
    return resolver


def _resolve(
    resolver: dns.resolver.Resolver, qname: str, rdtype: str
) -> tuple[Outcome, dns.rrset.RRset | None, str]:
    """One question to a recursive resolver: its outcome, the answer, and any text."""
    try:
        answer = resolver.resolve(qname, rdtype, raise_on_no_answer=False, search=False)
    except dns.resolver.NXDOMAIN:
        return Outcome.NXDOMAIN, None, f"{qname} does not exist (NXDOMAIN)"
    except dns.exception.Timeout:
        asked = ", ".join(str(server) for server in resolver.nameservers) or "no server"
        return Outcome.TIMEOUT, None, f"no answer from {asked} within {resolver.lifetime:g} s"
    except dns.resolver.NoNameservers as exc:
        said = {str(error[3]) for error in exc.kwargs.get("errors", ())}
        for rcode, outcome in (("SERVFAIL", Outcome.SERVFAIL), ("REFUSED", Outcome.REFUSED)):
            if rcode in said:
                return outcome, None, str(exc)
        return Outcome.OTHER, None, str(exc)
    except dns.exception.DNSException as exc:
        return Outcome.OTHER, None, str(exc) or type(exc).__name__
    if answer.rrset is None:
        return Outcome.NO_DATA, None, f"{qname} has no {rdtype} record"
    return Outcome.ANSWER, answer.rrset, ""


def _srv_port(rrset: dns.rrset.RRset) -> int:
    """The port of the SRV record a client uses first (lowest priority, highest weight)."""
    first = min(rrset, key=lambda rd: (rd.priority, -rd.weight))
    return int(first.port)


def _getaddrinfo(fqdn: str, timeout: float) -> tuple[str, ...] | OSError | None:
    """`getaddrinfo` bounded by `timeout` (on a thread of its own, left to finish by
    itself): the addresses, its error, or None when it did not return in time."""
    box: list[tuple[str, ...] | OSError] = []

    def work() -> None:
        try:
            infos = socket.getaddrinfo(fqdn, None, type=socket.SOCK_STREAM)
            box.append(_normal([str(info[4][0]) for info in infos]))
        except OSError as exc:
            box.append(exc)

    thread = threading.Thread(target=work, name="getaddrinfo", daemon=True)
    thread.start()
    thread.join(timeout)
    return box[0] if box else None


# -- this machine's resolver ---------------------------------------------------------------


def system_lookup(fqdn: str, timeout: float) -> Lookup:
    """`fqdn` as MxServer resolves it on this machine: its addresses by `getaddrinfo`,
    its port by the `_mxserver._tcp` SRV record through the resolvers of
    /etc/resolv.conf. When `getaddrinfo` fails, the same resolvers, asked for A and
    AAAA, say why (no name, no data, a timeout, SERVFAIL, REFUSED)."""
    fqdn = fqdn.rstrip(".")
    found = _getaddrinfo(fqdn, timeout)
    try:
        resolver: dns.resolver.Resolver | None = _system_resolver(timeout)
        problem = ""
    except dns.exception.DNSException as exc:
        resolver, problem = None, f"cannot read the resolver configuration: {exc}"
    addresses: tuple[str, ...] = ()
    texts: list[str] = []
    if found is None:  # the resolvers would time out too: not asked again
        outcome = Outcome.TIMEOUT
        texts.append(f"getaddrinfo gave no answer in {timeout:g} s")
    elif isinstance(found, OSError):
        outcome = Outcome.OTHER
        texts.append(f"getaddrinfo: {found.strerror or found}")
        if resolver is not None:
            a, _rrset, a_text = _resolve(resolver, fqdn + ".", "A")
            aaaa, _rrset, aaaa_text = _resolve(resolver, fqdn + ".", "AAAA")
            refined, why = _combine((a, a_text), (aaaa, aaaa_text))
            if refined is not Outcome.ANSWER:
                outcome = refined
                texts.append(why)
    else:
        outcome, addresses = Outcome.ANSWER, found
    if resolver is None:
        port_outcome, port, port_text = Outcome.OTHER, None, problem
    else:
        port_outcome, rrset, port_text = _resolve(resolver, f"{SRV_SERVICE}.{fqdn}.", "SRV")
        port = None if rrset is None else _srv_port(rrset)
    if outcome is Outcome.ANSWER:
        texts.append(port_text)
    return Lookup(SYSTEM, outcome, addresses, port_outcome, port, "; ".join(t for t in texts if t))


# -- the zone's name servers ---------------------------------------------------------------


def zone_servers(zone: str, timeout: float, override: tuple[str, int] | None = None) -> ZoneServers:
    """The name servers of `zone` and their addresses, through this machine's resolver
    (NS, then A and AAAA of each); with `override` (`--dns HOST:PORT`), that server
    only (HOST an address, or a name resolved by `getaddrinfo`)."""
    zone = zone.rstrip(".")
    if override is not None:
        host, port = override
        try:
            addresses: tuple[str, ...] = _normal([host])
        except ValueError:
            found = _getaddrinfo(host, timeout)
            if not isinstance(found, tuple):
                problem = f"cannot resolve {host}: {found or 'no answer'}"
                return ZoneServers(zone, (NameServer(host, (), port, problem),))
            addresses = found
        return ZoneServers(zone, (NameServer(host, addresses, port),))
    try:
        resolver = _system_resolver(timeout)
    except dns.exception.DNSException as exc:
        return ZoneServers(zone, (), f"cannot read the resolver configuration: {exc}")
    outcome, rrset, text = _resolve(resolver, zone + ".", "NS")
    if rrset is None:
        return ZoneServers(zone, (), f"no NS records for {zone} ({outcome.value}): {text}")
    servers = []
    for name in sorted(str(rd.target).rstrip(".") for rd in rrset):
        found_addresses: list[str] = []
        texts: list[str] = []
        for rdtype in ("A", "AAAA"):
            _outcome, records, why = _resolve(resolver, name + ".", rdtype)
            found_addresses += [rd.to_text() for rd in records or ()]
            texts.append(why)
        missing = None if found_addresses else f"no address for {name}: " + "; ".join(texts)
        servers.append(NameServer(name, _normal(found_addresses), 53, missing))
    return ZoneServers(zone, tuple(servers))


def _ask(
    address: str, port: int, qname: dns.name.Name, rdtype: str, timeout: float
) -> tuple[Outcome, dns.message.Message | None, str]:
    """One non-recursive question to one name server (UDP, then TCP if truncated)."""
    query = dns.message.make_query(qname, rdtype)
    query.flags &= ~dns.flags.RD
    try:
        response, _tcp = dns.query.udp_with_fallback(query, address, timeout, port)
    except dns.exception.Timeout:
        return Outcome.TIMEOUT, None, f"no answer from {address}:{port} in {timeout:g} s"
    except ConnectionRefusedError:
        return Outcome.OTHER, None, f"nothing listens on {address}:{port} (port unreachable)"
    except (OSError, dns.exception.DNSException) as exc:
        return Outcome.OTHER, None, f"{address}:{port}: {exc or type(exc).__name__}"
    rcode = response.rcode()
    if rcode == dns.rcode.SERVFAIL:
        return Outcome.SERVFAIL, response, "SERVFAIL"
    if rcode == dns.rcode.REFUSED:
        return Outcome.REFUSED, response, f"REFUSED: it does not serve {qname}"
    if rcode not in (dns.rcode.NOERROR, dns.rcode.NXDOMAIN):
        return Outcome.OTHER, response, dns.rcode.to_text(rcode)
    if not response.flags & dns.flags.AA:
        return Outcome.OTHER, response, "answered without authority (no AA flag): a lame server"
    if rcode == dns.rcode.NXDOMAIN:
        return Outcome.NXDOMAIN, response, f"{qname} does not exist (NXDOMAIN)"
    found = response.get_rrset(
        response.answer, qname, dns.rdataclass.IN, dns.rdatatype.from_text(rdtype)
    )
    if found is None:
        return Outcome.NO_DATA, response, f"no {rdtype} record"
    return Outcome.ANSWER, response, ""


def _rrset(
    response: dns.message.Message | None, qname: dns.name.Name, rdtype: str
) -> dns.rrset.RRset | None:
    if response is None:
        return None
    return response.get_rrset(
        response.answer, qname, dns.rdataclass.IN, dns.rdatatype.from_text(rdtype)
    )


def ask_server(
    address: str, port: int, fqdn: str, zone: str, timeout: float, *, name: str | None = None
) -> Lookup:
    """What the name server at `address`:`port` (called `name` in the evidence) serves
    itself (RD=0) for `fqdn`: A, AAAA, the `_mxserver._tcp` SRV, and `zone`'s SOA. A
    server that does not answer the first question is not asked the others."""
    via = f"{name} ({address}:{port})" if name else f"{address}:{port}"
    host = dns.name.from_text(fqdn)
    a, a_response, a_text = _ask(address, port, host, "A", timeout)
    if not a.answered:
        return Lookup(via, a, text=a_text)
    aaaa, aaaa_response, aaaa_text = _ask(address, port, host, "AAAA", timeout)
    outcome, text = _combine((a, a_text), (aaaa, aaaa_text))
    records = [
        rrset
        for rrset in (_rrset(a_response, host, "A"), _rrset(aaaa_response, host, "AAAA"))
        if rrset is not None
    ]
    addresses = _normal([rd.to_text() for rrset in records for rd in rrset])
    srv_name = dns.name.from_text(SRV_SERVICE, origin=host)
    port_outcome, srv_response, srv_text = _ask(address, port, srv_name, "SRV", timeout)
    srv = _rrset(srv_response, srv_name, "SRV")
    apex = dns.name.from_text(zone)
    _soa_outcome, soa_response, _soa_text = _ask(address, port, apex, "SOA", timeout)
    soa = _rrset(soa_response, apex, "SOA")
    return Lookup(
        via,
        outcome,
        addresses,
        port_outcome,
        None if srv is None else _srv_port(srv),
        text if outcome is not Outcome.ANSWER else srv_text,
        None if soa is None else int(soa[0].serial),
        min((r.ttl for r in records), default=None),
        None if soa is None else min(soa.ttl, int(soa[0].minimum)),
    )


def ask_servers(found: ZoneServers, fqdn: str, timeout: float) -> tuple[Lookup, ...]:
    """Every address of every name server of `found`, asked at once (`ask_server`); a
    server whose addresses are unknown, or no servers at all, is a Lookup that says so."""
    if not found.servers:
        return (
            Lookup(f"the name servers of {found.zone}", Outcome.OTHER, text=found.problem or ""),
        )
    jobs = [(server, address) for server in found.servers for address in server.addresses]
    missing = tuple(
        Lookup(server.name, Outcome.OTHER, text=server.problem or "no address")
        for server in found.servers
        if not server.addresses
    )
    if not jobs:
        return missing
    with ThreadPoolExecutor(max_workers=min(8, len(jobs))) as pool:
        asked = pool.map(
            lambda job: ask_server(
                job[1], job[0].port, fqdn, found.zone, timeout, name=job[0].name
            ),
            jobs,
        )
        return tuple(asked) + missing


# -- the judge -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ResolutionVerdict:
    """The resolution step: its status, why (with the evidence, one line per source),
    the fix (None when passed), and what MxServer would dial from this machine."""

    status: Status
    reason: str
    fix: str | None
    addresses: tuple[str, ...]
    port: int | None
    evidence: tuple[str, ...]


def _data_text(addresses: Sequence[str], port: int | None) -> str:
    return f"{', '.join(addresses) or 'no address'}, port {port if port is not None else 'none'}"


def _described(lookups: Sequence[Lookup]) -> str:
    """What each of `lookups` said, one after the other."""
    return "; ".join(lookup.describe() for lookup in lookups)


def _seconds(value: int | None, what: str) -> str:
    """`value` seconds, saying what it is; `what` alone when unknown."""
    return f"{value} s ({what})" if value is not None else what


@dataclass(frozen=True, slots=True)
class _Seen:
    """What the judge works from: the question, the answers sorted, the registry's data."""

    fqdn: str
    zone: str
    system: Lookup
    servers: tuple[Lookup, ...]
    registry: tuple[tuple[str, ...], int | None]

    @property
    def answering(self) -> list[Lookup]:
        return [s for s in self.servers if s.outcome.answered]

    @property
    def silent(self) -> list[Lookup]:
        return [s for s in self.servers if not s.outcome.answered]

    @property
    def having(self) -> list[Lookup]:
        """The name servers that serve addresses for the name."""
        return [s for s in self.servers if s.outcome is Outcome.ANSWER]

    @property
    def current(self) -> list[Lookup]:
        return [s for s in self.having if s.published == self.registry]

    @property
    def ttl(self) -> int | None:
        return max((s.ttl for s in self.having if s.ttl is not None), default=None)

    @property
    def negative_ttl(self) -> int | None:
        found = (s.negative_ttl for s in self.servers if s.negative_ttl is not None)
        return max(found, default=None)

    @property
    def newest(self) -> int | None:
        serials = [dns.serial.Serial(s.serial) for s in self.answering if s.serial is not None]
        return max(serials).value if serials else None

    @property
    def behind(self) -> list[Lookup]:
        newest = self.newest
        return [s for s in self.answering if s.serial is not None and s.serial != newest]

    @property
    def names(self) -> str:
        return ", ".join(s.via for s in self.servers) or "the zone's name servers"

    def verdict(self, status: Status, reason: str, fix: str | None) -> ResolutionVerdict:
        evidence = (self.system.describe(), *(s.describe() for s in self.servers))
        return ResolutionVerdict(
            status, reason, fix, self.system.addresses, self.system.port, evidence
        )


def judge_resolution(
    fqdn: str,
    zone: str,
    system: Lookup,
    servers: Sequence[Lookup],
    *,
    registry_addresses: Sequence[str],
    registry_port: int | None,
) -> ResolutionVerdict:
    """The verdict on resolving `fqdn` (in `zone`) on this machine, from what this
    machine's resolver (`system`) and each name server (`servers`) said, against the
    registry's addresses and public port. Pure; the rules are the module's."""
    seen = _Seen(
        fqdn.rstrip("."),
        zone.rstrip("."),
        system,
        tuple(servers),
        (_normal(registry_addresses), registry_port),
    )
    if system.outcome is not Outcome.ANSWER:
        return _unresolved(seen)
    if not system.port_outcome.answered:
        return seen.verdict(
            Status.FAILED,
            f"{SYSTEM} gives {seen.fqdn}'s addresses but not its {SRV_SERVICE} SRV record"
            f" ({system.port_outcome.value}: {system.text}): MxServer cannot learn its port",
            f"check this machine's resolver and its upstream: `dig {SRV_SERVICE}.{seen.fqdn} SRV`",
        )
    if system.published != seen.registry:
        return _stale(seen)
    return _agreeing(seen)


def _unresolved(seen: _Seen) -> ResolutionVerdict:
    """This machine's resolver gives no address: FAILED, and the name servers say why."""
    system, fqdn, zone = seen.system, seen.fqdn, seen.zone
    said = f"{SYSTEM} cannot resolve {fqdn} ({system.outcome.value}: {system.text})"
    having, answering = seen.having, seen.answering
    if answering and not having:
        if not seen.registry[0]:
            return seen.verdict(
                Status.FAILED,
                f"{said}: the registry holds no address for it, so DNS has none to publish",
                "start the counterpart's agent (`controparte agent`) so that it registers"
                " its public address and port, or register them by hand",
            )
        return seen.verdict(
            Status.FAILED,
            f"{said}, and the zone's name servers have no address for it either ("
            + _described(answering)
            + f"), although the registry holds {_data_text(*seen.registry)}: DNS does not"
            " publish the registry's data",
            f"check that {seen.names} serve the service's zone: their SOA serial must be"
            f" the service's (`dig @SERVER {zone} SOA`), and the secondaries must receive"
            " its NOTIFY and zone transfers",
        )
    if having and system.outcome in (Outcome.NXDOMAIN, Outcome.NO_DATA):
        negative = _seconds(seen.negative_ttl, "the zone's negative TTL")
        return seen.verdict(
            Status.FAILED,
            f"{said}, yet the zone's name servers serve it ({having[0].describe()}): either"
            f" the delegation of {zone} does not lead to these servers, or the resolver"
            f" still holds an earlier negative answer, which it keeps for up to {negative}",
            f"wait {negative} and run doctor again; if it still fails, check the delegation:"
            f" `dig +trace {fqdn}` must end at {seen.names}",
        )
    if having:
        return seen.verdict(
            Status.FAILED,
            f"{said}, while the zone's name servers answer ({having[0].describe()}): this"
            f" machine's resolver or its upstream is at fault, or the delegation of {zone}"
            " (a SERVFAIL often means the parent delegates to servers that do not answer)",
            f"check this machine's resolver and its upstream (/etc/resolv.conf, then"
            f" `dig {fqdn}`) and the delegation (`dig +trace {fqdn}`)",
        )
    return seen.verdict(
        Status.FAILED,
        f"{said}, and the zone's name servers do not answer either ("
        + _described(seen.silent)
        + ")",
        f"the name servers of {zone} are down or unreachable: check {seen.names} and the way"
        " to them (UDP and TCP port 53)",
    )


def _stale(seen: _Seen) -> ResolutionVerdict:
    """This machine's resolver gives data other than the registry's: FAILED (MxServer
    would dial the old address); the name servers say whether a secondary or a cache is
    behind."""
    published = seen.system.published
    what = "address" if published[0] != seen.registry[0] else "port"
    said = (
        f"DNS still serves the old {what}: {SYSTEM} gives {_data_text(*published)}, the"
        f" registry holds {_data_text(*seen.registry)}; MxServer would dial the old {what}"
    )
    ttl = _seconds(seen.ttl, "the records' TTL")
    wait = f"wait up to {ttl}"
    stale = [s for s in seen.having if s.published != seen.registry]
    current = seen.current
    if stale and current:
        return seen.verdict(
            Status.FAILED,
            f"{said}. A secondary is behind: "
            + _described(stale)
            + f", while {current[0].describe()}",
            f"{wait} once every name server has serial {seen.newest}, or check the"
            " secondaries: "
            + ", ".join(s.via for s in stale)
            + " must receive the service's NOTIFY and transfer the zone from it",
        )
    if stale:
        return seen.verdict(
            Status.FAILED,
            f"{said}. Every name server asked serves the old data too ("
            + _described(stale)
            + "): DNS does not publish the registry's change",
            f"check that {seen.names} serve the service's zone (their SOA serial must be the"
            " service's) and that the secondaries transfer it",
        )
    if current:
        return seen.verdict(
            Status.FAILED,
            f"{said}. The name servers serve the registry's data ({current[0].describe()}):"
            " a cache is behind (this machine's resolver or its upstream keeps the old"
            f" answer for up to {ttl})",
            f"{wait}, or flush the resolver's cache, and run doctor again",
        )
    return seen.verdict(
        Status.FAILED,
        f"{said}. The name servers cannot tell whether a secondary or a cache is behind ("
        + _described(seen.servers)
        + ")",
        f"{wait} or check the secondaries",
    )


def _agreeing(seen: _Seen) -> ResolutionVerdict:
    """This machine resolves the registry's data: PASSED when every name server asked
    agrees; a WARNING naming each one that does not, or does not answer."""
    data = _data_text(*seen.registry)
    if not seen.servers:
        return seen.verdict(
            Status.WARNING,
            f"{SYSTEM} resolves {seen.fqdn} to the registry's {data}; the zone's name"
            " servers were not asked",
            f"ask them: `dig @SERVER {seen.fqdn}` for each of `dig {seen.zone} NS`",
        )
    behind = seen.behind
    odd = [s for s in seen.servers if s.published != seen.registry or s in behind]
    if odd:
        problems = [
            f"{s.describe()}, behind serial {seen.newest}" if s in behind else s.describe()
            for s in odd
        ]
        return seen.verdict(
            Status.WARNING,
            f"{SYSTEM} resolves {seen.fqdn} to the registry's {data}, but not every name"
            " server agrees: "
            + "; ".join(problems)
            + ". Resolvers that ask those (the counterpart's, or this one when its cache"
            " expires) may get old data or none",
            "check the name servers named: each must answer, with the service's data and"
            " serial (NOTIFY and zone transfers from the service, UDP and TCP port 53)",
        )
    return seen.verdict(
        Status.PASSED,
        f"{SYSTEM} resolves {seen.fqdn} to {data}, as the registry holds, and every name"
        f" server asked agrees (serial {seen.newest})",
        None,
    )
