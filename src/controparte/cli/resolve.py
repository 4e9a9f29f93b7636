"""`controparte resolve`: one installation, from the local registry, a server's HTTP
API or DNS (the three ways are in `resolver.py`, imported only when the command runs:
it needs httpx and dnspython's query module)."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from controparte.cli.common import REGISTRY, JsonOption, cell, registry_in, with_settings
from controparte.errors import ConfigError
from controparte.settings import HostPort, Settings


@with_settings(*REGISTRY)
def resolve(
    *,
    name: Annotated[
        str, typer.Argument(metavar="NAME", help="Code, label or <label>.<zone> of one.")
    ],
    server: Annotated[
        str | None,
        typer.Option("--server", metavar="URL", help="Ask this server's HTTP API instead."),
    ] = None,
    dns_server: Annotated[
        str | None,
        typer.Option(
            "--dns", metavar="HOST:PORT", help="Ask this DNS server (A, AAAA, SRV) instead."
        ),
    ] = None,
    as_json: JsonOption = False,
    settings: Settings,
) -> None:
    """Resolve an installation: from the local registry (--data), an HTTP API (--server)
    or DNS (--dns; labels only: DNS does not know codes)."""
    from controparte.cli import resolver  # noqa: PLC0415 - httpx only when needed

    if server is not None and dns_server is not None:
        raise ConfigError("resolve: give --server or --dns, not both")
    if server is not None:
        found = resolver.from_server(server, name)
    elif dns_server is not None:
        found = resolver.from_dns(HostPort.parse("--dns", dns_server), name, settings.zone)
    else:
        with registry_in(settings) as registry:
            found = resolver.from_store(registry, name)
    if as_json:
        typer.echo(json.dumps(found, indent=2))
        return
    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold")
    table.add_column()
    for key, value in found.items():
        table.add_row(key.replace("_", " "), cell(value))
    Console().print(table)
