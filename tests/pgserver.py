"""A throw-away PostgreSQL server for the tests, and the databases they use on it.

`PgServer` is a cluster of our own: `initdb` in a temporary directory and `postgres`
as a child process of the tests, both run as the `postgres` user when the tests run as
root (initdb refuses root), listening on a free loopback port
(`tests.processes.free_port`) and on a socket in that directory. Being our child, the
postmaster takes our signals directly: `stop` (fast, immediate or smart shutdown),
`kill` (SIGKILL, a crash) and `restart`; `freeze` and `thaw` stop and continue every
process of it (SIGSTOP, SIGCONT); `destroy` stops it and removes everything. Nothing
is written outside the directory and no server already running is used. The settings
go into its postgresql.conf, so a restart comes up as the first start did. fsync is
off: a killed server still recovers everything it acknowledged from the kernel's page
cache (only a crash of the machine could lose it), and a test suite on a shared
machine does not wait for the disk.

`ExternalServer` is a server someone else runs, named by CONTROPARTE_TEST_DATABASE (a
postgresql:// URL whose user may create databases): the tests create their databases
on it and drop them, and start nothing. It cannot be stopped or restarted; tests that
need that start a `PgServer` of their own.

`Databases` gives each test a fresh, empty database (`CREATE DATABASE ... TEMPLATE
template0` the first time, emptied for the next test after) and drops them all at the
end.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg import sql

from tests.debtools import tool
from tests.processes import HOST, free_port

ENV_URL = "CONTROPARTE_TEST_DATABASE"
GIVEN_URL = os.environ.get(ENV_URL, "")
"""A PostgreSQL server to use instead of starting one (its URL names a user that may
create databases), read once on import: fixtures that clear CONTROPARTE_* from the
environment may run before the server is first asked for."""

USER = "postgres"
"""The database superuser, and, when the tests run as root, the system user that runs
the server (initdb refuses root); otherwise the server runs as the tests' own user."""
RUN_AS = USER if os.geteuid() == 0 else None
START_TIMEOUT = 30.0
STOP_TIMEOUT = 30.0
SETTINGS = {
    "listen_addresses": f"'{HOST}'",
    "fsync": "off",
    "full_page_writes": "off",
    "max_connections": "300",
    "shared_buffers": "'32MB'",
    "log_min_messages": "warning",
}
"""The server's settings beside port and socket directory (see the module on fsync)."""

SIGNALS = {
    "smart": signal.SIGTERM,
    "fast": signal.SIGINT,
    "immediate": signal.SIGQUIT,
    "kill": signal.SIGKILL,
}
"""A postmaster's shutdown modes and the signal of each (SIGKILL: a crash)."""


def bindir() -> Path:
    """The newest installed PostgreSQL's server programs (Debian keeps each major
    version's in /usr/lib/postgresql/<version>/bin); MissingToolError, naming the
    package, when there are none."""
    return Path(tool("initdb")).resolve().parent  # postgres beside it, not beside a link


