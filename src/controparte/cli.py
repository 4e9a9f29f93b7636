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

from controparte.errors import ConfigError, ControparteError, NotFoundError, response_for
from controparte.model import Installation, InstallationChange
from controparte.model.installation import utcnow
from controparte.service import ImportError_, Registry
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
def _registry(settings: Settings, *, must_exist: bool = False) -> Iterator[Registry]:
    """The registry in `settings.data`, closed on the way out. With `must_exist`, a data
    directory without a registry is an error rather than a new empty registry (reads
    must not create one in a mistyped directory)."""
    if must_exist and not (settings.data / DB_FILE).is_file():
        raise ConfigError(
            f"data: no registry in {settings.data} (set --data or CONTROPARTE_DATA;"
            " adding an installation creates one)"
        )
    store = open_store(settings.data)
    try:
        yield Registry(store, settings)
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
        raise ImportError_(tuple(problems))
    return rows


def _json_rows(text: str) -> ImportRows:
    """Objects of a JSON list, each numbered by the line its value starts on."""
    try:
        items = json.loads(text)
    except json.JSONDecodeError as exc:
        problem = (exc.lineno, f"not valid JSON: {exc.msg} (column {exc.colno})")
        raise ImportError_((problem,)) from None
    if not isinstance(items, list):
        raise ImportError_(((1, "expected a JSON list of objects"),))
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
        raise ImportError_(tuple(problems))
    return rows


def _match_end(text: str, position: int) -> int:
    """The first position at or after `position` that is not JSON whitespace."""
    found = _JSON_SPACE.match(text, position)
    return position if found is None else found.end()


def read_import(path: Path) -> ImportRows:
    """The rows of an import file: JSON for `.json`, CSV for `.csv`, otherwise JSON when
    the text starts with "[". Raises `ImportError_` with every problem of the file's form
    (field values are the registry's to check) and `OSError` when it cannot be read."""
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise ImportError_(((line, "not UTF-8 text"),)) from None
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
        except ImportError_ as exc:
            for line, message in exc.problems:
                typer.echo(f"{file}: line {line}: {message}", err=True)
            _fail(f"{file}: nothing imported ({len(exc.problems)} problem(s))")
    typer.echo(f"imported {count} installation(s) from {file}")


# -- agent -------------------------------------------------------------------------------


@app.command()
def agent(
    *,
    server: Annotated[
        str,
        typer.Option(
            "--server", metavar="URL", help="The service, e.g. https://controparte.example.test."
        ),
    ],
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
        int, typer.Option("--port", metavar="N", help="Public port (after NAT) to publish.")
    ],
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
    """Heartbeat the service so that this installation's name follows its public address."""
    from controparte.agent import AgentConfig  # noqa: PLC0415 - only this command needs it
    from controparte.agent.main import run_agent  # noqa: PLC0415

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


def main() -> None:
    """Run the command line (the `controparte` console script); exits the process."""
    app(prog_name="controparte")
