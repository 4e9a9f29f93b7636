"""The README's quick start, run as written against a real server (with the server's
ports and data directory substituted for the defaults), and its printed output checked."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
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
    commands, expected = _blocks()
    assert commands[0].startswith("export CONTROPARTE_ALLOW_NON_GLOBAL=1")
    assert commands[1].startswith("make run &")
    server = ServerProcess(tmp_path / "var", {"CONTROPARTE_ALLOW_NON_GLOBAL": "1"})
    server.start()  # stands for `make run &` (which would build a virtual environment)
    try:
        env = {
            **os.environ,
            "CONTROPARTE_ALLOW_NON_GLOBAL": "1",
            "CONTROPARTE_DATA": str(server.data),
        }
        bin_dir = str(Path(sys.executable).parent)
        printed: list[str] = []
        for command in commands[2:]:
            line = command.split("#")[0].strip()
            line = line.replace(".venv/bin/", bin_dir + "/")
            line = line.replace("-p 8053", f"-p {server.port}")
            # The server learns of the CLI's change within a second (journal poll):
            # a dig may have to ask again, as a person would, within that second.
            deadline = time.monotonic() + 1.0
            while True:
                done = subprocess.run(
                    line,
                    shell=True,
                    env=env,
                    capture_output=True,
                    text=True,
                    timeout=30,
                    check=False,
                )
                if not line.startswith("dig") or done.stdout.strip() or time.monotonic() > deadline:
                    break
                time.sleep(0.05)
            assert done.returncode == 0, (line, done.stdout, done.stderr)
            if line.startswith("dig"):
                printed += [x for x in done.stdout.splitlines() if x.strip()]
            elif "installation add" in line:
                assert "cpt_" in done.stdout + done.stderr  # the token, printed once
        assert printed == expected
    finally:
        server.stop()
