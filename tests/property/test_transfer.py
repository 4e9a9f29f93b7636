"""Properties of zone transfer out, with dnspython's `dns.xfr.Inbound` as the client:

- AXFR of any snapshot (layered or not, any zone configuration, reserved labels among
  the installations, any message size, signed or not, the question in any case) is
  accepted message by message, and carries exactly the records `Zone.rrsets` lists;
  every message fits its size, repeats the question and the ID, has AA and never TC;
- IXFR from every serial a client may hold, after random transactions on a real SQLite
  store (adds, address and port changes, renames, removals, removal and re-add in one
  transaction, label swaps, installations on reserved labels), applied by dnspython to
  a copy of the zone at that serial, gives the zone a fresh AXFR gives; the answer is
  incremental whenever the journal reaches back and the difference is smaller than
  the zone, and AXFR-style (still right) once the journal is pruned past the serial.
"""

from __future__ import annotations

import contextlib
import dataclasses
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.rdatatype
import dns.tsig
import dns.xfr
import dns.zone
from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st

from controparte.dns.transfer import Kind, Transfers, is_keyed
from controparte.dns.xfrwire import Head, StreamSigner, axfr_chunks, messages
from controparte.dns.zone import Zone, load_zone
from controparte.model import DnsRecord, Installation, ZoneConfig
from controparte.service.access import ResolvedKey
from controparte.settings import TransferRule, load_settings
from controparte.store import KeyRole, Origin, open_store
from controparte.store.base import JournalEntry, Store
from tests.property.test_fastpath import (
    ipv4s,
    ipv6s,
    ports,
    queries,
    random_case,
    rows_strategy,
    zones,
)
from tests.xfrtools import receive, snapshot_records, zone_records

KEY = dns.tsig.Key("xfr.example.test.", "W1XsNW1udMTYNLTIB5HF4X5cyFxpV1Z051zgdam4eJ4=")
PEER = "192.0.2.7"


def transfers(store: Store | None = None) -> Transfers:
    """Transfers allowed to KEY, over `store`'s journal (none: no IXFR reaches back)."""
    resolved = ResolvedKey(None, KEY, KeyRole.TRANSFER)
    journal: Store | _NoJournal = _NoJournal() if store is None else store
    return Transfers(
        (TransferRule(KEY.name.to_text(), ()),),
        journal,
        lambda name: resolved if name == KEY.name else None,
    )


class _NoJournal:
    def journal_reach(self, _serial: int) -> int | None:
        return None

    def journal_since(self, _seq: int, _limit: int = 10_000) -> list[JournalEntry]:
        return []


# -- AXFR ----------------------------------------------------------------------------------


@st.composite
def layered_zones(draw: st.DrawFn) -> Zone:
    """A zone, then journal entries applied to it (removals, new labels, changes), so
    its label map has an overlay as a long-running server's has."""
    zone = draw(zones())
    changes = draw(rows_strategy)
    entries = []
    for number, record in enumerate(changes, start=zone.seq + 1):
        remove = draw(st.booleans()) and record.label.encode() in zone.nodes
        before = DnsRecord(record.label, None, None, None)
        entries.append(JournalEntry(number, zone.serial, "X", before, None if remove else record))
    return zone.apply(entries)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    layered_zones(),
    st.integers(1024, 65535),  # the largest installation (three records) fits
    st.booleans(),
    st.sampled_from([-1, 0]),
    st.data(),
)
def test_axfr_carries_the_snapshot(
    zone: Zone, max_size: int, signed: bool, edns: int, data: st.DataObject
) -> None:
    made = dns.message.make_query(data.draw(cased(zone.config.origin.to_text())), "AXFR")
    made.use_edns(edns)
    if signed:
        made.use_tsig(KEY)
    query = dns.message.from_wire(made.to_wire(), keyring=KEY if signed else False)
    signer = StreamSigner(KEY, query.mac or b"", query.id) if signed else None
    head = Head.answering(query, zone.config.edns_udp_size, signer)
    out = list(messages(head, axfr_chunks(zone), max_size))
    target = dns.zone.Zone(zone.config.origin, relativize=False)
    read = receive(out, query, target)
    assert zone_records(target) == snapshot_records(zone)
    for wire, message in zip(out, read, strict=True):
        assert len(wire) <= max_size
        assert message.id == query.id
        assert message.flags & dns.flags.AA and not message.flags & dns.flags.TC
        assert [q.to_text() for q in message.question] == [q.to_text() for q in query.question]
        assert message.had_tsig == signed
        assert (message.edns >= 0) == (edns >= 0)


