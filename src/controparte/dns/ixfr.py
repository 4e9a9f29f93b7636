"""IXFR (RFC 1995): the condensed difference between the zone at a client's serial and a
snapshot, from the journal entries between the two. Pure.

The journal keeps, for each change, what was served before and after it. Labels are
unique at every serial, so what a label served at the client's serial is told by the
first entry after that serial that touches it: its before-image when the label is the
entry's old label, nothing when the label first appears as an entry's new label. What
it serves now is the snapshot's. The difference is then two set differences of records
per label (RFC 1995 6: one condensed sequence): every record deleted was there and every
record added was not, as secondaries that apply IXFR strictly (Knot, NSD) require.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from controparte.dns.zone import Node, Zone, node_of
from controparte.store.base import JournalEntry


class Before:
    """What each label touched by the entries given so far served at the serial they
    start from (None: nothing), built from entries given in journal order."""

    __slots__ = ("nodes",)

    def __init__(self) -> None:
        self.nodes: dict[bytes, Node | None] = {}

    def __len__(self) -> int:
        return len(self.nodes)

    def add(self, entries: Iterable[JournalEntry]) -> None:
        """Learn from `entries`, the next ones in journal order."""
        nodes = self.nodes
        for entry in entries:
            before = entry.before
            if before is not None:
                label = before.label.encode("ascii")
                if label not in nodes:
                    nodes[label] = node_of(before.ipv4, before.ipv6, before.port)
            if entry.record is not None:
                nodes.setdefault(entry.record.label.encode("ascii"), None)


@dataclass(frozen=True, slots=True)
class Difference:
    """The records to delete and to add, as (label, node) with only the fields whose
    record changes (each an installation's A, AAAA and SRV, see `Zone.rrsets`); `size`
    counts them."""

    deleted: tuple[tuple[bytes, Node], ...]
    added: tuple[tuple[bytes, Node], ...]
    size: int


def difference(zone: Zone, before: Before) -> Difference:
    """From the zone `before` describes (at the entries' first serial) to `zone` (the
    snapshot after the last entry). Labels the zone reserves are hidden on both sides,
    as lookups hide them."""
    reserved = zone.config.reserved
    nodes = zone.nodes
    deleted: list[tuple[bytes, Node]] = []
    added: list[tuple[bytes, Node]] = []
    size = 0
    for label, old in before.nodes.items():
        new = nodes.get(label)
        if old == new or label in reserved:
            continue
        o4, o6, oport = old or _NOTHING
        n4, n6, nport = new or _NOTHING
        same4, same6, sameport = o4 == n4, o6 == n6, oport == nport
        gone = (None if same4 else o4, None if same6 else o6, None if sameport else oport)
        come = (None if same4 else n4, None if same6 else n6, None if sameport else nport)
        if gone != _NOTHING:
            deleted.append((label, gone))
            size += _count(gone)
        if come != _NOTHING:
            added.append((label, come))
            size += _count(come)
    return Difference(tuple(deleted), tuple(added), size)


_NOTHING: Node = (None, None, None)


def _count(node: Node) -> int:
    return sum(field is not None for field in node)
