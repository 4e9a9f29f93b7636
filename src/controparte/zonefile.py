"""The zone as an RFC 1035 master file, for `named-checkzone`, backups and secondaries
that cannot transfer.

Pure: settings, a serial and the installation records in, text out; no store, no I/O.
The file publishes what the DNS server serves for the same data: SOA and NS at the apex,
glue for in-zone name servers, then for each installation `<label> A`, `<label> AAAA`
(each when set) and `_mxserver._tcp.<label> SRV 0 0 <port> <label>.<zone>.` (when the
port is set). Installations whose label the zone reserves for its own names are left
out, as the server hides them. Every record carries `settings.ttl`.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterable, Iterator

import dns.name
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rdtypes.ANY.NS
import dns.rdtypes.ANY.SOA
import dns.rdtypes.IN.A
import dns.rdtypes.IN.AAAA
import dns.rdtypes.IN.SRV
from dns.rdataclass import RdataClass
from dns.rdatatype import RdataType

from controparte.errors import ConfigError
from controparte.service.registry import reserved_labels
from controparte.settings import Settings

SRV_OWNER = "_mxserver._tcp"
"""Prefix of the SRV name that gives an installation's public port."""

ZoneRecord = tuple[str, str | None, str | None, int | None]
"""(label, ipv4, ipv6, port), as `Store.dns_snapshot` yields them."""

_IN = RdataClass.IN

# dnspython's rdata constructors carry no annotations; these names give them types.
_SOA: Callable[..., dns.rdata.Rdata] = dns.rdtypes.ANY.SOA.SOA
_NS: Callable[[RdataClass, RdataType, dns.name.Name], dns.rdata.Rdata] = dns.rdtypes.ANY.NS.NS
_A: Callable[[RdataClass, RdataType, str], dns.rdata.Rdata] = dns.rdtypes.IN.A.A
_AAAA: Callable[[RdataClass, RdataType, str], dns.rdata.Rdata] = dns.rdtypes.IN.AAAA.AAAA
_SRV: Callable[[RdataClass, RdataType, int, int, int, dns.name.Name], dns.rdata.Rdata] = (
    dns.rdtypes.IN.SRV.SRV
)


def _rr(owner: str, ttl: int, rdata: dns.rdata.Rdata) -> str:
    """One line: the owner relative to $ORIGIN, names inside the rdata absolute."""
    return f"{owner}\t{ttl}\tIN\t{dns.rdatatype.to_text(rdata.rdtype)}\t{rdata.to_text()}\n"


def _glue(settings: Settings, origin: dns.name.Name) -> dict[dns.name.Name, list[str]]:
    """Addresses of the in-zone name servers, by name, in configuration order.

    Raises `ConfigError` for an in-zone name server without an address: the zone would
    delegate to a name nobody can resolve."""
    glue: dict[dns.name.Name, list[str]] = {}
    for server in settings.ns:
        name = dns.name.from_text(server.name)
        if not name.is_subdomain(origin):
            continue  # out of zone: its addresses are not ours to publish
        if not server.addresses:
            raise ConfigError(
                f"ns: {server.name} is inside the zone and needs an address "
                "(give it as name=address)"
            )
        known = glue.setdefault(name, [])
        known.extend(a for a in server.addresses if a not in known)
    return glue


def zone_lines(settings: Settings, serial: int, records: Iterable[ZoneRecord]) -> Iterator[str]:
    """The master file, line by line (each ends in a newline); see `zone_text`."""
    origin = dns.name.from_text(settings.zone)
    ttl = settings.ttl
    soa = _SOA(
        _IN,
        RdataType.SOA,
        dns.name.from_text(settings.soa_mname),
        dns.name.from_text(settings.soa_rname),
        serial,
        settings.soa_refresh,
        settings.soa_retry,
        settings.soa_expire,
        settings.negative_ttl,
    )
    glue = _glue(settings, origin)
    yield f"; zone {origin}, serial {serial}, written by controparte\n"
    yield f"$ORIGIN {origin}\n"
    yield f"$TTL {ttl}\n"
    yield _rr("@", ttl, soa)
    seen: set[dns.name.Name] = set()
    for server in settings.ns:
        name = dns.name.from_text(server.name)
        if name not in seen:
            seen.add(name)
            yield _rr("@", ttl, _NS(_IN, RdataType.NS, name))
    for name, addresses in glue.items():
        owner = name.relativize(origin).to_text()
        for address in addresses:
            if ipaddress.ip_address(address).version == 4:
                yield _rr(owner, ttl, _A(_IN, RdataType.A, address))
        for address in addresses:
            if ipaddress.ip_address(address).version == 6:
                yield _rr(owner, ttl, _AAAA(_IN, RdataType.AAAA, address))
    reserved = reserved_labels(settings)
    for label, ipv4, ipv6, port in sorted(records, key=lambda r: r[0]):
        if label in reserved:
            continue
        relative = dns.name.Name((label,))
        owner = relative.to_text()
        if ipv4 is not None:
            yield _rr(owner, ttl, _A(_IN, RdataType.A, ipv4))
        if ipv6 is not None:
            yield _rr(owner, ttl, _AAAA(_IN, RdataType.AAAA, ipv6))
        if port is not None:
            target = relative.concatenate(origin)
            srv = _SRV(_IN, RdataType.SRV, 0, 0, port, target)
            yield _rr(f"{SRV_OWNER}.{owner}", ttl, srv)


def zone_text(settings: Settings, serial: int, records: Iterable[ZoneRecord]) -> str:
    """The zone of `settings` at `serial` holding `records`, as a master file that
    `named-checkzone <zone> FILE` accepts. Installations come sorted by label, so the
    same data always gives the same text.

    Raises `ConfigError` when the name servers cannot be published (an in-zone name
    server without an address); `dns.exception.DNSException` or `ValueError` (what
    dnspython raises) for a record that is not a valid address or port."""
    return "".join(zone_lines(settings, serial, records))
