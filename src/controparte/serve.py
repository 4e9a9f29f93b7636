"""The composition root of `controparte serve`: the DNS server (UDP thread + TCP) and the
HTTP service over one store and one service layer, on a uvloop event loop, and
`http_workers - 1` extra HTTP processes.

Writers in the main process poke the DNS server, so their changes are served at once;
changes by other processes (HTTP workers, a CLI, other nodes) arrive through the
journal follower: woken by the database on PostgreSQL, within `journal_poll_interval`
on SQLite.

HTTP workers: each is a process of its own (spawned, so it shares nothing but the data
directory) that runs the same HTTP app over services of its own: store connections,
heartbeat writer, failed-authentication throttle, probe limiter, metrics. Every process
binds the HTTP port with SO_REUSEPORT (`claim.bind`: the main process makes sure
nobody else holds the port first) and the kernel spreads the connections among them;
their writers take turns through the store's lock file. DNS stays in the main process.
A worker stops on SIGTERM or SIGINT, and by itself when the main process is gone; the
main process stops its workers (SIGTERM, then SIGKILL after `WORKER_STOP_TIMEOUT`)
before it exits.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import multiprocessing.synchronize
import os
import resource
import signal
import socket
import threading
import time
from collections.abc import Callable, Coroutine, Generator
from pathlib import Path
from typing import Any

import uvicorn
import uvloop

from controparte import fdlimit, logs
from controparte.claim import DataDirLock, Shared, bind, bind_error
from controparte.dns.server import DnsServer
from controparte.errors import ConfigError
from controparte.http.app import RequestMetrics, create_app
from controparte.http.broker import create_broker_app
from controparte.http.connection import GuardedProtocol, Limits, connection_cap, guarded
from controparte.service.broker import Waker, hook_of, start_limiter
from controparte.service.pruning import JournalPruner
from controparte.service.services import Services, open_services
from controparte.settings import Settings
from controparte.store.private import exposed

log = logging.getLogger("controparte")

WORKER_START_TIMEOUT = 30.0
WORKER_STOP_TIMEOUT = 5.0
PARENT_CHECK_INTERVAL = 0.25
ORPHAN_EXIT_TIMEOUT = 3.0


class _EmbeddedUvicorn(uvicorn.Server):
    """uvicorn inside our loop: we own the signals, not uvicorn."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


