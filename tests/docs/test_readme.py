"""The README's quick start, run as written against a real server (with the server's
ports and data directory substituted for the defaults), and its printed output checked."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.realserver import ServerProcess

README = Path(__file__).resolve().parents[2] / "README.md"


def _blocks() -> tuple[list[str], list[str]]:
    text = README.read_text()
    quick = text[text.index("## Quick start") : text.index("## The CLI")]
    fenced = re.findall(r"```(\w*)\n(.*?)```", quick, flags=re.S)
    commands = [line for line in fenced[0][1].splitlines() if line.strip()]
    expected = [line for line in fenced[1][1].splitlines() if line.strip()]
    return commands, expected


@pytest.mark.integration
def test_readme_quick_start(tmp_path: Path) -> None:
    """Every line in order: `make venv` stands for this test's own environment, `make
    run &` for a server started on free ports over the same data directory."""
    commands, expected = _blocks()
    assert [c.split("#")[0].strip() for c in commands[:4]] == [
        "export CONTROPARTE_ALLOW_NON_GLOBAL=1",
        "make venv",  # in a fresh clone, the next lines need the commands it installs
        ".venv/bin/controparte init",  # before the server: no two processes create it
        "make run &",
    ]
    server = ServerProcess(tmp_path / "var", {"CONTROPARTE_ALLOW_NON_GLOBAL": "1"})
    env = {
        **os.environ,
        "CONTROPARTE_ALLOW_NON_GLOBAL": "1",
        "CONTROPARTE_DATA": str(server.data),
    }
    bin_dir = str(Path(sys.executable).parent)
    printed: list[str] = []
    try:
        for command in commands[1:]:
            line = command.split("#")[0].strip()
            if line == "make venv":
                continue
            if line == "make run &":
                server.start()
                continue
            line = line.replace(".venv/bin/", bin_dir + "/")
            line = line.replace("-p 8053", f"-p {server.port}")
            done = subprocess.run(
                line, shell=True, env=env, capture_output=True, text=True, timeout=30, check=False
            )
            assert done.returncode == 0, (line, done.stdout, done.stderr)
            if line.startswith("dig"):
                printed += [x for x in done.stdout.splitlines() if x.strip()]
            elif "installation add" in line:
                assert "cpt_" in done.stdout + done.stderr  # the token, printed once
            elif line.endswith("controparte init"):
                assert done.stderr == f"registry created: {server.data}\n"
        assert printed == expected
    finally:
        server.stop()
