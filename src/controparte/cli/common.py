"""What the commands share: the user-error contract, options declared once (the
settings above all), the registry and services a command opens, and printing helpers.

Options that several commands take and that make one value are declared once, as an
`Option`, and given to a command with a decorator: `@with_settings(*REGISTRY)` adds
`--data`, `--zone`, `--config` and `--allow-non-global` to a command with a keyword
parameter `settings: Settings`, where that parameter stands, and calls it with the
`Settings` they make. The whole command runs under `user_errors`.
"""

from __future__ import annotations

import functools
import getpass
import inspect
import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, NoReturn, cast

import typer
from rich.text import Text

from controparte.errors import ConfigError, ControparteError, response_for
from controparte.plan.catalog import Catalog, load_catalog
from controparte.service import Registry
from controparte.service.services import Services, open_services
from controparte.settings import Settings, load_settings
from controparte.store import Origin, open_store
from controparte.store.sqlite import DB_FILE

Command = Callable[..., None]

# -- errors ------------------------------------------------------------------------------


def fail(message: str, exit_code: int = 1) -> NoReturn:
    """Print `error: <message>` as one line on stderr and exit."""
    typer.echo("error: " + " ".join(message.split()), err=True)
    raise typer.Exit(exit_code)


@contextmanager
def user_errors() -> Iterator[None]:
    """Turn every error the service raises on purpose into one line and its exit code."""
    try:
        yield
    except ControparteError as exc:
        fail(str(exc), response_for(exc).exit_code)


# -- options that make one value ----------------------------------------------------------


def _given(value: object) -> object:
    return value


@dataclass(frozen=True, slots=True)
class Option:
    """A command-line option that is part of a group (see `grouped`): `name`, its
    parameter; `declared`, its typer declaration; `value`, the parsed value as the
    group takes it."""

    name: str
    declared: object
    default: object = None
    value: Callable[[Any], object] = _given


def option(
    flag: str,
    kind: Any,
    *,
    default: object = None,
    value: Callable[[Any], object] = _given,
    **details: Any,
) -> Option:
    """The option `flag` (e.g. "--dns-workers", parameter `dns_workers`) of type `kind`;
    `details` as `typer.Option` takes them."""
    name = flag.removeprefix("--").replace("-", "_")
    return Option(name, Annotated[kind, typer.Option(flag, **details)], default, value)


def grouped(
    parameter: str, options: Sequence[Option], make: Callable[[dict[str, Any]], object]
) -> Callable[[Command], Command]:
    """Give the command `options` where its keyword parameter `parameter` stands (so
    its help lists them there), and call it with `make(values by option name)` as
    `parameter`. The whole command, `make` included, runs under `user_errors`."""

    def decorate(command: Command) -> Command:
        signature = inspect.signature(command, eval_str=True)
        parameters: list[inspect.Parameter] = []
        for p in signature.parameters.values():
            if p.name != parameter:
                parameters.append(p)
                continue
            parameters += [
                inspect.Parameter(o.name, p.KEYWORD_ONLY, default=o.default, annotation=o.declared)
                for o in options
            ]

        @functools.wraps(command)
        def run(**given: Any) -> None:
            values = {o.name: o.value(given.pop(o.name)) for o in options}
            with user_errors():
                command(**given, **{parameter: make(values)})

        # What typer reads: the signature with the options instead of `parameter`.
        vars(run).update(
            __signature__=signature.replace(parameters=parameters),
            __annotations__={p.name: p.annotation for p in parameters},
        )
        return run

    return decorate


# -- the options that are settings ---------------------------------------------------------

