"""Credentials, each printed or written once: `installation rotate-token`,
`admin-token`, TSIG keys for DNS UPDATE (`installation tsig-key`, `tsig-key --admin`) and
for secondaries' zone transfers (`tsig-key --transfer`)."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer

from controparte.cli.common import (
    REGISTRY,
    STORE,
    CodeArgument,
    JsonOption,
    fail,
    origin,
    services_in,
    with_settings,
)
from controparte.service.access import Access, TsigKeyFile
from controparte.settings import Settings

KeyOutOption = Annotated[
    Path,
    typer.Option(
        "--out",
        metavar="FILE",
        help="Write the key here, as `nsupdate -k FILE` reads it (mode 600; never"
        " overwrites a file).",
    ),
]


@with_settings(*REGISTRY)
def installation_rotate_token(
    *, code: CodeArgument, as_json: JsonOption = False, settings: Settings
) -> None:
    """Replace the installation's token and print the new one, this once (the old one
    stops working at once)."""
    with services_in(settings) as services:
        canonical = services.registry.get(code).code
        token = services.access.issue_token(canonical, origin())
    if as_json:
        typer.echo(json.dumps({"code": canonical, "token": token}, indent=2))
    else:
        typer.echo(token)
        typer.echo(f"new token for {canonical}: shown only this once", err=True)


@with_settings(*REGISTRY)
def admin_token(
    *,
    note: Annotated[
        str | None, typer.Option("--note", metavar="TEXT", help="What the token is for.")
    ] = None,
    settings: Settings,
) -> None:
    """Make an admin token for the HTTP API and print it, this once."""
    with services_in(settings) as services:
        token = services.access.create_admin_token(note)
    typer.echo(token)
    typer.echo("admin token: shown only this once, store it now", err=True)


def _write_tsig_key(
    settings: Settings,
    out: Path,
    make: Callable[[Access], TsigKeyFile],
) -> str:
    """Make a TSIG key (`make`, over the registry of `settings`) and write it once to
    `out`, a new file of mode 600; the key name.

    The file is created first, exclusively: an existing file is refused before any key
    is made (or an installation's key replaced). If anything fails, the file goes."""
    try:
        fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        fail(f"{out} exists: a key is written once, to a new file")
    except OSError as exc:
        fail(f"cannot create {out}: {exc.strerror or exc}")
    try:
        with os.fdopen(fd, "w", encoding="ascii") as handle:
            os.fchmod(handle.fileno(), 0o600)
            with services_in(settings) as services:
                key = make(services.access)
            handle.write(key.nsupdate_text())
            handle.flush()
            os.fsync(handle.fileno())
    except BaseException:
        out.unlink(missing_ok=True)
        raise
    return key.name


@with_settings(*STORE)
def installation_tsig_key(*, code: CodeArgument, out: KeyOutOption, settings: Settings) -> None:
    """Make an installation's TSIG key for DNS UPDATE (`nsupdate -k FILE`).

    The key (hmac-sha256) may change only the installation's own A, AAAA and SRV
    records; its old key stops working. It is written once, to the new file FILE (mode
    600), and its name is printed."""
    name = _write_tsig_key(settings, out, lambda access: access.create_tsig_key(code, origin()))
    typer.echo(name)
    typer.echo(f"key written to {out} (mode 600); use: nsupdate -k {out}", err=True)


@with_settings(*STORE)
def tsig_key(
    *,
    admin: Annotated[
        bool, typer.Option("--admin", help="An admin key: may update any installation.")
    ] = False,
    transfer: Annotated[
        str | None,
        typer.Option(
            "--transfer",
            metavar="NAME",
            help="A key called NAME for a secondary: may transfer the zone, never update.",
        ),
    ] = None,
    name: Annotated[
        str, typer.Option("--name", metavar="LABEL", help="The key is LABEL.tsig.<zone>.")
    ] = "admin",
    out: KeyOutOption,
    settings: Settings,
) -> None:
    """Make an admin TSIG key for DNS UPDATE of any installation (`nsupdate -k FILE`), or
    a key for a secondary's zone transfers.

    With --admin: the key (hmac-sha256) may change every installation's A, AAAA and SRV
    records; an admin key of the same name is replaced. With --transfer NAME: the key
    NAME may transfer the zone (AXFR, IXFR) and sign the NOTIFYs and queries that go
    with transfers, never an update; name it in the setting `transfer_allow` and in the
    secondary's configuration. Either is written once, to the new file FILE (mode 600),
    in the BIND `key` format (`dig -k`, `nsupdate -k`, BIND's `include`), and its name is
    printed. An installation's own key: `controparte installation tsig-key CODE --out
    FILE`."""
    if admin == (transfer is not None):
        fail(
            "give --admin for an admin key or --transfer NAME for a secondary's key; for an"
            " installation's key use `controparte installation tsig-key CODE --out FILE`"
        )
    if transfer is not None:
        key_name = _write_tsig_key(
            settings,
            out,
            lambda access: access.create_transfer_key(transfer, origin()),
        )
        typer.echo(key_name)
        typer.echo(f"transfer key written to {out} (mode 600)", err=True)
        return
    key_name = _write_tsig_key(
        settings,
        out,
        lambda access: access.create_tsig_key(None, origin(), admin_name=name),
    )
    typer.echo(key_name)
    typer.echo(f"admin key written to {out} (mode 600); use: nsupdate -k {out}", err=True)