@st.composite
def cased(draw: st.DrawFn, text: str) -> str:
    return random_case(draw, text)


# -- which requests leave the hot paths ----------------------------------------------------


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(zones(), st.data(), st.booleans())
def test_is_keyed_agrees_with_dnspython(zone: Zone, data: st.DataObject, sign: bool) -> None:
    """Signed, or IXFR, or over TCP AXFR: as dnspython reads the request."""
    query = data.draw(queries(zone))
    wire = query.wire
    assume(not wire[2] & 0x78)  # opcode QUERY (UPDATE goes elsewhere first)
    try:
        read = dns.message.from_wire(wire, keyring=False)
    except dns.exception.DNSException:  # e.g. a malformed EDNS option: either path will do
        assert is_keyed(wire, tcp=query.tcp) in (True, False)
        return
    if sign:
        read.use_tsig(KEY)
        wire = read.to_wire()
        read = dns.message.from_wire(wire, keyring=False)
    qtype = read.question[0].rdtype
    expected = read.had_tsig or qtype == dns.rdatatype.IXFR
    assert is_keyed(wire, tcp=False) == expected
    assert is_keyed(wire, tcp=True) == (expected or qtype == dns.rdatatype.AXFR)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600), st.booleans())
def test_is_keyed_never_raises(wire: bytes, tcp: bool) -> None:
    assert is_keyed(wire, tcp=tcp) in (True, False)


# -- IXFR ----------------------------------------------------------------------------------

CODES = ["C0", "C1", "C2", "C3", "C4"]
LABELS = ["a", "b", "c", "d", "e", "f", "ns1"]  # ns1: the zone's own name server (hidden)
NS = "ns1=192.0.2.53;ns2.example.net."

Fields = tuple[str | None, str | None, int | None]


@dataclass(frozen=True, slots=True)
class Op:
    """One write in a transaction: "set" `code` on `label` with `fields` (add or
    change), "remove" it, "readd" it (removed and added again, same label, `fields`),
    or "swap" its label with `other`'s."""

    kind: str
    code: str
    label: str = ""
    fields: Fields = (None, None, None)
    other: str = ""


fields: st.SearchStrategy[Fields] = st.tuples(
    st.none() | ipv4s, st.none() | ipv6s, st.none() | ports
)
codes = st.sampled_from(CODES)
operations = st.one_of(
    st.builds(Op, st.just("set"), codes, st.sampled_from(LABELS), fields),
    st.builds(Op, st.just("remove"), codes),
    st.builds(Op, st.just("readd"), codes, fields=fields),
    st.builds(Op, st.just("swap"), codes, other=codes),
)
transactions = st.lists(st.lists(operations, min_size=1, max_size=4), min_size=1, max_size=6)


def apply(store: Store, operations: list[Op]) -> None:
    """`operations` in one store transaction; those the state forbids (a label taken,
    an unknown code) are left out."""
    with store.transaction(Origin()) as tx:
        for op in operations:
            old = tx.get(op.code)
            ipv4, ipv6, port = op.fields
            if op.kind == "set":
                holder = tx.get_by_label(op.label)
                if holder is not None and holder.code != op.code:
                    continue
                new = Installation(op.code, op.label, ipv4=ipv4, ipv6=ipv6, port=port)
                if old is None:
                    tx.insert(new)
                else:
                    tx.update(old, dataclasses.replace(new, created=old.created))
            elif op.kind == "remove" and old is not None:
                tx.delete(old)
            elif op.kind == "readd" and old is not None:
                tx.delete(old)
                tx.insert(Installation(op.code, old.label, ipv4=ipv4, ipv6=ipv6, port=port))
            elif op.kind == "swap":
                other = tx.get(op.other)
                if old is None or other is None or other.code == old.code:
                    continue
                parked = dataclasses.replace(old, label="swap-in-progress")
                tx.update(old, parked)
                tx.update(other, dataclasses.replace(other, label=old.label))
                tx.update(parked, dataclasses.replace(old, label=other.label))


