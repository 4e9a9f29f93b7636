"""`controparte agent listen`: answer the service's probe on MxServer's port before
MxServer is installed (or while it is stopped), so that `POST .../probe` and
`controparte doctor` can prove that the router's port forward reaches this machine.

Contract:
- It speaks only the probe protocol (`model/probe.py`): a connection may send one probe
  line within `READ_TIMEOUT` seconds; a probe is answered with this installation's
  proof (the MAC keyed by its token) and the connection closed; anything else is
  closed unanswered.
- The token file is read for every probe, so a rotated token is used at once; at start
  it is read once, so a missing or unsafe file ends the command before it listens.
- At most `MAX_CONNECTIONS` connections are served at a time; more are closed at once.
- SIGINT or SIGTERM stops it (exit code 0).

Depends on the model (its rules and `model/probe.py`) only, like the rest of the agent.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from controparte.agent.token import read_token
from controparte.errors import ControparteError, ValidationError
from controparte.model import validate_code, validate_port
from controparte.model.probe import MAX_LINE, answer_line, parse_probe_line

log = logging.getLogger("controparte.agent.listen")

READ_TIMEOUT = 5.0
MAX_CONNECTIONS = 64


@dataclass(frozen=True, slots=True)
class ListenConfig:
    """What to listen on, for which installation. `bind` None: every local address;
    `port` 0: a free port (the bound one is logged)."""

    code: str
    token_file: Path
    port: int
    bind: str | None = None

    def __post_init__(self) -> None:
        validate_code(self.code)
        if self.port != 0:
            validate_port(self.port)
        if self.bind is not None and not self.bind.strip():
            raise ValidationError("bind", "give an address, or leave the option out")


class ProbeListener:
    """The listening socket(s) and the per-connection handler. `start`, then `stop`."""

    def __init__(
        self,
        config: ListenConfig,
        *,
        read_timeout: float = READ_TIMEOUT,
        max_connections: int = MAX_CONNECTIONS,
        token_reader: Callable[[Path], str] = read_token,
    ) -> None:
        self.config = config
        self.read_timeout = read_timeout
        self.max_connections = max_connections
        self.token_reader = token_reader
        self.answered = 0
        self._active = 0
        self._server: asyncio.Server | None = None

    async def start(self) -> list[str]:
        """Read the token once (fail fast), bind, listen; the bound addresses."""
        self.token_reader(self.config.token_file)
        try:
            self._server = await asyncio.start_server(
                self._handle, host=self.config.bind, port=self.config.port, limit=MAX_LINE
            )
        except OSError as exc:
            where = f"{self.config.bind or '*'}:{self.config.port}"
            raise ControparteError(f"cannot listen on {where}: {exc.strerror or exc}") from None
        return [_where(sock.getsockname()) for sock in self._server.sockets]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._server.wait_closed(), 2.0)
            self._server = None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = _where(writer.get_extra_info("peername"))
        if self._active >= self.max_connections:
            log.debug("too many connections: closing %s unanswered", peer)
            writer.close()
            return
        self._active += 1
        try:
            await self._answer(reader, writer, peer)
        except (OSError, TimeoutError, ValueError, asyncio.IncompleteReadError) as exc:
            log.debug("connection from %s ended: %s", peer, exc or type(exc).__name__)
        finally:
            self._active -= 1
            writer.close()
            with contextlib.suppress(OSError, TimeoutError):
                await asyncio.wait_for(writer.wait_closed(), 1.0)

    async def _answer(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, peer: str
    ) -> None:
        line = await asyncio.wait_for(reader.readline(), self.read_timeout)
        nonce = parse_probe_line(line)
        if nonce is None:
            log.debug("%s sent no probe: closing unanswered", peer)
            return
        try:
            token = self.token_reader(self.config.token_file)
        except ControparteError as exc:
            log.error("cannot answer the probe from %s: %s", peer, exc)
            return
        writer.write(answer_line(token, self.config.code, nonce))
        await asyncio.wait_for(writer.drain(), self.read_timeout)
        self.answered += 1
        log.info("answered a probe from %s as installation %s", peer, self.config.code)


def _where(name: object) -> str:
    """`host:port` or `[v6]:port` of a socket address tuple."""
    if isinstance(name, tuple) and len(name) >= 2:
        host, port = str(name[0]), name[1]
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    return str(name)


async def _serve(config: ListenConfig) -> None:
    listener = ProbeListener(config)
    where = await listener.start()
    log.info(
        "answering controparte probes for installation %s on %s (stop with Ctrl+C)",
        config.code,
        ", ".join(where),
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for name in ("SIGINT", "SIGTERM"):
        with contextlib.suppress(NotImplementedError, AttributeError):  # Windows
            loop.add_signal_handler(getattr(signal, name), stop.set)
    try:
        await stop.wait()
    finally:
        await listener.stop()
        log.info("stopped after answering %d probe(s)", listener.answered)


def run_listener(config: ListenConfig, *, verbose: bool = False) -> int:
    """Listen until SIGINT or SIGTERM; the exit code (0). Raises `ControparteError`
    when the token file is unusable or the port cannot be bound."""
    logger = logging.getLogger("controparte.agent")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    logger.addHandler(handler)
    level, propagate = logger.level, logger.propagate
    logger.setLevel(logging.DEBUG if verbose else logging.INFO)
    logger.propagate = False
    try:
        asyncio.run(_serve(config))
    except KeyboardInterrupt:  # where signal handlers cannot be installed
        pass
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
        logger.propagate = propagate
    return 0
