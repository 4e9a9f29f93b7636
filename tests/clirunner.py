"""The command line in process, as the CLI tests drive it: typer's runner over a data
directory in the test's temporary directory (the fixtures `data` and `run`, which
tests/conftest.py registers), and the checks of its output contract (`ok`, one-line
`user_error`s, `--json`)."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from controparte.cli import app

Run = Callable[..., Result]
DEFAULT_ENV = {"CONTROPARTE_ALLOW_NON_GLOBAL": "1", "COLUMNS": "100"}


@pytest.fixture
def data(tmp_path: Path) -> Path:
    """A data directory holding an empty registry, made as an operator makes one
    (`controparte init`); `bare_data` is one without."""
    made = tmp_path / "data"
    ok(invoke_cli("init", data=made))
    return made


@pytest.fixture
def bare_data(tmp_path: Path) -> Path:
    """A data directory path with no registry (nothing there yet)."""
    return tmp_path / "bare"


@pytest.fixture
def run(data: Path) -> Run:
    """`run(*ARGS, env=None, with_data=True)`: `controparte ARGS --data DATA` in process
    (ARGS alone without `with_data`). The CLI sees none of the CONTROPARTE_* variables of
    the machine running the tests, but DEFAULT_ENV (documentation addresses allowed,
    100 columns) with `env` laid over it: a None value there removes a variable."""

    def invoke(
        *args: str, env: Mapping[str, str | None] | None = None, with_data: bool = True
    ) -> Result:
        return invoke_cli(*args, data=data if with_data else None, env=env)

    return invoke


def invoke_cli(
    *args: str, data: Path | None = None, env: Mapping[str, str | None] | None = None
) -> Result:
    """`controparte ARGS [--data DATA]` in process, seeing the environment `run` says."""
    argv = [*args, "--data", str(data)] if data is not None else list(args)
    unset = {key: None for key in os.environ if key.startswith("CONTROPARTE_")}
    return CliRunner().invoke(app, argv, env={**unset, **DEFAULT_ENV, **(env or {})})


def ok(result: Result) -> Result:
    assert result.exit_code == 0, (result.exit_code, result.stdout, result.stderr)
    return result


def user_error(result: Result, exit_code: int = 1) -> str:
    """The result is a failure with one `error: ...` line on stderr and nothing on stdout;
    returns that line."""
    assert result.exit_code == exit_code, (result.exit_code, result.stdout, result.stderr)
    assert "Traceback" not in result.output
    lines = result.stderr.splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("error: ")
    assert result.stdout == ""
    return lines[0]


def as_json(result: Result) -> object:
    return json.loads(ok(result).stdout)
