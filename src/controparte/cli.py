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

from controparte.errors import ConfigError, ControparteError, response_for
from controparte.model import Installation, InstallationChange
from controparte.service import ImportError_, Registry
from controparte.service.registry import IMPORT_FIELDS
from controparte.settings import Settings, load_settings
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


def _text(value: object) -> Text:
    return Text("-" if value is None else str(value))


def _print_installation(inst: Installation, settings: Settings, as_json: bool) -> None:
    if as_json:
        typer.echo(json.dumps(inst.to_dict(), indent=2))
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
    for key, value in rows:
        table.add_row(key, _text(value))
    Console().print(table)


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
    ttl: TtlOption = None,
    ns: NsOption = None,
    data: DataOption = None,
    zone: ZoneOption = None,
    config: ConfigOption = None,
    allow_non_global: AllowNonGlobalOption = False,
) -> None:
    """Serve the zone over DNS until SIGINT or SIGTERM."""
    with _user_errors():
        settings = _settings(
            data,
            zone,
            config,
            allow_non_global,
            dns=dns,
            dns_workers=dns_workers,
            ttl=ttl,
            ns=_ns_flag(ns),
        )
        from controparte.dns.server import run_server  # noqa: PLC0415 - the heavy part

        run_server(settings)


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
    """Register an installation."""
    with _user_errors():
        settings = _settings(data, zone, config, allow_non_global)
        with _registry(settings) as registry:
            inst = registry.add(
                code,
                label,
                kind=kind or "onprem",
                ipv4=ip,
                ipv6=ipv6,
                port=port,
                origin=_origin(),
            )
    _print_installation(inst, settings, as_json)


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
    """List installations by code (JSON: an array of objects)."""
    with _user_errors():
        settings = _settings(data, zone, config, allow_non_global)
        with _registry(settings, must_exist=True) as registry:
            found = registry.list(limit=limit, offset=offset)
    if as_json:
        typer.echo(json.dumps([inst.to_dict() for inst in found], indent=2))
        return
    if not found:
        typer.echo("no installations", err=True)
        return
    table = Table("code", "label", "kind", "ip", "ipv6", "port")
    for inst in found:
        table.add_row(
            *(_text(v) for v in (inst.code, inst.label, inst.kind.value, inst.ipv4, inst.ipv6)),
            _text(inst.port),
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


def main() -> None:
    """Run the command line (the `controparte` console script); exits the process."""
    app(prog_name="controparte")
