"""Lookup: (zone snapshot, name, type) -> result kind and sections. Pure; no sockets,
no wire format. `answer.py` turns the kind into rcode and flags in one place.
"""

from __future__ import annotations

import enum
import socket
from dataclasses import dataclass, field

import dns.name
import dns.rdataclass
import dns.rdatatype
import dns.rrset
from dns.rdatatype import RdataType

from controparte.dns.zone import SRV_SERVICE, Node, Zone


class Outcome(enum.Enum):
    SUCCESS = "success"  # the name has the type: answer section filled
    NODATA = "nodata"  # the name exists, not with this type (RFC 2308 section 2.2)
    NXDOMAIN = "nxdomain"  # the name does not exist (RFC 2308 section 2.1)
    REFUSED = "refused"  # outside the zone: we are not a resolver


@dataclass(slots=True)
class LookupResult:
    outcome: Outcome
    answer: list[dns.rrset.RRset] = field(default_factory=list)
    authority: list[dns.rrset.RRset] = field(default_factory=list)
    additional: list[dns.rrset.RRset] = field(default_factory=list)


def _rrset(name: dns.name.Name, ttl: int, rdtype: RdataType, *texts: str) -> dns.rrset.RRset:
    return dns.rrset.from_text_list(name, ttl, dns.rdataclass.IN, rdtype, list(texts))


def _address_rrsets(
    name: dns.name.Name, ttl: int, v4: tuple[str, ...], v6: tuple[str, ...]
) -> list[dns.rrset.RRset]:
    out = []
    if v4:
        out.append(_rrset(name, ttl, RdataType.A, *v4))
    if v6:
        out.append(_rrset(name, ttl, RdataType.AAAA, *v6))
    return out


def _node_addresses(node: Node) -> tuple[tuple[str, ...], tuple[str, ...]]:
    v4 = () if node[0] is None else (socket.inet_ntop(socket.AF_INET, node[0]),)
    v6 = () if node[1] is None else (socket.inet_ntop(socket.AF_INET6, node[1]),)
    return v4, v6


def rrsets_at(zone: Zone, relative: tuple[bytes, ...]) -> list[dns.rrset.RRset] | None:
    """Every RRset at the name `relative` (lower-case labels below the apex), in the
    order ANY and zone export list them; [] for an empty non-terminal; None when the
    name does not exist."""
    c = zone.config
    name = dns.name.Name((*relative, *c.origin.labels))
    if not relative:
        return [
            zone.soa_rrset(),
            _rrset(c.origin, c.ttl, RdataType.NS, *(n.to_text() for n in c.ns_names)),
        ]
    if relative in c.glue:
        return _address_rrsets(name, c.ttl, *c.glue[relative])
    if any(g[-len(relative) :] == relative for g in c.glue if len(g) > len(relative)):
        return []
    if relative[-1] in c.reserved:
        return None
    node = zone.nodes.get(relative[-1])
    if node is None:
        return None
    if len(relative) == 1:
        return _address_rrsets(name, c.ttl, *_node_addresses(node))
    if node[2] is None:
        return None
    if relative == (SRV_SERVICE[1], relative[-1]):
        return []  # _tcp.<label>: an empty non-terminal above the SRV name
    if relative == (*SRV_SERVICE, relative[-1]):
        target = dns.name.Name((relative[-1], *c.origin.labels))
        return [_rrset(name, c.ttl, RdataType.SRV, f"0 0 {node[2]} {target}")]
    return None


def _additional_for(zone: Zone, rrset: dns.rrset.RRset) -> list[dns.rrset.RRset]:
    """Addresses of in-zone targets of NS and SRV records (RFC 1034 4.3.2 step 6)."""
    out: list[dns.rrset.RRset] = []
    origin = zone.config.origin
    for rdata in rrset:
        target = getattr(rdata, "target", None)
        if not isinstance(target, dns.name.Name) or not target.is_subdomain(origin):
            continue
        relative = tuple(lab.lower() for lab in target.relativize(origin).labels)
        found = rrsets_at(zone, relative)
        if found:
            out.extend(r for r in found if r.rdtype in (RdataType.A, RdataType.AAAA))
    return out


def lookup(zone: Zone, qname: dns.name.Name, qtype: RdataType, *, full_any: bool) -> LookupResult:
    """Answer `qname`/`qtype` from `zone`. ANY (RFC 8482) gets one RRset, or every RRset
    when `full_any` (the server passes True over TCP)."""
    origin = zone.config.origin
    if not qname.is_subdomain(origin):
        return LookupResult(Outcome.REFUSED)
    relative = tuple(lab.lower() for lab in qname.labels[: len(qname) - len(origin)])
    found = rrsets_at(zone, relative)
    if found is None:
        return LookupResult(Outcome.NXDOMAIN, authority=[zone.negative_soa_rrset()])
    if qtype == RdataType.ANY:
        chosen = found if full_any else found[:1]
    else:
        chosen = [r for r in found if r.rdtype == qtype]
    if not chosen:
        return LookupResult(Outcome.NODATA, authority=[zone.negative_soa_rrset()])
    additional: list[dns.rrset.RRset] = []
    for rrset in chosen:
        if rrset.rdtype in (RdataType.NS, RdataType.SRV):
            additional.extend(_additional_for(zone, rrset))
    return LookupResult(Outcome.SUCCESS, answer=chosen, additional=additional)
