"""The installation side: `agent` (heartbeats), `agent listen` (answers the service's
probe) and `doctor` (tests every flow of a plan from this machine). Each imports its
part of `controparte.agent` only when it runs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from controparte.cli.common import (
    CONFIG,
    FEATURES,
    fail,
    user_errors,
    with_settings,
)
from controparte.errors import ControparteError
from controparte.plan.catalog import load_catalog
from controparte.settings import HostPort, Settings


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
    no_relay: Annotated[
        bool,
        typer.Option(
            "--no-relay",
            help="Do not take dial requests of linked installations (the relay, on by"
            " default: it dials only their registered public address and port).",
        ),
    ] = False,
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="Log every heartbeat, not only changes.")
    ] = False,
) -> None:
    """Heartbeat the service so that this installation's name follows its public address,
    and (unless --no-relay) dial a linked installation's registered public port when it
    asks the service to test a flow from this side.
    `controparte agent listen` answers the service's probe instead (see its --help)."""
    if ctx.invoked_subcommand is not None:
        given = [server, code, token_file, port, private_port, interval, bind]
        if any(v is not None for v in given) or once or verbose or no_relay:
            fail(
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
        fail(f"agent: missing option(s) {', '.join(missing)} (see `controparte agent --help`)", 2)
    with user_errors():
        config = AgentConfig(
            server=server,
            code=code,
            token_file=token_file,
            port=port,
            private_port=private_port,
            interval=interval,
            bind=bind,
            once=once,
            relay=not no_relay,
        )
        exit_code = run_agent(config, verbose=verbose)
    if exit_code:
        raise typer.Exit(exit_code)


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

    with user_errors():
        config = ListenConfig(code=code, token_file=token_file, port=port, bind=bind)
        exit_code = run_listener(config, verbose=verbose)
    if exit_code:
        raise typer.Exit(exit_code)


@with_settings(FEATURES, CONFIG)
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
    timeout: Annotated[
        float,
        typer.Option("--timeout", metavar="SECONDS", help="Connect timeout of each test."),
    ] = 3.0,
    role: Annotated[
        str | None,
        typer.Option(
            "--role",
            metavar="server|client",
            help="What this machine is to the installation: its server or an iDesk client"
            " (default: a client when the feature starts at the clients and nothing listens"
            " on MxServer's port here, else the server).",
        ),
    ] = None,
    start_live: Annotated[
        bool,
        typer.Option(
            "--start-live",
            help="Also ask the start-live brokers (HTTPS, with failover) to start each Live"
            " counterpart, and say which answered (needs --token-file).",
        ),
    ] = False,
    broker_ca: Annotated[
        Path | None,
        typer.Option(
            "--broker-ca",
            metavar="FILE",
            exists=True,
            dir_okay=False,
            help="CA file the start-live brokers' certificates are checked against (a lab"
            " CA; default: the system's trust store); implies --start-live.",
        ),
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print JSON (schema controparte.doctor/2).")
    ] = False,
    report: Annotated[
        bool,
        typer.Option(
            "--report",
            help="Send each flow's result to the service after the run (needs --token-file;"
            " the exit status is the run's even when it cannot be sent).",
        ),
    ] = False,
    settings: Settings,
) -> None:
    """Check every flow between this installation and a counterpart (or every linked
    one): its record and DNS first, then connections from here, the service's probes and
    the counterpart's own agent. Prints each step and flow as passed, warning, failed or
    untested, where it was tested from, and the fix for each failure. Exit status: 0 all
    passed, 1 something failed, 3 something could not be tested from here."""
    from controparte.agent.doctor import (  # noqa: PLC0415
        MachineRole,
        exit_code,
        render_text,
        report_dict,
        results_plans,
    )
    from controparte.agent.doctor_run import DoctorConfig, run_doctor  # noqa: PLC0415
    from controparte.agent.token import read_token  # noqa: PLC0415

    if role is not None and role not in set(MachineRole):
        fail(f"--role: {role!r} is not server or client", 2)
    run = DoctorConfig(
        code=from_code,
        server=server,
        catalog=load_catalog(settings.features),
        token=None if token_file is None else read_token(token_file),
        to=to,
        feature=feature,
        dns=None if dns_server is None else _host_port("--dns", dns_server),
        timeout=timeout,
        role=None if role is None else MachineRole(role),
        start_live=start_live or broker_ca is not None,
        broker_ca=broker_ca,
    )
    diagnoses = run_doctor(run)
    if as_json:
        typer.echo(json.dumps(report_dict(diagnoses), indent=2))
    else:
        typer.echo("\n".join(render_text(d) for d in diagnoses), nl=False)
    if report:
        said = _send_results(run.server, from_code, run.token, results_plans(diagnoses))
        typer.echo(said, err=True)
    raise typer.Exit(exit_code(diagnoses))


def _send_results(server: str, code: str, token: str | None, plans: list[dict[str, object]]) -> str:
    """Send a doctor run's flow results for `code` to `server`; one line saying what
    became of them (never raises for the service's or the network's trouble)."""
    from controparte.agent.service_api import ServiceApi  # noqa: PLC0415

    api = ServiceApi(server, token)
    try:
        recorded, skipped = api.report_results(code, plans)
    except ControparteError as exc:
        return f"doctor: the results were not reported: {exc}"
    finally:
        api.close()
    left = f" ({skipped} skipped: not linked, or not the service's plan now)" if skipped else ""
    return f"doctor: reported {recorded} flow result(s) to {server}{left}"


def _host_port(flag: str, value: str) -> tuple[str, int]:
    """(address, port) of a `HOST:PORT` flag (a ConfigError naming the flag)."""
    parsed = HostPort.parse(flag, value)
    return parsed.host, parsed.port
