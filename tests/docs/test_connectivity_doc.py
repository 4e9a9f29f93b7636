"""docs/connectivity.md stays true: its console blocks are run, in order, against a
fresh registry, and every command's output must be what the guide shows.

Blocks preceded by `<!-- doc-file: NAME -->` are files the commands read (written to the
working directory first). Blocks preceded by `<!-- doc-test: NAME -->` are console
sessions: `$ ` lines are commands (`export K=V` or `controparte ...`, run in process),
the lines after a command its output (stdout and stderr as a terminal shows them),
compared line for line with trailing spaces and timestamps ignored. Tables are
rendered 120 columns wide (COLUMNS=120), as in the guide. Every command must succeed.

After a deliberate change of output, rewrite the guide's output blocks with
`.venv/bin/python -m tests.docs.test_connectivity_doc --write` and review the diff.
"""

from __future__ import annotations

import os
import re
import shlex
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from typer.testing import CliRunner

from controparte.cli import app

ROOT = Path(__file__).resolve().parents[2]
GUIDE = ROOT / "docs" / "connectivity.md"
TIMESTAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?[+-]\d\d:\d\d")
FENCE = re.compile(
    r"^<!-- doc-(?P<kind>test|file): (?P<name>[\w.-]+) -->\n```[^\n]*\n(?P<text>.*?)^```$",
    re.MULTILINE | re.DOTALL,
)


@dataclass(frozen=True)
class Step:
    command: str
    output: tuple[str, ...]


@dataclass(frozen=True)
class Block:
    kind: str  # "test" or "file"
    name: str
    text: str
    start: int  # offsets of the text in the guide
    end: int


def blocks(text: str) -> list[Block]:
    found = [
        Block(m["kind"], m["name"], m["text"], m.start("text"), m.end("text"))
        for m in FENCE.finditer(text)
    ]
    markers = re.findall(r"<!-- doc-(?:test|file): [\w.-]+ -->", text)
    assert len(markers) == len(found), "a doc marker is not right before a fence"
    return found


def console_steps(text: str) -> list[Step]:
    """The commands of a console block, each with the output lines shown after it."""
    steps: list[Step] = []
    command: str | None = None
    output: list[str] = []
    for line in text.splitlines():
        if line.startswith("$ "):
            if command is not None:
                steps.append(Step(command, tuple(output)))
            command, output = line[2:], []
        elif command is not None:
            output.append(line)
    if command is not None:
        steps.append(Step(command, tuple(output)))
    return steps


def normal(lines: list[str] | tuple[str, ...]) -> list[str]:
    """Lines as compared: trailing spaces and timestamps masked, blank ends dropped."""
    out = [TIMESTAMP.sub("<time>", line.rstrip()) for line in lines]
    while out and not out[-1]:
        out.pop()
    return out


class Session:
    """Runs the guide's commands in process against a registry in `data`."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self.env = {"COLUMNS": "120"}  # the data directory: ./var, the default
        self.runner = CliRunner()

    def run(self, command: str) -> list[str]:
        words = shlex.split(command)
        if words[0] == "export":
            for assignment in words[1:]:
                key, _, value = assignment.partition("=")
                self.env[key] = value
            return []
        assert words[0] == "controparte", f"the guide may run only controparte: {command}"
        cwd = Path.cwd()
        os.chdir(self.home)
        try:
            result = self.runner.invoke(app, words[1:], env=self.env)
        finally:
            os.chdir(cwd)
        assert result.exit_code == 0, (command, result.output)
        return result.output.splitlines()


def sessions(home: Path) -> Iterator[tuple[Block, Step, list[str]]]:
    """Every step of the guide with the output it produces now, in the guide's order."""
    session = Session(home)
    for block in blocks(GUIDE.read_text()):
        if block.kind == "file":
            (home / block.name).write_text(block.text)
            continue
        for step in console_steps(block.text):
            yield block, step, session.run(step.command)


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No CONTROPARTE_* setting of the machine running the tests leaks in."""
    for key in list(os.environ):
        if key.startswith("CONTROPARTE_"):
            monkeypatch.delenv(key)


def test_the_guide_has_a_plan_for_each_feature() -> None:
    text = GUIDE.read_text()
    commands = [s.command for b in blocks(text) if b.kind == "test" for s in console_steps(b.text)]
    for feature in ("einvoice", "primanota", "sprix", "easypass", "realtime", "remote-access"):
        assert any(
            c.startswith("controparte plan") and f"--feature {feature}" in c for c in commands
        )


def test_every_command_of_the_guide_prints_what_the_guide_shows(tmp_path: Path) -> None:
    for block, step, output in sessions(tmp_path):
        assert normal(output) == normal(step.output), (
            f"docs/connectivity.md, block {block.name}: `{step.command}` printed:\n"
            + "\n".join(output)
        )


def write(home: Path) -> None:
    """Rewrite the output of every console step of the guide with what it prints now."""
    text = GUIDE.read_text()
    produced: dict[int, list[str]] = {}
    for block, step, output in sessions(home):
        produced.setdefault(block.start, []).append(
            "\n".join([f"$ {step.command}", *[line.rstrip() for line in output]])
        )
    for block in sorted(blocks(text), key=lambda b: b.start, reverse=True):
        if block.start in produced:
            new = "\n".join(produced[block.start]) + "\n"
            text = text[: block.start] + new + text[block.end :]
    GUIDE.write_text(text)


if __name__ == "__main__":  # pragma: no cover - a maintainer's tool
    import tempfile

    if sys.argv[1:] != ["--write"]:
        sys.exit("usage: python -m tests.docs.test_connectivity_doc --write")
    with tempfile.TemporaryDirectory() as scratch:
        write(Path(scratch))
    print(f"rewrote {GUIDE.relative_to(ROOT)}")
