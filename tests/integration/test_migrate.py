"""`controparte migrate --to postgresql://...` end to end: a registry built on SQLite
through the real paths (the command line in process, HTTP heartbeats to a real
`controparte serve`, the journal pruned), with two secondaries' copies of the zone taken
by dnspython along the way (one before the journal's floor, one at it); the move by the
real command; then the PostgreSQL store compared with the SQLite file field by field and
table by table, and `controparte serve` on PostgreSQL over the same data directory
(its server.key) answering as SQLite did and going on: the same serial and records,
IXFR from the carried journal and AXFR-style from before its floor (signed with the
transfer key made on SQLite), the old tokens, the admin token and the installation's
TSIG key accepted, the next change one serial and one seq further.
"""

from __future__ import annotations

import hashlib
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import dns.tsig
import dns.zone
import httpx
import psycopg
import pytest
from typer.testing import Result

from controparte.service.credentials import ServerSecret
from controparte.store import open_store
from controparte.store.migrate import TABLES
from controparte.store.rows import next_serial
from controparte.store.sqlite import DB_FILE, LAST_SEQ, SqliteStore
from tests.clirunner import invoke_cli, ok, user_error
from tests.dns_update.test_integration import nsupdate, read_key
from tests.http.test_real_server import heartbeat
from tests.integration.test_transfer import XFR_KEY, axfr_copy, inbound, transfers, wait_serial
from tests.pgserver import Databases
from tests.realserver import ServerProcess
from tests.xfrtools import Rec, zone_records

pytestmark = pytest.mark.integration

PASSWORD = "n0t-in-0utput"
BULK = 100
SETTINGS = {"CONTROPARTE_TRANSFER_ALLOW": f"key={XFR_KEY}"}


@dataclass
class Moved:
    """The registry built on SQLite, what was seen of it, and the move."""

    data: Path
    url: str  # with the password
    result: Result
    tokens: dict[str, str]
    admin_token: str
    keys: Path
    before_floor: dns.zone.Zone  # a secondary's copy from before the journal's floor
    at_floor: dns.zone.Zone  # a secondary's copy at the floor's serial
    served: set[Rec]  # what SQLite served last
    serial: int
    last_seq: int
    source_before: tuple[str, list[str]]  # the file's digest and dump before the move
    source_after: tuple[str, list[str]]


def cli(data: Path, *args: str) -> Result:
    return ok(invoke_cli(*args, data=data))


def token_of(result: Result) -> str:
    lines = [line for line in result.stdout.splitlines() if line.startswith("token")]
    return lines[0].split()[-1]


def source_state(data: Path) -> tuple[str, list[str]]:
    """The SQLite file's bytes (digest) and its content (dump)."""
    digest = hashlib.sha256((data / DB_FILE).read_bytes()).hexdigest()
    with sqlite3.connect(f"{(data / DB_FILE).as_uri()}?mode=ro", uri=True) as conn:
        return digest, list(conn.iterdump())


def serial_of(server: ServerProcess) -> int:
    """The serial of the server's store (read by this process)."""
    with server.registry() as registry:
        return registry.store.serial()


def sqlite_server(data: Path) -> ServerProcess:
    return ServerProcess(data, SETTINGS)


def postgres_server(data: Path, url: str) -> ServerProcess:
    return ServerProcess(data, {**SETTINGS, "CONTROPARTE_DATABASE": url})


