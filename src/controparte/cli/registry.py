"""The registry's commands: `init`, `installation add/list/show/update/remove/history`,
`import` and `zone export`."""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
from rich.table import Table
from rich.text import Text

from controparte.cli.common import (
    NS,
    REGISTRY,
    STORE,
    TTL,
    CodeArgument,
    JsonOption,
    cell,
    fail,
    grouped,
    option,
    origin,
    registry_in,
    services_in,
    with_settings,
)
from controparte.dns.zone import load_zone
from controparte.dns.zonefile import zone_text
from controparte.errors import ImportRefusedError, NotFoundError, response_for
from controparte.model import Installation, InstallationChange, ZoneConfig
from controparte.model.importfile import parse_import
from controparte.model.installation import utcnow
from controparte.service.services import open_services
from controparte.service.status import is_stale
from controparte.settings import Settings, redacted_database
from controparte.store.sqlite import DB_FILE

with_fields = grouped(
    "fields",
    (
        option("--kind", str | None, metavar="onprem|live", help="Where it runs."),
        option("--ip", str | None, metavar="A", help="Public IPv4 address."),
        option("--ipv6", str | None, metavar="AAAA", help="Public IPv6 address."),
        option(
            "--port",
            str | None,
            metavar="N",
            help="Public port (after NAT) MxServer is reached on.",
        ),
    ),
    lambda v: InstallationChange(kind=v["kind"], ipv4=v["ip"], ipv6=v["ipv6"], port=v["port"]),
)
"""`--kind`, `--ip`, `--ipv6` and `--port`, as the InstallationChange `fields` (without
a label) of `installation add` and `installation update`."""


def _print_installation(
    inst: Installation, settings: Settings, as_json: bool, token: str | None = None
) -> None:
    """One installation; a `token` (just issued) is printed with it, this once."""
    if as_json:
        found = inst.to_dict()
        if token is not None:
            found["token"] = token
        typer.echo(json.dumps(found, indent=2))
        return
    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold")
    table.add_column()
    rows: list[tuple[str, object]] = [
        ("code", inst.code),
        ("label", inst.label),
        ("name", f"{inst.label}.{settings.zone}"),
        ("kind", inst.kind.value),
        ("gateway", inst.gateway),
        ("ip", inst.ipv4),
        ("ipv6", inst.ipv6),
        ("port", inst.port),
        ("created", inst.created.isoformat(timespec="seconds")),
        ("updated", inst.updated.isoformat(timespec="seconds")),
        ("last seen", None if inst.last_seen is None else inst.last_seen.isoformat("T", "seconds")),
    ]
    if token is not None:
        rows.append(("token", token))
    for key, value in rows:
        table.add_row(key, cell(value))
    Console().print(table)
    if token is not None:
        typer.echo("the token is shown only this once: store it now", err=True)


@with_settings(*STORE)
def init(*, settings: Settings) -> None:
    """Create the registry in the data directory (or the `database`), or leave the one
    there as it is; besides `serve`, the only command that creates one."""
    if settings.database:
        where, existed = redacted_database(settings.database), None
    else:
        where, existed = str(settings.data), (settings.data / DB_FILE).is_file()
    open_services(settings).close()
    state = {None: "ready", True: "already there", False: "created"}[existed]
    typer.echo(f"registry {state}: {where}", err=True)


@with_settings(*REGISTRY)
@with_fields
def installation_add(
    *,
    code: Annotated[
        str, typer.Argument(metavar="CODE", help="Installation code (unique, stable).")
    ],
    label: Annotated[str, typer.Option("--label", help="DNS label: <label>.<zone>.")],
    fields: InstallationChange,
    gateway: Annotated[
        str | None,
        typer.Option(
            "--gateway",
            metavar="NAME",
            help="A Live installation's gateway (default: the one with most free ports).",
        ),
    ] = None,
    as_json: JsonOption = False,
    settings: Settings,
) -> None:
    """Register an installation and print its token, this once (JSON: `token`). A Live
    one is given a free (gateway, port) of the Live gateways (`live_gateways`), unless
    --port asks for one (checked free)."""
    with services_in(settings) as services:
        inst = services.registry.add(
            code,
            label,
            kind=fields.kind or "onprem",
            ipv4=fields.ipv4,
            ipv6=fields.ipv6,
            port=fields.port,
            gateway=gateway,
            origin=origin(),
        )
        token = services.access.issue_token(inst.code, origin())
    _print_installation(inst, settings, as_json, token)


@with_settings(*REGISTRY)
def installation_list(
    *,
    limit: Annotated[
        int | None, typer.Option("--limit", min=0, metavar="N", help="At most N.")
    ] = None,
    offset: Annotated[int, typer.Option("--offset", min=0, metavar="N", help="Skip N.")] = 0,
    as_json: JsonOption = False,
    settings: Settings,
) -> None:
    """List installations by code (JSON: an array of objects). `stale`: last seen by a
    heartbeat longer ago than the setting stale_after."""
    with registry_in(settings) as registry:
        found = registry.list(limit=limit, offset=offset)
    now = utcnow()
    stale = [is_stale(inst, settings.stale_after, now) for inst in found]
    if as_json:
        listed = [{**inst.to_dict(), "stale": s} for inst, s in zip(found, stale, strict=True)]
        typer.echo(json.dumps(listed, indent=2))
        return
    if not found:
        typer.echo("no installations", err=True)
        return
    table = Table("code", "label", "kind", "ip", "ipv6", "port", "stale")
    for inst, old in zip(found, stale, strict=True):
        table.add_row(
            *(cell(v) for v in (inst.code, inst.label, inst.kind.value, inst.ipv4, inst.ipv6)),
            cell(inst.port),
            Text("stale" if old else ""),
        )
    Console().print(table)


