"""Storage: one narrow interface (`Store`), one implementation per engine."""

from controparte.store.base import (
    JournalEntry,
    JournalFloor,
    KeyRole,
    Origin,
    SeenAddresses,
    Store,
    StoreTransaction,
    TsigKeyRow,
)
from controparte.store.sqlite import SqliteStore, open_store

__all__ = [
    "JournalEntry",
    "JournalFloor",
    "KeyRole",
    "Origin",
    "SeenAddresses",
    "SqliteStore",
    "Store",
    "StoreTransaction",
    "TsigKeyRow",
    "open_store",
]
