"""A real `controparte serve` started under umask 000 keeps its data directory 0700 and
every file in it 0600; started over files an operator opened to others, it says so in
its log, once per file, with the chmod that closes it."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from tests.realserver import ServerProcess

pytestmark = pytest.mark.integration


def modes(data: Path) -> dict[str, int]:
    return {p.name: stat.S_IMODE(p.stat().st_mode) for p in [data, *data.iterdir()]}


def test_serve_keeps_its_data_private_and_warns_of_open_files(tmp_path: Path) -> None:
    data = tmp_path / "data"
    server = ServerProcess(data)
    old = os.umask(0)  # the child inherits it
    try:
        with server:
            server.wait_http()
            found = modes(data)
    finally:
        os.umask(old)
    assert found.pop("data") == 0o700
    assert "controparte.sqlite3-wal" in found and "server.key" in found
    assert set(found.values()) == {0o600}, found
    assert "open to others" not in server.log_text()

    (data / "server.key").chmod(0o644)
    data.chmod(0o755)
    with server:
        log = server.log_text()
    assert f"{data} is open to others (mode 755): chmod 700 {data}" in log
    key = data / "server.key"
    assert f"{key} is open to others (mode 644): chmod 600 {key}" in log
    assert "controparte.sqlite3 is open" not in log