@with_settings(*REGISTRY)
def installation_show(
    *,
    name: Annotated[
        str,
        typer.Argument(metavar="CODE", help="Code, label or <label>.<zone> of one."),
    ],
    as_json: JsonOption = False,
    settings: Settings,
) -> None:
    """Show one installation, found by code, else by label."""
    with registry_in(settings) as registry:
        inst = registry.find(name)
    _print_installation(inst, settings, as_json)


@with_settings(*REGISTRY)
@with_fields
def installation_update(
    *,
    code: CodeArgument,
    label: Annotated[str | None, typer.Option("--label", help="New DNS label.")] = None,
    fields: InstallationChange,
    as_json: JsonOption = False,
    settings: Settings,
) -> None:
    """Change fields of an installation; an empty --ip, --ipv6 or --port clears it."""
    change = dataclasses.replace(fields, label=label)
    with registry_in(settings) as registry:
        inst = registry.update(code, change, origin=origin())
    _print_installation(inst, settings, as_json)


@with_settings(*REGISTRY)
def installation_remove(*, code: CodeArgument, settings: Settings) -> None:
    """Remove an installation: its names leave the zone."""
    with registry_in(settings) as registry:
        inst = registry.remove(code, origin=origin())
    typer.echo(f"removed {inst.code} ({inst.label}.{settings.zone})")


_AUDITED = ("label", "kind", "ip", "ipv6", "port")


def _change_text(entry: dict[str, object]) -> str:
    """One history entry in a few words: what changed, old -> new."""
    old, new = entry.get("old"), entry.get("new")
    action = str(entry.get("action"))
    if action == "token":
        return "new token"
    if action == "tsig-key":
        return "new TSIG key"
    if action in ("link", "unlink"):
        link = new if action == "link" else old
        if isinstance(link, dict):
            return f"{action} {link.get('a')} -> {link.get('b')}: {link.get('feature')}"
    if not isinstance(old, dict) and isinstance(new, dict):
        return ", ".join(f"{k}={new[k]}" for k in _AUDITED if new.get(k) is not None)
    if isinstance(old, dict) and not isinstance(new, dict):
        return f"removed {old.get('label')}"
    if isinstance(old, dict) and isinstance(new, dict):
        changed = [k for k in _AUDITED if old.get(k) != new.get(k)]
        return ", ".join(f"{k} {old.get(k) or '-'} -> {new.get(k) or '-'}" for k in changed)
    return ""


@with_settings(*REGISTRY)
def installation_history(
    *, code: CodeArgument, as_json: JsonOption = False, settings: Settings
) -> None:
    """The audit history of an installation (also of a removed one): when, what, who,
    how (cli, api, heartbeat, dyndns2, rfc2136, ...) and from where."""
    with registry_in(settings) as registry:
        try:
            canonical = registry.get(code).code
        except NotFoundError:
            canonical = code  # removed: its history stays
        entries = registry.store.history(canonical)
    if not entries:
        raise NotFoundError(f"no installation with code {code!r}")
    if as_json:
        typer.echo(json.dumps(entries, indent=2))
        return
    table = Table("at", "action", "actor", "via", "source", "change")
    for entry in entries:
        table.add_row(
            *(cell(entry.get(k)) for k in ("at", "action", "actor", "via", "source")),
            Text(_change_text(entry)),
        )
    Console().print(table)


@with_settings(*REGISTRY)
def import_(
    *,
    file: Annotated[
        Path,
        typer.Argument(
            metavar="FILE",
            help="CSV with a header row (code,label,kind,ip,ipv6,port; code and label"
            " required) or a JSON list of objects with those keys.",
        ),
    ],
    settings: Settings,
) -> None:
    """Add every installation of FILE, or none: each problem is printed with its line."""
    try:
        rows = parse_import(file.read_bytes(), file.suffix)
        err = Console(stderr=True)
        with (
            registry_in(settings) as registry,
            Progress(
                TextColumn("importing"),
                BarColumn(),
                MofNCompleteColumn(),
                console=err,
                disable=not err.is_terminal,
                transient=True,
            ) as progress,
        ):
            task = progress.add_task("import", total=len(rows))
            count = registry.import_many(
                rows,
                origin=origin(),
                progress=lambda done: progress.update(task, completed=done),
            )
    except OSError as exc:
        fail(f"cannot read {file}: {exc.strerror or exc}")
    except ImportRefusedError as exc:
        for line, message in exc.problems:
            typer.echo(f"{file}: line {line}: {message}", err=True)
        fail(
            f"{file}: nothing imported ({len(exc.problems)} problem(s))",
            response_for(exc).exit_code,
        )
    typer.echo(f"imported {count} installation(s) from {file}")


@with_settings(TTL, NS, *REGISTRY)
def zone_export(
    *,
    out: Annotated[
        Path | None,
        typer.Option("--out", metavar="FILE", help="Write here (atomically), not stdout."),
    ] = None,
    settings: Settings,
) -> None:
    """Write the zone as an RFC 1035 master file (one consistent snapshot), as `serve`
    with the same settings publishes it."""
    with registry_in(settings) as registry:
        snapshot = load_zone(registry.store, ZoneConfig.from_settings(settings))
    text = zone_text(snapshot)
    if out is None:
        sys.stdout.write(text)
        return
    partial = out.with_name(f".{out.name}.partial")
    try:
        partial.write_text(text, encoding="ascii")
        partial.replace(out)
    except OSError as exc:
        partial.unlink(missing_ok=True)
        fail(f"cannot write {out}: {exc.strerror or exc}")
    typer.echo(f"zone {settings.zone} serial {snapshot.serial} written to {out}", err=True)
