"""RFC 2136 DNS UPDATE, the pure core: an update request and a view of the zone in, an
rcode and the registry changes out. No sockets, no store, no TSIG (see `updater.py`).

The request is read in wire order (`parse_request`), because the Update Section is
processed RR by RR (RFC 2136 3.4.2) and the TTL of the metavalue RRs must be checked.
`plan_update` then follows RFC 2136 section 3:

1. Zone Section (3.1): exactly one RR of type SOA, else FORMERR (found while parsing:
   `MalformedError`);
   the zone must be ours, class IN, else NOTAUTH. (RFC 8945 also answers NOTAUTH, for
   TSIG failures; those responses carry a TSIG error, this one a TSIG error of 0.)
2. Prerequisite Section (3.2): FORMERR, NOTZONE, NXDOMAIN, YXDOMAIN, NXRRSET, YXRRSET
   exactly as RFC 2136 3.2.5, against the zone view.
3. Update Section prescan (3.4.1): NOTZONE and FORMERR as RFC 2136 3.4.1.3.
4. Permissions (3.3), then the update (3.4.2) on a working copy; any REFUSED leaves the
   registry untouched (3.3.2).

What may change: an installation's key changes its own names only, the admin key any
installation's; at `<label>.<zone>` the A and AAAA RRsets, at `_mxserver._tcp.<label>.
<zone>` the SRV RRset, which must be `0 0 <port> <label>.<zone>.`. Anything else (other
types, other names, the apex, NS, SOA, names of no installation) is REFUSED.

Deviations from RFC 2136, because an installation holds ONE IPv4 address, ONE IPv6
address and ONE port:

- Adding an A (AAAA, SRV) record *replaces* the RRset instead of adding to it; within
  one request the last addition wins.
- Deleting one A (AAAA, SRV) record clears the value only when it is the one held; an
  RRset deletion clears it; deleting all RRsets from `<label>.<zone>` clears the IPv4
  and IPv6 addresses, from the SRV name the port.
- The TTL of an added record is ignored: every record is served with the zone's TTL.
- An address the registry would refuse (not global unicast, unless allow_non_global)
  is REFUSED, as is an SRV record of another shape.
- The prescan (3.4.1) runs before the permission check (3.3), so a malformed or
  out-of-zone update gets FORMERR or NOTZONE rather than REFUSED.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field

import dns.exception
import dns.name
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rdtypes.IN.A
import dns.rdtypes.IN.AAAA
import dns.rdtypes.IN.SRV
import dns.wire
from dns.rcode import Rcode
from dns.rdataclass import RdataClass
from dns.rdatatype import RdataType

from controparte.dns.zone import SRV_LABELS, Zone, ZoneRRset
from controparte.errors import MalformedError, ValidationError
from controparte.model import InstallationChange
from controparte.model.installation import (
    LABEL_RE,
    validate_ipv4,
    validate_ipv6,
    validate_port,
)

_HEADER = "!HHHHHH"


@dataclass(frozen=True, slots=True)
class Record:
    """One RR of the Prerequisite or Update Section, as sent.

    `rdata` is None exactly when RDLENGTH is 0 and the class is ANY or NONE (the
    metavalue RRs); otherwise the data, read in the zone's class for ANY and NONE."""

    name: dns.name.Name
    rdclass: int
    rdtype: int
    ttl: int
    rdata: dns.rdata.Rdata | None = None


@dataclass(frozen=True, slots=True)
class UpdateRequest:
    """The sections of an UPDATE that matter to the zone, in wire order."""

    zone_name: dns.name.Name
    zone_class: int
    prerequisites: tuple[Record, ...] = ()
    updates: tuple[Record, ...] = ()


@dataclass(frozen=True, slots=True)
class UpdateContext:
    """What `plan_update` decides against.

    - `zone`: what is served now (only the nodes the request names are needed).
    - `installations`: label -> code of every installation the request names, whether
      or not it publishes anything (an installation with no address has no node).
    - `allowed`: the labels the key may change; None for the admin key (any).
    """

    zone: Zone
    installations: Mapping[bytes, str]
    allowed: frozenset[bytes] | None
    allow_non_global: bool = False


@dataclass(frozen=True, slots=True)
class Plan:
    """The outcome: `changes` (by installation code) are to be made only when `rcode`
    is NOERROR, and then all together. `reason` says why, for the log."""

    rcode: Rcode
    changes: Mapping[str, InstallationChange] = field(default_factory=dict)
    reason: str = ""


class _Stop(Exception):  # noqa: N818 - control flow inside plan_update, never escapes
    def __init__(self, rcode: Rcode, reason: str) -> None:
        super().__init__(reason)
        self.rcode = rcode
        self.reason = reason


