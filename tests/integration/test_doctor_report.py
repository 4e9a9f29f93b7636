"""`controparte doctor --report` against a real server: the run's flows are recorded
as the service's results of the pair (`GET /v1/flow-results` shows them, from the
doctor), and a report that cannot be sent is said on stderr without changing the exit
status."""

from __future__ import annotations

import socket
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from controparte.cli import app
from controparte.plan.catalog import load_catalog
from controparte.service import Registry
from controparte.service.links import Links
from tests.agentproc import issue_token, write_token
from tests.conftest import StartServer

pytestmark = pytest.mark.integration

CODE = "ACME-0001"


def test_doctor_reports_its_flows_and_never_fails_for_the_report(
    start_server: StartServer, tmp_path: Path
) -> None:
    with socket.create_server(("127.0.0.1", 0)) as listening:
        port = int(listening.getsockname()[1])

        def seed(registry: Registry) -> None:
            registry.add(CODE, "shop-42", ipv4="127.0.0.1", port=port)
            registry.add("FAR-1", "far", ipv4="127.0.0.1", port=port)
            Links(registry, load_catalog()).add(CODE, "FAR-1", ["einvoice"])

        server = start_server(seed=seed)
        server.wait_http()
        token = issue_token(server, CODE)
        args = [
            "doctor", "--from", CODE, "--to", "far", "--feature", "einvoice",
            "--server", server.http_url, "--dns", str(server.settings.dns), "--timeout", "1",
            "--role", "server",
        ]  # fmt: skip
        quiet = CliRunner().invoke(app, [*args, "--report"])
        sent = CliRunner().invoke(
            app, [*args, "--token-file", str(write_token(tmp_path / "t", token)), "--report"]
        )
    assert "doctor: the results were not reported: no --token-file" in quiet.stderr
    assert sent.exit_code == quiet.exit_code != 2, sent.output
    assert "doctor: reported 2 flow result(s) to " in sent.stderr, sent.stderr
    answer = httpx.get(
        f"{server.http_url}/v1/flow-results",
        params={"caller": CODE, "callee": "FAR-1", "feature": "einvoice"},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert answer.status_code == 200, answer.text
    flows = {f["id"]: f for f in answer.json()["flows"]}
    mine = flows[f"outbound:{CODE}->FAR-1"]
    # this machine's resolver does not know the test zone: the doctor's verdict is
    # "failed, by name", and that is what the service shows
    assert (mine["outcome"], mine["result"]["source"]) == ("failed", "doctor")
    assert mine["result"]["detail"].startswith(f"doctor on {CODE}: MxServer would not reach")
    assert mine["result"]["reporter"] == CODE
    # the flow towards here: the doctor's own probe of this port is the conclusive result
    back = flows[f"return:FAR-1->{CODE}"]
    assert (back["outcome"], back["result"]["source"]) == ("passed", "probe")
    sources = {(r["flow"], r["source"]) for r in answer.json()["history"]}
    assert (f"return:FAR-1->{CODE}", "doctor") in sources
