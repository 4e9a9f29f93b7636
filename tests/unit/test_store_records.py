"""What the store keeps for DNS and when, on each engine: `dns_snapshot` yields each
installation's `DnsRecord`, the journal carries the record served, and every timestamp
is written and read in UTC whatever the local time zone (the stored text read and
written with the engine's own driver)."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest

from controparte.model import DnsRecord, Installation, InstallationChange, Link
from controparte.store import Origin, Store
from controparte.store.sqlite import DB_FILE

Run = Callable[[str, tuple[object, ...]], list[tuple[Any, ...]]]


@pytest.fixture
def raw(tmp_path: Path, database: str) -> Iterator[Run]:
    """Runs one SQL statement (`?` placeholders) on the store's database, committed,
    past the store; its rows."""
    if database:
        with psycopg.connect(database, autocommit=True) as pg:

            def run(sql: str, params: tuple[object, ...]) -> list[tuple[Any, ...]]:
                cursor = pg.execute(sql.replace("?", "%s"), params)
                return cursor.fetchall() if cursor.description is not None else []

            yield run
        return
    conn = sqlite3.connect(tmp_path / DB_FILE, isolation_level=None)
    try:
        yield lambda sql, params: conn.execute(sql, params).fetchall()
    finally:
        conn.close()


def add(store: Store, *installations: Installation) -> None:
    with store.transaction(Origin()) as tx:
        for inst in installations:
            tx.insert(inst)


A = Installation.create(
    "A-1", "alpha", ipv4="192.0.2.1", ipv6="2001:db8::1", port=9001, allow_non_global=True
)
B = Installation.create("B-2", "beta", port=9002)
C = Installation.create("C-3", "gamma")


def test_the_snapshot_yields_each_installations_record(store: Store) -> None:
    add(store, A, B, C)
    serial, seq, records = store.dns_snapshot(list)
    assert all(type(r) is DnsRecord for r in records)
    assert sorted(records) == [
        DnsRecord("alpha", "192.0.2.1", "2001:db8::1", 9001),
        DnsRecord("beta", None, None, 9002),
        DnsRecord("gamma", None, None, None),
    ]
    assert (serial, seq) == (store.serial(), store.last_seq())


def test_the_journal_carries_the_record_served(store: Store) -> None:
    add(store, A)
    moved = A.with_changes(InstallationChange(label="omega", ipv4=""), allow_non_global=True)
    with store.transaction(Origin()) as tx:
        tx.update(A, moved)
    with store.transaction(Origin()) as tx:
        tx.delete(moved)
    entries = store.journal_since(0)
    assert [(e.code, e.old_label, e.record) for e in entries] == [
        ("A-1", None, DnsRecord("alpha", "192.0.2.1", "2001:db8::1", 9001)),
        ("A-1", "alpha", DnsRecord("omega", None, "2001:db8::1", 9001)),
        ("A-1", "omega", None),
    ]


@pytest.fixture
def far_from_utc(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The process's local time zone 5 h 30 min east of UTC (no daylight saving)."""
    monkeypatch.setenv("TZ", "Asia/Kolkata")
    time.tzset()
    assert datetime.now().astimezone().utcoffset() == timedelta(hours=5, minutes=30)
    yield
    monkeypatch.undo()
    time.tzset()


@pytest.mark.usefixtures("far_from_utc")
def test_every_timestamp_is_written_in_utc(store: Store, raw: Run) -> None:
    add(store, A, B)
    with store.transaction(Origin()) as tx:
        tx.update(A, A.with_changes(InstallationChange(ipv4="192.0.2.9"), allow_non_global=True))
        tx.set_token_hash("A-1", "hash")
        tx.add_admin_token("admin-hash", None)
        tx.set_tsig_key("key.", "A-1", "hmac-sha256", b"secret")
        tx.add_link(Link.create("A-1", "B-2", "calls"))
        tx.set_firewall_seen("A-1", {"B-2": ("192.0.2.2",)}, datetime.now(UTC))
    columns = {
        "journal": "at",
        "history": "at",
        "installations": "created, updated",
        "tokens": "created",
        "admin_tokens": "created",
        "tsig_keys": "created",
        "links": "created",
        "firewall_seen": "at",
    }
    for table, names in columns.items():
        rows = raw(f"SELECT {names} FROM {table}", ())
        assert rows, table
        for value in (v for row in rows for v in row):
            assert datetime.fromisoformat(value).utcoffset() == timedelta(0), (table, value)


@pytest.mark.parametrize(
    ("stored", "read"),
    [
        ("2024-01-01T12:00:00+00:00", datetime(2024, 1, 1, 12, tzinfo=UTC)),
        ("2024-01-01T12:00:00.250+02:00", datetime(2024, 1, 1, 10, 0, 0, 250_000, tzinfo=UTC)),
        ("2024-01-01T12:00:00", datetime(2024, 1, 1, 12, tzinfo=UTC)),  # no offset: UTC
    ],
)
@pytest.mark.usefixtures("far_from_utc")
def test_every_timestamp_is_read_in_utc(
    store: Store, raw: Run, stored: str, read: datetime
) -> None:
    add(store, A, B)
    with store.transaction(Origin()) as tx:
        tx.add_link(Link.create("A-1", "B-2", "calls"))
        tx.set_firewall_seen("A-1", {"B-2": ("192.0.2.2",)}, datetime.now(UTC))
    raw("UPDATE installations SET created = ?, updated = ?, last_seen = ?", (stored,) * 3)
    raw("UPDATE links SET created = ?", (stored,))
    raw("UPDATE firewall_seen SET at = ?", (stored,))
    inst = store.get("A-1")
    assert inst is not None
    seen = store.firewall_seen("A-1")["B-2"].at
    for value in (inst.created, inst.updated, inst.last_seen, store.links()[0].created, seen):
        assert value == read
        assert value is not None and value.tzinfo is UTC