@pytest.fixture(scope="module")
def moved(pg_databases: Databases, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Moved]:
    data = tmp_path_factory.mktemp("migrate") / "data"
    keys = data.parent / "keys"
    keys.mkdir()
    tokens = {}
    add = ("installation", "add")
    cli(data, "init")
    tokens["ONPREM-1"] = token_of(
        cli(data, *add, "ONPREM-1", "--label", "onprem", "--ip", "192.0.2.10", "--port", "9001")
    )
    tokens["LIVE-1"] = token_of(
        cli(data, *add, "LIVE-1", "--label", "live", "--kind", "live", "--ip", "198.51.100.20")
    )
    tokens["V6-1"] = token_of(cli(data, *add, "V6-1", "--label", "v6", "--ipv6", "2001:db8::30"))
    tokens["bare-1"] = token_of(cli(data, *add, "bare-1", "--label", "bare"))
    cli(data, *add, "GONE-1", "--label", "gone", "--ip", "192.0.2.40")
    cli(data, "installation", "remove", "GONE-1")
    tokens["V6-1"] = cli(data, "installation", "rotate-token", "V6-1").stdout.strip()
    admin_token = cli(data, "admin-token", "--note", "operations").stdout.strip()
    cli(data, "tsig-key", "--transfer", XFR_KEY, "--out", str(keys / "xfr.key"))
    cli(data, "tsig-key", "--admin", "--out", str(keys / "admin.key"))
    cli(data, "installation", "tsig-key", "ONPREM-1", "--out", str(keys / "onprem.key"))
    cli(data, "link", "add", "ONPREM-1", "LIVE-1", "--feature", "einvoice")
    cli(data, "link", "add", "V6-1", "ONPREM-1", "--feature", "realtime")
    cli(data, "firewall", "ONPREM-1")  # records the counterparts' addresses it saw
    bulk = data.parent / "bulk.csv"  # enough records that an IXFR beats an AXFR
    bulk.write_text(
        "code,label,ip\n" + "".join(f"BULK-{n},bulk-{n},198.51.100.{n + 1}\n" for n in range(BULK))
    )
    cli(data, "import", str(bulk))
    xfr_key = read_key(keys / "xfr.key")

    with sqlite_server(data) as server:
        server.wait_http()
        before_floor = axfr_copy(server, xfr_key)
        heartbeat(server, "LIVE-1", tokens["LIVE-1"], "127.0.0.2", 9100)  # a new address
        wait_serial(server, serial_of(server))
        store = open_store(data)
        try:  # every entry so far: the floor is the newest serial
            assert store.prune_journal(0, 0, datetime.now(UTC)) > 0
        finally:
            store.close()
        at_floor = axfr_copy(server, xfr_key)
        heartbeat(server, "ONPREM-1", tokens["ONPREM-1"], "127.0.0.3", 9002)
        cli(data, "installation", "update", "V6-1", "--label", "v6-new")
        cli(data, *add, "LATE-1", "--label", "late", "--ip", "192.0.2.50")
        cli(data, "installation", "remove", "bare-1")
        wait_serial(server, serial_of(server))
        served = zone_records(axfr_copy(server, xfr_key))

    with server.registry() as registry:
        serial, last_seq = registry.store.serial(), registry.store.last_seq()
    source_before = source_state(data)
    with pg_databases.fresh() as url:
        with_password = url.replace("postgres@", f"postgres:{PASSWORD}@")
        result = invoke_cli("migrate", "--to", with_password, data=data)
        yield Moved(
            data,
            with_password,
            result,
            tokens,
            admin_token,
            keys,
            before_floor,
            at_floor,
            served,
            serial,
            last_seq,
            source_before,
            source_state(data),
        )


def test_the_command_says_what_it_carried_and_what_comes_next(moved: Moved) -> None:
    out = ok(moved.result).stdout
    assert PASSWORD not in moved.result.output
    shown = {line.split()[0]: line.split()[1:] for line in out.splitlines() if line.strip()}
    assert shown["installations"] == [str(4 + BULK)]  # ONPREM-1, LIVE-1, V6-1, LATE-1
    assert shown["links"] == ["2"]
    assert shown["admin_tokens"] == ["1"]
    assert shown["tsig_keys"] == ["3"]
    assert shown["zone"][:2] == ["serial", str(moved.serial)]
    assert f"the next change: {next_serial(moved.serial)}" in out
    assert f"up to seq {moved.last_seq}" in out
    assert shown["to"] == [moved.url.replace(f":{PASSWORD}", "")]
    hint = moved.result.stderr
    assert hint.startswith("next: set database = ")
    assert str(moved.data / "server.key") in hint


def test_the_sqlite_file_was_only_read(moved: Moved) -> None:
    assert moved.source_after == moved.source_before


def test_every_row_is_carried_as_stored(moved: Moved) -> None:
    lite = SqliteStore(moved.data / DB_FILE)
    pg = open_store(moved.data, moved.url)
    try:
        codes = [i.code for i in lite.installations()]
        assert [c for c in codes if not c.startswith("BULK-")] == [
            "LATE-1",
            "LIVE-1",
            "ONPREM-1",
            "V6-1",
        ]
        assert pg.installations() == lite.installations()
        assert pg.count() == 4 + BULK
        assert (pg.serial(), pg.last_seq()) == (moved.serial, moved.last_seq)
        assert pg.journal_floor() == lite.journal_floor()
        assert 0 < lite.journal_floor().seq < moved.last_seq
        assert pg.journal_since(0) == lite.journal_since(0)
        assert len(lite.journal_since(0)) == 4  # after the floor: one entry per change
        for serial in (lite.journal_floor().serial, moved.serial, moved.serial - 1):
            assert pg.journal_reach(serial) == lite.journal_reach(serial)
        for code in [*codes[:3], *codes[-4:], "GONE-1", "bare-1"]:
            assert pg.history(code) == lite.history(code) != []
            assert pg.token_hash(code) == lite.token_hash(code)
            assert pg.firewall_seen(code) == lite.firewall_seen(code)
        assert pg.history("LIVE-1")[-1]["via"] == "heartbeat"
        assert pg.firewall_seen("ONPREM-1").keys() == {"LIVE-1", "V6-1"}
        assert pg.links() == lite.links()
        assert len(pg.links()) == 2
        assert pg.admin_token_hashes() == lite.admin_token_hashes()
        assert len(pg.admin_token_hashes()) == 1
        names = [str(row[0]) for row in sqlite_rows(moved.data, "tsig_keys", "name")]
        assert sorted((pg.tsig_key(n) or pytest.fail(n)).role for n in names) == [
            "transfer",
            "update",
            "update",
        ]
        for name in names:
            assert pg.tsig_key(name) == lite.tsig_key(name)
        secret = ServerSecret.load_or_create(moved.data)  # recorded by the first services
        assert pg.adopt_secret_fingerprint("another") == secret.fingerprint
        assert lite.adopt_secret_fingerprint("another") == secret.fingerprint
    finally:
        lite.close()
        pg.close()


