"""The zone snapshot the DNS server answers from.

A `Zone` is immutable: every journal batch makes a new one (`Zone.apply`), and the server
swaps its reference in one assignment, so a query is always answered from one version.
Installations are kept in the cheapest shape that answers fast and loads a million:
label (bytes, lower-case) -> (IPv4 packed, IPv6 packed, port).
"""

from __future__ import annotations

import socket
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import dns.name
import dns.rdataclass
import dns.rdatatype
import dns.rdtypes.IN.A
import dns.rdtypes.IN.AAAA
import dns.rrset

from controparte.settings import Settings
from controparte.store.base import JournalEntry, RecordRow

Node = tuple[bytes | None, bytes | None, int | None]
"""(IPv4 packed, IPv6 packed, public port) of one installation."""

SRV_SERVICE = (b"_mxserver", b"_tcp")
"""`_mxserver._tcp.<label>.<zone>` SRV tells a caller the installation's public port."""


def node_from_row(ipv4: str | None, ipv6: str | None, port: int | None) -> Node | None:
    """The node served for one installation, or None when it publishes nothing."""
    if ipv4 is None and ipv6 is None and port is None:
        return None
    return (
        None if ipv4 is None else socket.inet_pton(socket.AF_INET, ipv4),
        None if ipv6 is None else socket.inet_pton(socket.AF_INET6, ipv6),
        port,
    )


_ABSENT: Final = object()

OVERLAY_MAX = 4096
"""Changes kept beside the base map before they are folded into a new base."""


class Nodes(Mapping[bytes, Node]):
    """An immutable label -> node map made of a large base and a small overlay of
    recent changes (None marks a removed label). A change copies only the overlay;
    once it outgrows OVERLAY_MAX it is folded into a new base, so a change costs
    O(OVERLAY_MAX) and O(n / OVERLAY_MAX) amortised, not O(n)."""

    __slots__ = ("_base", "_len", "_overlay")

    def __init__(
        self,
        base: dict[bytes, Node] | None = None,
        overlay: dict[bytes, Node | None] | None = None,
        length: int | None = None,
    ) -> None:
        self._base = base if base is not None else {}
        self._overlay = overlay if overlay is not None else {}
        self._len = len(self._base) if length is None else length

    def get(self, label: bytes, default: Any = None) -> Any:
        node = self._overlay.get(label, _ABSENT)
        if node is _ABSENT:
            return self._base.get(label, default)
        return default if node is None else node

    def __getitem__(self, label: bytes) -> Node:
        node = self.get(label)
        if node is None:
            raise KeyError(label)
        return node  # type: ignore[no-any-return]

    def __len__(self) -> int:
        return self._len

    def __iter__(self) -> Iterator[bytes]:
        overlay = self._overlay
        for label in self._base:
            if label not in overlay:
                yield label
        for label, node in overlay.items():
            if node is not None:
                yield label

    def with_changes(self, changes: Mapping[bytes, Node | None]) -> Nodes:
        """A new map with `changes` applied (None removes a label)."""
        length = self._len
        for label, node in changes.items():
            length += (node is not None) - (self.get(label) is not None)
        overlay = {**self._overlay, **changes}
        if len(overlay) <= OVERLAY_MAX:
            return Nodes(self._base, overlay, length)
        base = dict(self._base)
        for label, node in overlay.items():
            if node is None:
                base.pop(label, None)
            else:
                base[label] = node
        return Nodes(base, None, length)


