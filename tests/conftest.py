"""Fixtures shared by every test directory: a real server in a subprocess, and the
command line in process (`tests/clirunner.py`)."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping

import pytest

from controparte.service import Registry
from tests.realserver import ServerProcess

pytest_plugins = ("tests.clirunner",)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "secondaries: starts real NSD, Knot and BIND secondaries (tests/secondaries.py);"
        " select them with -m secondaries",
    )


StartServer = Callable[..., ServerProcess]


@pytest.fixture
def start_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StartServer]:
    """Start `python -m controparte serve` on free ports with the given CONTROPARTE_*
    environment (`env`), after `seed` has written to its registry; every server started
    is stopped at teardown (SIGTERM, then SIGKILL)."""
    servers: list[ServerProcess] = []

    def start(
        env: Mapping[str, str] | None = None, seed: Callable[[Registry], object] | None = None
    ) -> ServerProcess:
        server = ServerProcess(tmp_path_factory.mktemp("data"), env)
        servers.append(server)
        if seed is not None:
            with server.registry() as registry:
                seed(registry)
        server.start()
        return server

    yield start
    died = [server for server in servers if server.died()]
    for server in reversed(servers):
        server.stop()
    assert not died, "a server exited by itself:\n" + "\n".join(s.log_text() for s in died)
