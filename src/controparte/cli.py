"""The command line: one entry point, `controparte`.

Contracts:
- Every command reads `Settings` once, from its flags, then the `CONTROPARTE_*`
  environment, then the TOML file (`--config`), then defaults.
- Every write goes through `Registry`, as the user running the command, via "cli".
- Data goes to stdout (`--json`: one JSON document); progress and errors go to stderr.
- A user error prints one line, `error: ...`, on stderr and exits with the code that
  `errors.response_for` gives (1; 2 for configuration); never a traceback.
"""

from __future__ import annotations

import csv
import enum
import getpass
import io
import json
import os
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, NoReturn

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
from rich.table import Table
from rich.text import Text

from controparte.errors import (
    ConfigError,
    ControparteError,
    ImportRefusedError,
    NotFoundError,
    response_for,
)
from controparte.model import Installation, InstallationChange, Link
from controparte.model.installation import utcnow
from controparte.plan.catalog import Catalog, load_catalog
from controparte.plan.firewall import render_rules
from controparte.plan.planner import Role
from controparte.plan.wire import plan_dict
from controparte.plantable import plan_view
from controparte.service import Registry
from controparte.service.links import Links
from controparte.service.plans import Plans
from controparte.service.registry import IMPORT_FIELDS
from controparte.service.services import Services, open_services
from controparte.service.status import is_stale
from controparte.settings import HostPort, Settings, load_settings
from controparte.store import Origin, open_store
from controparte.store.sqlite import DB_FILE
from controparte.zonefile import zone_text

ImportRows = list[tuple[int, dict[str, object]]]
"""(line, fields) pairs, as `Registry.import_many` takes them."""

