"""The dashboard's part of the store on both engines (`store/accounts.py`): accounts,
sessions with expiry, the installations' search and the overview's counts; and the
service over it (`service/accounts.py`): passwords hashed, sessions by their cookie."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from controparte.errors import AuthError, ConflictError, ForbiddenError, ValidationError
from controparte.model import Installation
from controparte.service.accounts import (
    ADMIN,
    Accounts,
    check_password,
    hash_password,
    session_key,
)
from controparte.store import Origin, Store
from controparte.store.base import AccountRow, InstallationQuery, Role, SessionRow

NOW = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)


def add(store: Store, *insts: Installation) -> None:
    with store.transaction(Origin()) as tx:
        for inst in insts:
            tx.insert(inst)


def inst(code: str, label: str, **fields: object) -> Installation:
    seen = fields.pop("last_seen", None)
    made = Installation.create(code, label, allow_non_global=True, now=NOW, **fields)  # type: ignore[arg-type]
    return replace(made, last_seen=seen) if isinstance(seen, datetime) else made


@pytest.fixture
def seeded(store: Store) -> Store:
    add(
        store,
        inst("ACME-1", "acme-milano", ipv4="192.0.2.10", last_seen=NOW),
        inst("BETA-2", "beta-torino", ipv6="2001:db8::2", last_seen=NOW - timedelta(hours=2)),
        inst("LIVE-3", "live_x".replace("_", "-"), kind="live", ipv4="203.0.113.3"),
        inst("PCT-4", "percent", ipv4="198.51.100.4"),
    )
    return store


@pytest.mark.parametrize(
    ("query", "codes", "total"),
    [
        (InstallationQuery(), ["ACME-1", "BETA-2", "LIVE-3", "PCT-4"], 4),
        (InstallationQuery(text="acme"), ["ACME-1"], 1),
        (InstallationQuery(text="MILANO"), ["ACME-1"], 1),  # any case
        (InstallationQuery(text="2001:DB8"), ["BETA-2"], 1),
        (InstallationQuery(text="0.113."), ["LIVE-3"], 1),
        (InstallationQuery(text="%"), [], 0),  # LIKE's wildcards are taken as they are
        (InstallationQuery(text="_"), [], 0),
        (InstallationQuery(kind="live"), ["LIVE-3"], 1),
        (InstallationQuery(stale_before=NOW - timedelta(hours=1)), ["BETA-2"], 1),
        (InstallationQuery(limit=2, offset=1), ["BETA-2", "LIVE-3"], 4),
        (InstallationQuery(text="a", limit=1, offset=1), ["BETA-2"], 2),
        (InstallationQuery(text="a", offset=10), [], 2),
        (InstallationQuery(offset=10), [], 4),
    ],
)
def test_search(seeded: Store, query: InstallationQuery, codes: list[str], total: int) -> None:
    page = seeded.search(query)
    assert [i.code for i in page.installations] == codes
    assert page.total == total


def test_summary_counts_kinds_stale_and_recent_changes(seeded: Store) -> None:
    summary = seeded.summary(NOW - timedelta(hours=1), datetime.now(UTC) - timedelta(hours=1))
    assert dict(summary.by_kind) == {"live": 1, "onprem": 3}
    assert summary.stale == 1
    assert summary.changes == 4  # four installations added: four journal entries
    later = seeded.summary(NOW, datetime.now(UTC) + timedelta(minutes=1))
    assert later.changes == 0


def test_accounts_and_sessions(store: Store) -> None:
    row = AccountRow("ops", Role.OPERATOR, "h", NOW)
    assert store.add_account(row)
    assert not store.add_account(replace(row, role=Role.SUPPORT))
    assert store.account("ops") == row
    assert store.accounts() == [row]
    session = SessionRow("k1", "ops", Role.OPERATOR, "c", NOW, NOW + timedelta(hours=1))
    store.add_session(session, NOW)
    assert store.session("k1", NOW) == session
    assert store.session("k1", NOW + timedelta(hours=1)) is None  # expired
    store.add_session(replace(session, key="k2"), NOW + timedelta(hours=2))  # purges k1
    assert store.session("k1", NOW) is None
    store.end_session("k2")
    assert store.session("k2", NOW) is None
    store.add_session(replace(session, key="k3"), NOW)
    assert store.remove_account("ops")
    assert store.session("k3", NOW) is None  # its sessions end with it
    assert not store.remove_account("ops")


def test_passwords_are_salted_scrypt_hashes() -> None:
    first, second = hash_password("secret-one!"), hash_password("secret-one!")
    assert first != second and first.startswith("scrypt$16384$8$1$")
    assert check_password("secret-one!", first)
    assert not check_password("secret-one?", first)
    assert not check_password("secret-one!", "garbage")


def test_the_service_signs_in_and_out(store: Store) -> None:
    accounts = Accounts(store, 60)
    accounts.add("sam", Role.SUPPORT, "long enough password")
    with pytest.raises(ConflictError):
        accounts.add("sam", Role.OPERATOR, "long enough password")
    for name, password in ((ADMIN, "long enough password"), ("Sam", "x" * 20), ("ok", "short")):
        with pytest.raises(ValidationError):
            accounts.add(name, Role.SUPPORT, password)
    for name, password in (("sam", "wrong password!"), ("nobody", "long enough password")):
        with pytest.raises(AuthError, match="wrong name or password"):
            accounts.sign_in(name, password)
    session = accounts.sign_in("sam", "long enough password")
    assert store.session(session_key(session.cookie), datetime.now(UTC)) is not None
    assert store.session(session.cookie, datetime.now(UTC)) is None  # the hash, not the value
    found = accounts.session(session.cookie)
    assert found is not None and found.account == "sam" and not found.may_change
    found.check_csrf(session.row.csrf)
    with pytest.raises(ForbiddenError):
        found.check_csrf("")
    assert accounts.session(session.cookie, datetime.now(UTC) + timedelta(seconds=61)) is None
    accounts.sign_out(session.cookie)
    assert accounts.session(session.cookie) is None
