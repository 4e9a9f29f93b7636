"""The zone snapshot: what the DNS server answers from, zone transfer streams and the
zone file writes.

A `Zone` is immutable: every journal batch makes a new one (`Zone.apply`), and the server
swaps its reference in one assignment, so a query is always answered from one version.
Installations are kept in the cheapest shape that answers fast and loads a million:
label (bytes, lower-case) -> (IPv4 packed, IPv6 packed, port). Its RRsets are made from
that shape by one set of rules (`Zone.rrsets_at` for one name, `Zone.rrsets` for all),
from the model's `ZoneConfig` and `DnsRecord`.
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, NamedTuple

import dns.name
import dns.rdata
import dns.rdtypes.ANY.NS
import dns.rdtypes.ANY.SOA
import dns.rdtypes.IN.A
import dns.rdtypes.IN.AAAA
import dns.rdtypes.IN.SRV
import dns.rrset
from dns.rdataclass import RdataClass
from dns.rdatatype import RdataType

from controparte.model import SRV_SERVICE, DnsRecord, ZoneConfig
from controparte.store.base import JournalEntry, Store

Node = tuple[bytes | None, bytes | None, int | None]
"""(IPv4 packed, IPv6 packed, public port) of one installation."""

SRV_LABELS: Final[tuple[bytes, ...]] = dns.name.from_text(SRV_SERVICE, origin=None).labels
"""`SRV_SERVICE` as wire labels (b"_mxserver", b"_tcp"), for the paths that parse names."""

_IN = RdataClass.IN

# dnspython's rdata constructors carry no annotations; these names give them types.
_SOA: Callable[..., dns.rdata.Rdata] = dns.rdtypes.ANY.SOA.SOA
_NS: Callable[[RdataClass, RdataType, dns.name.Name], dns.rdata.Rdata] = dns.rdtypes.ANY.NS.NS
_A: Callable[[RdataClass, RdataType, str | bytes], dns.rdata.Rdata] = dns.rdtypes.IN.A.A
_AAAA: Callable[[RdataClass, RdataType, str | bytes], dns.rdata.Rdata] = dns.rdtypes.IN.AAAA.AAAA
_SRV: Callable[[RdataClass, RdataType, int, int, int, dns.name.Name], dns.rdata.Rdata] = (
    dns.rdtypes.IN.SRV.SRV
)


def node_of(ipv4: str | None, ipv6: str | None, port: int | None) -> Node | None:
    """The node served for an installation's record, or None when it publishes nothing.

    Raises `OSError` for an address that is not one (a store holds only valid ones)."""
    if ipv4 is None and ipv6 is None and port is None:
        return None
    return (
        None if ipv4 is None else socket.inet_pton(socket.AF_INET, ipv4),
        None if ipv6 is None else socket.inet_pton(socket.AF_INET6, ipv6),
        port,
    )


class ZoneRRset(NamedTuple):
    """One RRset of the zone (class IN; its records distinct), as the snapshot makes it.

    A tuple, not dnspython's `RRset`: immutable, and cheap enough to list a million
    installations (an `RRset` hashes each record as it is added, an SRV record by
    rendering its target, which made a zone export take 1.5 times as long).
    `to_rrset` gives dnspython's, for a message."""

    name: dns.name.Name
    ttl: int
    rdtype: RdataType
    rdatas: tuple[dns.rdata.Rdata, ...]

    def to_rrset(self) -> dns.rrset.RRset:
        return dns.rrset.from_rdata_list(self.name, self.ttl, self.rdatas)


