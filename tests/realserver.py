"""A real `controparte serve` in a subprocess, on free 127.0.0.1 ports, configured only
through `CONTROPARTE_*` environment variables (after dnspython's tests/nanonameserver.py).

The test process seeds and changes data with `Registry` on the same SQLite file: another
process than the server, so every change the server serves has crossed processes.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import IO

import dns.exception
import dns.message
import dns.query
import dns.rdatatype

from controparte.service import Registry
from controparte.settings import Settings, load_settings
from controparte.store import open_store

HOST = "127.0.0.1"
START_TIMEOUT = 20.0
STOP_TIMEOUT = 5.0
QUERY_TIMEOUT = 2.0


def _bindable(kind: socket.SocketKind, port: int) -> bool:
    with socket.socket(socket.AF_INET, kind) as sock:
        try:
            sock.bind((HOST, port))
        except OSError:
            return False
        return True


def free_port() -> int:
    """A port that is free on HOST for both UDP and TCP right now."""
    for _ in range(100):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.bind((HOST, 0))
            port = int(udp.getsockname()[1])
            if _bindable(socket.SOCK_STREAM, port):
                return port
    raise RuntimeError("no port is free for both UDP and TCP on 127.0.0.1")


def free_tcp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
        tcp.bind((HOST, 0))
        return int(tcp.getsockname()[1])


class ServerProcess:
    """`python -m controparte serve` over the data directory `data`.

    `settings_env` holds every setting the server gets (and nothing else of the
    environment named CONTROPARTE_*); `settings` reads the same values in this process."""

    def __init__(self, data: Path, env: Mapping[str, str] | None = None) -> None:
        self.data = data
        self.host = HOST
        self.port = free_port()
        self.settings_env: dict[str, str] = {
            "CONTROPARTE_DATA": str(data),
            "CONTROPARTE_DNS": f"{HOST}:{self.port}",
            "CONTROPARTE_HTTP": f"{HOST}:{free_tcp_port()}",
            "CONTROPARTE_ALLOW_NON_GLOBAL": "1",
            **(env or {}),
        }
        self.log_path = data.parent / f"{data.name}-server.log"
        self.process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    # -- settings and data, from this process --------------------------------------------

    @property
    def settings(self) -> Settings:
        return load_settings(env=self.settings_env)

    @property
    def zone(self) -> str:
        return self.settings.zone

    def name(self, relative: str) -> str:
        """`relative` under the zone, absolute ("@" is the apex)."""
        return self.zone if relative == "@" else f"{relative}.{self.zone}"

    @contextlib.contextmanager
    def registry(self) -> Iterator[Registry]:
        """The registry on the server's SQLite file, opened by this (other) process."""
        store = open_store(self.data)
        try:
            yield Registry(store, self.settings)
        finally:
            store.close()

    # -- the process -----------------------------------------------------------------------

    def start(self) -> None:
        assert self.process is None, "already running"
        environment = {k: v for k, v in os.environ.items() if not k.startswith("CONTROPARTE_")}
        environment.update(self.settings_env)
        environment["PYTHONUNBUFFERED"] = "1"
        self._log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "controparte", "serve"],
            env=environment,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            cwd=self.data.parent,
        )
        try:
            self._wait_ready()
        except BaseException:
            self.kill()
            raise

    def _wait_ready(self) -> None:
        """Until the server answers a UDP query, for at most START_TIMEOUT."""
        assert self.process is not None
        deadline = time.monotonic() + START_TIMEOUT
        query = dns.message.make_query(self.zone, "SOA")
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"the server exited with {self.process.returncode}:\n{self.log_text()}"
                )
            try:
                dns.query.udp(query, self.host, timeout=0.2, port=self.port)
            except (dns.exception.Timeout, OSError):
                continue
            return
        raise RuntimeError(f"the server did not answer in {START_TIMEOUT} s:\n{self.log_text()}")

    def died(self) -> bool:
        """Whether the server exited by itself (it was started and not stopped since)."""
        return self.process is not None and self.process.poll() is not None

    def stop(self, sig: signal.Signals = signal.SIGTERM) -> int | None:
        """`sig`, then SIGKILL after STOP_TIMEOUT; the exit code (None if not running)."""
        if self.process is None:
            return None
        process, self.process = self.process, None
        if process.poll() is None:
            process.send_signal(sig)
            try:
                process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(STOP_TIMEOUT)
        self._close_log()
        return process.returncode

    def kill(self) -> None:
        """SIGKILL: no chance to clean up (a crash)."""
        if self.process is None:
            return
        process, self.process = self.process, None
        process.kill()
        process.wait(STOP_TIMEOUT)
        self._close_log()

    def _close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None

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
