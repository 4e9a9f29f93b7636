"""Credentials, each printed or written once: `installation rotate-token`,
`admin-token`, and TSIG keys for DNS UPDATE (`installation tsig-key`, `tsig-key`)."""

from __future__ import annotations

import json
import os
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
    with services_in(settings, must_exist=True) as services:
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
    settings: Settings, out: Path, code: str | None, admin_name: str = "admin"
) -> str:
    """Make a TSIG key and write it once to `out`, a new file of mode 600; the key name.

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
            with services_in(settings, must_exist=code is not None) as services:
                key = services.access.create_tsig_key(code, origin(), admin_name=admin_name)
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
    name = _write_tsig_key(settings, out, code)
    typer.echo(name)
    typer.echo(f"key written to {out} (mode 600); use: nsupdate -k {out}", err=True)


@with_settings(*STORE)
def tsig_key(
    *,
    admin: Annotated[
        bool, typer.Option("--admin", help="An admin key: may update any installation.")
    ] = False,
    name: Annotated[
        str, typer.Option("--name", metavar="LABEL", help="The key is LABEL.tsig.<zone>.")
    ] = "admin",
    out: KeyOutOption,
    settings: Settings,
) -> None:
    """Make an admin TSIG key for DNS UPDATE of any installation (`nsupdate -k FILE`).

    With --admin (required): the key (hmac-sha256) may change every installation's A,
    AAAA and SRV records; an admin key of the same name is replaced. It is written
    once, to the new file FILE (mode 600), and its name is printed. An installation's
    own key: `controparte installation tsig-key CODE --out FILE`."""
    if not admin:
        fail(
            "give --admin for an admin key; for an installation's key use"
            " `controparte installation tsig-key CODE --out FILE`"
        )
    key_name = _write_tsig_key(settings, out, None, admin_name=name)
    typer.echo(key_name)
    typer.echo(f"admin key written to {out} (mode 600); use: nsupdate -k {out}", err=True)
