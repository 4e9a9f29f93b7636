"""The server secret a store's credentials are made with (`adopt_secret`, schema
version 5), on each engine: the first services to open a store record its fingerprint,
the same secret opens it again, another is refused at start with an error that names
the file to copy and never shows the secret, nodes opening at once agree on one, and a
store of an older version adopts the secret that made its tokens, which go on working.
Each node has its own data directory; on SQLite, another secret is a data directory
whose server.key was replaced."""

from __future__ import annotations

import secrets
import sqlite3
import threading
from pathlib import Path

import psycopg
import pytest

from controparte.errors import ConfigError
from controparte.model import Installation
from controparte.model.installation import utcnow
from controparte.service.credentials import SECRET_FILE, SHOWN_FINGERPRINT, ServerSecret
from controparte.service.services import open_services
from controparte.settings import Settings, load_settings
from controparte.store import Origin, Store, open_store
from controparte.store.schema import MIGRATIONS
from controparte.store.sqlite import DB_FILE
from tests.clirunner import Run, ok, user_error

NODES = 4


def settings_of(data: Path, database: str) -> Settings:
    env = {"CONTROPARTE_DATA": str(data)}
    return load_settings(env={**env, "CONTROPARTE_DATABASE": database} if database else env)


def another_secret(data: Path) -> bytes:
    """Replace the server secret of `data` (as a node given the wrong key would have);
    the new one."""
    master = secrets.token_bytes(32)
    (data / SECRET_FILE).write_bytes(master)
    return master


def recorded(data: Path, database: str) -> str:
    """The fingerprint the store records (asked with one that can never be adopted)."""
    store = open_store(data, database)
    try:
        return store.adopt_secret_fingerprint("not-a-fingerprint")
    finally:
        store.close()


def test_the_first_services_record_the_secret_and_open_again_with_it(
    tmp_path: Path, database: str
) -> None:
    settings = settings_of(tmp_path, database)
    open_services(settings).close()
    mine = ServerSecret.load_or_create(tmp_path).fingerprint
    assert recorded(tmp_path, database) == mine
    open_services(settings).close()  # the same secret: no complaint
    assert recorded(tmp_path, database) == mine


def test_another_secret_is_refused_naming_the_file_and_never_showing_it(
    tmp_path: Path, database: str
) -> None:
    open_services(settings_of(tmp_path, database)).close()
    theirs = ServerSecret.load_or_create(tmp_path).fingerprint
    master = another_secret(tmp_path)
    mine = ServerSecret.from_master(master)
    with pytest.raises(ConfigError) as refused:
        open_services(settings_of(tmp_path, database))
    message = str(refused.value)
    assert message.startswith(f"secret: {tmp_path / SECRET_FILE} is not the server secret")
    assert f"copy {SECRET_FILE} from the data directory of a node already serving" in message
    assert mine.fingerprint[:SHOWN_FINGERPRINT] in message
    assert theirs[:SHOWN_FINGERPRINT] in message
    assert mine.fingerprint not in message and theirs not in message  # prefixes only
    for kept in (master, mine.token_key, mine.encryption_key):
        assert kept.hex()[:16] not in message
    assert recorded(tmp_path, database) == theirs  # never changed by the refused node


def test_commands_that_open_the_services_refuse_another_secret(
    run: Run, data: Path, database: str
) -> None:
    env = {"CONTROPARTE_DATABASE": database} if database else {}
    ok(run("installation", "add", "A-1", "--label", "alpha", env=env))
    another_secret(data)
    for command in (("installation", "rotate-token", "A-1"), ("admin-token",), ("serve",)):
        line = user_error(run(*command, env=env), exit_code=2)
        assert f"secret: {data / SECRET_FILE} is not the server secret" in line, command


def test_nodes_opening_at_once_agree_on_one_secret(tmp_path: Path, database: str) -> None:
    stores = [open_store(tmp_path, database) for _ in range(NODES)]
    candidates = [f"fingerprint-of-node-{n}" for n in range(NODES)]
    start = threading.Barrier(NODES)
    adopted: list[str] = []

    def node(store: Store, fingerprint: str) -> None:
        start.wait()
        adopted.append(store.adopt_secret_fingerprint(fingerprint))

    threads = [
        threading.Thread(target=node, args=pair) for pair in zip(stores, candidates, strict=True)
    ]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        for store in stores:
            store.close()
    assert len(adopted) == NODES
    assert len(set(adopted)) == 1
    assert adopted[0] in candidates
    assert recorded(tmp_path, database) == adopted[0]


def back_to_version_4(data: Path, database: str) -> None:
    """Undo schema versions 5 to 11 in the store, as a store written before them would
    be (6 only adds the relay's tables, 7 the guards', 8 the Live pool's, 9 the
    dashboard's, 10 the flow results', 11 their account column)."""
    assert len(MIGRATIONS) == 11, "the versions after 4 are the ones undone here"
    drop = (
        "DROP TABLE flow_results",
        "DROP TABLE sessions",
        "DROP TABLE accounts",
        "DROP INDEX installations_by_kind",
        "DROP INDEX installations_by_last_seen",
        "DROP TABLE live_released",
        "DROP INDEX installations_gateway_port",
        "ALTER TABLE installations DROP COLUMN gateway",
        "DROP TABLE tsig_seen",
        "DROP TABLE auth_failures",
        "DROP TABLE relay_requests",
        "DROP TABLE relay_polls",
        "ALTER TABLE zone_state DROP COLUMN secret_fingerprint",
    )
    if database:
        with psycopg.connect(database) as pg:  # commits on the way out
            for statement in drop:
                pg.execute(statement)
            pg.execute("UPDATE schema_version SET version = 4")
        return
    lite = sqlite3.connect(data / DB_FILE, isolation_level=None)
    try:
        for statement in drop:
            lite.execute(statement)
        lite.execute("PRAGMA user_version = 4")
    finally:
        lite.close()


def test_a_store_of_the_version_before_adopts_the_secret_that_made_its_tokens(
    tmp_path: Path, database: str
) -> None:
    settings = settings_of(tmp_path, database)
    services = open_services(settings)
    try:
        now = utcnow()
        with services.store.transaction(Origin()) as tx:
            tx.insert(Installation(code="A-1", label="alpha", created=now, updated=now))
        token = services.access.issue_token("A-1")
        admin = services.access.create_admin_token()
    finally:
        services.close()
    back_to_version_4(tmp_path, database)

    services = open_services(settings)
    try:
        assert services.access.authenticate("A-1", token).code == "A-1"
        assert services.access.is_admin(admin)
    finally:
        services.close()
    assert recorded(tmp_path, database) == ServerSecret.load_or_create(tmp_path).fingerprint
