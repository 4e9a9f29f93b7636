"""The Live farm's side from the command line: `live gateways` (the configured gateway
hosts and how many installations each holds), `live pool` (free, used and quarantined
pairs per gateway) and `live move CODE GATEWAY` (one transaction; the label kept). The
gateways are configuration (`live_gateways`); the allocations are in the store, so
these see what every process and node sees."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from controparte.cli.common import (
    REGISTRY,
    STORE,
    CodeArgument,
    JsonOption,
    cell,
    origin,
    registry_in,
    with_settings,
)
from controparte.model.installation import utcnow
from controparte.settings import Settings

_NO_GATEWAYS = (
    "no Live gateway is configured (the setting live_gateways): Live installations keep"
    " the address and port they are given"
)


def _table(rows: Sequence[dict[str, object]], columns: Sequence[str], as_json: bool) -> None:
    if as_json:
        typer.echo(json.dumps(list(rows), indent=2))
        return
    if not rows:
        typer.echo(_NO_GATEWAYS, err=True)
        return
    table = Table(*columns)
    for row in rows:
        table.add_row(*(cell(row[column]) for column in columns))
    Console().print(table)


@with_settings(*STORE)
def live_gateways(*, as_json: JsonOption = False, settings: Settings) -> None:
    """List the Live gateways (configuration: name, addresses, ports, capacity) with the
    installations placed on each (`used`)."""
    with registry_in(settings) as registry:
        use = registry.pool.use(registry.store, utcnow())
    columns = ("gateway", "ip", "ipv6", "ports", "capacity", "used")
    _table([u.to_dict() for u in use], columns, as_json)


@with_settings(*STORE)
def live_pool(*, as_json: JsonOption = False, settings: Settings) -> None:
    """Show each Live gateway's pool: pairs used, in quarantine (freed less than
    `live_quarantine` ago) and free to allocate (within the capacity)."""
    with registry_in(settings) as registry:
        use = registry.pool.use(registry.store, utcnow())
    _table([u.to_dict() for u in use], ("gateway", "ports", "used", "quarantined", "free"), as_json)


@with_settings(*REGISTRY)
def live_move(
    *,
    code: CodeArgument,
    gateway: Annotated[str, typer.Argument(metavar="GATEWAY", help="The gateway to move to.")],
    as_json: JsonOption = False,
    settings: Settings,
) -> None:
    """Move the Live installation CODE to GATEWAY, on a free port there, in one
    transaction: its label, token and links are kept; DNS serves the new gateway's
    addresses and port; the old pair goes into quarantine."""
    with registry_in(settings) as registry:
        moved = registry.move(code, gateway, origin())
    placement = registry.pool.where(moved).to_dict()
    if as_json:
        typer.echo(json.dumps(placement, indent=2))
        return
    typer.echo(f"{moved.code} ({moved.label}) is on {moved.gateway} port {moved.port}")
