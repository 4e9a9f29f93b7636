"""The agent's loop: beat, log what the world sees, sleep, again; back off on failure.

- The token file is read before every beat, so a rotated token is picked up without a
  restart; refused credentials (401, 403) and other answers that retrying cannot fix
  end the agent with an error (a service manager restarts it later).
- Network errors, 5xx and 429 are retried with backoff (`schedule.retry_delay`),
  honouring Retry-After; the agent keeps trying for as long as it runs.
- `stop` (set by SIGTERM/SIGINT) ends the loop at once, even mid-sleep.
"""

from __future__ import annotations

import logging
import random
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from controparte import __version__
from controparte.agent.schedule import choose_interval, next_beat_delay, retry_delay
from controparte.agent.token import read_token
from controparte.agent.wire import Done, GiveUp, HeartbeatReply, HeartbeatRequest, Outcome
from controparte.errors import AuthError, ControparteError, ValidationError

log = logging.getLogger("controparte.agent")


class Beater(Protocol):
    url: str

    def beat(self, token: str, request: HeartbeatRequest) -> Outcome: ...


@dataclass(frozen=True, slots=True)
class AgentConfig:
    server: str
    code: str
    token_file: Path
    port: int
    private_port: int | None = None
    interval: float | None = None  # None: what the server asks for, else 300 s
    bind: str | None = None
    once: bool = False
    relay: bool = True
    """Run the relay worker beside the heartbeats (`agent/relay.py`; never with `once`)."""

    def __post_init__(self) -> None:
        if not self.server.startswith(("http://", "https://")):
            raise ValidationError("server", f"{self.server!r} is not an http:// or https:// URL")
        if self.interval is not None and not 1 <= self.interval <= 86_400:
            raise ValidationError("interval", "must be 1-86400 seconds")


class Agent:
    """Runs the heartbeat loop for one installation (`run` returns the exit code)."""

    def __init__(
        self,
        config: AgentConfig,
        client: Beater,
        *,
        stop: threading.Event | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.config = config
        self.client = client
        self.stop = stop or threading.Event()
        self.rng = rng or random.Random()
        self.request = HeartbeatRequest(config.port, config.private_port, __version__)
        self.failures = 0
        self.last: HeartbeatReply | None = None
        self.interval = choose_interval(config.interval, None)

    def run(self) -> int:
        """Beat until stopped (0), or once with `once`. Raises `ControparteError` for
        what retrying cannot fix, and with `once` for a failed beat."""
        read_token(self.config.token_file)  # fail fast, before the first connection
        log.info(
            "agent %s for installation %s: heartbeats to %s, public port %d%s",
            __version__,
            self.config.code,
            self.client.url,
            self.config.port,
            f", from {self.config.bind}" if self.config.bind else "",
        )
        while not self.stop.is_set():
            delay = self.beat_once()
            if self.config.once:
                return 0
            if self.stop.wait(delay):
                break
        log.info("agent stopped")
        return 0

    def beat_once(self) -> float:
        """One heartbeat; the seconds to wait before the next one."""
        token = read_token(self.config.token_file)
        outcome = self.client.beat(token, self.request)
        if isinstance(outcome, Done):
            self._succeeded(outcome.reply)
            return next_beat_delay(self.interval, self.rng)
        if isinstance(outcome, GiveUp):
            if outcome.auth:
                raise AuthError(
                    f"bad credentials: {self.client.url} refused the token in"
                    f" {self.config.token_file} for installation {self.config.code}"
                    f" ({outcome.reason})"
                )
            raise ControparteError(f"heartbeat refused by {self.client.url}: {outcome.reason}")
        self.failures += 1
        if self.config.once:
            raise ControparteError(f"heartbeat failed: {outcome.reason}")
        delay = retry_delay(
            self.failures, self.rng, interval=self.interval, retry_after=outcome.retry_after
        )
        log.warning(
            "heartbeat failed (%s); retrying in %.1f s (failure %d)",
            outcome.reason,
            delay,
            self.failures,
        )
        return delay

    def _succeeded(self, reply: HeartbeatReply) -> None:
        interval = choose_interval(self.config.interval, reply.heartbeat_interval)
        if interval != self.interval or self.last is None:
            self.interval = interval
            log.info("heartbeat every %g s", interval)
            if reply.stale_after is not None and interval >= reply.stale_after:
                log.warning(
                    "the interval (%g s) is not shorter than the server's stale_after"
                    " (%g s): the installation will look offline between beats",
                    interval,
                    reply.stale_after,
                )
        if self.failures:
            log.info("heartbeat ok again after %d failure(s)", self.failures)
            self.failures = 0
        if self.last is None:
            log.info("this is how the world sees you: %s", reply.where())
        elif reply.endpoints() != self.last.endpoints():
            log.info(
                "address changed: this is how the world sees you: %s (was %s)",
                reply.where(),
                ", ".join(self.last.endpoints()) or "no address",
            )
        else:
            log.debug("heartbeat ok: %s", reply.where())
        self.last = reply
