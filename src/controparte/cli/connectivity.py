"""Connectivity: counterpart links (`link add/list/remove`), the plan of one feature
between two installations (`plan`), and an installation's firewall rules (`firewall`)."""

from __future__ import annotations

import enum
import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from controparte.cli.common import (
    FEATURES,
    STORE,
    JsonOption,
    origin,
    registry_in,
    with_settings,
)
from controparte.cli.plan_table import plan_view
from controparte.model import Link
from controparte.plan.catalog import load_catalog
from controparte.plan.firewall import render_rules
from controparte.plan.planner import Role
from controparte.plan.wire import plan_dict
from controparte.service.links import Links
from controparte.service.plans import Plans
from controparte.settings import Settings

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
    with registry_in(settings, catalog=catalog) as registry:
        yield Links(registry, catalog), Plans(registry, catalog)


def _link_text(link: Link) -> str:
    return f"{link.a} -> {link.b}: {link.feature}"


@with_settings(FEATURES, *STORE)
def link_add(
    *,
    a: CallerArgument,
    b: CalleeArgument,
    feature: Annotated[
        list[str],
        typer.Option("--feature", metavar="F", help="A feature of the catalog; repeat for more."),
    ],
    as_json: JsonOption = False,
    settings: Settings,
) -> None:
    """Link caller A to callee B for each --feature (a link already there is kept as it
    is). Direction matters: A opens the outbound flows, B answers; Real Time runs both
    ways anyway. JSON: a list of {a, b, feature, created, new}."""
    with _connectivity(settings) as (links, _plans):
        results = links.add(a, b, feature, origin=origin())
    if as_json:
        typer.echo(json.dumps([{**r.link.to_dict(), "new": r.created} for r in results], indent=2))
        return
    for result in results:
        state = "linked" if result.created else "already linked"
        typer.echo(f"{state} {_link_text(result.link)}")


@with_settings(*STORE)
def link_list(
    *,
    code: Annotated[
        str | None,
        typer.Argument(metavar="[CODE]", help="Only links where this code or label is A or B."),
    ] = None,
    as_json: JsonOption = False,
    settings: Settings,
) -> None:
    """List links by caller, callee and feature (JSON: a list of {a, b, feature,
    created})."""
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


@with_settings(*STORE)
def link_remove(
    *,
    a: CallerArgument,
    b: CalleeArgument,
    feature: Annotated[
        str | None,
        typer.Option("--feature", metavar="F", help="Only this feature (default: every one)."),
    ] = None,
    settings: Settings,
) -> None:
    """Remove the links from A to B (not those from B to A), or only --feature's."""
    with _connectivity(settings) as (links, _plans):
        removed = links.remove(a, b, feature, origin=origin())
    for link in removed:
        typer.echo(f"removed {_link_text(link)}")


@with_settings(FEATURES, *STORE)
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
    check: Annotated[
        bool,
        typer.Option(
            "--check", help="Exit with status 1 when a flow is BLOCKED (the output is the same)."
        ),
    ] = False,
    settings: Settings,
) -> None:
    """What must be open for caller A to use FEATURE with callee B: every flow (outbound
    and return), what each side must allow, and what is BLOCKED with its fix. A and B
    are codes or labels; they need not be linked. With --check, the exit status is 1
    when the rules block a flow, for scripts."""
    with _connectivity(settings) as (_links, plans):
        found = plans.plan(a, b, feature)
    if fmt is PlanFormat.TABLE:
        Console().print(plan_view(found, side))
    elif fmt is PlanFormat.JSON:
        typer.echo(json.dumps(plan_dict(found, side), indent=2))
    else:
        sys.stdout.write(render_rules(found, side or Role.CALLER, fmt.value))
    if check and found.blocked:
        raise typer.Exit(1)


@with_settings(FEATURES, *STORE)
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
    settings: Settings,
) -> None:
    """The firewall rules CODE needs for every link it is part of (as caller and as
    callee), limited to the counterparts' current public addresses. Says on stderr which
    counterpart addresses changed since the last run for CODE, then records them."""
    with _connectivity(settings) as (_links, plans):
        report = plans.firewall(code)
        if report.previous_run is None:
            typer.echo(
                f"no earlier run recorded for {report.installation.code}: addresses recorded now",
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
