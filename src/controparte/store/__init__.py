"""Storage: one narrow interface (`Store`), one implementation per engine, and
`open_store`, which picks the engine from the `database` setting."""

from __future__ import annotations

from pathlib import Path

from controparte.store.base import (
    ChangeListener,
    JournalEntry,
    JournalFloor,
    KeyRole,
    Origin,
    PortUse,
    RelayRequest,
    SeenAddresses,
    Store,
    StoreTransaction,
    ThrottleEntry,
    TsigKeyRow,
)
from controparte.store.sqlite import SqliteStore

__all__ = [
    "ChangeListener",
    "JournalEntry",
    "JournalFloor",
    "KeyRole",
    "Origin",
    "PortUse",
    "RelayRequest",
    "SeenAddresses",
    "SqliteStore",
    "Store",
    "StoreTransaction",
    "ThrottleEntry",
    "TsigKeyRow",
    "open_store",
]


def open_store(data_dir: Path, database: str = "") -> Store:
    """The registry's store: the PostgreSQL database `database` (a postgresql:// URL,
    the setting `database`) when it is set, else the SQLite file in `data_dir` (created
    if missing). Either is migrated to the newest schema version on open."""
    if database:
        from controparte.store.postgres import PostgresStore  # noqa: PLC0415 (psycopg)

        return PostgresStore(database)
    return SqliteStore.in_directory(data_dir)
