"""Registry use-cases: add, change, remove, find and bulk-import installations.

Every front end goes through here, so every rule is enforced once: `Registry.write` is
the one validate-and-write step of every path that stores an installation (add,
update, update_many, import, and the heartbeat writer's group commits). After each
committed change `on_change` is called (the in-process DNS server picks it up at once;
other processes learn of it from the store's journal).

Every committed change is logged, one `info` line each on the logger
`controparte.changes` (`describe`: what changed, of which installation, through which
front end, from which address, by whom); a change refused inside a transaction is one
`debug` line. A change of last-seen alone is no change. No secret is ever in a line:
installation fields and an `Origin` hold none.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import replace
from typing import Protocol, TypedDict, TypeVar, Unpack

from controparte.errors import (
    ConflictError,
    ControparteError,
    ImportRefusedError,
    NotFoundError,
    PoolExhaustedError,
    PortTakenError,
    ValidationError,
)
from controparte.model import (
    Installation,
    InstallationChange,
    Kind,
    ZoneConfig,
    label_of,
    validate_code,
)
from controparte.model.importfile import IMPORT_FIELDS
from controparte.model.installation import utcnow
from controparte.plan.catalog import LiveSettings, packaged_catalog
from controparte.service.livepool import LivePool, Placement
from controparte.settings import Settings
from controparte.store import Origin, Store, StoreTransaction

T = TypeVar("T")
PLACEMENT_ATTEMPTS = 16
"""Transactions a write that places a Live installation runs at most when other
writers keep taking the pair it chose (`Registry._placing`)."""
log = logging.getLogger("controparte.changes")

SHOWN_FIELDS = (
    "label",
    "kind",
    "gateway",
    "ipv4",
    "ipv6",
    "port",
    "private_port",
    "agent_version",
)
"""The fields a change's log line shows (every one an operator sets or DNS serves; the
gateway only for an installation placed on one)."""


def describe(old: Installation | None, new: Installation | None) -> str | None:
    """What storing `new` over `old` changes, for the log (None, `new`: added; `old`,
    None: removed); None when nothing but timestamps changed."""
    if old is None or new is None:
        shown = new if new is not None else old
        assert shown is not None
        values = " ".join(
            f"{f}={_shown(getattr(shown, f))}"
            for f in SHOWN_FIELDS
            if f != "gateway" or shown.gateway is not None  # on no gateway: as before
        )
        return f"{'added' if old is None else 'removed'} {values}"
    diffs = [
        f"{f} {_shown(getattr(old, f))} -> {_shown(getattr(new, f))}"
        for f in SHOWN_FIELDS
        if getattr(old, f) != getattr(new, f)
    ]
    return "changed " + ", ".join(diffs) if diffs else None


def _shown(value: object) -> str:
    return "-" if value is None else str(getattr(value, "value", value))


class NewFields(TypedDict, total=False):
    """The fields of a new installation besides its code and label, as `build` and
    `add` take them; left out, `Installation.create`'s default (on-prem, no address,
    no port)."""

    kind: str
    ipv4: str | None
    ipv6: str | None
    port: int | str | None


class RegistryReader(Protocol):
    """What `Registry.update_many`'s decision may read: installations as the
    transaction sees them (a store transaction is one)."""

    def get(self, code: str) -> Installation | None: ...

    def get_by_label(self, label: str) -> Installation | None: ...


class Registry:
    """The registry use-cases over `store`.

    `live` is the catalog's Live settings (default: the packaged catalog's): a Live
    installation whose public port lies outside the Live range is refused (a
    ValidationError on `port`), as is a label the zone reserves for itself. See
    `check` for when each rule applies. `pool` places Live installations on the
    gateways of the setting `live_gateways` (`write`)."""

    def __init__(
        self,
        store: Store,
        settings: Settings,
        on_change: Callable[[], None] | None = None,
        *,
        live: LiveSettings | None = None,
    ) -> None:
        self.store = store
        self.settings = settings
        self.live = live if live is not None else packaged_catalog().live
        self.pool = LivePool(
            settings.live_gateways,
            settings.live_quarantine,
            self.live,
            allow_non_global=settings.allow_non_global,
        )
        self._reserved = ZoneConfig.from_settings(settings).reserved_labels
        self._on_change = on_change
        self.changes: Counter[str] = Counter()
        """Installations changed through this registry, by `Origin.via` (for metrics)."""
        self._count_lock = threading.Lock()
        self._pending = threading.local()  # .changes: the open `transaction`'s, to log

    @contextmanager
    def transaction(self, origin: Origin) -> Iterator[StoreTransaction]:
        """A store transaction whose changes (`write`, `remove`) are logged, one line
        each, once it committed; a refusal raised inside it is logged at `debug`."""
        changes: list[tuple[str, str, Origin | None]] = []
        outer = getattr(self._pending, "changes", None)
        self._pending.changes = changes
        try:
            with self.store.transaction(origin) as tx:
                yield tx
        except ControparteError as exc:
            log.debug("refused via %s from %s by %s: %s", *_who(origin), exc)
            raise
        finally:
            self._pending.changes = outer
        for code, what, own in changes:
            log.info("%s %s via %s from %s by %s", code, what, *_who(own or origin))

    def _note(self, code: str, what: str | None, origin: Origin | None) -> None:
        changes = getattr(self._pending, "changes", None)
        if what is not None and changes is not None:
            changes.append((code, what, origin))

    def _changed(self, origin: Origin | None, count: int = 1) -> None:
        with self._count_lock:
            self.changes[(origin or Origin()).via] += count
        if self._on_change is not None:
            self._on_change()

    def check(self, old: Installation | None, new: Installation) -> None:
        """The registry's rules for storing `new` over `old` (None: a new installation);
        pure, a ValidationError naming the field when one is broken.

        A rule refuses new claims; it does not evict what is stored. A new installation
        is checked against every rule; a change against the rules on the fields it
        changes: the reserved labels when the label changes, the Live port range when
        the kind or the port changes. So an installation stored before a rule (or
        before the operator narrowed the Live range or added a name server) keeps
        taking changes of its other fields, from every front end alike, heartbeats
        reporting the port it has included; a new out-of-range port is refused."""
        if (old is None or new.label != old.label) and new.label in self._reserved:
            raise ValidationError(
                "label", f"{new.label!r} is reserved for the zone's own name servers"
            )
        if old is None or (new.kind, new.port) != (old.kind, old.port):
            self.live.check(new)
        self.pool.check(old, new)

    def write(
        self,
        tx: StoreTransaction,
        old: Installation | None,
        new: Installation,
        origin: Origin | None = None,
    ) -> Installation:
        """The one validate-and-write step: store `new` over `old` (None: insert it)
        inside `tx`, or raise and write nothing. The installation as stored (`old`
        when nothing was written).

        First the Live pool places it (`LivePool.place`: a Live installation's gateway,
        addresses and port are the pool's to say, for every path alike), then checks
        `check`'s rules, then, as `tx` sees them, that no other installation
        has the code (a new installation) or the label (a new installation or a new
        label); a change that reads nothing else costs no store read. `new == old`
        writes nothing. `origin` overrides the transaction's in the history (the
        store records no history entry and no journal row for a change of last-seen
        alone)."""
        new = self.pool.place(tx, old, new, utcnow())
        self.check(old, new)
        if old is None and tx.get(new.code) is not None:
            raise ConflictError(f"code: {new.code!r} is already registered")
        if (old is None or new.label != old.label) and tx.get_by_label(new.label) is not None:
            raise ConflictError(f"label: {new.label!r} is already used by another installation")
        if old is None:
            tx.insert(new)
        elif new != old:
            tx.update(old, new, origin)
        else:
            return old
        self._note(new.code, describe(old, new), origin)
        return new

    def _placing(self, work: Callable[[], T]) -> T:
        """`work` (a whole transaction), again when a Live pair it chose was taken by
        another writer meanwhile (PortTakenError: the next attempt reads the pool
        again), up to `PLACEMENT_ATTEMPTS` times."""
        for _ in range(PLACEMENT_ATTEMPTS - 1):
            try:
                return work()
            except PortTakenError:
                continue
        return work()

    def build(
        self, code: str, label: str, *, gateway: str | None = None, **fields: Unpack[NewFields]
    ) -> Installation:
        """A validated installation value, checked against the rules for a new one
        (not stored; a Live one is placed when written). `gateway`: the Live gateway
        to place it on."""
        inst = Installation.create(
            code, label, allow_non_global=self.settings.allow_non_global, **fields
        )
        if gateway:
            inst = replace(inst, gateway=self.pool.gateway(gateway).name)
        self.check(None, inst)
        return inst

    def add(
        self,
        code: str,
        label: str,
        *,
        origin: Origin | None = None,
        gateway: str | None = None,
        **fields: Unpack[NewFields],
    ) -> Installation:
        """Add one installation; as stored (a Live one placed)."""
        inst = self.build(code, label, gateway=gateway, **fields)

        def add() -> Installation:
            with self.transaction(origin or Origin()) as tx:
                return self.write(tx, None, inst)

        added = self._placing(add)
        self._changed(origin)
        return added

    def move(self, code: str, gateway: str, origin: Origin | None = None) -> Installation:
        """Place the Live installation `code` on `gateway`, on a free port there, in one
        transaction (its label and everything else kept; its old pair freed into
        quarantine); as stored."""
        target = self.pool.gateway(gateway)

        def move() -> tuple[Installation, Installation]:
            with self.transaction(origin or Origin()) as tx:
                old = tx.get(validate_code(code))
                if old is None:
                    raise NotFoundError(f"no installation with code {code!r}")
                if old.kind is not Kind.LIVE:
                    raise ValidationError("kind", f"{old.code} is not a Live installation")
                if old.gateway == target.name:
                    raise ValidationError(
                        "gateway", f"{old.code} is already on the Live gateway {target.name}"
                    )
                return old, self.write(tx, old, replace(old, gateway=target.name))

        old, moved = self._placing(move)
        if moved != old:
            self._changed(origin)
        return moved

    def placement(self, name: str) -> Placement:
        """Where the Live installation `name` (as `find` takes it) is reached: its
        gateway, the gateway's addresses and its port (NotFoundError when there is no
        such Live installation). The one read of a placement (the start-live broker's)."""
        return self.pool.where(self.find(name))

    def get(self, code: str) -> Installation:
        inst = self.store.get(validate_code(code))
        if inst is None:
            raise NotFoundError(f"no installation with code {code!r}")
        return inst

    def find(self, name: str) -> Installation:
        """By `<label>.<zone>` (`label_of`), else by code, else by label."""
        label = label_of(name, self.settings.zone)
        if label is not None:
            inst = self.store.get_by_label(label)
        else:
            candidate = name.strip().rstrip(".").lower()
            inst = self.store.get(name) or self.store.get_by_label(candidate)
        if inst is None:
            raise NotFoundError(f"no installation with code or label {name!r}")
        return inst

    def list(self, *, limit: int | None = None, offset: int = 0) -> list[Installation]:
        return self.store.installations(limit=limit, offset=offset)

    def update(
        self, code: str, change: InstallationChange, origin: Origin | None = None
    ) -> Installation:
        if change.is_empty():
            raise ValidationError("change", "nothing to change: give at least one field")

        def update() -> tuple[Installation, Installation]:
            with self.transaction(origin or Origin()) as tx:
                return self._apply_change(tx, code, change)

        old, new = self._placing(update)
        if new != old:
            self._changed(origin)
        return new

    def _apply_change(
        self, tx: StoreTransaction, code: str, change: InstallationChange
    ) -> tuple[Installation, Installation]:
        """`change` of `code`, read, validated and written inside `tx` (`write`);
        (old, new)."""
        old = tx.get(validate_code(code))
        if old is None:
            raise NotFoundError(f"no installation with code {code!r}")
        new = old.with_changes(change, allow_non_global=self.settings.allow_non_global)
        return old, self.write(tx, old, new)

    def update_many(
        self,
        decide: Callable[[RegistryReader], tuple[T, Mapping[str, InstallationChange]]],
        origin: Origin | None = None,
    ) -> T:
        """Read and change several installations in one transaction, and return what
        `decide` returned first.

        `decide` reads installations as the transaction sees them (no other writer can
        change them meanwhile) and returns its result with the changes to make, by code.
        Each change is validated as `update` validates it; all are committed together or
        none is (an exception from `decide` or from any change rolls everything back).
        `on_change` is called once if anything changed."""

        def many() -> tuple[T, int]:
            changed = 0
            with self.transaction(origin or Origin()) as tx:
                result, changes = decide(tx)
                for code, change in changes.items():
                    old, new = self._apply_change(tx, code, change)
                    changed += new != old
            return result, changed

        result, changed = self._placing(many)
        if changed:
            self._changed(origin, changed)
        return result

    def remove(self, code: str, origin: Origin | None = None) -> Installation:
        with self.transaction(origin or Origin()) as tx:
            old = tx.get(validate_code(code))
            if old is None:
                raise NotFoundError(f"no installation with code {code!r}")
            tx.delete(old)
            self._note(old.code, describe(old, None), None)
        self._changed(origin)
        return old

    def import_many(
        self,
        rows: Iterable[tuple[int, dict[str, object]]],
        origin: Origin | None = None,
        progress: Callable[[int], None] | None = None,
    ) -> int:
        """Add every row (line number, fields named as in `IMPORT_FIELDS`) or none.

        Every problem of every row is reported in one pass, with its line: the row's
        own (`_build_rows`), and for each row that has none, a collision with what the
        registry holds (checked by `write` in the one transaction, which is rolled back
        when anything is wrong). Live rows that ask for a port are placed first, so that
        a port the pool picks for an earlier row is never one a later row asks for."""
        built, found = self._build_rows(rows)
        ordered = sorted(built, key=lambda row: not _asks_for_a_port(row[1]))  # stable

        def import_all() -> None:
            problems = [*found]
            with self.transaction(origin or Origin(via="import")) as tx:
                for done, (line, inst) in enumerate(ordered, start=1):
                    try:
                        self.write(tx, None, inst)
                    except PortTakenError:
                        raise
                    except (ConflictError, ValidationError, PoolExhaustedError) as exc:
                        problems.append((line, str(exc)))
                    if progress is not None:
                        progress(done)
                if problems:
                    raise ImportRefusedError(sorted(problems, key=lambda problem: problem[0]))

        self._placing(import_all)
        if built:
            self._changed(origin or Origin(via="import"), len(built))
        return len(built)

    def _build_rows(
        self, rows: Iterable[tuple[int, dict[str, object]]]
    ) -> tuple[Sequence[tuple[int, Installation]], Sequence[tuple[int, str]]]:
        """Every row of `import_many` that is a valid installation, with its line, and
        every problem of the others (by line): an unknown field, a rule broken, or a
        code or label that an earlier row has (both told when both repeat)."""
        problems: list[tuple[int, str]] = []
        built: list[tuple[int, Installation]] = []
        codes: dict[str, int] = {}
        labels: dict[str, int] = {}
        for line, row in rows:
            unknown = set(row) - set(IMPORT_FIELDS)
            if unknown:
                problems.append((line, f"unknown field(s): {', '.join(sorted(unknown))}"))
                continue
            try:
                inst = self.build(
                    _text(row.get("code")),
                    _text(row.get("label")),
                    kind=_text(row.get("kind")) or "onprem",
                    ipv4=_text(row.get("ip")) or None,
                    ipv6=_text(row.get("ipv6")) or None,
                    port=_text(row.get("port")) or None,
                    gateway=_text(row.get("gateway")) or None,
                )
            except ValidationError as exc:
                problems.append((line, str(exc)))
                continue
            repeats = []
            if inst.code.lower() in codes:
                repeats.append(f"code: {inst.code!r} repeats line {codes[inst.code.lower()]}")
            if inst.label in labels:
                repeats.append(f"label: {inst.label!r} repeats line {labels[inst.label]}")
            if repeats:
                problems += [(line, repeat) for repeat in repeats]
                continue
            codes[inst.code.lower()] = line
            labels[inst.label] = line
            built.append((line, inst))
        return built, problems


def _asks_for_a_port(inst: Installation) -> bool:
    """Whether `inst` is a Live installation that names its port on the pool."""
    return inst.kind is Kind.LIVE and inst.port is not None


def _text(value: object) -> str:
    if value is None:
        return ""
    return str(value).strip()


def _who(origin: Origin) -> tuple[str, str, str]:
    """(front end, client address or "-", actor) of a change, for its log line."""
    return origin.via, origin.source or "-", origin.actor
