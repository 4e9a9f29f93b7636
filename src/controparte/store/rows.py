"""How the model's values are kept in rows, the same for every engine: the columns, the
stored text of timestamps (ISO 8601 in UTC), the journal's before and after, the
history's entries, and the messages of the conflicts a write can run into."""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime

from controparte.errors import ConflictError, PortTakenError
from controparte.model import DnsRecord, Installation, Kind, Link
from controparte.model.installation import CODE_RE, LABEL_RE
from controparte.store.base import (
    JournalEntry,
    KeyRole,
    Origin,
    PortUse,
    SeenAddresses,
    TsigKeyRow,
)

COLUMNS = (
    "code, label, kind, ipv4, ipv6, port, created, updated, last_seen, private_port,"
    " agent_version, gateway"
)
"""An installation's columns, in the order of `values` and `installation`."""

JOURNAL_COLUMNS = (
    "serial, at, code, old_label, old_ipv4, old_ipv6, old_port, new_label, ipv4, ipv6, port"
)
"""A journal entry's columns as written (its seq apart), in the order of `journal_row`."""

JOURNAL_READ = (
    "SELECT seq, serial, code, old_label, old_ipv4, old_ipv6, old_port,"
    " new_label, ipv4, ipv6, port FROM journal"
)
"""The start of a read of journal entries (rows for `journal_entry`)."""

RELEASE = (
    "INSERT INTO live_released (gateway, port, released) VALUES ({p}, {p}, {p})"
    " ON CONFLICT (gateway, port) DO UPDATE SET released = excluded.released"
)
"""Record that a (gateway, port) was freed now (`{p}`: the engine's placeholder)."""


LIVE_PORTS = (
    "SELECT gateway, port, code, NULL FROM installations WHERE gateway IS NOT NULL"
    " UNION ALL SELECT gateway, port, NULL, released FROM live_released WHERE released > {p}"
)
"""The pairs of the Live pool that are not free (`PortUse` rows, `port_use`): held, or
freed after the parameter (a stamp)."""


def port_use(row: Sequence[object]) -> PortUse:
    """A `PortUse` from a row of `LIVE_PORTS`."""
    gateway, port, code, freed = tuple(row)
    return PortUse(
        str(gateway),
        int(str(port)),
        None if code is None else str(code),
        None if freed is None else utc(freed),
    )


def released(old: Installation, new: Installation | None) -> tuple[object, ...] | None:
    """The `RELEASE` row of what storing `new` over `old` (None: removing it) frees:
    `old`'s (gateway, port) when it had one that `new` does not keep; else None."""
    if old.gateway is None or old.port is None:
        return None
    if new is not None and (new.gateway, new.port) == (old.gateway, old.port):
        return None
    return (old.gateway, old.port, now())


HISTORY_COLUMNS = "at, code, action, actor, via, source, old, new"
"""A history entry's columns as written, in the order of `history_row`."""

ADOPT_FINGERPRINT = (
    "UPDATE zone_state SET secret_fingerprint = coalesce(secret_fingerprint, {p})"
    " WHERE id = 1 RETURNING secret_fingerprint"
)
"""Record the server secret's fingerprint (`{p}`: the engine's placeholder) unless one
is recorded; it reads the one recorded after, in one statement (under the row's lock)."""


def may_be_code(code: str) -> bool:
    """Whether `code` is a well-formed installation code. No installation has any other
    (each was validated), so a read by one finds nothing without asking the database,
    which could not even take some as a parameter (PostgreSQL text holds no NUL)."""
    return CODE_RE.fullmatch(code) is not None


def may_be_label(label: str) -> bool:
    """Whether `label` (in any case) is a well-formed label (see `may_be_code`)."""
    return LABEL_RE.fullmatch(label.lower()) is not None


def next_serial(serial: int) -> int:
    """The next SOA serial in RFC 1982 arithmetic (mod 2**32), skipping 0."""
    return (serial + 1) % 2**32 or 1


def installation(row: Sequence[object]) -> Installation:
    """An installation from its row (`COLUMNS`)."""
    (
        code,
        label,
        kind,
        ipv4,
        ipv6,
        port,
        created,
        updated,
        last_seen,
        private_port,
        agent_version,
        gateway,
    ) = tuple(row)
    return Installation(
        code=str(code),
        label=str(label),
        kind=Kind(str(kind)),
        ipv4=None if ipv4 is None else str(ipv4),
        ipv6=None if ipv6 is None else str(ipv6),
        port=None if port is None else int(str(port)),
        created=utc(created),
        updated=utc(updated),
        last_seen=None if last_seen is None else utc(last_seen),
        private_port=None if private_port is None else int(str(private_port)),
        agent_version=None if agent_version is None else str(agent_version),
        gateway=None if gateway is None else str(gateway),
    )


def values(inst: Installation) -> tuple[object, ...]:
    """An installation's row (`COLUMNS`)."""
    return (
        inst.code,
        inst.label,
        inst.kind.value,
        inst.ipv4,
        inst.ipv6,
        inst.port,
        inst.created.isoformat(),
        inst.updated.isoformat(),
        None if inst.last_seen is None else inst.last_seen.isoformat(),
        inst.private_port,
        inst.agent_version,
        inst.gateway,
    )


record: Callable[[Iterable[object]], DnsRecord] = functools.partial(tuple.__new__, DnsRecord)
"""A (label, ipv4, ipv6, port) row as a `DnsRecord`: `DnsRecord._make` without its length
check (the query names the four columns), all in C: a million rows at start-up, where
`_make`, a Python call per row, costs twice as much."""


