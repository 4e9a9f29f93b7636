"""The failed-authentication throttle from the command line: `throttle list` (what
counts and what is blocked, per address and claim) and `throttle clear ADDRESS` (lift
its blocks). The throttle's state is in the store (`service/throttle.py`), so these see
and change what every server process and node enforces; a running server takes a clear
into account within about a second."""

from __future__ import annotations

import ipaddress
import json
from datetime import UTC, datetime
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from controparte.cli.common import STORE, JsonOption, services_in, with_settings
from controparte.service.throttle import ADDRESS
from controparte.settings import Settings


def _when(seconds: float) -> str | None:
    """An epoch time as ISO 8601 UTC (to the second); None for 0 (never)."""
    if seconds <= 0:
        return None
    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="seconds")


@with_settings(*STORE)
def throttle_list(*, as_json: JsonOption = False, settings: Settings) -> None:
    """List the client addresses the throttle counts failed authentications of, per
    claim (the installation a credential claimed to be, `(admin)`, `(unknown)`, or
    `*` for the whole address), with the failures in the current window and the end of
    a block in force."""
    with services_in(settings) as services:
        now = services.throttle.clock()
        entries = services.throttle.entries()
    listed: list[dict[str, str | int | None]] = [
        {
            "address": e.address,
            "claim": "*" if e.claim == ADDRESS else e.claim,
            "failures": e.failures,
            "blocked_until": _when(e.blocked_until) if e.blocked_until > now else None,
        }
        for e in entries
    ]
    if as_json:
        typer.echo(json.dumps(listed, indent=2))
        return
    if not listed:
        typer.echo("no failed authentications counted, nothing blocked", err=True)
        return
    table = Table("address", "claim", "failures", "blocked until")
    for row in listed:
        table.add_row(*("" if value is None else str(value) for value in row.values()))
    Console().print(table)


@with_settings(*STORE)
def throttle_clear(
    *,
    address: Annotated[
        str,
        typer.Argument(metavar="ADDRESS", help="The client address, as `throttle list` shows it."),
    ],
    settings: Settings,
) -> None:
    """Lift every block of ADDRESS and forget its failures (every claim), for every
    server process and node."""
    try:
        address = str(ipaddress.ip_address(address.strip()))
    except ValueError:
        address = address.strip()
    with services_in(settings) as services:
        removed = services.throttle.clear(address)
    if removed:
        typer.echo(f"cleared {address}: {removed} entries", err=True)
    else:
        typer.echo(f"nothing counted for {address}", err=True)