def _addresses(
    name: dns.name.Name, ttl: int, v4: Sequence[str | bytes], v6: Sequence[str | bytes]
) -> list[ZoneRRset]:
    """The A and AAAA RRsets of `name` (each when it has addresses), A first; an address
    is text or packed."""
    out = []
    if v4:
        out.append(ZoneRRset(name, ttl, RdataType.A, tuple([_A(_IN, RdataType.A, a) for a in v4])))
    if v6:
        rdatas = tuple([_AAAA(_IN, RdataType.AAAA, a) for a in v6])
        out.append(ZoneRRset(name, ttl, RdataType.AAAA, rdatas))
    return out


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

    def pairs(self) -> Iterator[tuple[bytes, Node]]:
        """Every (label, node), in the map's own order (the base's, then the overlay's):
        what `items()` gives, without a lookup per label (nor, without an overlay, a
        Python frame per label)."""
        if not self._overlay:
            return iter(self._base.items())
        return self._layered_pairs()

    def _layered_pairs(self) -> Iterator[tuple[bytes, Node]]:
        overlay = self._overlay
        for label, node in self._base.items():
            if label not in overlay:
                yield label, node
        for label, maybe in overlay.items():
            if maybe is not None:
                yield label, maybe

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
    def build(cls, config: ZoneConfig, serial: int, seq: int, records: Iterable[DnsRecord]) -> Zone:
        """The version holding `records` (see `node_of` for what an invalid one raises)."""
        return cls(config, serial, seq, _nodes(records))

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
                label, ipv4, ipv6, port = entry.record
                changes[label.encode("ascii")] = node_of(ipv4, ipv6, port)
        last = entries[-1]
        return Zone(self.config, last.serial, last.seq, self.nodes.with_changes(changes))

    # -- RRsets: the one description of what the zone publishes ------------------------

    def rrsets(self) -> Iterator[ZoneRRset]:
        """Every RRset of the zone, made one at a time, in canonical order: SOA, the apex
        NS, glue (by name server, in configuration order: A, AAAA), then each
        installation by label: A, AAAA, the SRV at `_mxserver._tcp.<label>` (each when
        set). Installations on reserved labels are left out, as lookups hide them.
        What the zone file writes and zone transfer streams."""
        yield from self.apex_rrsets()
        nodes, reserved, origin = self.nodes, self.config.reserved, self.config.origin.labels
        for label in sorted(nodes):
            if label not in reserved:
                node = nodes[label]
                name = dns.name.Name((label, *origin))
                yield from self._node_addresses(name, node)
                if node[2] is not None:
                    yield self._srv_rrset(name, node[2])

    def apex_rrsets(self) -> list[ZoneRRset]:
        """What the zone publishes besides installations, in the order of `rrsets`: SOA,
        the apex NS, glue."""
        c = self.config
        out = [self.soa_rrset(), self._ns_rrset()]
        for relative, (v4, v6) in c.glue.items():
            out.extend(_addresses(self._name(relative), c.ttl, v4, v6))
        return out

    def rrsets_at(self, relative: tuple[bytes, ...]) -> list[ZoneRRset] | None:
        """Every RRset at the name `relative` (lower-case labels below the apex), in the
        order of `rrsets`; [] for an empty non-terminal; None when the name does not
        exist (nor does an installation's on a reserved label)."""
        c = self.config
        if not relative:
            return [self.soa_rrset(), self._ns_rrset()]
        glue = c.glue.get(relative)
        if glue is not None:
            return _addresses(self._name(relative), c.ttl, *glue)
        if any(g[-len(relative) :] == relative for g in c.glue if len(g) > len(relative)):
            return []
        label = relative[-1]
        if label in c.reserved:
            return None
        node = self.nodes.get(label)
        if node is None:
            return None
        if len(relative) == 1:
            return self._node_addresses(self._name(relative), node)
        if node[2] is None:
            return None
        if relative == (SRV_LABELS[1], label):
            return []  # _tcp.<label>: an empty non-terminal above the SRV name
        if relative == (*SRV_LABELS, label):
            return [self._srv_rrset(self._name((label,)), node[2])]
        return None

    def _name(self, relative: tuple[bytes, ...]) -> dns.name.Name:
        return dns.name.Name((*relative, *self.config.origin.labels))

    def _node_addresses(self, name: dns.name.Name, node: Node) -> list[ZoneRRset]:
        v4, v6, _ = node
        return _addresses(
            name, self.config.ttl, () if v4 is None else (v4,), () if v6 is None else (v6,)
        )

    def _srv_rrset(self, target: dns.name.Name, port: int) -> ZoneRRset:
        """`_mxserver._tcp.<label>` SRV `0 0 <port> <label>.<zone>.`, for `target` the
        installation's name."""
        owner = dns.name.Name((*SRV_LABELS, *target.labels))
        srv = _SRV(_IN, RdataType.SRV, 0, 0, port, target)
        return ZoneRRset(owner, self.config.ttl, RdataType.SRV, (srv,))

    def _ns_rrset(self) -> ZoneRRset:
        c = self.config
        rdatas = tuple(_NS(_IN, RdataType.NS, name) for name in c.ns_names)
        return ZoneRRset(c.origin, c.ttl, RdataType.NS, rdatas)

    def soa_rrset(self, ttl: int | None = None) -> ZoneRRset:
        c = self.config
        soa = _SOA(
            _IN,
            RdataType.SOA,
            c.soa_mname,
            c.soa_rname,
            self.serial,
            c.soa_refresh,
            c.soa_retry,
            c.soa_expire,
            c.negative_ttl,
        )
        return ZoneRRset(c.origin, c.ttl if ttl is None else ttl, RdataType.SOA, (soa,))

    def negative_soa_rrset(self) -> ZoneRRset:
        """The SOA for the authority section of a negative answer: its TTL is the
        negative-caching TTL, min(SOA TTL, MINIMUM) (RFC 2308 section 3)."""
        return self.soa_rrset(min(self.config.ttl, self.config.negative_ttl))


def _nodes(records: Iterable[DnsRecord]) -> Nodes:
    nodes: dict[bytes, Node] = {}
    for label, ipv4, ipv6, port in records:
        node = node_of(ipv4, ipv6, port)
        if node is not None:
            nodes[label.encode("ascii")] = node
    return Nodes(nodes)


def load_zone(store: Store, config: ZoneConfig) -> Zone:
    """A snapshot of everything `store` holds now, read in one consistent view (the
    store's `dns_snapshot`): what the DNS server starts from and the zone file writes."""
    serial, seq, nodes = store.dns_snapshot(_nodes)
    return Zone(config, serial, seq, nodes)