# -- parsing -----------------------------------------------------------------------------


def parse_request(wire: bytes) -> UpdateRequest:
    """The Zone, Prerequisite and Update Sections of an UPDATE message, in wire order.

    Raises `MalformedError` (FORMERR, by the table in `errors.py`) when the message is
    malformed, when the Zone Section does not hold exactly one RR of type SOA (RFC 2136
    3.1.1), or when a metavalue RR of class ANY in the Prerequisite or Update Section,
    or of class NONE in the Prerequisite Section, has data (RFC 2136 3.2.1, 3.2.2,
    3.4.1.2)."""
    try:
        return _parse(wire)
    except (dns.exception.DNSException, ValueError, IndexError, UnicodeError) as exc:
        raise MalformedError(f"malformed UPDATE: {exc}") from None


def _parse(wire: bytes) -> UpdateRequest:
    parser = dns.wire.Parser(wire)
    _id, _flags, zocount, prcount, upcount, _adcount = parser.get_struct(_HEADER)
    if zocount != 1:
        raise MalformedError("the Zone Section must hold exactly one RR")
    zone_name = parser.get_name(decompress=True)
    ztype, zclass = parser.get_struct("!HH")
    if ztype != RdataType.SOA:
        raise MalformedError("the Zone Section RR must be of type SOA")

    def records(count: int, prerequisite: bool) -> tuple[Record, ...]:
        out = []
        for _ in range(count):
            name = parser.get_name(decompress=True)
            rdtype, rdclass, ttl, rdlen = parser.get_struct("!HHIH")
            meta = rdclass in (RdataClass.ANY, RdataClass.NONE)
            empty_only = rdclass == RdataClass.ANY or (prerequisite and meta)
            if empty_only and rdlen:
                raise MalformedError(
                    f"{name}: an RR of class {RdataClass.to_text(rdclass)} here has no data"
                )
            rdata = None
            if not (meta and rdlen == 0):
                with parser.restrict_to(rdlen):
                    rdata = dns.rdata.from_wire_parser(zclass if meta else rdclass, rdtype, parser)
            out.append(Record(name, rdclass, rdtype, ttl, rdata))
        return tuple(out)

    prerequisites = records(prcount, True)
    updates = records(upcount, False)
    return UpdateRequest(zone_name, zclass, prerequisites, updates)


# -- planning ----------------------------------------------------------------------------


def check_zone(request: UpdateRequest, origin: dns.name.Name) -> Plan | None:
    """NOTAUTH unless the Zone Section names our zone in class IN (RFC 2136 3.1.1)."""
    if request.zone_name != origin or request.zone_class != RdataClass.IN:
        return Plan(Rcode.NOTAUTH, reason=f"not authoritative for {request.zone_name}")
    return None


def labels_referenced(request: UpdateRequest, origin: dns.name.Name) -> frozenset[str]:
    """The installation labels a request may read or change: the label just below the
    apex of every name in its Prerequisite and Update Sections, when it is a valid
    installation label (others cannot be an installation's)."""
    out = set()
    for record in (*request.prerequisites, *request.updates):
        name = record.name
        if name.is_subdomain(origin) and name != origin:
            raw = name.labels[len(name) - len(origin) - 1].lower()
            label = raw.decode("ascii", "replace")
            if LABEL_RE.fullmatch(label):
                out.add(label)
    return frozenset(out)


def plan_update(request: UpdateRequest, ctx: UpdateContext) -> Plan:
    """What the request does to the registry, following RFC 2136 section 3 with the
    deviations in this module's docstring. Pure: `ctx` is not changed."""
    origin = ctx.zone.config.origin
    wrong_zone = check_zone(request, origin)
    if wrong_zone is not None:
        return wrong_zone
    try:
        _check_prerequisites(request, ctx)
        _prescan(request, origin)
        changes = _apply(request, ctx)
    except _Stop as stop:
        return Plan(stop.rcode, reason=stop.reason)
    return Plan(Rcode.NOERROR, changes, "applied" if changes else "nothing to change")


def _relative(name: dns.name.Name, origin: dns.name.Name) -> tuple[bytes, ...] | None:
    """Lower-case labels of `name` below the apex; None outside the zone."""
    if not name.is_subdomain(origin):
        return None
    return tuple(label.lower() for label in name.labels[: len(name) - len(origin)])


