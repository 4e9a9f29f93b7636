"""The command line: one entry point, `controparte`; this module is its table of
commands, each implemented in the module of its concern (`registry`, `keys`,
`connectivity`, `agent`, `serve`, `resolve`, `migrate`, `throttle`, `live`; what they
share is in `common`).

Contracts:
- Every command reads `Settings` once, from its flags, then the `CONTROPARTE_*`
  environment, then the TOML file (`--config`), then defaults.
- Every write goes through `Registry`, as the user running the command, via "cli".
- Data goes to stdout (`--json`: one JSON document); progress and errors go to stderr.
- A user error prints one line, `error: ...`, on stderr and exits with the code that
  `errors.response_for` gives (1; 2 for configuration); never a traceback.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

import typer

from controparte import __version__
from controparte.cli import accounts, agent, broker, connectivity, keys, live, registry, throttle
from controparte.cli.migrate import migrate
from controparte.cli.resolve import resolve
from controparte.cli.serve import serve

# Help as plain text (click's layout, `rich_markup_mode=None`): typer's rich layout
# shows a `<bool>` placeholder after every flag, which takes no value. `-h` is `--help`
# everywhere (subcommands inherit the root's `help_option_names`).
app = typer.Typer(
    name="controparte",
    help="Installation ID resolution: registry, authoritative DNS, zone export.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
    rich_markup_mode=None,
)
installation_app = typer.Typer(
    help="Add, list, show, change and remove installations.",
    no_args_is_help=True,
    rich_markup_mode=None,
)
zone_app = typer.Typer(
    help="The DNS zone the registry publishes.", no_args_is_help=True, rich_markup_mode=None
)
link_app = typer.Typer(
    help="Counterpart links: which installation (A, the caller) calls which (B, the callee)"
    " for which features.",
    no_args_is_help=True,
    rich_markup_mode=None,
)
agent_app = typer.Typer(
    help="Heartbeat the service (`controparte agent --server ...`), or answer its probe"
    " (`controparte agent listen`).",
    invoke_without_command=True,
    rich_markup_mode=None,
)
throttle_app = typer.Typer(
    help="The failed-authentication throttle: what it counts and blocks, and lifting a block.",
    no_args_is_help=True,
)
live_app = typer.Typer(
    help="The Live farm: its gateways, the port pool, moving an installation.",
    no_args_is_help=True,
    rich_markup_mode=None,
)
app.add_typer(installation_app, name="installation")
app.add_typer(live_app, name="live")
app.add_typer(zone_app, name="zone")
app.add_typer(link_app, name="link")
app.add_typer(agent_app, name="agent")
app.add_typer(throttle_app, name="throttle")
account_app = typer.Typer(
    help="The dashboard's accounts (operator or support).", no_args_is_help=True
)
app.add_typer(account_app, name="account")
broker_app = typer.Typer(
    help="The start-live broker: serve it over HTTPS, or make a lab CA for it.",
    no_args_is_help=True,
    rich_markup_mode=None,
)
app.add_typer(broker_app, name="broker")

# (group, name, function), in the order `--help` lists them; the agent group's own
# command (heartbeats) is its callback.
_COMMANDS: tuple[tuple[typer.Typer, str, Callable[..., None]], ...] = (
    (app, "init", registry.init),
    (app, "serve", serve),
    (app, "admin-token", keys.admin_token),
    (app, "resolve", resolve),
    (app, "tsig-key", keys.tsig_key),
    (app, "import", registry.import_),
    (app, "migrate", migrate),
    (app, "plan", connectivity.plan_command),
    (app, "firewall", connectivity.firewall_command),
    (app, "doctor", agent.doctor),
    (installation_app, "add", registry.installation_add),
    (installation_app, "list", registry.installation_list),
    (installation_app, "show", registry.installation_show),
    (installation_app, "update", registry.installation_update),
    (installation_app, "remove", registry.installation_remove),
    (installation_app, "rotate-token", keys.installation_rotate_token),
    (installation_app, "history", registry.installation_history),
    (installation_app, "tsig-key", keys.installation_tsig_key),
    (zone_app, "export", registry.zone_export),
    (link_app, "add", connectivity.link_add),
    (link_app, "list", connectivity.link_list),
    (link_app, "remove", connectivity.link_remove),
    (agent_app, "listen", agent.agent_listen),
    (throttle_app, "list", throttle.throttle_list),
    (throttle_app, "clear", throttle.throttle_clear),
    (live_app, "gateways", live.live_gateways),
    (live_app, "pool", live.live_pool),
    (live_app, "move", live.live_move),
    (account_app, "add", accounts.account_add),
    (account_app, "list", accounts.account_list),
    (account_app, "remove", accounts.account_remove),
    (broker_app, "serve", broker.broker_serve),
    (broker_app, "lab-ca", broker.broker_lab_ca),
)
for group, name, command in _COMMANDS:
    group.command(name)(command)
agent_app.callback()(agent.agent)


def _print_version(wanted: bool) -> None:
    if wanted:
        typer.echo(f"controparte {__version__}")
        raise typer.Exit


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_print_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    """Installation ID resolution: registry, authoritative DNS, zone export."""


def main() -> None:
    """Run the command line (the `controparte` console script); exits the process."""
    app(prog_name="controparte")
