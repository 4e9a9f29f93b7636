"""`controparte agent`: the process around `Agent`: logging to stderr (the journal, or
NSSM's log file, adds nothing: every line carries its own time), signals, the client."""

from __future__ import annotations

import logging
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType

from controparte.agent.client import HeartbeatClient
from controparte.agent.relay import RelayConfig, RelayWorker
from controparte.agent.runner import Agent, AgentConfig

LOG_FORMAT = "%(asctime)s %(levelname)s %(message)s"
STOP_SIGNALS = tuple(
    getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGBREAK") if hasattr(signal, name)
)

RELAY_JOIN = 5.0
"""Seconds the agent waits on the way out for the relay worker (it stops within 0.2 s;
a dial in progress may take a few more)."""

_Handler = Callable[[int, FrameType | None], object] | int | None


@contextmanager
def _stderr_log(verbose: bool) -> Iterator[None]:
    logger = logging.getLogger("controparte.agent")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    logger.addHandler(handler)
    level, propagate = logger.level, logger.propagate
    logger.setLevel(logging.DEBUG if verbose else logging.INFO)
    logger.propagate = False
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
        logger.propagate = propagate


@contextmanager
def _stop_on_signals(stop: threading.Event) -> Iterator[None]:
    """SIGINT/SIGTERM (and Ctrl+Break on Windows) set `stop` (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous: dict[int, _Handler] = {}
    for sig in STOP_SIGNALS:
        previous[sig] = signal.signal(sig, lambda _sig, _frame: stop.set())
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@contextmanager
def _relay(config: AgentConfig, stop: threading.Event) -> Iterator[None]:
    """The relay worker in its thread while the heartbeat loop runs (unless
    `config.relay` is off or `config.once`); stopped, and waited for, on the way out."""
    if not config.relay or config.once:
        yield
        return
    relay = RelayConfig(config.server, config.code, config.token_file, bind=config.bind)
    thread = RelayWorker(relay, stop=stop).start()
    try:
        yield
    finally:
        stop.set()
        thread.join(RELAY_JOIN)


def run_agent(config: AgentConfig, *, verbose: bool = False) -> int:
    """Run the agent until a signal (exit code 0), or once with `config.once`, with
    the relay worker beside it (`config.relay`). Raises `ControparteError` for what it
    cannot fix by retrying."""
    stop = threading.Event()
    with (
        _stderr_log(verbose),
        _stop_on_signals(stop),
        HeartbeatClient(config.server, config.code, bind=config.bind) as client,
    ):
        agent = Agent(config, client, stop=stop)
        with _relay(config, stop):
            return agent.run()