def _check_prerequisites(request: UpdateRequest, ctx: UpdateContext) -> None:
    """RFC 2136 3.2.5, word for word; raises _Stop with the failing rcode."""
    zone = ctx.zone
    origin = zone.config.origin
    wanted: dict[tuple[tuple[bytes, ...], int], set[dns.rdata.Rdata]] = {}
    for rr in request.prerequisites:
        if rr.ttl != 0:
            raise _Stop(Rcode.FORMERR, f"prerequisite {rr.name}: TTL must be 0")
        relative = _relative(rr.name, origin)
        if relative is None:
            raise _Stop(Rcode.NOTZONE, f"prerequisite {rr.name} is outside the zone")
        if rr.rdclass in (RdataClass.ANY, RdataClass.NONE):
            _check_in_use(rr, zone.rrsets_at(relative))
        elif rr.rdclass == request.zone_class and rr.rdata is not None:
            wanted.setdefault((relative, rr.rdtype), set()).add(rr.rdata)
        else:
            raise _Stop(Rcode.FORMERR, f"prerequisite {rr.name}: bad class {rr.rdclass}")
    for (relative, rdtype), rdatas in wanted.items():
        present = zone.rrsets_at(relative) or []
        have = {rd for r in present if r.rdtype == rdtype for rd in r.rdatas}
        if have != rdatas:
            name = dns.name.Name((*relative, *origin.labels))
            raise _Stop(Rcode.NXRRSET, f"the {_type(rdtype)} RRset at {name} differs")


def _check_in_use(rr: Record, found: list[ZoneRRset] | None) -> None:
    """A prerequisite of class ANY (the name or RRset is in use) or NONE (it is not)
    against the RRsets `found` at its name (RFC 2136 3.2.5); raises _Stop when it
    fails."""
    if rr.rdclass == RdataClass.ANY:
        if rr.rdtype == RdataType.ANY:
            if not found:
                raise _Stop(Rcode.NXDOMAIN, f"{rr.name} is not in use")
        elif not any(r.rdtype == rr.rdtype for r in found or ()):
            raise _Stop(Rcode.NXRRSET, f"no {_type(rr.rdtype)} RRset at {rr.name}")
    elif rr.rdtype == RdataType.ANY:
        if found:
            raise _Stop(Rcode.YXDOMAIN, f"{rr.name} is in use")
    elif any(r.rdtype == rr.rdtype for r in found or ()):
        raise _Stop(Rcode.YXRRSET, f"{_type(rr.rdtype)} RRset exists at {rr.name}")


def _prescan(request: UpdateRequest, origin: dns.name.Name) -> None:
    """RFC 2136 3.4.1.3; raises _Stop with NOTZONE or FORMERR."""
    for rr in request.updates:
        if _relative(rr.name, origin) is None:
            raise _Stop(Rcode.NOTZONE, f"update {rr.name} is outside the zone")
        meta = dns.rdatatype.is_metatype(RdataType.make(rr.rdtype))
        if rr.rdclass == request.zone_class:
            bad = meta
        elif rr.rdclass == RdataClass.ANY:
            bad = rr.ttl != 0 or rr.rdata is not None or (meta and rr.rdtype != RdataType.ANY)
        elif rr.rdclass == RdataClass.NONE:
            bad = rr.ttl != 0 or meta or rr.rdata is None
        else:
            bad = True
        if bad:
            raise _Stop(Rcode.FORMERR, f"update {rr.name}: malformed {_type(rr.rdtype)} RR")


_ADDRESS_TYPES = frozenset((RdataType.A, RdataType.AAAA))
_SERVICE_TYPES = frozenset((RdataType.SRV,))

_Values = list[str | int | None]
"""[ipv4, ipv6, port] of one installation while the update is worked out."""


def _values_of(zone: Zone, label: bytes) -> _Values:
    node = zone.nodes.get(label)
    if node is None:
        return [None, None, None]
    return [
        None if node[0] is None else socket.inet_ntop(socket.AF_INET, node[0]),
        None if node[1] is None else socket.inet_ntop(socket.AF_INET6, node[1]),
        node[2],
    ]


def _apply(request: UpdateRequest, ctx: UpdateContext) -> dict[str, InstallationChange]:
    """Permissions (RFC 2136 3.3) and the update (3.4.2) on a working copy of the
    values; the changes by code. Raises _Stop(REFUSED) for anything not allowed."""
    zone = ctx.zone
    origin = zone.config.origin
    before: dict[bytes, _Values] = {}
    after: dict[bytes, _Values] = {}
    for rr in request.updates:
        label, service = _permitted(rr, ctx)
        if label not in after:
            before[label] = _values_of(zone, label)
            after[label] = list(before[label])
        target = dns.name.Name((label, *origin.labels))
        _update(after[label], rr, service, target, ctx)
    return _changes(before, after, ctx.installations)


