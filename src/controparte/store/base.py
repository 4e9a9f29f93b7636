"""The storage interface every engine implements (SQLite now, PostgreSQL later).

Contracts:
- A write happens inside `transaction()`; leaving the block commits atomically and
  durably, an exception rolls everything back.
- Every committed transaction that changes what DNS serves appends one journal entry per
  changed installation, all carrying the one new zone serial (RFC 1982 increment). A
  running DNS server follows the journal (`journal_since`) to learn of changes made by
  any process; IXFR and multi-node propagation will read the same journal.
- `dns_snapshot()` returns the records, the serial and the last journal sequence
  number read in one consistent view.
- Counterpart links (caller, callee, feature) and the addresses `controparte firewall`
  last saw for each counterpart belong to their installations: removing an installation
  removes them. Neither changes what DNS serves (no journal entry, no new serial).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol, TypeVar

from controparte.model import DnsRecord, Installation, Link

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class JournalEntry:
    """One change to what DNS serves. `old_label` is the label served before (None for a
    new installation); `record` is what is served now (None once removed)."""

    seq: int
    serial: int
    code: str
    old_label: str | None
    record: DnsRecord | None


@dataclass(frozen=True, slots=True)
class TsigKeyRow:
    """A stored TSIG key: `secret` is encrypted; `code` None marks an admin key."""

    name: str
    code: str | None
    algorithm: str
    secret: bytes


@dataclass(frozen=True, slots=True)
class SeenAddresses:
    """The public addresses of `counterpart` as `controparte firewall` last saw them for
    an installation, and when (`at`, the time of that run)."""

    counterpart: str
    addresses: tuple[str, ...]
    at: datetime


@dataclass(frozen=True, slots=True)
class Origin:
    """Who made a change and how, for the audit history."""

    actor: str = "cli"
    via: str = "cli"
    source: str | None = None


class StoreTransaction(Protocol):
    """The writes allowed inside one transaction."""

    def get(self, code: str) -> Installation | None: ...

    def get_by_label(self, label: str) -> Installation | None: ...

    def insert(self, installation: Installation) -> None: ...

    def update(self, old: Installation, new: Installation, origin: Origin | None = None) -> None:
        """Write `new` over `old`; `origin` overrides the transaction's for the history."""
        ...

    def delete(self, installation: Installation) -> None: ...

    def set_token_hash(self, code: str, token_hash: str) -> None: ...

    def add_admin_token(self, token_hash: str, note: str | None) -> None: ...

    def set_tsig_key(self, name: str, code: str | None, algorithm: str, secret: bytes) -> None: ...

    def add_link(self, link: Link) -> bool:
        """Store `link` (both installations must exist); False when that (a, b, feature)
        was already there (then nothing changes)."""
        ...

    def remove_link(self, a: str, b: str, feature: str | None = None) -> list[Link]:
        """Remove the links from `a` to `b` (of `feature` only, when given); the links
        removed, none when there was none."""
        ...

    def set_firewall_seen(
        self, code: str, seen: Mapping[str, tuple[str, ...]], at: datetime
    ) -> None:
        """Replace what `controparte firewall` saw for `code`: the addresses of each
        counterpart (by code), all at `at`; counterparts not named are forgotten."""
        ...


class Store(Protocol):
    """A registry store. Implementations are safe to share between threads."""

    def transaction(self, origin: Origin) -> AbstractContextManager[StoreTransaction]: ...

    def get(self, code: str) -> Installation | None: ...

    def get_by_label(self, label: str) -> Installation | None: ...

    def installations(self, *, limit: int | None = None, offset: int = 0) -> list[Installation]: ...

    def count(self) -> int: ...

    def serial(self) -> int: ...

    def last_seq(self) -> int: ...

    def journal_since(self, seq: int, limit: int = 10_000) -> Sequence[JournalEntry]: ...

    def dns_snapshot(self, consume: Callable[[Iterable[DnsRecord]], T]) -> tuple[int, int, T]:
        """Read the serial, the last journal seq and every installation's record in one
        consistent view; the records are handed to `consume` (in no particular order)
        while the view is held, and its result is returned."""
        ...

    def token_hash(self, code: str) -> str | None: ...

    def admin_token_hashes(self) -> list[str]: ...

    def tsig_key(self, name: str) -> TsigKeyRow | None: ...

    def history(self, code: str) -> list[dict[str, object]]: ...

    def links(self, code: str | None = None) -> list[Link]:
        """Every link, or those whose caller or callee is `code`, ordered by (a, b,
        feature)."""
        ...

    def firewall_seen(self, code: str) -> dict[str, SeenAddresses]:
        """What `controparte firewall` last saw for `code`, by counterpart code."""
        ...

    def close(self) -> None: ...
