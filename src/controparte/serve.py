"""The composition root of `controparte serve`: one process, one event loop, the DNS
server (UDP thread + TCP) and the HTTP service over one store and one service layer.

Writers in this process poke the DNS server, so their changes are served at once;
changes by other processes arrive through the journal follower.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Generator

import uvicorn

from controparte.dns.server import DnsServer
from controparte.http.app import create_app
from controparte.service.services import Services, open_services
from controparte.settings import Settings

log = logging.getLogger("controparte")


class _EmbeddedUvicorn(uvicorn.Server):
    """uvicorn inside our loop: we own the signals, not uvicorn."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


class Service:
    """DNS + HTTP over shared services; `async with` starts and stops both."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.dns: DnsServer | None = None
        self.services: Services = open_services(settings, on_change=self._poke)
        self._http: _EmbeddedUvicorn | None = None
        self._http_task: asyncio.Task[None] | None = None

    def _poke(self) -> None:
        if self.dns is not None:
            self.dns.poke()

    async def start(self) -> None:
        self.dns = DnsServer(self.settings, self.services.store, services=self.services)
        await self.dns.start()
        config = uvicorn.Config(
            create_app(self.services, dns=self.dns),
            host=self.settings.http.host,
            port=self.settings.http.port,
            log_level="warning",
            access_log=False,
            lifespan="off",
            server_header=False,
            proxy_headers=False,  # trusted_proxies is applied by the app itself
        )
        self._http = _EmbeddedUvicorn(config)
        self._http_task = asyncio.create_task(self._http.serve())
        while not self._http.started:
            if self._http_task.done():
                await self._http_task  # raises the start-up error (port in use, ...)
                raise RuntimeError("the HTTP server stopped during start-up")
            await asyncio.sleep(0.01)
        log.info("HTTP API on http://%s", self.settings.http)

    async def stop(self) -> None:
        if self._http is not None and self._http_task is not None:
            self._http.should_exit = True
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._http_task, 5)
        if self.dns is not None:
            await self.dns.stop()
        self.services.close()

    async def __aenter__(self) -> Service:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


def run(settings: Settings) -> None:
    """Serve DNS and HTTP until SIGINT or SIGTERM."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        async with Service(settings):
            await stop.wait()
            log.info("stopping")

    asyncio.run(main())
