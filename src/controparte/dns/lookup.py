"""Lookup: (zone snapshot, name, type) -> result kind and sections. Pure; no sockets,
no wire format. `answer.py` turns the kind into rcode and flags in one place.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

import dns.name
import dns.rrset
from dns.rdatatype import RdataType

from controparte.dns.zone import Zone, ZoneRRset


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


def _additional_for(zone: Zone, rrset: ZoneRRset) -> list[ZoneRRset]:
    """Addresses of in-zone targets of NS and SRV records (RFC 1034 4.3.2 step 6)."""
    out: list[ZoneRRset] = []
    origin = zone.config.origin
    for rdata in rrset.rdatas:
        target = getattr(rdata, "target", None)
        if not isinstance(target, dns.name.Name) or not target.is_subdomain(origin):
            continue
        relative = tuple(lab.lower() for lab in target.relativize(origin).labels)
        found = zone.rrsets_at(relative)
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
    found = zone.rrsets_at(relative)
    if found is None:
        return LookupResult(Outcome.NXDOMAIN, authority=[zone.negative_soa_rrset().to_rrset()])
    if qtype == RdataType.ANY:
        chosen = found if full_any else found[:1]
    else:
        chosen = [r for r in found if r.rdtype == qtype]
    if not chosen:
        return LookupResult(Outcome.NODATA, authority=[zone.negative_soa_rrset().to_rrset()])
    additional: list[ZoneRRset] = []
    for rrset in chosen:
        if rrset.rdtype in (RdataType.NS, RdataType.SRV):
            additional.extend(_additional_for(zone, rrset))
    return LookupResult(
        Outcome.SUCCESS,
        answer=[r.to_rrset() for r in chosen],
        additional=[r.to_rrset() for r in additional],
    )
