"""`controparte agent` (heartbeats) and `controparte agent listen` share one command
group: the heartbeat's options stay where they were, and each usage error is one line."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from controparte.cli import app


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in list(os.environ):
        if key.startswith("CONTROPARTE_"):
            monkeypatch.delenv(key)


def test_agent_without_its_options_names_the_missing_ones() -> None:
    result = CliRunner().invoke(app, ["agent", "--code", "ACME-0001"])
    assert result.exit_code == 2
    assert result.output.strip() == (
        "error: agent: missing option(s) --server, --token-file, --port (see `controparte"
        " agent --help`)"
    )


def test_heartbeat_options_do_not_go_with_listen() -> None:
    result = CliRunner().invoke(app, ["agent", "--port", "9001", "listen", "--help"])
    assert result.exit_code == 2
    assert "the heartbeat options go without a subcommand" in result.output


def test_agent_listen_refuses_a_missing_token_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.token"
    result = CliRunner().invoke(
        app,
        ["agent", "listen", "--code", "ACME-0001", "--token-file", str(missing), "--port", "9"],
    )
    assert result.exit_code == 2
    assert result.output.strip() == f"error: token file: {missing} does not exist"


def test_agent_listen_refuses_a_bad_code(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app, ["agent", "listen", "--code", "../x", "--token-file", str(tmp_path), "--port", "9"]
    )
    assert result.exit_code == 1
    assert result.output.startswith("error: code: must be 1-64 characters")


def test_doctor_with_an_unreachable_service_is_one_line() -> None:
    result = CliRunner().invoke(
        app,
        ["doctor", "--from", "ACME-0001", "--to", "studio", "--feature", "einvoice",
         "--server", "http://127.0.0.1:9"],
    )  # fmt: skip
    assert result.exit_code == 1
    assert result.output.startswith("error: cannot reach http://127.0.0.1:9:")
    assert len(result.output.strip().splitlines()) == 1


def test_doctor_refuses_a_server_that_is_no_url() -> None:
    result = CliRunner().invoke(
        app, ["doctor", "--from", "A", "--to", "B", "--feature", "einvoice", "--server", "x"]
    )
    assert result.exit_code == 1
    assert result.output.strip() == "error: server: 'x' is not an http:// or https:// URL"