DATA = option(
    "--data",
    Path | None,
    metavar="DIR",
    show_default=False,
    help="Data directory holding the registry (env CONTROPARTE_DATA; default ./var).",
)
ZONE = option(
    "--zone",
    str | None,
    show_default=False,
    help="Zone the service is authoritative for (env CONTROPARTE_ZONE).",
)
CONFIG = option(
    "--config",
    Path | None,
    metavar="FILE",
    show_default=False,
    help="TOML settings file (env CONTROPARTE_CONFIG).",
)
ALLOW_NON_GLOBAL = option(
    "--allow-non-global",
    bool,
    default=False,
    value=lambda given: True if given else None,
    help="Accept private, loopback and documentation addresses (env CONTROPARTE_ALLOW_NON_GLOBAL).",
)
TTL = option("--ttl", int | None, metavar="N", help="TTL of every record (env CONTROPARTE_TTL).")
NS = option(
    "--ns",
    list[str] | None,
    value=lambda given: ";".join(given) if given else None,  # the text form settings read
    metavar="NAME[=ADDR,...]",
    help="A name server of the zone, with its glue addresses; repeat for more"
    " (env CONTROPARTE_NS, as NAME=ADDR;NAME...).",
)
FEATURES = option(
    "--features",
    Path | None,
    metavar="FILE",
    show_default=False,
    help="Feature catalog, TOML (env CONTROPARTE_FEATURES; default: the packaged one).",
)

REGISTRY = (DATA, ZONE, CONFIG, ALLOW_NON_GLOBAL)
"""The options of a command on the registry that may check addresses."""
STORE = (DATA, ZONE, CONFIG)
"""The options of a command on the registry that checks no address."""


def _settings(values: dict[str, object]) -> Settings:
    config = cast(Path | None, values.pop("config", None))
    return load_settings(flags=values, config_file=config)


def with_settings(*options: Option) -> Callable[[Command], Command]:
    """The command takes `options` (settings, and `--config`) and is called with the
    `Settings` they make as `settings` (flags, then `CONTROPARTE_*`, then the `--config`
    file, then defaults), under `user_errors`."""
    return grouped("settings", options, _settings)


# -- other options and arguments of several commands -------------------------------------

JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]
CodeArgument = Annotated[str, typer.Argument(metavar="CODE", help="Installation code.")]


# -- the registry and the services -------------------------------------------------------


def require_registry(settings: Settings) -> None:
    """A data directory without a registry is an error rather than a new empty one (a
    command run from the wrong directory must not start a registry of its own there);
    the message says where it looked and how to point at the right one. A PostgreSQL
    database is named whole by its URL: it is the registry, one that may be empty."""
    if not settings.database and not (settings.data / DB_FILE).is_file():
        raise ConfigError(
            f"data: no registry in {settings.data.absolute()} (no {DB_FILE} there): point"
            " at yours with --data DIR or CONTROPARTE_DATA=DIR, or create one there with"
            " `controparte init` (`controparte serve` creates one too)"
        )


@contextmanager
def registry_in(settings: Settings, *, catalog: Catalog | None = None) -> Iterator[Registry]:
    """The registry the settings name (`database`, else `data`), which must exist
    (`require_registry`), closed on the way out. Live ports are checked against the
    Live settings of `catalog` (default: the one `settings.features` names)."""
    require_registry(settings)
    live = (catalog if catalog is not None else load_catalog(settings.features)).live
    store = open_store(settings.data, settings.database)
    try:
        yield Registry(store, settings, live=live)
    finally:
        store.close()


@contextmanager
def services_in(settings: Settings) -> Iterator[Services]:
    """The whole service layer (registry, credentials) over the settings' registry,
    which must exist (`require_registry`), closed on the way out."""
    require_registry(settings)
    services = open_services(settings)
    try:
        yield services
    finally:
        services.close()


def _actor() -> str:
    """The operating-system user running the command, for the audit history."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # a uid with no name (bare containers)
        return f"uid:{os.getuid()}"


def origin() -> Origin:
    """Who makes a change from the command line: this user, via "cli"."""
    return Origin(actor=_actor(), via="cli")


# -- output ------------------------------------------------------------------------------


def cell(value: object) -> Text:
    """A table cell: the value as text, "-" for none."""
    return Text("-" if value is None else str(value))