def sqlite_rows(data: Path, table: str, columns: str) -> list[tuple[object, ...]]:
    with sqlite3.connect(f"{(data / DB_FILE).as_uri()}?mode=ro", uri=True) as conn:
        return sorted(conn.execute(f"SELECT {columns} FROM {table}").fetchall(), key=repr)


def test_every_table_is_the_same_on_both_sides(moved: Moved) -> None:
    with sqlite3.connect(f"{(moved.data / DB_FILE).as_uri()}?mode=ro", uri=True) as lite:
        columns = {
            table: ", ".join(str(c[1]) for c in lite.execute(f"PRAGMA table_info({table})"))
            for table in (*TABLES, "zone_state")
        }
        (last_seq,) = lite.execute(LAST_SEQ).fetchone()
    with psycopg.connect(moved.url) as conn:
        for table, names in columns.items():
            pg = conn.execute(f"SELECT {names} FROM {table}").fetchall()
            assert sorted(pg, key=repr) == sqlite_rows(moved.data, table, names), table
        assert conn.execute("SELECT last_seq FROM zone_state").fetchall() == [(last_seq,)]


def test_serve_on_postgresql_goes_on_where_sqlite_stood(moved: Moved) -> None:
    xfr_key = read_key(moved.keys / "xfr.key")
    with postgres_server(moved.data, moved.url) as server:
        assert server.serial() == moved.serial  # the zone configuration was carried too
        assert zone_records(axfr_copy(server, xfr_key)) == moved.served
        assert server.records("onprem") == ["127.0.0.3"]

        inbound(server, moved.at_floor, xfr_key, serial=moved.at_floor.get_soa().serial)
        assert transfers(server, "ixfr") == 1  # incremental, from the carried journal
        assert zone_records(moved.at_floor) == moved.served
        inbound(server, moved.before_floor, xfr_key, serial=moved.before_floor.get_soa().serial)
        assert transfers(server, "ixfr_axfr_style") == 1  # behind the carried floor
        assert zone_records(moved.before_floor) == moved.served

        beat = heartbeat(server, "LIVE-1", moved.tokens["LIVE-1"], "127.0.0.4", 9100)
        assert beat["serial"] == next_serial(moved.serial)
        server.wait_for("live", ["127.0.0.4"])
        update = f"update add onprem.{server.zone} 60 A 192.0.2.77"
        done = nsupdate(
            server, moved.keys / "onprem.key", "update delete onprem." + server.zone + " A", update
        )
        assert done.returncode == 0, done.stdout + done.stderr
        assert server.records("onprem") == ["192.0.2.77"]
        assert server.serial() == next_serial(next_serial(moved.serial))
        with server.registry() as registry:
            entries = registry.store.journal_since(moved.last_seq)
        assert [(e.seq, e.serial, e.code) for e in entries] == [
            (moved.last_seq + 1, next_serial(moved.serial), "LIVE-1"),
            (moved.last_seq + 2, next_serial(next_serial(moved.serial)), "ONPREM-1"),
        ]
        for code in ("V6-1", "ONPREM-1"):  # a rotated token, and one never rotated
            mine = httpx.get(
                f"{server.http_url}/v1/installations/{code}",
                headers={"authorization": f"Bearer {moved.tokens[code]}"},
                timeout=10,
            )
            assert mine.status_code == 200, mine.text
        listed = httpx.get(
            f"{server.http_url}/v1/installations",
            headers={"authorization": f"Bearer {moved.admin_token}"},
            timeout=10,
        )
        assert listed.status_code == 200, listed.text
        assert listed.json()["total"] == 4 + BULK


def test_a_database_holding_a_registry_is_refused_unchanged(moved: Moved) -> None:
    def dump() -> list[list[tuple[object, ...]]]:
        with psycopg.connect(moved.url) as conn:
            return [
                sorted(conn.execute(f"SELECT * FROM {table}").fetchall(), key=repr)
                for table in (*TABLES, "zone_state", "schema_version")
            ]

    before = dump()
    started = time.monotonic()
    line = user_error(invoke_cli("migrate", "--to", moved.url, data=moved.data), exit_code=2)
    assert time.monotonic() - started < 10
    assert f"already holds a registry (installations: {4 + BULK}," in line
    assert "nothing was changed" in line
    assert PASSWORD not in line
    assert dump() == before
