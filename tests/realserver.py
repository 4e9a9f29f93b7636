"""A real `controparte serve` in a subprocess, on free 127.0.0.1 ports, configured only
through `CONTROPARTE_*` environment variables (after dnspython's tests/nanonameserver.py).

The test process seeds and changes data with `Registry` on the same SQLite file: another
process than the server, so every change the server serves has crossed processes.
"""

from __future__ import annotations

import contextlib
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import dns.exception
import dns.message
import dns.query
import dns.rdatatype
import httpx

from controparte.service import Registry
from controparte.settings import Settings, load_settings
from controparte.store import open_store
from tests.debtools import tool
from tests.processes import HOST, LoggedProcess, clean_env, free_port, free_tcp_port

START_TIMEOUT = 20.0
QUERY_TIMEOUT = 2.0
HTTP_TIMEOUT = 20.0
DIG_TIMEOUT = 20.0


class ServerProcess:
    """`python -m controparte serve` over the data directory `data`, on free ports (from the
    benchmarks' band with `for_bench`: see `free_port`).

    `settings_env` holds every setting the server gets (and nothing else of the
    environment named CONTROPARTE_*); `settings` reads the same values in this process."""

    def __init__(
        self,
        data: Path,
        env: Mapping[str, str] | None = None,
        *,
        for_bench: bool = False,
        start_timeout: float = START_TIMEOUT,
    ) -> None:
        self.data = data
        self.host = HOST
        self.port = free_port(for_bench=for_bench)
        http_port = free_tcp_port(for_bench=for_bench)
        self.settings_env: dict[str, str] = {
            "CONTROPARTE_DATA": str(data),
            "CONTROPARTE_DNS": f"{HOST}:{self.port}",
            "CONTROPARTE_HTTP": f"{HOST}:{http_port}",
            "CONTROPARTE_ALLOW_NON_GLOBAL": "1",
            **(env or {}),
        }
        self.log_path = data.parent / f"{data.name}-server-{self.port}.log"
        self.start_timeout = start_timeout
        self._child: LoggedProcess | None = None

    # -- settings and data, from this process --------------------------------------------

    @property
    def settings(self) -> Settings:
        return load_settings(env=self.settings_env)

    @property
    def zone(self) -> str:
        return self.settings.zone

    @property
    def http_url(self) -> str:
        return f"http://{self.settings.http}"

    def name(self, relative: str) -> str:
        """`relative` under the zone, absolute ("@" is the apex)."""
        return self.zone if relative == "@" else f"{relative}.{self.zone}"

    @contextlib.contextmanager
    def registry(self) -> Iterator[Registry]:
        """The registry on the server's store (its SQLite file, or its `database`),
        opened by this (other) process."""
        store = open_store(self.data, self.settings.database)
        try:
            yield Registry(store, self.settings)
        finally:
            store.close()

    # -- the process -----------------------------------------------------------------------

    @property
    def process(self) -> subprocess.Popen[bytes] | None:
        """The running server's process (None before `start` and after `stop`)."""
        return None if self._child is None else self._child.popen

    def pids(self) -> list[int]:
        """The server's processes now: the main one and its workers."""
        assert self._child is not None, "not running"
        return self._child.pids()

    def spawn(self, *, new_session: bool = False) -> LoggedProcess:
        """Start the server, without waiting for it to answer; its process."""
        assert self._child is None, "already running"
        self._child = LoggedProcess(
            [sys.executable, "-m", "controparte", "serve"],
            self.log_path,
            clean_env(**self.settings_env),
            name="controparte serve",
            cwd=self.data.parent,
            new_session=new_session,
        )
        return self._child

    def start(self) -> None:
        """Start the server and wait until it answers DNS."""
        self.spawn()
        try:
            self._wait_ready()
        except BaseException:
            self.kill()
            raise

    def _wait_ready(self) -> None:
        """Until the server answers a UDP query, for at most `start_timeout`."""
        deadline = time.monotonic() + self.start_timeout
        query = dns.message.make_query(self.zone, "SOA")
        while time.monotonic() < deadline:
            if self.died():
                raise RuntimeError(f"the server exited:\n{self.log_text()}")
            try:
                dns.query.udp(query, self.host, timeout=0.2, port=self.port)
            except (dns.exception.Timeout, OSError):
                continue
            return
        raise RuntimeError(
            f"the server did not answer in {self.start_timeout} s:\n{self.log_text()}"
        )

    def wait_http(self, timeout: float = HTTP_TIMEOUT) -> None:
        """Until GET /healthz answers 200 (the HTTP side starts after DNS)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                if httpx.get(self.http_url + "/healthz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if self.died() or time.monotonic() > deadline:
                raise AssertionError(f"HTTP did not come up in {timeout} s:\n{self.log_text()}")
            time.sleep(0.05)

    def died(self) -> bool:
        """Whether the server exited by itself (it was started and not stopped since)."""
        return self._child is not None and not self._child.running()

    def stop(self, sig: signal.Signals = signal.SIGTERM) -> int | None:
        """`sig`, then SIGKILL after STOP_TIMEOUT; the exit code (None if not running)."""
        if self._child is None:
            return None
        child, self._child = self._child, None
        return child.stop(sig)

    def kill(self) -> None:
        """SIGKILL: no chance to clean up (a crash)."""
        if self._child is not None:
            child, self._child = self._child, None
            child.kill()

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def __enter__(self) -> ServerProcess:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- queries ---------------------------------------------------------------------------

    def query(
        self,
        qname: str,
        rdtype: str | dns.rdatatype.RdataType = "A",
        *,
        tcp: bool = False,
        timeout: float = QUERY_TIMEOUT,
        **make: object,
    ) -> dns.message.Message:
        """One query with dnspython (make_query keywords in `make`)."""
        message = dns.message.make_query(qname, rdtype, **make)  # type: ignore[arg-type]
        return self.send(message, tcp=tcp, timeout=timeout)

    def send(
        self, message: dns.message.Message, *, tcp: bool = False, timeout: float = QUERY_TIMEOUT
    ) -> dns.message.Message:
        if tcp:
            return dns.query.tcp(message, self.host, timeout=timeout, port=self.port)
        return dns.query.udp(message, self.host, timeout=timeout, port=self.port)

    def serial(self) -> int:
        """The SOA serial served now."""
        response = self.query(self.zone, "SOA")
        for rrset in response.answer:
            if rrset.rdtype == dns.rdatatype.SOA:
                return int(rrset[0].serial)
        raise AssertionError(f"no SOA in the answer:\n{response}")

    def records(self, relative: str, rdtype: str = "A") -> list[str]:
        """The rdata of `relative`'s `rdtype` records served now, sorted."""
        response = self.query(self.name(relative), rdtype)
        wanted = dns.rdatatype.from_text(rdtype)
        return sorted(
            rdata.to_text()
            for rrset in response.answer
            if rrset.rdtype == wanted
            for rdata in rrset
        )

    def wait_for(
        self, relative: str, expected: list[str], rdtype: str = "A", timeout: float = 5.0
    ) -> None:
        """Poll DNS until `relative`'s `rdtype` records are `expected` (sorted)."""
        deadline = time.monotonic() + timeout
        while (seen := self.records(relative, rdtype)) != expected:
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"{relative} {rdtype} answers {seen}, not {expected}, after {timeout} s"
                )
            time.sleep(0.02)

    def dig(self, relative: str, rdtype: str = "A") -> list[str]:
        """What the real `dig +short` prints for `relative`'s `rdtype`: its lines, sorted."""
        where = [f"@{self.host}", "-p", str(self.port)]
        done = subprocess.run(
            [tool("dig"), "+short", "+time=2", "+tries=2", *where, self.name(relative), rdtype],
            capture_output=True,
            text=True,
            timeout=DIG_TIMEOUT,
            check=False,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        return sorted(done.stdout.splitlines())


@contextlib.contextmanager
def serving(
    data: Path, env: Mapping[str, str], seed: Callable[[Registry], object]
) -> Iterator[ServerProcess]:
    """A server over the new data directory `data`, seeded by `seed` before it starts,
    answering HTTP; stopped when the block ends (for a module's fixture)."""
    server = ServerProcess(data, env)
    data.mkdir()
    with server.registry() as registry:
        seed(registry)
    server.start()
    try:
        server.wait_http()
        yield server
    finally:
        server.stop()
