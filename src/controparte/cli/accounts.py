"""The dashboard's accounts from the command line: `account add NAME --role
operator|support` (the password asked twice at the terminal, or read from standard
input with `--password-stdin`: never an argument, which would land in the shell's
history and in the process list), `account list`, `account remove NAME` (its sessions
end at once, on every node)."""

from __future__ import annotations

import enum
import json
import sys
from typing import Annotated

import typer

from controparte.cli.common import STORE, JsonOption, services_in, with_settings
from controparte.settings import Settings
from controparte.store.base import Role


class RoleChoice(enum.StrEnum):
    OPERATOR = Role.OPERATOR.value
    SUPPORT = Role.SUPPORT.value


Name = Annotated[str, typer.Argument(metavar="NAME", help="The account's name (lower case).")]


@with_settings(*STORE)
def account_add(
    *,
    name: Name,
    role: Annotated[
        RoleChoice,
        typer.Option("--role", help="operator: may change the registry; support: may look."),
    ],
    password_stdin: Annotated[
        bool,
        typer.Option(
            "--password-stdin", help="Read the password from standard input (its first line)."
        ),
    ] = False,
    settings: Settings,
) -> None:
    """Create a dashboard account (`/ui`). The password is asked at the terminal, or
    read from standard input with --password-stdin; it is stored as a scrypt hash."""
    if password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = typer.prompt("password", hide_input=True, confirmation_prompt=True)
    with services_in(settings) as services:
        services.accounts.add(name, Role(role.value), password)
    typer.echo(f"account {name} added ({role.value})", err=True)


@with_settings(*STORE)
def account_list(*, as_json: JsonOption = False, settings: Settings) -> None:
    """List the dashboard's accounts: name, role, created."""
    with services_in(settings) as services:
        found = services.store.accounts()
    rows = [
        {"name": a.name, "role": a.role.value, "created": a.created.isoformat(timespec="seconds")}
        for a in found
    ]
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        typer.echo("no accounts", err=True)
    for row in rows:
        typer.echo(f"{row['name']}\t{row['role']}\t{row['created']}")


@with_settings(*STORE)
def account_remove(*, name: Name, settings: Settings) -> None:
    """Remove a dashboard account; its sessions end at once."""
    with services_in(settings) as services:
        services.accounts.remove(name)
    typer.echo(f"account {name} removed", err=True)
