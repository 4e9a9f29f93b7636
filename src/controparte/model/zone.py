"""The zone's model: its names, its configuration and what it serves per installation.

Pure values, the one description of the zone that DNS answers from, zone transfer
streams and the zone file writes (`controparte.dns.zone` turns them into RRsets):
- `label_of`: the one place where `<label>.<zone>` becomes an installation label;
- `SRV_SERVICE`: `_mxserver._tcp.<label>.<zone>` SRV gives an installation's public port;
- `DnsRecord`: what DNS serves for one installation, as the store yields it;
- `ZoneConfig`: what the zone publishes besides installations, built once from `Settings`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import NamedTuple

import dns.name

from controparte.errors import ValidationError

# The module, not its names: `installation` imports `DnsRecord` from here, so its names
# are looked up when `label_of` runs (the package imports `installation` first).
from controparte.model import installation
from controparte.settings import Settings

SRV_SERVICE = "_mxserver._tcp"
"""The service name of `<SRV_SERVICE>.<label>.<zone>` SRV `0 0 <port> <label>.<zone>.`,
which tells a caller an installation's public port."""


class DnsRecord(NamedTuple):
    """What DNS serves for one installation: A `ipv4`, AAAA `ipv6` at `<label>.<zone>`
    and the SRV of `port`, each when set. A tuple, so a million load as cheaply as rows."""

    label: str
    ipv4: str | None
    ipv6: str | None
    port: int | None


def label_of(name: str, zone: str) -> str | None:
    """The installation label that `name` names in `zone`, or None.

    `name` names a label when it is exactly `<label>.<zone>`: compared without regard to
    case, the trailing dot optional on either, surrounding blanks ignored. The label is
    returned lower-cased and valid (`validate_label`); None for the apex, a name outside
    the zone, a name deeper than one label below the apex, or an invalid label."""
    candidate = name.strip().lower().removesuffix(".")
    suffix = "." + zone.strip().lower().removesuffix(".")
    if suffix == "." or not candidate.endswith(suffix):
        return None
    relative = candidate[: -len(suffix)]
    if not relative or "." in relative:
        return None
    try:
        return installation.validate_label(relative)
    except ValidationError:
        return None


Glue = tuple[tuple[str, ...], tuple[str, ...]]
"""The addresses of one in-zone name server: (IPv4s, IPv6s), in configuration order."""


@dataclass(frozen=True, slots=True)
class ZoneConfig:
    """What the zone publishes besides installations, derived once from `Settings`
    (`from_settings`): SOA and NS at the apex, glue for in-zone name servers, the TTLs."""

    origin: dns.name.Name
    ttl: int
    negative_ttl: int
    soa_mname: dns.name.Name
    soa_rname: dns.name.Name
    soa_refresh: int
    soa_retry: int
    soa_expire: int
    ns_names: tuple[dns.name.Name, ...]
    """The NS records of the apex, in configuration order, each once."""
    glue: Mapping[tuple[bytes, ...], Glue]
    """In-zone name servers below the apex (lower-case relative labels) -> addresses."""
    reserved: frozenset[bytes]
    """The first label below the apex of every name the zone publishes itself (in-zone
    name servers, SOA names), lower-case: no installation may take one (the registry
    refuses it; DNS and the zone file hide an installation stored on one before)."""
    edns_udp_size: int

    @property
    def origin_labels(self) -> tuple[bytes, ...]:
        return tuple(label.lower() for label in self.origin.labels[:-1])

    def fingerprint(self) -> str:
        """A digest of everything this configuration publishes (SOA fields, NS, glue,
        TTLs, reserved labels): equal digests, equal records. The store keeps the one
        served; a new one means the zone changed without a journal entry (see
        `Store.adopt_zone_config`)."""
        published = {
            "origin": self.origin.to_text().lower(),
            "ttl": self.ttl,
            "negative_ttl": self.negative_ttl,
            "soa": [
                self.soa_mname.to_text().lower(),
                self.soa_rname.to_text().lower(),
                self.soa_refresh,
                self.soa_retry,
                self.soa_expire,
            ],
            "ns": [name.to_text().lower() for name in self.ns_names],
            "glue": sorted(
                [
                    [label.decode("ascii", "backslashreplace") for label in relative],
                    list(v4),
                    list(v6),
                ]
                for relative, (v4, v6) in self.glue.items()
            ),
            "reserved": sorted(self.reserved_labels),
        }
        text = json.dumps(published, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()

    @property
    def reserved_labels(self) -> frozenset[str]:
        """`reserved` as installation labels (text), for the registry's check."""
        return frozenset(label.decode("ascii", "backslashreplace") for label in self.reserved)

    @classmethod
    def from_settings(cls, settings: Settings) -> ZoneConfig:
        """The zone of `settings`. A name server listed twice has the addresses of both
        entries as its glue."""
        origin = dns.name.from_text(settings.zone)
        soa_mname = dns.name.from_text(settings.soa_mname)
        soa_rname = dns.name.from_text(settings.soa_rname)
        ns_names: dict[dns.name.Name, None] = {}
        glue: dict[tuple[bytes, ...], Glue] = {}
        for server in settings.ns:
            name = dns.name.from_text(server.name)
            ns_names[name] = None
            if name.is_subdomain(origin) and name != origin:
                relative = tuple(label.lower() for label in name.relativize(origin).labels)
                v4, v6 = glue.get(relative, ((), ()))
                v4 += tuple(a for a in server.addresses if ":" not in a and a not in v4)
                v6 += tuple(a for a in server.addresses if ":" in a and a not in v6)
                glue[relative] = v4, v6
        reserved = frozenset(
            name.relativize(origin).labels[-1].lower()
            for name in (*ns_names, soa_mname, soa_rname)
            if name.is_subdomain(origin) and name != origin
        )
        return cls(
            origin=origin,
            ttl=settings.ttl,
            negative_ttl=settings.negative_ttl,
            soa_mname=soa_mname,
            soa_rname=soa_rname,
            soa_refresh=settings.soa_refresh,
            soa_retry=settings.soa_retry,
            soa_expire=settings.soa_expire,
            ns_names=tuple(ns_names),
            glue=MappingProxyType(glue),
            reserved=reserved,
            edns_udp_size=settings.edns_udp_size,
        )