class _CoalescingTransport:
    """A transport whose writes made in one turn of the event loop leave in one send:
    uvicorn writes a response's head and body separately, and on loopback or a fast
    network each send costs about as much as the answer. The writes are joined and
    sent at the end of the turn (`call_soon`), or before the transport closes."""

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._pending: list[bytes] = []

    def write(self, data: bytes) -> None:
        if not self._pending:
            self._loop.call_soon(self._flush)
        self._pending.append(data)

    def _flush(self) -> None:
        if self._pending:
            data = b"".join(self._pending)
            self._pending.clear()
            if not self._transport.is_closing():
                self._transport.write(data)

    def close(self) -> None:
        self._flush()
        self._transport.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class _HttpProtocol(GuardedProtocol):
    """The guarded httptools protocol (`http/connection.py`) over a `_CoalescingTransport`."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        coalescing = _CoalescingTransport(transport, asyncio.get_running_loop())
        super().connection_made(coalescing)  # type: ignore[arg-type]


def _uvicorn(
    app: RequestMetrics,
    settings: Settings,
    *,
    beside: int,
    tls: tuple[Path, Path] | None = None,
) -> _EmbeddedUvicorn:
    """uvicorn over `app` with the HTTP limits of `settings`; `beside`: the connections
    this process holds besides HTTP (DNS over TCP), which share its file descriptors;
    `tls`: (certificate chain, key) to serve HTTPS."""
    open_files = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    wanted = settings.http_max_connections
    cap = connection_cap(wanted, open_files, beside)
    if cap < wanted:
        log.warning(
            "HTTP: at most %d connections per process (http_max_connections is %d):"
            " the file descriptor limit is %d; raise it (LimitNOFILE=) to hold more",
            cap,
            wanted,
            open_files,
        )
    config = uvicorn.Config(
        app,
        http=guarded(_HttpProtocol, Limits.of(settings, cap), app.metrics),
        timeout_keep_alive=settings.http_keepalive_timeout,  # type: ignore[arg-type]
        log_level="warning",
        log_config=None,  # its loggers go through ours (`logs.configure`)
        access_log=False,
        lifespan="off",
        server_header=False,
        proxy_headers=False,  # trusted_proxies is applied by the app itself
        ssl_certfile=None if tls is None else str(tls[0]),
        ssl_keyfile=None if tls is None else str(tls[1]),
    )
    return _EmbeddedUvicorn(config)


def _bind_http(settings: Settings, shared: Shared) -> socket.socket:
    """The main process's HTTP socket (`claim.bind`); a `ConfigError` naming who holds
    the port when it cannot be bound."""
    host, port = settings.http.host, settings.http.port
    try:
        return bind(socket.SOCK_STREAM, host, port, shared=shared)
    except OSError as exc:
        raise bind_error("http", socket.SOCK_STREAM, host, port, exc) from None


async def _start_http(server: _EmbeddedUvicorn, sock: socket.socket) -> asyncio.Task[None]:
    """Serve on `sock`; returns once uvicorn listens (raises its start-up error)."""
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        if task.done():
            await task  # raises the start-up error
            raise RuntimeError("the HTTP server stopped during start-up")
        await asyncio.sleep(0.01)
    return task


async def _stop_http(server: _EmbeddedUvicorn, task: asyncio.Task[None]) -> None:
    server.should_exit = True
    with contextlib.suppress(Exception):
        await asyncio.wait_for(task, 5)


async def _serve_until(
    stop: asyncio.Event, server: _EmbeddedUvicorn, task: asyncio.Task[None]
) -> None:
    """Let `server` serve until `stop` is set (or it ends by itself), then stop it."""
    stopping = asyncio.create_task(stop.wait())
    await asyncio.wait({task, stopping}, return_when=asyncio.FIRST_COMPLETED)
    stopping.cancel()
    await _stop_http(server, task)


def run_loop(main: Callable[[], Coroutine[Any, Any, None]]) -> None:
    """Run `main()` to its end on a uvloop event loop."""
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(main())


class Service:
    """DNS + HTTP over shared services, plus the HTTP workers; `async with` starts and
    stops them all. The data directory is claimed (`claim.DataDirLock`) from
    construction to `stop()`."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.dns: DnsServer | None = None
        self._claim = DataDirLock(settings.data)  # first: a second service stops here
        try:
            self.services: Services = open_services(settings, on_change=self._poke)
        except BaseException:
            self._claim.release()
            raise
        for path, mode in exposed(settings.data):  # secrets and the registry: owner only
            want = "700" if path.is_dir() else "600"
            log.warning("%s is open to others (mode %o): chmod %s %s", path, mode, want, path)
        self.pruner = JournalPruner(self.services.store, settings)
        self._http: _EmbeddedUvicorn | None = None
        self._http_task: asyncio.Task[None] | None = None
        self.workers: list[multiprocessing.process.BaseProcess] = []

    def _poke(self) -> None:
        if self.dns is not None:
            self.dns.poke()

    async def start(self) -> None:
        self.dns = DnsServer(self.settings, self.services.store, services=self.services)
        await self.dns.start()
        self.pruner.start()
        self._http = _uvicorn(
            create_app(self.services, dns=self.dns),
            self.settings,
            beside=self.settings.tcp_max_connections,  # DNS over TCP is in this process
        )
        sock = _bind_http(self.settings, "first" if self.settings.http_workers > 1 else "no")
        self._http_task = await _start_http(self._http, sock)
        await self._start_workers(int(sock.getsockname()[1]))
        log.info(
            "HTTP API on http://%s (%d process%s)",
            self.settings.http,
            self.settings.http_workers,
            "" if self.settings.http_workers == 1 else "es",
        )

    async def _start_workers(self, port: int) -> None:
        context = multiprocessing.get_context("spawn")
        starting = []
        for number in range(1, self.settings.http_workers):
            ready = context.Event()
            worker = context.Process(
                target=http_worker,
                args=(self.settings, port, os.getpid(), ready),
                name=f"controparte-http-{number}",
                daemon=True,
            )
            worker.start()
            self.workers.append(worker)
            starting.append((worker, ready))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + WORKER_START_TIMEOUT
        for worker, ready in starting:
            while not await asyncio.to_thread(ready.wait, 0.1):
                if not worker.is_alive():
                    raise RuntimeError(
                        f"HTTP worker {worker.name} exited during start-up ({worker.exitcode})"
                    )
                if loop.time() > deadline:
                    raise RuntimeError(f"HTTP worker {worker.name} did not start in time")

    async def _stop_workers(self) -> None:
        for worker in self.workers:
            if worker.is_alive() and worker.pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(worker.pid, signal.SIGTERM)
        for worker in self.workers:
            await asyncio.to_thread(worker.join, WORKER_STOP_TIMEOUT)
            if worker.is_alive():
                log.warning("HTTP worker %s did not stop: killing it", worker.name)
                worker.kill()
                await asyncio.to_thread(worker.join, WORKER_STOP_TIMEOUT)
        self.workers.clear()

    async def stop(self) -> None:
        if self._http is not None and self._http_task is not None:
            await _stop_http(self._http, self._http_task)
        await self._stop_workers()
        if self.dns is not None:
            await self.dns.stop()
        await asyncio.to_thread(self.pruner.stop)
        self.services.close()
        self._claim.release()

    async def __aenter__(self) -> Service:
        try:
            await self.start()
        except BaseException:
            await self.stop()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