app = typer.Typer(
    name="controparte",
    help="Installation ID resolution: registry, authoritative DNS, zone export.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
installation_app = typer.Typer(
    help="Add, list, show, change and remove installations.", no_args_is_help=True
)
zone_app = typer.Typer(help="The DNS zone the registry publishes.", no_args_is_help=True)
app.add_typer(installation_app, name="installation")
app.add_typer(zone_app, name="zone")
link_app = typer.Typer(
    help="Counterpart links: which installation (A, the caller) calls which (B, the callee)"
    " for which features.",
    no_args_is_help=True,
)
app.add_typer(link_app, name="link")

# -- options shared by the commands ------------------------------------------------------

DataOption = Annotated[
    Path | None,
    typer.Option(
        "--data",
        metavar="DIR",
        show_default=False,
        help="Data directory holding the registry (env CONTROPARTE_DATA; default ./var).",
    ),
]
ZoneOption = Annotated[
    str | None,
    typer.Option(
        "--zone",
        show_default=False,
        help="Zone the service is authoritative for (env CONTROPARTE_ZONE).",
    ),
]
ConfigOption = Annotated[
    Path | None,
    typer.Option(
        "--config",
        metavar="FILE",
        show_default=False,
        help="TOML settings file (env CONTROPARTE_CONFIG).",
    ),
]
AllowNonGlobalOption = Annotated[
    bool,
    typer.Option(
        "--allow-non-global",
        help="Accept private, loopback and documentation addresses"
        " (env CONTROPARTE_ALLOW_NON_GLOBAL).",
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]
KindOption = Annotated[
    str | None, typer.Option("--kind", metavar="onprem|live", help="Where it runs.")
]
IpOption = Annotated[str | None, typer.Option("--ip", metavar="A", help="Public IPv4 address.")]
Ipv6Option = Annotated[
    str | None, typer.Option("--ipv6", metavar="AAAA", help="Public IPv6 address.")
]
PortOption = Annotated[
    str | None,
    typer.Option("--port", metavar="N", help="Public port (after NAT) MxServer is reached on."),
]

TtlOption = Annotated[
    int | None,
    typer.Option("--ttl", metavar="N", help="TTL of every record (env CONTROPARTE_TTL)."),
]
NsOption = Annotated[
    list[str] | None,
    typer.Option(
        "--ns",
        metavar="NAME[=ADDR,...]",
        help="A name server of the zone, with its glue addresses; repeat for more"
        " (env CONTROPARTE_NS, as NAME=ADDR;NAME...).",
    ),
]


def _ns_flag(ns: list[str] | None) -> str | None:
    """Repeated --ns options in the text form the settings read."""
    return None if not ns else ";".join(ns)


def _settings(
    data: Path | None,
    zone: str | None,
    config: Path | None,
    allow_non_global: bool,
    **flags: object | None,
) -> Settings:
    """Settings with the command's flags on top (an absent flag is None)."""
    return load_settings(
        flags={
            "data": data,
            "zone": zone,
            "allow_non_global": True if allow_non_global else None,
            **flags,
        },
        config_file=config,
    )


# -- errors and output -------------------------------------------------------------------


def _fail(message: str, exit_code: int = 1) -> NoReturn:
    """Print `error: <message>` as one line on stderr and exit."""
    typer.echo("error: " + " ".join(message.split()), err=True)
    raise typer.Exit(exit_code)


@contextmanager
def _user_errors() -> Iterator[None]:
    """Turn every error the service raises on purpose into one line and its exit code."""
    try:
        yield
    except ControparteError as exc:
        _fail(str(exc), response_for(exc).exit_code)


def _actor() -> str:
    """The operating-system user running the command, for the audit history."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # a uid with no name (bare containers)
        return f"uid:{os.getuid()}"


def _origin() -> Origin:
    return Origin(actor=_actor(), via="cli")


@contextmanager
def _registry(
    settings: Settings, *, must_exist: bool = False, catalog: Catalog | None = None
) -> Iterator[Registry]:
    """The registry in `settings.data`, closed on the way out. With `must_exist`, a data
    directory without a registry is an error rather than a new empty registry (reads
    must not create one in a mistyped directory). Live ports are checked against the
    Live settings of `catalog` (default: the one `settings.features` names)."""
    if must_exist and not (settings.data / DB_FILE).is_file():
        raise ConfigError(
            f"data: no registry in {settings.data} (set --data or CONTROPARTE_DATA;"
            " adding an installation creates one)"
        )
    live = (catalog if catalog is not None else load_catalog(settings.features)).live
    store = open_store(settings.data)
    try:
        yield Registry(store, settings, live=live)
    finally:
        store.close()


@contextmanager
def _services(settings: Settings, *, must_exist: bool = False) -> Iterator[Services]:
    """The whole service layer (registry, credentials) over `settings.data`, closed on
    the way out; `must_exist` as for `_registry`."""
    if must_exist and not (settings.data / DB_FILE).is_file():
        raise ConfigError(
            f"data: no registry in {settings.data} (set --data or CONTROPARTE_DATA;"
            " adding an installation creates one)"
        )
    services = open_services(settings)
    try:
        yield services
    finally:
        services.close()


def _text(value: object) -> Text:
    return Text("-" if value is None else str(value))


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
        table.add_row(key, _text(value))
    Console().print(table)
    if token is not None:
        typer.echo("the token is shown only this once: store it now", err=True)


# -- serve -------------------------------------------------------------------------------


@app.command()
def serve(
    *,
    dns: Annotated[
        str | None,
        typer.Option("--dns", metavar="HOST:PORT", help="DNS listen address (UDP and TCP)."),
    ] = None,
    dns_workers: Annotated[
        int | None, typer.Option("--dns-workers", metavar="N", help="DNS worker processes.")
    ] = None,
    http: Annotated[
        str | None,
        typer.Option(
            "--http",
            metavar="HOST:PORT",
            help="HTTP API listen address (env CONTROPARTE_HTTP; default 127.0.0.1:8080).",
        ),
    ] = None,
    http_workers: Annotated[
        int | None,
        typer.Option("--http-workers", metavar="N", help="HTTP processes on the same port."),
    ] = None,
    ttl: TtlOption = None,
    ns: NsOption = None,
    data: DataOption = None,
    zone: ZoneOption = None,
    config: ConfigOption = None,
    allow_non_global: AllowNonGlobalOption = False,
) -> None:
    """Serve the zone over DNS and the HTTP API (v1, DynDNS2, metrics) until SIGINT or
    SIGTERM."""
    with _user_errors():
        settings = _settings(
            data,
            zone,
            config,
            allow_non_global,
            dns=dns,
            dns_workers=dns_workers,
            http=http,
            http_workers=http_workers,
            ttl=ttl,
            ns=_ns_flag(ns),
        )
        from controparte import serve as service  # noqa: PLC0415 - the heavy part

        service.run(settings)


# -- installation ------------------------------------------------------------------------


@installation_app.command("add")
def installation_add(
    *,
    code: Annotated[
        str, typer.Argument(metavar="CODE", help="Installation code (unique, stable).")
    ],
    label: Annotated[str, typer.Option("--label", help="DNS label: <label>.<zone>.")],
    kind: KindOption = None,
    ip: IpOption = None,
    ipv6: Ipv6Option = None,
    port: PortOption = None,
    as_json: JsonOption = False,
    data: DataOption = None,
    zone: ZoneOption = None,
    config: ConfigOption = None,
    allow_non_global: AllowNonGlobalOption = False,
) -> None:
    """Register an installation and print its token, this once (JSON: `token`)."""
    with _user_errors():
        settings = _settings(data, zone, config, allow_non_global)
        with _services(settings) as services:
            inst = services.registry.add(
                code,
                label,
                kind=kind or "onprem",
                ipv4=ip,
                ipv6=ipv6,
                port=port,
                origin=_origin(),
            )
            token = services.access.issue_token(inst.code, _origin())
    _print_installation(inst, settings, as_json, token)


@installation_app.command("list")
def installation_list(
    *,
    limit: Annotated[
        int | None, typer.Option("--limit", min=0, metavar="N", help="At most N.")
    ] = None,
    offset: Annotated[int, typer.Option("--offset", min=0, metavar="N", help="Skip N.")] = 0,
    as_json: JsonOption = False,
    data: DataOption = None,
    zone: ZoneOption = None,
    config: ConfigOption = None,
    allow_non_global: AllowNonGlobalOption = False,
) -> None:
    """List installations by code (JSON: an array of objects). `stale`: last seen by a
    heartbeat longer ago than the setting stale_after."""
    with _user_errors():
        settings = _settings(data, zone, config, allow_non_global)
        with _registry(settings, must_exist=True) as registry:
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
            *(_text(v) for v in (inst.code, inst.label, inst.kind.value, inst.ipv4, inst.ipv6)),
            _text(inst.port),
            Text("stale" if old else ""),
        )
    Console().print(table)


@installation_app.command("show")
def installation_show(
    *,
    name: Annotated[
        str,
        typer.Argument(metavar="CODE", help="Code, label or <label>.<zone> of one."),
    ],
    as_json: JsonOption = False,
    data: DataOption = None,
    zone: ZoneOption = None,
    config: ConfigOption = None,
    allow_non_global: AllowNonGlobalOption = False,
) -> None:
    """Show one installation, found by code, else by label."""
    with _user_errors():
        settings = _settings(data, zone, config, allow_non_global)
        with _registry(settings, must_exist=True) as registry:
            inst = registry.find(name)
    _print_installation(inst, settings, as_json)


@installation_app.command("update")
def installation_update(
    *,
    code: Annotated[str, typer.Argument(metavar="CODE", help="Installation code.")],
    label: Annotated[str | None, typer.Option("--label", help="New DNS label.")] = None,
    kind: KindOption = None,
    ip: IpOption = None,
    ipv6: Ipv6Option = None,
    port: PortOption = None,
    as_json: JsonOption = False,
    data: DataOption = None,
    zone: ZoneOption = None,
    config: ConfigOption = None,
    allow_non_global: AllowNonGlobalOption = False,
) -> None:
    """Change fields of an installation; an empty --ip, --ipv6 or --port clears it."""
    change = InstallationChange(label=label, kind=kind, ipv4=ip, ipv6=ipv6, port=port)
    with _user_errors():
        settings = _settings(data, zone, config, allow_non_global)
        with _registry(settings, must_exist=True) as registry:
            inst = registry.update(code, change, origin=_origin())
    _print_installation(inst, settings, as_json)


@installation_app.command("remove")
def installation_remove(
    *,
    code: Annotated[str, typer.Argument(metavar="CODE", help="Installation code.")],
    data: DataOption = None,
    zone: ZoneOption = None,
    config: ConfigOption = None,
    allow_non_global: AllowNonGlobalOption = False,
) -> None:
    """Remove an installation: its names leave the zone."""
    with _user_errors():
        settings = _settings(data, zone, config, allow_non_global)
        with _registry(settings, must_exist=True) as registry:
            inst = registry.remove(code, origin=_origin())
    typer.echo(f"removed {inst.code} ({inst.label}.{settings.zone})")


@installation_app.command("rotate-token")
def installation_rotate_token(
    *,
    code: Annotated[str, typer.Argument(metavar="CODE", help="Installation code.")],
    as_json: JsonOption = False,
    data: DataOption = None,
    zone: ZoneOption = None,
    config: ConfigOption = None,
    allow_non_global: AllowNonGlobalOption = False,
) -> None:
    """Replace the installation's token and print the new one, this once (the old one
    stops working at once)."""
    with _user_errors():
        settings = _settings(data, zone, config, allow_non_global)
        with _services(settings, must_exist=True) as services:
            canonical = services.registry.get(code).code
            token = services.access.issue_token(canonical, _origin())
    if as_json:
        typer.echo(json.dumps({"code": canonical, "token": token}, indent=2))
    else:
        typer.echo(token)
        typer.echo(f"new token for {canonical}: shown only this once", err=True)


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


@installation_app.command("history")
def installation_history(
    *,
    code: Annotated[str, typer.Argument(metavar="CODE", help="Installation code.")],
    as_json: JsonOption = False,
    data: DataOption = None,
    zone: ZoneOption = None,
    config: ConfigOption = None,
    allow_non_global: AllowNonGlobalOption = False,
) -> None:
    """The audit history of an installation (also of a removed one): when, what, who,
    how (cli, api, heartbeat, dyndns2, rfc2136, ...) and from where."""
    with _user_errors():
        settings = _settings(data, zone, config, allow_non_global)
        with _registry(settings, must_exist=True) as registry:
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
            *(_text(entry.get(k)) for k in ("at", "action", "actor", "via", "source")),
            Text(_change_text(entry)),
        )
    Console().print(table)


# -- admin token and resolution ------------------------------------------------------------


@app.command("admin-token")
def admin_token(
    *,
    note: Annotated[
        str | None, typer.Option("--note", metavar="TEXT", help="What the token is for.")
    ] = None,
    data: DataOption = None,
    zone: ZoneOption = None,
    config: ConfigOption = None,
    allow_non_global: AllowNonGlobalOption = False,
) -> None:
    """Make an admin token for the HTTP API and print it, this once."""
    with _user_errors():
        settings = _settings(data, zone, config, allow_non_global)
        with _services(settings) as services:
            token = services.access.create_admin_token(note)
    typer.echo(token)
    typer.echo("admin token: shown only this once, store it now", err=True)


@app.command()
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
    data: DataOption = None,
    zone: ZoneOption = None,
    config: ConfigOption = None,
    allow_non_global: AllowNonGlobalOption = False,
) -> None:
    """Resolve an installation: from the local registry (--data), an HTTP API (--server)
    or DNS (--dns; labels only: DNS does not know codes)."""
    from controparte import resolver  # noqa: PLC0415 - httpx only when needed

    with _user_errors():
        if server is not None and dns_server is not None:
            raise ConfigError("resolve: give --server or --dns, not both")
        settings = _settings(data, zone, config, allow_non_global)
        if server is not None:
            found = resolver.from_server(server, name)
        elif dns_server is not None:
            found = resolver.from_dns(HostPort.parse("--dns", dns_server), name, settings.zone)
        else:
            with _registry(settings, must_exist=True) as registry:
                found = resolver.from_store(registry, name)
    if as_json:
        typer.echo(json.dumps(found, indent=2))
        return
    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold")
    table.add_column()
    for key, value in found.items():
        table.add_row(key.replace("_", " "), _text(value))
    Console().print(table)


# -- TSIG keys (RFC 2136 updates) ----------------------------------------------------------

KeyOutOption = Annotated[
    Path,
    typer.Option(
        "--out",
        metavar="FILE",
        help="Write the key here, as `nsupdate -k FILE` reads it (mode 600; never"
        " overwrites a file).",
    ),
]


def _write_tsig_key(
    settings: Settings, out: Path, code: str | None, admin_name: str = "admin"
) -> str:
    """Make a TSIG key and write it once to `out`, a new file of mode 600; the key name.

    The file is created first, exclusively: an existing file is refused before any key
    is made (or an installation's key replaced). If anything fails, the file goes."""
    try:
        fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        _fail(f"{out} exists: a key is written once, to a new file")
    except OSError as exc:
        _fail(f"cannot create {out}: {exc.strerror or exc}")
    try:
        with os.fdopen(fd, "w", encoding="ascii") as handle:
            os.fchmod(handle.fileno(), 0o600)
            with _services(settings, must_exist=code is not None) as services:
                key = services.access.create_tsig_key(code, _origin(), admin_name=admin_name)
            handle.write(key.nsupdate_text())
            handle.flush()
            os.fsync(handle.fileno())
    except BaseException:
        out.unlink(missing_ok=True)
        raise
    return key.name


@installation_app.command("tsig-key")
def installation_tsig_key(
    *,
    code: Annotated[str, typer.Argument(metavar="CODE", help="Installation code.")],
    out: KeyOutOption,
    data: DataOption = None,
    zone: ZoneOption = None,
    config: ConfigOption = None,
) -> None:
    """Make an installation's TSIG key for DNS UPDATE (`nsupdate -k FILE`).

    The key (hmac-sha256) may change only the installation's own A, AAAA and SRV
    records; its old key stops working. It is written once, to the new file FILE (mode
    600), and its name is printed."""
    with _user_errors():
        settings = _settings(data, zone, config, False)
        name = _write_tsig_key(settings, out, code)
    typer.echo(name)
    typer.echo(f"key written to {out} (mode 600); use: nsupdate -k {out}", err=True)


@app.command("tsig-key")
def tsig_key(
    *,
    admin: Annotated[
        bool, typer.Option("--admin", help="An admin key: may update any installation.")
    ] = False,
    name: Annotated[
        str, typer.Option("--name", metavar="LABEL", help="The key is LABEL.tsig.<zone>.")
    ] = "admin",
    out: KeyOutOption,
    data: DataOption = None,
    zone: ZoneOption = None,
    config: ConfigOption = None,
) -> None:
    """Make an admin TSIG key for DNS UPDATE of any installation (`nsupdate -k FILE`).

    With --admin (required): the key (hmac-sha256) may change every installation's A,
    AAAA and SRV records; an admin key of the same name is replaced. It is written
    once, to the new file FILE (mode 600), and its name is printed. An installation's
    own key: `controparte installation tsig-key CODE --out FILE`."""
    if not admin:
        _fail(
            "give --admin for an admin key; for an installation's key use"
            " `controparte installation tsig-key CODE --out FILE`"
        )
    with _user_errors():
        settings = _settings(data, zone, config, False)
        key_name = _write_tsig_key(settings, out, None, admin_name=name)
    typer.echo(key_name)
    typer.echo(f"admin key written to {out} (mode 600); use: nsupdate -k {out}", err=True)


# -- zone --------------------------------------------------------------------------------


@zone_app.command("export")
def zone_export(
    *,
    out: Annotated[
        Path | None,
        typer.Option("--out", metavar="FILE", help="Write here (atomically), not stdout."),
    ] = None,
    ttl: TtlOption = None,
    ns: NsOption = None,
    data: DataOption = None,
    zone: ZoneOption = None,
    config: ConfigOption = None,
    allow_non_global: AllowNonGlobalOption = False,
) -> None:
    """Write the zone as an RFC 1035 master file (one consistent snapshot), as `serve`
    with the same settings publishes it."""
    with _user_errors():
        settings = _settings(data, zone, config, allow_non_global, ttl=ttl, ns=_ns_flag(ns))
        with _registry(settings, must_exist=True) as registry:
            serial, _seq, records = registry.store.dns_snapshot(list)
        text = zone_text(settings, serial, records)
    if out is None:
        sys.stdout.write(text)
        return
    partial = out.with_name(f".{out.name}.partial")
    try:
        partial.write_text(text, encoding="ascii")
        partial.replace(out)
    except OSError as exc:
        partial.unlink(missing_ok=True)
        _fail(f"cannot write {out}: {exc.strerror or exc}")
    typer.echo(f"zone {settings.zone} serial {serial} written to {out}", err=True)


# -- import ------------------------------------------------------------------------------

_JSON_SPACE = re.compile(r"[ \t\n\r]*")


def _csv_rows(text: str) -> ImportRows:
    """Rows of a CSV file whose first non-blank row names the columns. Lines are the
    file's physical lines (a row is numbered by the line it starts on)."""
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    problems: list[tuple[int, str]] = []
    rows: ImportRows = []
    header: list[str] | None = None
    while True:
        start = reader.line_num + 1
        try:
            fields = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            problems.append((reader.line_num, f"not valid CSV: {exc}"))
            break
        if not any(f.strip() for f in fields):
            continue  # a blank line
        if header is None:
            header = [f.strip().lower() for f in fields]
            unknown = [h for h in header if h not in IMPORT_FIELDS]
            repeated = sorted({h for h in header if header.count(h) > 1})
            missing = [h for h in ("code", "label") if h not in header]
            if unknown:
                problems.append(
                    (
                        start,
                        f"unknown column(s) {', '.join(unknown)};"
                        f" known: {', '.join(IMPORT_FIELDS)}",
                    )
                )
            if repeated:
                problems.append((start, f"repeated column(s) {', '.join(repeated)}"))
            if missing:
                problems.append((start, f"the header needs the column(s) {', '.join(missing)}"))
            if problems:
                break
            continue
        if len(fields) != len(header):
            problems.append((start, f"{len(fields)} fields, the header names {len(header)}"))
            continue
        rows.append((start, dict(zip(header, fields, strict=True))))
    if header is None and not problems:
        problems.append((1, "no header row naming the columns (code,label,...)"))
    if problems:
        raise ImportRefusedError(tuple(problems))
    return rows


def _json_rows(text: str) -> ImportRows:
    """Objects of a JSON list, each numbered by the line its value starts on."""
    try:
        items = json.loads(text)
    except json.JSONDecodeError as exc:
        problem = (exc.lineno, f"not valid JSON: {exc.msg} (column {exc.colno})")
        raise ImportRefusedError((problem,)) from None
    if not isinstance(items, list):
        raise ImportRefusedError(((1, "expected a JSON list of objects"),))
    # Second pass, over text known valid: where each item starts.
    decoder = json.JSONDecoder()
    position = _match_end(text, 0) + 1  # past the "["
    line, counted = 1, 0
    rows: ImportRows = []
    problems: list[tuple[int, str]] = []
    for item in items:
        position = _match_end(text, position)
        line += text.count("\n", counted, position)
        counted = position
        _, position = decoder.raw_decode(text, position)
        position = _match_end(text, position) + 1  # past the "," (or the final "]")
        if isinstance(item, dict):
            rows.append((line, {str(k): v for k, v in item.items()}))
        else:
            problems.append((line, f"expected an object, found {type(item).__name__}"))
    if problems:
        raise ImportRefusedError(tuple(problems))
    return rows


def _match_end(text: str, position: int) -> int:
    """The first position at or after `position` that is not JSON whitespace."""
    found = _JSON_SPACE.match(text, position)
    return position if found is None else found.end()


def read_import(path: Path) -> ImportRows:
    """The rows of an import file: JSON for `.json`, CSV for `.csv`, otherwise JSON when
    the text starts with "[". Raises `ImportRefusedError` with every problem of the file's form
    (field values are the registry's to check) and `OSError` when it cannot be read."""
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise ImportRefusedError(((line, "not UTF-8 text"),)) from None
    suffix = path.suffix.lower()
    if suffix == ".json" or (suffix != ".csv" and text.lstrip().startswith("[")):
        return _json_rows(text)
    return _csv_rows(text)


@app.command("import")
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
    data: DataOption = None,
    zone: ZoneOption = None,
    config: ConfigOption = None,
    allow_non_global: AllowNonGlobalOption = False,
) -> None:
    """Add every installation of FILE, or none: each problem is printed with its line."""
    with _user_errors():
        settings = _settings(data, zone, config, allow_non_global)
        try:
            rows = read_import(file)
            err = Console(stderr=True)
            with (
                _registry(settings) as registry,
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
                    origin=_origin(),
                    progress=lambda done: progress.update(task, completed=done),
                )
        except OSError as exc:
            _fail(f"cannot read {file}: {exc.strerror or exc}")
        except ImportRefusedError as exc:
            for line, message in exc.problems:
                typer.echo(f"{file}: line {line}: {message}", err=True)
            _fail(
                f"{file}: nothing imported ({len(exc.problems)} problem(s))",
                response_for(exc).exit_code,
            )
    typer.echo(f"imported {count} installation(s) from {file}")


# -- connectivity: links, plans, firewall rules ------------------------------------------

FeaturesOption = Annotated[
    Path | None,
    typer.Option(
        "--features",
        metavar="FILE",
        show_default=False,
        help="Feature catalog, TOML (env CONTROPARTE_FEATURES; default: the packaged one).",
    ),
]
CallerArgument = Annotated[
    str,
    typer.Argument(metavar="A", help="The caller: code or label (e.g. the company)."),
]
CalleeArgument = Annotated[
    str,
    typer.Argument(metavar="B", help="The callee: code or label (e.g. its accountant's studio)."),
]


class PlanFormat(enum.StrEnum):
    TABLE = "table"
    JSON = "json"
    NFTABLES = "nftables"
    IPTABLES = "iptables"
    WINDOWS = "windows"


class RulesFormat(enum.StrEnum):
    NFTABLES = "nftables"
    IPTABLES = "iptables"
    WINDOWS = "windows"


@contextmanager
def _connectivity(settings: Settings) -> Iterator[tuple[Links, Plans]]:
    """Links and plans over the registry in `settings.data` (which must exist), with the
    catalog of `settings.features`, loaded once."""
    catalog = load_catalog(settings.features)
    with _registry(settings, must_exist=True, catalog=catalog) as registry:
        yield Links(registry, catalog), Plans(registry, catalog)


def _link_text(link: Link) -> str:
    return f"{link.a} -> {link.b}: {link.feature}"


@link_app.command("add")
def link_add(
    *,
    a: CallerArgument,
    b: CalleeArgument,
    feature: Annotated[
        list[str],
        typer.Option("--feature", metavar="F", help="A feature of the catalog; repeat for more."),
    ],
    as_json: JsonOption = False,
    features: FeaturesOption = None,
    data: DataOption = None,
    zone: ZoneOption = None,
    config: ConfigOption = None,
) -> None:
    """Link caller A to callee B for each --feature (a link already there is kept as it
    is). Direction matters: A opens the outbound flows, B answers; Real Time runs both
    ways anyway. JSON: a list of {a, b, feature, created, new}."""
    with _user_errors():
        settings = _settings(data, zone, config, False, features=features)
        with _connectivity(settings) as (links, _plans):
            results = links.add(a, b, feature, origin=_origin())
    if as_json:
        typer.echo(json.dumps([{**r.link.to_dict(), "new": r.created} for r in results], indent=2))
        return
    for result in results:
        state = "linked" if result.created else "already linked"
        typer.echo(f"{state} {_link_text(result.link)}")


@link_app.command("list")
def link_list(
    *,
    code: Annotated[
        str | None,
        typer.Argument(metavar="[CODE]", help="Only links where this code or label is A or B."),
    ] = None,
    as_json: JsonOption = False,
    data: DataOption = None,
    zone: ZoneOption = None,
    config: ConfigOption = None,
) -> None:
    """List links by caller, callee and feature (JSON: a list of {a, b, feature,
    created})."""
    with _user_errors():
        settings = _settings(data, zone, config, False)
        with _connectivity(settings) as (links, _plans):
            found = links.list(code)
            labels = {c: links.registry.get(c).label for link in found for c in (link.a, link.b)}
    if as_json:
        typer.echo(json.dumps([link.to_dict() for link in found], indent=2))
        return
    if not found:
        typer.echo("no links", err=True)
        return
    table = Table("caller (A)", "callee (B)", "feature", "created")
    for link in found:
        table.add_row(
            f"{link.a} ({labels[link.a]})",
            f"{link.b} ({labels[link.b]})",
            link.feature,
            link.created.isoformat(timespec="seconds"),
        )
    Console().print(table)


@link_app.command("remove")
def link_remove(
    *,
    a: CallerArgument,
    b: CalleeArgument,
    feature: Annotated[
        str | None,
        typer.Option("--feature", metavar="F", help="Only this feature (default: every one)."),
    ] = None,
    data: DataOption = None,
    zone: ZoneOption = None,
    config: ConfigOption = None,
) -> None:
    """Remove the links from A to B (not those from B to A), or only --feature's."""
    with _user_errors():
        settings = _settings(data, zone, config, False)
        with _connectivity(settings) as (links, _plans):
            removed = links.remove(a, b, feature, origin=_origin())
    for link in removed:
        typer.echo(f"removed {_link_text(link)}")


@app.command("plan")
def plan_command(
    *,
    a: CallerArgument,
    b: CalleeArgument,
    feature: Annotated[
        str, typer.Option("--feature", metavar="F", help="The feature (an id of the catalog).")
    ],
    side: Annotated[
        Role | None,
        typer.Option(
            "--side",
            help="Only this side's rules (firewall formats: default caller).",
            show_default=False,
        ),
    ] = None,
    fmt: Annotated[
        PlanFormat, typer.Option("--format", help="table, the JSON schema, or firewall rules.")
    ] = PlanFormat.TABLE,
    features: FeaturesOption = None,
    data: DataOption = None,
    zone: ZoneOption = None,
    config: ConfigOption = None,
) -> None:
    """What must be open for caller A to use FEATURE with callee B: every flow (outbound
    and return), what each side must allow, and what is BLOCKED with its fix. A and B
    are codes or labels; they need not be linked."""
    with _user_errors():
        settings = _settings(data, zone, config, False, features=features)
        with _connectivity(settings) as (_links, plans):
            found = plans.plan(a, b, feature)
    if fmt is PlanFormat.TABLE:
        Console().print(plan_view(found, side))
    elif fmt is PlanFormat.JSON:
        typer.echo(json.dumps(plan_dict(found, side), indent=2))
    else:
        sys.stdout.write(render_rules(found, side or Role.CALLER, fmt.value))


@app.command("firewall")
def firewall_command(
    *,
    code: Annotated[str, typer.Argument(metavar="CODE", help="Code or label of the installation.")],
    fmt: Annotated[
        RulesFormat, typer.Option("--format", help="The firewall the rules are for.")
    ] = RulesFormat.NFTABLES,
    as_json: Annotated[
        bool,
        typer.Option("--json", help="The report as JSON (with the script in `script`)."),
    ] = False,
    features: FeaturesOption = None,
    data: DataOption = None,
    zone: ZoneOption = None,
    config: ConfigOption = None,
) -> None:
    """The firewall rules CODE needs for every link it is part of (as caller and as
    callee), limited to the counterparts' current public addresses. Says on stderr which
    counterpart addresses changed since the last run for CODE, then records them."""
    with _user_errors():
        settings = _settings(data, zone, config, False, features=features)
        with _connectivity(settings) as (_links, plans):
            report = plans.firewall(code)
            if report.previous_run is None:
                typer.echo(
                    f"no earlier run recorded for {report.installation.code}:"
                    " addresses recorded now",
                    err=True,
                )
            for change in report.changes:
                typer.echo(change.text(), err=True)
            if as_json:
                typer.echo(json.dumps(report.to_dict(fmt.value), indent=2))
            else:
                sys.stdout.write(report.script(fmt.value))
                sys.stdout.flush()
            plans.record(report)  # after printing: a failed run records nothing


# -- agent -------------------------------------------------------------------------------


agent_app = typer.Typer(
    help="Heartbeat the service (`controparte agent --server ...`), or answer its probe"
    " (`controparte agent listen`).",
    invoke_without_command=True,
)
app.add_typer(agent_app, name="agent")


@agent_app.callback()
def agent(
    ctx: typer.Context,
    *,
    server: Annotated[
        str | None,
        typer.Option(
            "--server",
            metavar="URL",
            help="The service, e.g. https://controparte.example.test. (required)",
        ),
    ] = None,
    code: Annotated[
        str | None,
        typer.Option("--code", metavar="CODE", help="This installation's code. (required)"),
    ] = None,
    token_file: Annotated[
        Path | None,
        typer.Option(
            "--token-file",
            metavar="FILE",
            help="File whose first line is the installation's token (keep it mode 600). (required)",
        ),
    ] = None,
    port: Annotated[
        int | None,
        typer.Option("--port", metavar="N", help="Public port (after NAT) to publish. (required)"),
    ] = None,
    private_port: Annotated[
        int | None,
        typer.Option("--private-port", metavar="N", help="Port MxServer listens on behind NAT."),
    ] = None,
    interval: Annotated[
        float | None,
        typer.Option(
            "--interval",
            metavar="SECONDS",
            help="Seconds between heartbeats (default: what the server asks, else 300).",
        ),
    ] = None,
    bind: Annotated[
        str | None,
        typer.Option("--bind", metavar="ADDRESS", help="Local address to connect from."),
    ] = None,
    once: Annotated[
        bool, typer.Option("--once", help="One heartbeat, then exit (0 when accepted).")
    ] = False,
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="Log every heartbeat, not only changes.")
    ] = False,
) -> None:
    """Heartbeat the service so that this installation's name follows its public address.
    `controparte agent listen` answers the service's probe instead (see its --help)."""
    if ctx.invoked_subcommand is not None:
        given = [server, code, token_file, port, private_port, interval, bind]
        if any(v is not None for v in given) or once or verbose:
            _fail(
                f"the heartbeat options go without a subcommand; give"
                f" `controparte agent {ctx.invoked_subcommand}` its own options",
                2,
            )
        return
    from controparte.agent import AgentConfig  # noqa: PLC0415 - only this command needs it
    from controparte.agent.main import run_agent  # noqa: PLC0415

    missing = [
        flag
        for flag, value in (
            ("--server", server),
            ("--code", code),
            ("--token-file", token_file),
            ("--port", port),
        )
        if value is None
    ]
    if missing or server is None or code is None or token_file is None or port is None:
        _fail(f"agent: missing option(s) {', '.join(missing)} (see `controparte agent --help`)", 2)
    with _user_errors():
        config = AgentConfig(
            server=server,
            code=code,
            token_file=token_file,
            port=port,
            private_port=private_port,
            interval=interval,
            bind=bind,
            once=once,
        )
        exit_code = run_agent(config, verbose=verbose)
    if exit_code:
        raise typer.Exit(exit_code)


