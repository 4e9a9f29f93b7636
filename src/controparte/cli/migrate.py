"""`controparte migrate --to postgresql://...`: the SQLite registry of the data directory
moved to an empty PostgreSQL database (`store/migrate.py` does it), a summary of what
was carried and checked, and the next step."""

from __future__ import annotations

import json
from contextlib import nullcontext
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.table import Table

from controparte.cli.common import CONFIG, DATA, JsonOption, require_registry, with_settings
from controparte.errors import ConfigError
from controparte.service.credentials import SECRET_FILE, ServerSecret
from controparte.settings import Settings, postgres_url, redacted_database
from controparte.store.rows import next_serial
from controparte.store.sqlite import DB_FILE

if TYPE_CHECKING:
    from controparte.store.migrate import Migrated

ToOption = Annotated[
    str,
    typer.Option(
        "--to",
        metavar="URL",
        show_default=False,
        help="The empty PostgreSQL database to move the registry to:"
        " postgresql://USER[:PASSWORD]@HOST[:PORT]/DB (the password is never printed; or"
        " leave it out and let libpq read PGPASSWORD or ~/.pgpass).",
    ),
]


@with_settings(DATA, CONFIG)
def migrate(*, to: ToOption, as_json: JsonOption = False, settings: Settings) -> None:
    """Move the registry from the SQLite file in the data directory to an empty
    PostgreSQL database, in one transaction, and check the copy.

    Every installation, token hash, admin token hash, TSIG key (as stored: encrypted),
    link, history entry, firewall record and the DNS change journal are carried, with the
    zone serial: the next change gets the next serial, and secondaries go on with IXFR.
    The SQLite file is only read; stop every controparte that uses it first (changes
    made there afterwards are not carried). A database that holds a registry already is
    refused, unchanged. Then set `database` to the URL on every node, and give each
    node's data directory a copy of this one's server.key."""
    if settings.database:
        raise ConfigError(
            f"database: the settings name PostgreSQL already"
            f" ({redacted_database(settings.database)}); migrate moves the SQLite registry"
            " of the data directory (leave database and CONTROPARTE_DATABASE unset)"
        )
    url = postgres_url("--to", to)
    require_registry(settings)
    source = settings.data / DB_FILE
    from controparte.store.migrate import sqlite_to_postgres  # noqa: PLC0415 (psycopg)

    err = Console(stderr=True)
    working = f"moving the registry to {redacted_database(url)}"
    with err.status(working) if err.is_terminal else nullcontext():
        moved = sqlite_to_postgres(
            source, url, ServerSecret.load_or_create(settings.data).fingerprint
        )
    if as_json:
        typer.echo(json.dumps(_as_dict(moved, str(source)), indent=2))
    else:
        _print(moved, str(source))
    typer.echo(
        f'next: set database = "{moved.target}" (with its password; or CONTROPARTE_DATABASE)'
        f" on every node, give each node's data directory a copy of"
        f" {settings.data / SECRET_FILE} (tokens and TSIG keys are checked with it),"
        " and start them",
        err=True,
    )


def _as_dict(moved: Migrated, source: str) -> dict[str, object]:
    zone = moved.zone
    return {
        "source": source,
        "target": moved.target,
        "rows": dict(moved.rows),
        "serial": zone.serial,
        "last_seq": zone.last_seq,
        "floor_seq": zone.floor_seq,
        "floor_serial": zone.floor_serial,
        "seconds": round(moved.seconds, 3),
    }


def _print(moved: Migrated, source: str) -> None:
    zone = moved.zone
    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold")
    table.add_column()
    table.add_row("from", source)
    table.add_row("to", moved.target)
    for name, count in moved.rows.items():
        table.add_row(name, str(count))
    table.add_row("zone serial", f"{zone.serial} (the next change: {next_serial(zone.serial)})")
    table.add_row(
        "journal",
        f"up to seq {zone.last_seq}, kept after seq {zone.floor_seq} (serial {zone.floor_serial})",
    )
    table.add_row("checked", "rows of every table and the zone state: the same on both sides")
    table.add_row("took", f"{moved.seconds:.1f} s")
    Console().print(table)
