"""The zone as an RFC 1035 master file, for `named-checkzone`, backups and secondaries
that cannot transfer.

Pure: a zone snapshot in, text out. The file holds the snapshot's RRsets (`Zone.rrsets`,
what the DNS server serves and zone transfer streams) in their order, one record a line:
the owner relative to `$ORIGIN` ("@" for the apex), the names inside the data absolute.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator

import dns.name
import dns.rdatatype

from controparte.dns.zone import Zone

_type_text = functools.cache(dns.rdatatype.to_text)


@functools.lru_cache(maxsize=64)
def _label_text(label: bytes) -> str:
    """One label as master-file text (dnspython escapes it). Remembered: the zone's own
    labels recur on every line, an installation's on its few lines in a row."""
    return dns.name.Name((label,)).to_text()


def _owner(name: dns.name.Name, depth: int) -> str:
    """`name` relative to the origin, `depth` labels long, as text (`Name.relativize`
    then `to_text`, label by label)."""
    relative = name.labels[:-depth]
    return ".".join(map(_label_text, relative)) if relative else "@"


def zone_lines(zone: Zone) -> Iterator[str]:
    """The master file, line by line (each ends in a newline), made as it is read; see
    `zone_text`."""
    origin = zone.config.origin
    depth = len(origin)
    yield f"; zone {origin}, serial {zone.serial}, written by controparte\n"
    yield f"$ORIGIN {origin}\n"
    yield f"$TTL {zone.config.ttl}\n"
    name, owner = None, ""
    for rrset in zone.rrsets():
        if rrset.name is not name:  # an installation's A and AAAA share their name
            name, owner = rrset.name, _owner(rrset.name, depth)
        head = f"{owner}\t{rrset.ttl}\tIN\t{_type_text(rrset.rdtype)}\t"
        for rdata in rrset.rdatas:
            yield f"{head}{rdata.to_text()}\n"


def zone_text(zone: Zone) -> str:
    """`zone` as a master file that `named-checkzone <zone> FILE` accepts. Installations
    come sorted by label, so the same data always gives the same text."""
    return "".join(zone_lines(zone))
