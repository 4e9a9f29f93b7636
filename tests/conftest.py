"""Fixtures shared by every test directory: a real server in a subprocess, the command
line in process (`tests/clirunner.py`), and the registry's database on each engine
(`database`: SQLite, or a fresh database on a throw-away PostgreSQL server,
`tests/pgserver.py`)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping

import pytest

from controparte.service import Registry
from tests.pgserver import Databases, PgServer, Server, own_server, session_server
from tests.processes import secrets_in_logs
from tests.realserver import ServerProcess

pytest_plugins = ("tests.clirunner",)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "secondaries: starts real NSD, Knot and BIND secondaries (tests/secondaries.py);"
        " select them with -m secondaries",
    )


def pytest_sessionfinish(session: pytest.Session) -> None:
    """No log of any process the session started (servers, agents, tools) shows a
    secret the session made: a token, an admin token, a TSIG key's secret
    (`tests/processes.py`, `remember_secret`)."""
    leaked = secrets_in_logs()
    if leaked:
        session.config.get_terminal_writer().line(
            "secrets in the logs of the session's processes:\n" + "\n".join(leaked), red=True
        )
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


ENGINES = ("sqlite", "postgresql")


@pytest.fixture(autouse=True)
def root_logging_restored() -> Iterator[None]:
    """The root logger's handlers and level as they were before each test: code run in
    process (`serve`, `logs.configure`) replaces them with a handler on the stderr of
    that moment, which pytest closes after the test ("Logging error" in later tests)."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.fixture(scope="session")
def pg_server() -> Iterator[Server]:
    """The PostgreSQL server of the whole session, started on first use (or the one
    CONTROPARTE_TEST_DATABASE names), stopped and removed at the end."""
    with session_server() as server:
        yield server


@pytest.fixture(scope="session")
def pg_databases(pg_server: Server) -> Iterator[Databases]:
    """The databases the session's tests take on its server, all dropped at the end."""
    databases = Databases(pg_server)
    yield databases
    databases.drop_all()


@pytest.fixture
def pg_database(pg_databases: Databases) -> Iterator[str]:
    """The URL of a fresh, empty database on the session's server, for this test only."""
    with pg_databases.fresh() as url:
        yield url


@pytest.fixture
def private_pg() -> Iterator[PgServer]:
    """A PostgreSQL server of this test's own, to stop, kill or restart; removed at
    the end."""
    with own_server() as server:
        yield server


@pytest.fixture(params=ENGINES)
def database(request: pytest.FixtureRequest) -> str:
    """The setting `database` of a test run once on each engine: "" (the SQLite file in
    the data directory), then a fresh PostgreSQL database's URL."""
    if request.param == "sqlite":
        return ""
    url: str = request.getfixturevalue("pg_database")
    return url


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
