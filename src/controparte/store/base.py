"""The storage interface every engine implements (SQLite, PostgreSQL).

Contracts:
- A write happens inside `transaction()`; leaving the block commits atomically and
  durably, an exception rolls everything back. Inside it, the thread that opened it
  reads (through the store too) what it wrote; what a transaction read of an
  installation (`get`, `get_by_label`) stays so until it ends: no other writer, of
  this process or of another node, changes it meanwhile (no lost update).
- Codes are unique in any case, labels are unique, and so is a Live installation's
  (gateway, port); a write that would break either
  raises ConflictError. A store that cannot be reached raises StorageUnavailableError
  (retry later); any other failure StorageError. Nothing is written then.
- Every committed transaction that changes what DNS serves appends one journal entry per
  changed installation, all carrying the one new zone serial (RFC 1982 increment, never
  reused), each with what was served before and after the change. Sequence numbers
  grow in commit order: a reader that has seen seq N never later finds a new entry
  below N. A running DNS server follows the
  journal (`journal_since`) to learn of changes made by any process; IXFR reads it to
  answer "what changed since serial S" (`journal_reach`), and multi-node propagation
  will read it too.
- The journal holds every change after its floor (`journal_floor`): older entries are
  pruned (`prune_journal`), whole serials at a time, and the floor moves up with them.
- `dns_snapshot()` returns the records, the serial and the last journal sequence
  number read in one consistent view.
- Counterpart links (caller, callee, feature), the addresses `controparte firewall`
  last saw for each counterpart, and relay requests and polls belong to their
  installations: removing an installation removes them. Removing a Live installation
  placed on a gateway, or moving it, records its (gateway, port) as freed then (the
  pool's quarantine, `live_ports`). None changes what DNS serves
  (no journal entry, no new serial), nor the audit history. So do the results of flow
  tests (`add_flow_results`), kept per flow up to a bound.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol, TypeVar

from controparte.model import DnsRecord, Installation, Link
from controparte.model.flowresult import FlowResult

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class JournalEntry:
    """One change to what DNS serves for installation `code`, made by the transaction
    that produced `serial`. `before` is what was served just before (None for a new
    installation), `record` what is served after (None once removed)."""

    seq: int
    serial: int
    code: str
    before: DnsRecord | None
    record: DnsRecord | None

    @property
    def old_label(self) -> str | None:
        """The label served before the change (None for a new installation)."""
        return None if self.before is None else self.before.label


@dataclass(frozen=True, slots=True)
class JournalFloor:
    """The journal holds every change after `seq`, where the zone stood at `serial`."""

    seq: int
    serial: int


class KeyRole(enum.StrEnum):
    """What a TSIG key may sign: RFC 2136 updates, or zone transfers (and the queries
    and NOTIFYs that go with them). A key has one role, never both."""

    UPDATE = "update"
    TRANSFER = "transfer"


@dataclass(frozen=True, slots=True)
class TsigKeyRow:
    """A stored TSIG key: `secret` is encrypted; `code` None marks a key of no
    installation (an admin update key, or a transfer key)."""

    name: str
    code: str | None
    algorithm: str
    secret: bytes
    role: KeyRole = KeyRole.UPDATE


@dataclass(frozen=True, slots=True)
class SeenAddresses:
    """The public addresses of `counterpart` as `controparte firewall` last saw them for
    an installation, and when (`at`, the time of that run)."""

    counterpart: str
    addresses: tuple[str, ...]
    at: datetime


@dataclass(frozen=True, slots=True)
class RelayRequest:
    """A dial that installation `requester` asked the agent of installation `agent` to
    make to `address`:`port` (the requester's own registered public address and port),
    sending the probe line with `nonce`. Pending until `finished` (then `report` holds
    the agent's report, JSON text) or until `expires`; `claimed` is when the agent
    took it."""

    id: str
    requester: str
    agent: str
    address: str
    port: int
    nonce: str
    created: datetime
    expires: datetime
    claimed: datetime | None = None
    report: str | None = None
    finished: datetime | None = None


@dataclass(frozen=True, slots=True)
class ThrottleEntry:
    """The failed authentications counted for `claim` from `address` (`claim` '' is
    the whole address): `failures` since `window_start`, and a block in force until
    `blocked_until` (seconds since the epoch; in the past: no block)."""

    address: str
    claim: str
    failures: int
    window_start: float
    blocked_until: float


class Role(enum.StrEnum):
    """What a dashboard account may do: an operator changes the registry, a support
    account only looks."""

    OPERATOR = "operator"
    SUPPORT = "support"


@dataclass(frozen=True, slots=True)
class AccountRow:
    """A dashboard account; `password_hash` as `service/accounts.py` makes it."""

    name: str
    role: Role
    password_hash: str
    created: datetime


@dataclass(frozen=True, slots=True)
class SessionRow:
    """A dashboard session: `key` is the SHA-256 (hex) of the cookie's value; `account`
    and `role` as they were at sign-in; `csrf` the token every form of the session
    carries; valid until `expires`."""

    key: str
    account: str
    role: Role
    csrf: str
    created: datetime
    expires: datetime


@dataclass(frozen=True, slots=True)
class InstallationQuery:
    """A page of the installations' list: `text` found (any case) in the code, the
    label or an address ('' : any); of `kind` only (None: any); with `stale_before`,
    only those last seen before it (heartbeats that stopped); ordered by code."""

    text: str = ""
    kind: str | None = None
    stale_before: datetime | None = None
    limit: int = 50
    offset: int = 0


@dataclass(frozen=True, slots=True)
class InstallationPage:
    """The installations of one page, and how many match the query in all."""

    total: int
    installations: tuple[Installation, ...]


@dataclass(frozen=True, slots=True)
class RegistrySummary:
    """Installations by kind, how many were last seen before a time (stale), and the
    journal's entries (changes to what DNS serves) since another."""

    by_kind: Mapping[str, int]
    stale: int
    changes: int


@dataclass(frozen=True, slots=True)
class PortUse:
    """A (gateway, port) of the Live pool that is not free: held by installation `code`,
    or (`code` None) freed at `released` and still in quarantine."""

    gateway: str
    port: int
    code: str | None
    released: datetime | None = None


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

    def prefetch(self, codes: Iterable[str]) -> None:
        """Read (and hold, as `get` does) the installations `codes` and their token
        hashes at once, for a batch of writes to them: `get` and the store's
        `token_hash` of these codes are then answered without a round trip, and their
        `update`s may be written together before the commit. Only a speed-up: every
        result is what it would be without it."""
        ...

    def live_ports(self, released_after: datetime) -> list[PortUse]:
        """Every (gateway, port) held by an installation, and every one freed after
        `released_after` (in quarantine), as this transaction sees them; no other
        transaction reads them so (to place an installation) until this one ends, on
        any process or node (SQLite: one writer at a time; PostgreSQL: an advisory
        lock held to the end of the transaction), so a gateway's capacity holds."""
        ...

    def insert(self, installation: Installation) -> None: ...

    def update(self, old: Installation, new: Installation, origin: Origin | None = None) -> None:
        """Write `new` over `old`; `origin` overrides the transaction's for the history."""
        ...

    def delete(self, installation: Installation) -> None: ...

    def set_token_hash(self, code: str, token_hash: str) -> None: ...

    def add_admin_token(self, token_hash: str, note: str | None) -> None: ...

    def set_tsig_key(
        self,
        name: str,
        code: str | None,
        algorithm: str,
        secret: bytes,
        role: KeyRole = KeyRole.UPDATE,
    ) -> None:
        """Store (or replace) the key `name`; an installation keeps one key at a time."""
        ...

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


class ChangeListener(Protocol):
    """Wakes a follower when any process or node commits a change to the journal. It
    holds a connection of its own and makes it again by itself after a drop."""

    @property
    def connected(self) -> bool:
        """Whether it listens now (False before the first `wait` and while the
        database cannot be reached)."""
        ...

    def wait(self, timeout: float) -> bool:
        """Wait at most `timeout` seconds (plus, when it must connect, one connection
        attempt); True when the journal should be read now: a change was committed, or
        the listener has just (re)connected and may have missed some while it was
        not listening. Called by one thread at a time."""
        ...

    def close(self) -> None:
        """Stop listening; a `wait` in progress returns False at once."""
        ...


class Store(Protocol):
    """A registry store. Implementations are safe to share between threads."""

    def transaction(self, origin: Origin) -> AbstractContextManager[StoreTransaction]: ...

    def get(self, code: str) -> Installation | None: ...

    def get_by_label(self, label: str) -> Installation | None: ...

    def installations(self, *, limit: int | None = None, offset: int = 0) -> list[Installation]: ...

    def count(self) -> int: ...

    def live_ports(self, released_after: datetime) -> list[PortUse]:
        """As `StoreTransaction.live_ports`, from the last committed state."""
        ...

    def serial(self) -> int: ...

    def last_seq(self) -> int: ...

    def journal_since(self, seq: int, limit: int = 10_000) -> Sequence[JournalEntry]:
        """The entries after `seq`, in order, at most `limit`."""
        ...

    def journal_floor(self) -> JournalFloor: ...

    def journal_reach(self, serial: int) -> int | None:
        """The seq after which the zone stood at `serial` (the last entry of the serial's
        transaction, or the floor's seq when `serial` is the floor's), so that the
        entries after it are exactly the changes since `serial`; None when the journal
        does not reach back to `serial` (pruned, or never ours)."""
        ...

    def adopt_zone_config(self, fingerprint: str) -> bool:
        """Record `fingerprint` as the zone configuration served. When it differs from
        the one recorded, what the apex publishes changed with no journal entry, so the
        same transaction moves the serial on (RFC 1982) and the journal's floor to it: no
        IXFR reaches back across the change (a secondary gets the whole zone), and every
        secondary sees a new serial. True when the serial moved."""
        ...

    def adopt_secret_fingerprint(self, fingerprint: str) -> str:
        """The fingerprint of the server secret this store's credentials are made with;
        `fingerprint` is recorded as it when none is yet (atomically: of callers at
        once, on any node, one records and all get that one). Never changes one
        recorded."""
        ...

    def prune_journal(self, keep_entries: int, keep_seconds: float, now: datetime) -> int:
        """Remove the entries beyond the newest `keep_entries` and those older than
        `keep_seconds` before `now`, whole serials at a time (never part of one
        transaction's entries), and move the floor up to the last one removed; the
        number removed."""
        ...

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

    def add_relay(self, request: RelayRequest, max_pending: int, purge_before: datetime) -> bool:
        """Store `request` unless its agent has `max_pending` requests pending (not
        finished, not expired at `request.created`): False then, and nothing is stored.
        Requests that expired before `purge_before` are removed on the way. Atomic
        among processes and nodes."""
        ...

    def relay(self, request_id: str) -> RelayRequest | None:
        """The relay request `request_id`, if it is still kept."""
        ...

    def relays_waiting(self, agent: str, now: datetime) -> bool:
        """Whether a request for `agent`'s agent waits to be claimed (not expired at
        `now`). A read only: cheap enough to ask often."""
        ...

    def claim_relays(self, agent: str, now: datetime) -> list[RelayRequest]:
        """Record that `agent`'s agent asked for its requests at `now`, and claim them:
        those not yet claimed nor expired at `now`, oldest first, now marked claimed."""
        ...

    def finish_relay(self, request_id: str, agent: str, report: str, now: datetime) -> bool:
        """Record `report` (JSON text) as the outcome of request `request_id`, claimed by
        `agent`'s agent, unfinished and not expired at `now`; False when there is no
        such request (then nothing changes)."""
        ...

    def relay_polled(self, agent: str) -> datetime | None:
        """When `agent`'s agent last asked for its relay requests (None: never)."""
        ...

    def add_flow_results(self, results: Sequence[FlowResult], keep: int) -> None:
        """Store `results` (their installations must exist) in one transaction; then
        each flow they are of (caller, callee, feature, flow id) keeps only its newest
        `keep` results."""
        ...

    def flow_results(self, caller: str, callee: str, feature: str) -> list[FlowResult]:
        """The results kept of the plan (`caller`, `callee`, `feature`), newest first,
        those of one time in the order they were added (codes in any case)."""
        ...

    def accept_tsig(
        self, key_name: str, mac: bytes, time_signed: int, expires: float, now: float
    ) -> bool:
        """Record that a request signed with `key_name` at `time_signed` with `mac` was
        accepted, kept until `expires` (seconds since the epoch); False, and nothing
        recorded, when that MAC is already kept or when a request signed later with the
        key is (RFC 8945 5.2.3). Requests kept past their `expires` at `now` are
        forgotten on the way. Atomic among processes and nodes."""
        ...

    def auth_failed(
        self,
        address: str,
        limits: Sequence[tuple[str, int]],
        window: float,
        block: float,
        now: float,
    ) -> list[ThrottleEntry]:
        """Count one failed authentication from `address` for each (claim, limit) of
        `limits`: a claim's count starts again when its window began more than `window`
        seconds before `now`; reaching its limit blocks it until `now + block` (and
        its count starts again). The entries as they are now, in the order of `limits`.
        Entries neither blocked nor counting at `now` are forgotten on the way. Atomic
        among processes and nodes."""
        ...

    def auth_reset(self, address: str, claim: str, now: float) -> None:
        """Forget the failures counted for `claim` from `address`, unless it is blocked
        at `now`."""
        ...

    def throttle_entries(self) -> list[ThrottleEntry]:
        """Every entry of the throttle, by address and claim."""
        ...

    def throttle_clear(self, address: str) -> int:
        """Forget every count and block of `address`; how many entries there were."""
        ...

    def search(self, query: InstallationQuery) -> InstallationPage:
        """The installations `query` selects, and their number in all."""
        ...

    def summary(self, stale_before: datetime, changes_since: datetime) -> RegistrySummary:
        """Counts for the dashboard's overview (see `RegistrySummary`)."""
        ...

    def add_account(self, account: AccountRow) -> bool:
        """Store `account`; False, and nothing stored, when its name is taken."""
        ...

    def account(self, name: str) -> AccountRow | None: ...

    def accounts(self) -> list[AccountRow]:
        """Every account, by name."""
        ...

    def remove_account(self, name: str) -> bool:
        """Remove the account `name` and end its sessions; False when there was none."""
        ...

    def add_session(self, session: SessionRow, now: datetime) -> None:
        """Store `session`; sessions expired at `now` are removed on the way."""
        ...

    def session(self, key: str, now: datetime) -> SessionRow | None:
        """The session `key`, unless it has expired at `now` (or ended)."""
        ...

    def end_session(self, key: str) -> None:
        """Remove the session `key` (nothing when there is none)."""
        ...

    def change_listener(self) -> ChangeListener | None:
        """A new listener for committed changes, to be closed by its owner; None when
        the engine has none (followers then poll `last_seq`)."""
        ...

    def close(self) -> None: ...
