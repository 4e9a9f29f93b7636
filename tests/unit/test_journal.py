"""The journal as zone transfer reads it, on each engine: every entry keeps what was
served before and after the change; `journal_reach` finds where the zone stood at a
serial; pruning removes whole serials only and moves the floor with them; and, on
SQLite, a store of schema version 3 gets a floor at its newest entry (its entries have
no before-image)."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

from controparte.model import DnsRecord, Installation, InstallationChange
from controparte.store import KeyRole, Origin, Store
from controparte.store.schema import MIGRATIONS
from controparte.store.sqlite import DB_FILE, SqliteStore

A = Installation.create("A-1", "alpha", ipv4="192.0.2.1", port=9001, allow_non_global=True)
B = Installation.create("B-2", "beta", ipv6="2001:db8::2", allow_non_global=True)


def change(inst: Installation, **fields: str) -> Installation:
    return inst.with_changes(InstallationChange(**fields), allow_non_global=True)


def test_each_entry_keeps_the_record_before_and_after(store: Store) -> None:
    with store.transaction(Origin()) as tx:
        tx.insert(A)
    moved = change(A, label="omega", ipv4="192.0.2.9")
    with store.transaction(Origin()) as tx:
        tx.update(A, moved)
        again = change(moved, port="9009")
        tx.update(moved, again)  # twice in one transaction: the second starts where the first ended
    with store.transaction(Origin()) as tx:
        tx.delete(again)
    entries = store.journal_since(0)
    assert [(e.before, e.record) for e in entries] == [
        (None, DnsRecord("alpha", "192.0.2.1", None, 9001)),
        (DnsRecord("alpha", "192.0.2.1", None, 9001), DnsRecord("omega", "192.0.2.9", None, 9001)),
        (DnsRecord("omega", "192.0.2.9", None, 9001), DnsRecord("omega", "192.0.2.9", None, 9009)),
        (DnsRecord("omega", "192.0.2.9", None, 9009), None),
    ]
    assert [e.old_label for e in entries] == [None, "alpha", "omega", "omega"]
    assert entries[1].serial == entries[2].serial != entries[3].serial


def test_reach_finds_the_last_entry_of_a_serial(store: Store) -> None:
    start = store.serial()
    assert store.journal_reach(start) == 0  # a new store: the floor is where it starts
    with store.transaction(Origin()) as tx:
        tx.insert(A)
        tx.insert(B)
    first = store.serial()
    with store.transaction(Origin()) as tx:
        tx.update(A, change(A, ipv4="192.0.2.7"))
    assert store.journal_reach(first) == 2
    assert store.journal_reach(store.serial()) == 3
    assert store.journal_reach(start) == 0
    assert store.journal_reach(first + 1000) is None


def writes(store: Store, count: int) -> list[int]:
    """`count` transactions of two entries each (A and B move together); their serials."""
    serials = []
    a, b = A, B
    with store.transaction(Origin()) as tx:
        tx.insert(a)
        tx.insert(b)
    serials.append(store.serial())
    for n in range(count - 1):
        with store.transaction(Origin()) as tx:
            na, nb = change(a, port=str(9100 + n)), change(b, port=str(9100 + n))
            tx.update(a, na)
            tx.update(b, nb)
            a, b = na, nb
        serials.append(store.serial())
    return serials


def test_pruning_by_count_removes_whole_serials_and_moves_the_floor(store: Store) -> None:
    serials = writes(store, 5)  # entries 1..10, two per serial
    now = datetime.now(UTC)
    # Keeping 5 entries cuts serial 3 in half (entries 5, 6): all of it goes.
    assert store.prune_journal(5, 86400, now) == 6
    floor = store.journal_floor()
    assert (floor.seq, floor.serial) == (6, serials[2])
    assert [e.seq for e in store.journal_since(0)] == [7, 8, 9, 10]
    assert store.journal_reach(serials[2]) == 6  # the floor itself is reachable
    assert store.journal_reach(serials[3]) == 8
    assert store.journal_reach(serials[1]) is None  # pruned
    assert store.prune_journal(5, 86400, now) == 0  # nothing more to remove


def test_pruning_by_age(store: Store) -> None:
    serials = writes(store, 3)
    later = datetime.now(UTC) + timedelta(hours=2)
    assert store.prune_journal(1_000_000, 3600, later) == 6
    assert store.journal_since(0) == []
    floor = store.journal_floor()
    assert (floor.seq, floor.serial) == (6, serials[-1])
    assert store.last_seq() == 6  # the last seq handed out, though none is left
    assert store.dns_snapshot(list)[1] == 6
    assert store.journal_reach(serials[-1]) == 6
    assert store.prune_journal(1_000_000, 3600, datetime.now(UTC)) == 0


def version_3_store(path: Path) -> None:
    """A SQLite store of schema version 3 at `path`: at serial 41, with one journal entry
    of that serial (A-1 added as alpha, 192.0.2.1, port 1), which has no before-image."""
    conn = sqlite3.connect(path)
    for script in MIGRATIONS[:3]:
        conn.executescript(script.sqlite)
    conn.execute("INSERT INTO zone_state (id, serial) VALUES (1, 41)")
    conn.execute(
        "INSERT INTO journal (serial, at, code, old_label, new_label, ipv4, ipv6, port)"
        " VALUES (41, '2026-01-01T00:00:00+00:00', 'A-1', NULL, 'alpha', '192.0.2.1', NULL, 1)"
    )
    conn.execute("PRAGMA user_version = 3")
    conn.commit()
    conn.close()


def test_a_version_3_store_gets_its_floor_at_the_newest_entry(tmp_path: Path) -> None:
    path = tmp_path / DB_FILE
    version_3_store(path)
    store = SqliteStore(path)
    try:
        floor = store.journal_floor()
        assert (floor.seq, floor.serial) == (1, 41)
        assert store.journal_reach(41) == 1  # the version-3 entry itself is never read
        entry = store.journal_since(0)[0]
        assert (entry.before, entry.record) == (None, DnsRecord("alpha", "192.0.2.1", None, 1))
    finally:
        store.close()


def test_tsig_keys_keep_their_role(store: Store) -> None:
    with store.transaction(Origin()) as tx:
        tx.set_tsig_key("xfr.example.test.", None, "hmac-sha256", b"s1", KeyRole.TRANSFER)
        tx.set_tsig_key("admin.example.test.", None, "hmac-sha256", b"s2")
    transfer, admin = store.tsig_key("xfr.example.test."), store.tsig_key("admin.example.test.")
    assert transfer is not None and transfer.role is KeyRole.TRANSFER
    assert admin is not None and admin.role is KeyRole.UPDATE


def test_a_new_zone_configuration_moves_the_serial_and_the_floor(store: Store) -> None:
    assert store.adopt_zone_config("config-1") is False  # the first one: recorded only
    first = store.serial()
    with store.transaction(Origin()) as tx:
        tx.insert(A)
    before = store.serial()
    assert store.adopt_zone_config("config-1") is False
    assert store.serial() == before
    assert store.adopt_zone_config("config-2") is True  # NS, SOA or TTLs changed
    moved = store.serial()
    assert moved == before + 1
    floor = store.journal_floor()
    assert (floor.seq, floor.serial) == (1, moved)
    assert store.journal_reach(before) is None  # an IXFR across the change: AXFR-style
    assert store.journal_reach(first) is None
    assert store.journal_reach(moved) == 1
    with store.transaction(Origin()) as tx:
        tx.update(A, change(A, port="9009"))
    assert store.journal_since(1)[0].serial == moved + 1