@agent_app.command("listen")
def agent_listen(
    *,
    code: Annotated[str, typer.Option("--code", metavar="CODE", help="This installation's code.")],
    token_file: Annotated[
        Path,
        typer.Option(
            "--token-file",
            metavar="FILE",
            help="File whose first line is the installation's token (keep it mode 600).",
        ),
    ],
    port: Annotated[
        int,
        typer.Option(
            "--port", metavar="N", help="Port to answer on: the one MxServer will listen on."
        ),
    ],
    bind: Annotated[
        str | None,
        typer.Option("--bind", metavar="ADDRESS", help="Listen on this address only."),
    ] = None,
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="Log every connection, not only probes.")
    ] = False,
) -> None:
    """Answer the service's probe on PORT until stopped, before MxServer is installed, so
    that `controparte doctor` (or POST .../probe) proves the port forward reaches this
    machine: each `CONTROPARTE-PROBE <nonce>` line gets this installation's proof."""
    from controparte.agent.listen import ListenConfig, run_listener  # noqa: PLC0415

    with _user_errors():
        config = ListenConfig(code=code, token_file=token_file, port=port, bind=bind)
        exit_code = run_listener(config, verbose=verbose)
    if exit_code:
        raise typer.Exit(exit_code)


# -- doctor ------------------------------------------------------------------------------