def _stop_on_signals(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)


def _watch_parent(parent: int, stop: asyncio.Event) -> None:
    """Set `stop` (from a thread) once the process `parent` is no longer our parent,
    and exit the process `ORPHAN_EXIT_TIMEOUT` seconds later if it is still running: a
    worker never outlives the main process, even one killed with SIGKILL."""
    loop = asyncio.get_running_loop()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(PARENT_CHECK_INTERVAL)
        with contextlib.suppress(RuntimeError):  # the loop is closed: already stopping
            loop.call_soon_threadsafe(stop.set)
        # An orphan must not linger: if the orderly stop hangs (a connection that
        # will not close, a thread that will not join), end the process anyway.
        time.sleep(ORPHAN_EXIT_TIMEOUT)
        log.warning("the main process is gone and the orderly stop hung: exiting")
        os._exit(1)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def http_worker(
    settings: Settings, port: int, parent: int, ready: multiprocessing.synchronize.Event
) -> None:
    """An extra HTTP process (see the module): serves until SIGTERM or SIGINT, or until
    the main process `parent` is gone; sets `ready` once it listens on `port`."""
    logs.configure(settings)

    async def main() -> None:
        stop = asyncio.Event()
        _stop_on_signals(stop)
        _watch_parent(parent, stop)
        services = open_services(settings)
        try:
            server = _uvicorn(create_app(services), settings, beside=0)
            sock = bind(socket.SOCK_STREAM, settings.http.host, port, shared="yes")
            task = await _start_http(server, sock)
            ready.set()
            await _serve_until(stop, server, task)
        finally:
            services.close()

    run_loop(main)


def run(settings: Settings) -> None:
    """Serve DNS and HTTP until SIGINT or SIGTERM."""
    logs.configure(settings)
    settings, too_low = fdlimit.fit(settings, fdlimit.raise_soft_limit())
    if too_low is not None:
        log.warning("%s", too_low)

    async def main() -> None:
        stop = asyncio.Event()
        _stop_on_signals(stop)
        async with Service(settings):
            await stop.wait()
            log.info("stopping")

    run_loop(main)


def run_broker(settings: Settings) -> None:
    """`controparte broker serve`: the start-live broker (`http/broker.py`) over HTTPS on
    `broker_https` until SIGINT or SIGTERM, over the registry the settings name. It
    does not claim the data directory: several brokers and `controparte serve` share
    the registry. A ConfigError when the certificate or key is not named or cannot be
    read, or the wake hook is misconfigured."""
    logs.configure(settings)
    cert, key = settings.broker_cert, settings.broker_key
    if cert is None or key is None:
        raise ConfigError(
            "broker_cert, broker_key: the broker serves HTTPS only: name its certificate"
            " chain and key (`controparte broker lab-ca DIR` makes a lab pair)"
        )
    for name, path in (("broker_cert", cert), ("broker_key", key)):
        if not os.access(path, os.R_OK):
            raise ConfigError(f"{name}: cannot read {path}")
    hook = hook_of(settings)
    where = settings.broker_https

    async def main() -> None:
        stop = asyncio.Event()
        _stop_on_signals(stop)
        services = open_services(settings)
        try:
            app = create_broker_app(services, Waker(hook), start_limiter(settings))
            server = _uvicorn(app, settings, beside=0, tls=(cert, key))
            try:
                sock = bind(socket.SOCK_STREAM, where.host, where.port)
            except OSError as exc:
                raise bind_error(
                    "broker_https", socket.SOCK_STREAM, where.host, where.port, exc
                ) from None
            task = await _start_http(server, sock)
            log.info("start-live broker on https://%s", where)
            await _serve_until(stop, server, task)
        finally:
            services.close()

    run_loop(main)
