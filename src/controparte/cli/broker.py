"""`controparte broker ...`: the start-live broker (`serve`) and a lab CA for it
(`lab-ca`). Each flag of `serve` is the setting of the same name (docs/live.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from controparte.cli.common import REGISTRY, option, require_registry, user_errors, with_settings
from controparte.plan.catalog import load_catalog
from controparte.service.labca import make_lab_ca
from controparte.settings import Settings

_OPTIONS = (
    option(
        "--broker-https",
        str | None,
        metavar="HOST:PORT",
        help="Listen address (env CONTROPARTE_BROKER_HTTPS; default 127.0.0.1:8443; 443 in"
        " production).",
    ),
    option("--broker-cert", str | None, metavar="FILE", help="Certificate chain (PEM)."),
    option("--broker-key", str | None, metavar="FILE", help="Its private key (PEM)."),
    option(
        "--broker-wake-command",
        str | None,
        metavar="COMMAND",
        help="The wake hook as a command; the label is its last argument.",
    ),
    option("--broker-wake-url", str | None, metavar="URL", help="The wake hook as a webhook."),
    option(
        "--broker-wake-timeout", float | None, metavar="SECONDS", help="Seconds the hook is given."
    ),
    option("--broker-rate", int | None, metavar="N", help="Starts per caller a minute."),
)


@with_settings(*_OPTIONS, *REGISTRY)
def broker_serve(*, settings: Settings) -> None:
    """Serve the start-live broker (POST /v1/start/{label}) over HTTPS until SIGINT or
    SIGTERM, over the registry the settings name (shared with `controparte serve` and
    the other brokers)."""
    from controparte import serve as service  # noqa: PLC0415 - the heavy part

    require_registry(settings)
    service.run_broker(settings)


def broker_lab_ca(
    directory: Annotated[Path, typer.Argument(metavar="DIR", help="Where to write the files.")],
    names: Annotated[
        list[str] | None,
        typer.Option(
            "--name",
            metavar="HOST",
            help="A name for the certificate (repeatable; default: the catalog's start-live"
            " hosts).",
        ),
    ] = None,
    addresses: Annotated[
        list[str] | None,
        typer.Option("--address", metavar="IP", help="An address for it (repeatable)."),
    ] = None,
    features: Annotated[
        Path | None,
        typer.Option("--features", metavar="FILE", help="The feature catalog (start-live hosts)."),
    ] = None,
) -> None:
    """Make a lab CA and a broker certificate it signs: DIR/ca.pem (what clients trust,
    `doctor --broker-ca`), DIR/broker.pem and DIR/broker.key (for `broker serve`). For
    labs and tests; production uses certificates of a real CA."""
    with user_errors():
        wanted = names or list(load_catalog(features).live.start_live_hosts)
        made = make_lab_ca(directory, wanted, addresses or ())
    typer.echo(f"{made.ca}\n{made.cert}\n{made.key}")