@app.command()
def doctor(
    *,
    from_code: Annotated[
        str,
        typer.Option("--from", metavar="CODE", help="This installation (where doctor runs)."),
    ],
    to: Annotated[
        str | None,
        typer.Option(
            "--to",
            metavar="NAME",
            help="The counterpart: label, code or <label>.<zone> (default: every linked one).",
        ),
    ] = None,
    feature: Annotated[
        str | None,
        typer.Option("--feature", metavar="ID", help="The feature (default: those of the links)."),
    ] = None,
    server: Annotated[
        str,
        typer.Option(
            "--server",
            metavar="URL",
            envvar="CONTROPARTE_SERVER",
            help="The service's URL (env CONTROPARTE_SERVER).",
        ),
    ] = "http://127.0.0.1:8080",
    token_file: Annotated[
        Path | None,
        typer.Option(
            "--token-file",
            metavar="FILE",
            help="This installation's token: needed for the probe of its own port.",
        ),
    ] = None,
    dns_server: Annotated[
        str | None,
        typer.Option(
            "--dns",
            metavar="HOST:PORT",
            help="Ask this DNS server for the counterpart (default: this machine's resolver).",
        ),
    ] = None,
    features: Annotated[
        Path | None,
        typer.Option(
            "--features",
            metavar="FILE",
            help="Feature catalog TOML (env CONTROPARTE_FEATURES; default: the packaged one).",
        ),
    ] = None,
    timeout: Annotated[
        float,
        typer.Option("--timeout", metavar="SECONDS", help="Connect timeout of each test."),
    ] = 3.0,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print JSON (schema controparte.doctor/1).")
    ] = False,
    config: ConfigOption = None,
) -> None:
    """Test, from this machine, every flow between this installation and a counterpart
    (or every linked one): connections from here, the service's probe of this
    installation's own port, and what only the other side can test. Prints each flow as
    passed, failed or untested, with the fix for each failure; exits 1 when one fails."""
    from controparte.agent.doctor import Status, render_text, report_dict  # noqa: PLC0415
    from controparte.agent.doctor_run import DoctorConfig, run_doctor  # noqa: PLC0415
    from controparte.agent.token import read_token  # noqa: PLC0415
    from controparte.plan.catalog import load_catalog  # noqa: PLC0415

    with _user_errors():
        settings = load_settings(flags={"features": features}, config_file=config)
        run = DoctorConfig(
            code=from_code,
            server=server,
            catalog=load_catalog(settings.features),
            token=None if token_file is None else read_token(token_file),
            to=to,
            feature=feature,
            dns=None if dns_server is None else HostPort.parse("--dns", dns_server),
            timeout=timeout,
        )
        diagnoses = run_doctor(run)
    if as_json:
        typer.echo(json.dumps(report_dict(diagnoses), indent=2))
    else:
        typer.echo("\n".join(render_text(d) for d in diagnoses), nl=False)
    if any(c.status is Status.FAILED for d in diagnoses for c in d.checks):
        raise typer.Exit(1)


def main() -> None:
    """Run the command line (the `controparte` console script); exits the process."""
    app(prog_name="controparte")