@dataclass(frozen=True, slots=True)
class ZoneConfig:
    """What the zone publishes besides installations; derived once from `Settings`."""

    origin: dns.name.Name
    ttl: int
    negative_ttl: int
    soa_mname: dns.name.Name
    soa_rname: dns.name.Name
    soa_refresh: int
    soa_retry: int
    soa_expire: int
    ns_names: tuple[dns.name.Name, ...]
    glue: dict[tuple[bytes, ...], tuple[tuple[str, ...], tuple[str, ...]]]
    """In-zone name server: relative labels -> (IPv4s, IPv6s)."""
    reserved: frozenset[bytes]
    """First relative labels of names the zone publishes itself (not installations')."""
    edns_udp_size: int

    @property
    def origin_labels(self) -> tuple[bytes, ...]:
        return tuple(label.lower() for label in self.origin.labels[:-1])

    @classmethod
    def from_settings(cls, settings: Settings) -> ZoneConfig:
        origin = dns.name.from_text(settings.zone)
        glue: dict[tuple[bytes, ...], tuple[tuple[str, ...], tuple[str, ...]]] = {}
        ns_names = []
        for server in settings.ns:
            name = dns.name.from_text(server.name)
            ns_names.append(name)
            if name.is_subdomain(origin) and name != origin:
                relative = tuple(lab.lower() for lab in name.relativize(origin).labels)
                v4 = tuple(a for a in server.addresses if ":" not in a)
                v6 = tuple(a for a in server.addresses if ":" in a)
                glue[relative] = v4, v6
        reserved = set()
        for name in [
            *ns_names,
            dns.name.from_text(settings.soa_mname),
            dns.name.from_text(settings.soa_rname),
        ]:
            if name.is_subdomain(origin) and name != origin:
                reserved.add(name.relativize(origin).labels[-1].lower())
        return cls(
            origin=origin,
            ttl=settings.ttl,
            negative_ttl=settings.negative_ttl,
            soa_mname=dns.name.from_text(settings.soa_mname),
            soa_rname=dns.name.from_text(settings.soa_rname),
            soa_refresh=settings.soa_refresh,
            soa_retry=settings.soa_retry,
            soa_expire=settings.soa_expire,
            ns_names=tuple(ns_names),
            glue=glue,
            reserved=frozenset(reserved),
            edns_udp_size=settings.edns_udp_size,
        )


@dataclass(frozen=True, slots=True, eq=False)
class Zone:
    """One immutable version of the zone. The caches belong to this version only, so a
    cached answer can never outlive the data it was made from."""

    config: ZoneConfig
    serial: int
    seq: int
    nodes: Nodes
    udp_cache: dict[bytes, bytes] = field(default_factory=dict)
    """Query bytes after the ID -> response bytes after the ID, for UDP."""
    tcp_cache: dict[bytes, bytes] = field(default_factory=dict)
    soa_cache: dict[int, bytes] = field(default_factory=dict)
    """Fast path: negative-answer SOA RR by the offset of the apex in the question."""

    @classmethod
    def build(cls, config: ZoneConfig, serial: int, seq: int, rows: Iterable[RecordRow]) -> Zone:
        nodes: dict[bytes, Node] = {}
        for label, ipv4, ipv6, port in rows:
            node = node_from_row(ipv4, ipv6, port)
            if node is not None:
                nodes[label.encode("ascii")] = node
        return cls(config, serial, seq, Nodes(nodes))

    def apply(self, entries: Sequence[JournalEntry]) -> Zone:
        """A new version with the journal entries applied in order (this one is
        unchanged: the label map is layered, so the cost is the size of the change)."""
        if not entries:
            return self
        changes: dict[bytes, Node | None] = {}
        for entry in entries:
            if entry.old_label is not None:
                changes[entry.old_label.encode("ascii")] = None
            if entry.record is not None:
                node = node_from_row(entry.record.ipv4, entry.record.ipv6, entry.record.port)
                changes[entry.record.label.encode("ascii")] = node
        last = entries[-1]
        return Zone(self.config, last.serial, last.seq, self.nodes.with_changes(changes))

    # -- RRsets, for the general answer path and zone transfer -------------------------

    def soa_rrset(self, ttl: int | None = None) -> dns.rrset.RRset:
        c = self.config
        return dns.rrset.from_text(
            c.origin,
            c.ttl if ttl is None else ttl,
            "IN",
            "SOA",
            f"{c.soa_mname} {c.soa_rname} {self.serial} {c.soa_refresh} {c.soa_retry}"
            f" {c.soa_expire} {c.negative_ttl}",
        )

    def negative_soa_rrset(self) -> dns.rrset.RRset:
        """The SOA for the authority section of a negative answer: its TTL is the
        negative-caching TTL, min(SOA TTL, MINIMUM) (RFC 2308 section 3)."""
        return self.soa_rrset(min(self.config.ttl, self.config.negative_ttl))