def axfr_copy(serving: Transfers, zone: Zone) -> dns.zone.Zone:
    """The zone as a secondary holds it after an AXFR of `zone`."""
    target = dns.zone.Zone(zone.config.origin, relativize=False)
    query, _ = dns.xfr.make_query(target, serial=None, keyring=KEY)
    receive(serving.respond(query.to_wire(), PEER, zone, tcp=True), query, target)
    return target


def ixfr(serving: Transfers, zone: Zone, target: dns.zone.Zone, *, tcp: bool = True) -> Kind:
    """IXFR from `target`'s serial applied to `target`; what kind of answer it was."""
    query, _ = dns.xfr.make_query(target, keyring=KEY)
    before, _, _ = serving.stats.snapshot()
    receive(serving.respond(query.to_wire(), PEER, zone, tcp=tcp), query, target)
    after, _, _ = serving.stats.snapshot()
    [(kind, _)] = [k for k in after if after[k] != before.get(k, 0)]
    return Kind(kind)


def opened(tmp: str) -> tuple[Store, ZoneConfig]:
    """A fresh store in `tmp` and the zone configuration the tests use (glue, so the
    label "ns1" is reserved)."""
    config = ZoneConfig.from_settings(load_settings(flags={"data": Path(tmp), "ns": NS}, env={}))
    return open_store(Path(tmp)), config


@contextlib.contextmanager
def store_in_tmp() -> Iterator[tuple[Store, ZoneConfig]]:
    with tempfile.TemporaryDirectory() as tmp:
        store, config = opened(tmp)
        try:
            yield store, config
        finally:
            store.close()


def expected_kind(copy: dns.zone.Zone, fresh: dns.zone.Zone) -> Kind:
    """What the answer to an IXFR from `copy` to `fresh` must be (RFC 1995 2, 4, 5):
    the SOA alone when the serials agree, else the difference unless it has more
    records (its four SOAs included) than the AXFR (the SOA twice)."""
    old = {r for r in zone_records(copy) if r[2] != "SOA"}
    new = {r for r in zone_records(fresh) if r[2] != "SOA"}
    if copy.get_soa().serial == fresh.get_soa().serial:
        assert old == new
        return Kind.IXFR_UP_TO_DATE
    if len(old ^ new) + 4 > len(new) + 2:
        return Kind.IXFR_AXFR_STYLE
    return Kind.IXFR


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(transactions, transactions)
def test_ixfr_from_every_serial_gives_the_fresh_zone(
    seed: list[list[Op]], changes: list[list[Op]]
) -> None:
    with store_in_tmp() as (store, config):
        serving = transfers(store)
        for operations in seed:
            apply(store, operations)
        first = load_zone(store, config)
        copies = [axfr_copy(serving, first), axfr_copy(serving, first)]
        for operations in changes:
            apply(store, operations)
            copies.append(axfr_copy(serving, load_zone(store, config)))
        current = load_zone(store, config)
        fresh = axfr_copy(serving, current)
        assert zone_records(fresh) == snapshot_records(current)
        for copy in copies[1:]:
            wanted = expected_kind(copy, fresh)
            event(wanted.value)
            assert ixfr(serving, current, copy) is wanted
            assert zone_records(copy) == zone_records(fresh)
        # Once the journal no longer reaches back: AXFR-style, as right.
        store.prune_journal(0, 0, datetime.now(UTC))
        if copies[0].get_soa().serial != current.serial:
            assert ixfr(serving, current, copies[0]) is Kind.IXFR_AXFR_STYLE
            assert zone_records(copies[0]) == zone_records(fresh)
