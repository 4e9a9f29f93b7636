"""The data directory is made 0700 and every file in it 0600 (the database with its
-wal and -shm, the server secret, the writer's lock file), whatever the umask; what an
operator left open to others is named by `exposed`."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from controparte.model import Installation
from controparte.model.installation import utcnow
from controparte.service.credentials import SECRET_FILE, ServerSecret
from controparte.store import Origin, SqliteStore
from controparte.store.private import exposed
from controparte.store.sqlite import DB_FILE


@pytest.fixture(params=[0o022, 0o000], ids=["umask-022", "umask-000"])
def umask(request: pytest.FixtureRequest) -> Iterator[int]:
    mask = int(request.param)
    old = os.umask(mask)
    try:
        yield mask
    finally:
        os.umask(old)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.usefixtures("umask")
def test_the_data_directory_and_its_files_are_the_owners_only(tmp_path: Path) -> None:
    data = tmp_path / "srv" / "data"
    ServerSecret.load_or_create(data)
    store = SqliteStore.in_directory(data)
    try:
        now = utcnow()
        with store.transaction(Origin()) as tx:  # the -wal and -shm exist while it is open
            tx.insert(Installation(code="A-1", label="alpha", created=now, updated=now))
        names = {p.name for p in data.iterdir()}
        expected = {DB_FILE, f"{DB_FILE}-wal", f"{DB_FILE}-shm", f"{DB_FILE}-writer.lock"}
        assert names == {SECRET_FILE, *expected}
        assert mode(data) == 0o700
        assert {name: mode(data / name) for name in names} == dict.fromkeys(names, 0o600)
        assert exposed(data) == []
    finally:
        store.close()


def test_exposed_names_what_others_may_read(tmp_path: Path) -> None:
    data = tmp_path / "data"
    ServerSecret.load_or_create(data)
    SqliteStore.in_directory(data).close()
    assert exposed(data) == []
    (data / DB_FILE).chmod(0o644)
    data.chmod(0o750)
    assert exposed(data) == [(data, 0o750), (data / DB_FILE, 0o644)]
    assert exposed(tmp_path / "missing") == []


def test_an_existing_directory_keeps_its_mode(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir(mode=0o755)
    data.chmod(0o755)
    ServerSecret.load_or_create(data)
    assert mode(data) == 0o755  # not changed behind the operator's back: warned of instead
    assert mode(data / SECRET_FILE) == 0o600