def utc(stored: object) -> datetime:
    """A stored timestamp as an aware datetime in UTC. Every timestamp is written in UTC
    with its offset (`now` or the model's `utcnow`); one without an offset (written by
    hand) is taken as UTC too."""
    when = datetime.fromisoformat(str(stored))
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)


def now() -> str:
    """Now, in UTC, as stored for history and journal entries (to the millisecond)."""
    return stamp(datetime.now(UTC))


def stamp(when: datetime) -> str:
    """`when` as journal and history entries store it (UTC, to the millisecond), so
    that stored stamps compare as text in time order."""
    return when.astimezone(UTC).isoformat(timespec="milliseconds")


def _side(inst: Installation | None) -> tuple[object, ...]:
    """(label, ipv4, ipv6, port) as the journal keeps them: all None for nothing."""
    return (None, None, None, None) if inst is None else tuple(inst.dns_view())


def journal_row(
    serial: int, at: str, code: str, old: Installation | None, new: Installation | None
) -> tuple[object, ...]:
    """A journal entry's row (`JOURNAL_COLUMNS`)."""
    return (serial, at, code, *_side(old), *_side(new))


def _journal_side(row: Sequence[object]) -> DnsRecord | None:
    """A journal's (label, ipv4, ipv6, port) columns as a record; None when no label."""
    label, ipv4, ipv6, port = row
    if label is None:
        return None
    return DnsRecord(
        str(label),
        None if ipv4 is None else str(ipv4),
        None if ipv6 is None else str(ipv6),
        None if port is None else int(str(port)),
    )


def journal_entry(row: Sequence[object]) -> JournalEntry:
    """A journal entry from a row of `JOURNAL_READ`."""
    return JournalEntry(
        seq=int(str(row[0])),
        serial=int(str(row[1])),
        code=str(row[2]),
        before=_journal_side(row[3:7]),
        record=_journal_side(row[7:11]),
    )


def audited(inst: Installation) -> tuple[object, ...]:
    """The fields whose change the history records (not last-seen)."""
    return (inst.label, inst.kind, inst.ipv4, inst.ipv6, inst.port, inst.gateway)


def history_row(
    code: str,
    action: str,
    origin: Origin,
    old: Installation | None,
    new: Installation | None,
) -> tuple[object, ...]:
    """A history entry's row (`HISTORY_COLUMNS`), stamped now, for a change of an
    installation."""
    return _history_text_row(
        now(),
        code,
        action,
        origin,
        old=None if old is None else json.dumps(old.to_dict()),
        new=None if new is None else json.dumps(new.to_dict()),
    )


def _history_text_row(
    at: str, code: str, action: str, origin: Origin, *, old: str | None, new: str | None
) -> tuple[object, ...]:
    """A history entry's row (`HISTORY_COLUMNS`), its before and after as JSON text."""
    return (at, code, action, origin.actor, origin.via, origin.source, old, new)


def link_history_rows(action: str, link: Link, origin: Origin) -> list[tuple[object, ...]]:
    """The history entries of an added ("link") or removed ("unlink") link: one on each
    end, the link as `new` when added and `old` when removed."""
    value = json.dumps(link.to_dict())
    at = now()
    return [
        _history_text_row(
            at,
            code,
            action,
            origin,
            old=value if action == "unlink" else None,
            new=value if action == "link" else None,
        )
        for code in (link.a, link.b)
    ]


def history_entry(row: Sequence[object]) -> dict[str, object]:
    """A history entry as `Store.history` returns it, from (at, action, actor, via,
    source, old, new)."""
    return {
        "at": row[0],
        "action": row[1],
        "actor": row[2],
        "via": row[3],
        "source": row[4],
        "old": None if row[5] is None else json.loads(str(row[5])),
        "new": None if row[6] is None else json.loads(str(row[6])),
    }


def link(row: Sequence[object]) -> Link:
    """A link from (a, b, feature, created)."""
    a, b, feature, created = tuple(row)
    return Link(str(a), str(b), str(feature), utc(created))


def seen_rows(
    code: str, seen: Mapping[str, tuple[str, ...]], at: datetime
) -> list[tuple[object, ...]]:
    """The rows (code, counterpart, addresses, at) of what `controparte firewall` saw."""
    return [
        (code, counterpart, json.dumps(list(addresses)), at.isoformat())
        for counterpart, addresses in seen.items()
    ]


def seen_addresses(row: Sequence[object]) -> SeenAddresses:
    """From (counterpart, addresses, at)."""
    return SeenAddresses(str(row[0]), tuple(str(a) for a in json.loads(str(row[1]))), utc(row[2]))


def tsig_key(row: Sequence[object]) -> TsigKeyRow:
    """From (name, code, algorithm, secret, role)."""
    return TsigKeyRow(
        str(row[0]),
        None if row[1] is None else str(row[1]),
        str(row[2]),
        bytes(row[3]),  # type: ignore[call-overload]
        KeyRole(str(row[4])),
    )


def pair_taken(inst: Installation) -> PortTakenError:
    return PortTakenError(
        f"port: {inst.port} on the Live gateway {inst.gateway} was taken by another"
        " installation meanwhile"
    )


def code_taken(inst: Installation) -> ConflictError:
    return ConflictError(f"code: {inst.code!r} is already registered")


def label_taken(inst: Installation) -> ConflictError:
    return ConflictError(f"label: {inst.label!r} is already used by another installation")