def _permitted(rr: Record, ctx: UpdateContext) -> tuple[bytes, bool]:
    """The label of the installation an update RR changes, and whether it is at the
    SRV name; _Stop(REFUSED) when it is no installation's name, the key may not change
    that installation, or the RR's type cannot change at that name (RFC 2136 3.3)."""
    relative = _relative(rr.name, ctx.zone.config.origin) or ()
    if len(relative) == 1:
        label, service = relative[0], False
    elif len(relative) == 3 and relative[:2] == SRV_LABELS:
        label, service = relative[2], True
    else:
        raise _Stop(Rcode.REFUSED, f"{rr.name} is not an installation's name")
    if label not in ctx.installations:
        raise _Stop(Rcode.REFUSED, f"{rr.name} is not an installation's name")
    if ctx.allowed is not None and label not in ctx.allowed:
        raise _Stop(Rcode.REFUSED, f"{rr.name} belongs to another installation")
    types = _SERVICE_TYPES if service else _ADDRESS_TYPES
    if rr.rdtype not in types and not (rr.rdtype == RdataType.ANY and rr.rdclass == RdataClass.ANY):
        raise _Stop(Rcode.REFUSED, f"{_type(rr.rdtype)} records cannot change at {rr.name}")
    return label, service


def _update(
    values: _Values, rr: Record, service: bool, target: dns.name.Name, ctx: UpdateContext
) -> None:
    """One update RR (RFC 2136 3.4.2, with this module's deviations) on the `values` of
    the installation served at `target`; `service`: the RR is at its SRV name."""
    if rr.rdclass == RdataClass.ANY:
        if rr.rdtype == RdataType.ANY:
            cleared = (2,) if service else (0, 1)
        else:
            cleared = (_slot(rr.rdtype),)
        for slot in cleared:
            values[slot] = None
    elif rr.rdclass == RdataClass.NONE:
        slot = _slot(rr.rdtype)
        if _holds(values[slot], rr.rdata, target):
            values[slot] = None
    else:
        values[_slot(rr.rdtype)] = _value(rr, target, ctx)


def _changes(
    before: Mapping[bytes, _Values],
    after: Mapping[bytes, _Values],
    installations: Mapping[bytes, str],
) -> dict[str, InstallationChange]:
    """By code, the change from `before` to `after` of each installation whose values
    differ: the fields that differ ("" clears one), the others None."""
    changes = {}
    for label, values in after.items():
        old = before[label]
        fields = [
            None if new == was else ("" if new is None else new)
            for new, was in zip(values, old, strict=True)
        ]
        if any(f is not None for f in fields):
            ipv4, ipv6, port = fields
            changes[installations[label]] = InstallationChange(
                ipv4=None if ipv4 is None else str(ipv4),
                ipv6=None if ipv6 is None else str(ipv6),
                port=port,
            )
    return changes


def _slot(rdtype: int) -> int:
    return {RdataType.A: 0, RdataType.AAAA: 1, RdataType.SRV: 2}[RdataType(rdtype)]


def _holds(value: str | int | None, rdata: dns.rdata.Rdata | None, target: dns.name.Name) -> bool:
    """Whether the record `rdata` is the one the value `value` is served as."""
    if value is None or rdata is None:
        return False
    if isinstance(rdata, dns.rdtypes.IN.A.A | dns.rdtypes.IN.AAAA.AAAA):
        return ipaddress.ip_address(rdata.address) == ipaddress.ip_address(str(value))
    if isinstance(rdata, dns.rdtypes.IN.SRV.SRV):
        return (rdata.priority, rdata.weight, rdata.port, rdata.target) == (0, 0, value, target)
    return False


def _value(rr: Record, target: dns.name.Name, ctx: UpdateContext) -> str | int:
    """The registry value an A, AAAA or SRV record stands for (normalised as stored);
    _Stop(REFUSED) when the registry cannot hold it."""
    rdata = rr.rdata
    try:
        if isinstance(rdata, dns.rdtypes.IN.A.A):
            return validate_ipv4(rdata.address, allow_non_global=ctx.allow_non_global)
        if isinstance(rdata, dns.rdtypes.IN.AAAA.AAAA):
            return validate_ipv6(rdata.address, allow_non_global=ctx.allow_non_global)
        if isinstance(rdata, dns.rdtypes.IN.SRV.SRV):
            if rdata.priority != 0 or rdata.weight != 0 or rdata.target != target:
                raise _Stop(Rcode.REFUSED, f"{rr.name}: the SRV record must be 0 0 PORT {target}")
            return validate_port(rdata.port)
    except ValidationError as exc:
        raise _Stop(Rcode.REFUSED, f"{rr.name}: {exc.rule}") from None
    raise _Stop(Rcode.FORMERR, f"{rr.name}: unreadable {_type(rr.rdtype)} data")


def _type(rdtype: int) -> str:
    return RdataType.to_text(rdtype)