def url_with_database(url: str, name: str) -> str:
    """`url` naming the database `name` instead of its own."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, f"/{name}", parts.query, ""))


class Server(Protocol):
    """A PostgreSQL server the tests may create databases on."""

    @property
    def url(self) -> str:
        """A URL of its maintenance database, as a user that may create databases."""
        ...


class PgServer:
    """A cluster of our own in a temporary directory (see the module); `start` it,
    `destroy` it at the end."""

    def __init__(self) -> None:
        self.bin = bindir()
        self.dir = Path(tempfile.mkdtemp(prefix="controparte-pg-"))
        if RUN_AS is not None:
            shutil.chown(self.dir, USER, USER)
        self.data = self.dir / "data"
        self.log_path = self.dir / "postgres.log"
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self._as_postgres(
            [
                str(self.bin / "initdb"),
                "-D",
                str(self.data),
                "-U",
                USER,
                "--auth=trust",
                "--no-sync",
                "-E",
                "UTF8",
                "--locale=C.UTF-8",
            ]
        )
        settings = {**SETTINGS, "port": str(self.port), "unix_socket_directories": f"'{self.dir}'"}
        with (self.data / "postgresql.conf").open("a") as conf:
            conf.writelines(f"{key} = {value}\n" for key, value in settings.items())

    @property
    def url(self) -> str:
        return f"postgresql://{USER}@{HOST}:{self.port}/postgres"

    def _as_postgres(self, argv: list[str]) -> None:
        done = subprocess.run(
            argv, cwd=self.dir, capture_output=True, check=False, user=RUN_AS, group=RUN_AS
        )
        if done.returncode:
            raise AssertionError(
                f"{argv[0]} failed ({done.returncode}):\n{done.stdout.decode()}"
                f"{done.stderr.decode()}"
            )

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self) -> None:
        """Start the postmaster and wait until it accepts connections (a start right
        after a crash may first have to recover)."""
        assert not self.running(), "the server is running already"
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [str(self.bin / "postgres"), "-D", str(self.data)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                user=RUN_AS,
                group=RUN_AS,
                cwd=self.dir,
            )
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            try:
                psycopg.connect(self.url, connect_timeout=2).close()
            except psycopg.OperationalError:
                if not self.running() or time.monotonic() > deadline:
                    raise AssertionError(
                        f"PostgreSQL did not start:\n{self.log_path.read_text()[-3000:]}"
                    ) from None
                time.sleep(0.02)
            else:
                return

    def stop(self, mode: str = "fast") -> None:
        """Shut the server down (`mode`: smart, fast, immediate, or kill for a crash)
        and wait until every process of it has exited."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(SIGNALS[mode])
            self.thaw()  # a frozen server takes the signal once it runs again
        self.proc.wait(STOP_TIMEOUT)
        self.proc = None
        if mode == "kill":  # its backends notice the postmaster is gone by themselves
            self._wait_backends_gone()

    def kill(self) -> None:
        """`kill -9` of the postmaster: a crash; the next start recovers."""
        self.stop("kill")

    def restart(self, mode: str = "fast") -> None:
        self.stop(mode)
        self.start()

    def freeze(self) -> None:
        """SIGSTOP to every process of the server: it keeps its sockets open and the
        kernel acknowledges what is sent, but nothing answers (a hung host)."""
        for pid in self._backends():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGSTOP)

    def thaw(self) -> None:
        """SIGCONT to every process of the server: it goes on where it stopped."""
        for pid in self._backends():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)

    def _wait_backends_gone(self) -> None:
        pidfile = self.data / "postmaster.pid"
        deadline = time.monotonic() + STOP_TIMEOUT
        while self._backends() and time.monotonic() < deadline:
            time.sleep(0.01)
        with contextlib.suppress(FileNotFoundError):
            pidfile.unlink()  # left by the crash; its processes have gone

    def _backends(self) -> list[int]:
        """The processes still attached to this cluster's data directory."""
        found = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            with contextlib.suppress(OSError):
                if os.readlink(entry / "cwd") == str(self.data):
                    found.append(int(entry.name))
        return found

    def destroy(self) -> None:
        """Stop the server at once (immediate) and remove its directory."""
        try:
            self.stop("immediate")
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)


class ExternalServer:
    """A server named by CONTROPARTE_TEST_DATABASE (see the module)."""

    def __init__(self, url: str) -> None:
        self.url = url


@contextlib.contextmanager
def own_server() -> Iterator[PgServer]:
    """A `PgServer` started for the block and destroyed after it."""
    server = PgServer()
    try:
        server.start()
        yield server
    finally:
        server.destroy()


@contextlib.contextmanager
def session_server() -> Iterator[Server]:
    """The server the test session uses: the one CONTROPARTE_TEST_DATABASE names, else
    one of its own (`own_server`)."""
    if GIVEN_URL:
        yield ExternalServer(GIVEN_URL)
        return
    with own_server() as server:
        yield server


class Databases:
    """Fresh, empty databases on `server`, named uniquely for this process. A database
    given back is emptied (its sessions ended, its schema `public` dropped with all in
    it and made again: 30 ms where a new database costs 150-200) and handed out again;
    `drop_all` removes every one made."""

    _numbers = itertools.count(1)

    def __init__(self, server: Server) -> None:
        self.server = server
        self._made: list[str] = []
        self._free: list[str] = []

    def _admin(self, sql_text: sql.Composed | sql.SQL, url: str | None = None) -> None:
        with psycopg.connect(url or self.server.url, autocommit=True, connect_timeout=5) as conn:
            conn.execute(sql_text)

    def take(self) -> str:
        """An empty database (one given back, or a new one); its URL."""
        if self._free:
            return self._free.pop()
        name = f"controparte_test_{os.getpid()}_{next(self._numbers)}"
        self._admin(sql.SQL("CREATE DATABASE {} TEMPLATE template0").format(sql.Identifier(name)))
        url = url_with_database(self.server.url, name)
        self._made.append(url)
        return url

    def give_back(self, url: str) -> None:
        """End every session on `url`'s database and empty it, for the next `take`."""
        self._admin(
            sql.SQL(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE datname = {} AND pid <> pg_backend_pid()"
            ).format(sql.Literal(_name(url)))
        )
        self._admin(sql.SQL("DROP SCHEMA public CASCADE; CREATE SCHEMA public"), url)
        self._free.append(url)

    def drop_all(self) -> None:
        """Drop every database made, ending any session still on it."""
        for url in self._made:
            self._admin(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                    sql.Identifier(_name(url))
                )
            )
        self._made.clear()
        self._free.clear()

    @contextlib.contextmanager
    def fresh(self) -> Iterator[str]:
        """An empty database for the block, given back after it."""
        url = self.take()
        try:
            yield url
        finally:
            self.give_back(url)


def _name(url: str) -> str:
    """The database `url` names."""
    return urlsplit(url).path.lstrip("/")
