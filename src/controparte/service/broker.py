"""The start-live broker's use-case: who may ask to start a Live installation, where it
is reached, and waking it up through a pluggable hook.

Contracts:
- `live_target(registry, name)`: the Live installation `name` (code, label or
  `<label>.<zone>`); NotFoundError when there is none (what `/v1/resolve` tells anyone
  anyway), ForbiddenError when it is not Live.
- `may_start(registry, live, caller)`: None when `caller` (already authenticated by its
  own token) is `live` itself or a linked counterpart of it (`service/counterparts.py`);
  else the ForbiddenError of `linked_counterpart`.
- `placement(registry, inst)`: where the Live installation is reached: the pool's
  placement (`Registry.pool.where`, the one read of it): the address to dial (its
  gateway's IPv4, else IPv6, which the pool keeps as the installation's registered
  addresses), the port allocated there, and the gateway's name (None for one placed by
  hand, before the pool); a ValidationError when it has no address or port.
- `Waker.wake(wake)`: runs the hook for the installation once at a time: a request while
  a wake of the same installation is under way joins it and gets its outcome (the hook
  is not run twice). No hook: ready at once (a farm that never sleeps).
- Hooks (`hook_of(settings)`): `CommandHook` runs `broker_wake_command` (split as a
  shell would, never through a shell) with the label as its last argument and
  CONTROPARTE_CODE, CONTROPARTE_LABEL, CONTROPARTE_GATEWAY (the address),
  CONTROPARTE_GATEWAY_NAME (empty when placed by hand), CONTROPARTE_PORT in its
  environment: exit status 0 = ready; any other = not ready (its last line on stderr is
  the detail). `WebhookHook` POSTs `{code, label, gateway, gateway_name, port}` as JSON to
  `broker_wake_url`: a 2xx = ready, unless its JSON body says `"ready": false`; any
  other status = not ready. Either is given `broker_wake_timeout` seconds: then the
  command's process group is killed (the request abandoned) and the answer is not ready,
  with the timeout as the detail. A hook never raises.
- `start_limiter(settings)`: `broker_rate` starts per caller per minute (429 beyond).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shlex
import signal
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Protocol

import httpx

from controparte.errors import ConfigError, ForbiddenError, ValidationError
from controparte.model import Installation, Kind
from controparte.service.counterparts import linked_counterpart
from controparte.service.probe import ProbeLimiter
from controparte.service.registry import Registry
from controparte.settings import Settings

START_WINDOW = 60.0
"""Seconds over which a caller's starts are counted (`broker_rate` per window)."""
DETAIL_BYTES = 4096
"""Bytes of a hook's stderr kept to find its last line."""


@dataclass(frozen=True, slots=True)
class Placement:
    """Where a Live installation is reached: a gateway's address and a port on it, and
    the gateway's name in the pool (None: placed by hand)."""

    gateway: str
    port: int
    gateway_name: str | None = None


@dataclass(frozen=True, slots=True)
class Wake:
    """What a wake hook is told: the installation and where it is reached."""

    code: str
    label: str
    placement: Placement


@dataclass(frozen=True, slots=True)
class WakeOutcome:
    ready: bool
    detail: str = ""


class WakeHook(Protocol):
    """Wakes one Live installation; never raises (a failure is a not-ready outcome)."""

    def __call__(self, wake: Wake) -> Awaitable[WakeOutcome]: ...


def live_target(registry: Registry, name: str) -> Installation:
    """The Live installation `name` (see the module)."""
    inst = registry.find(name)
    if inst.kind is not Kind.LIVE:
        raise ForbiddenError(
            f"installation {inst.code!r} is not Live: the start-live broker starts only"
            " Live installations"
        )
    return inst


def may_start(registry: Registry, live: Installation, caller: Installation) -> None:
    """Raise ForbiddenError unless `caller` is `live` or linked to it."""
    if caller.code.lower() != live.code.lower():
        linked_counterpart(registry, caller, live.code)


def placement(registry: Registry, inst: Installation) -> Placement:
    """Where `inst` is reached (see the module)."""
    where = registry.pool.where(inst)
    address = where.ipv4 or where.ipv6
    if address is None or where.port is None:
        raise ValidationError(
            "placement",
            f"Live installation {inst.code!r} has no registered address and public port yet",
        )
    return Placement(address, where.port, where.gateway)


def _environment(wake: Wake) -> dict[str, str]:
    return {
        **os.environ,
        "CONTROPARTE_CODE": wake.code,
        "CONTROPARTE_LABEL": wake.label,
        "CONTROPARTE_GATEWAY": wake.placement.gateway,
        "CONTROPARTE_GATEWAY_NAME": wake.placement.gateway_name or "",
        "CONTROPARTE_PORT": str(wake.placement.port),
    }


@dataclass(frozen=True, slots=True)
class CommandHook:
    """The wake hook as a command (see the module)."""

    argv: tuple[str, ...]
    timeout: float

    async def __call__(self, wake: Wake) -> WakeOutcome:
        try:
            process = await asyncio.create_subprocess_exec(
                *self.argv,
                wake.label,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.PIPE,
                env=_environment(wake),
                start_new_session=True,  # its own process group, killed whole on timeout
            )
        except OSError as exc:
            return WakeOutcome(False, f"the wake hook could not be run: {exc.strerror or exc}")
        try:
            _out, err = await asyncio.wait_for(process.communicate(), self.timeout)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            await process.wait()
            return WakeOutcome(False, f"the wake hook did not finish within {self.timeout:g} s")
        if process.returncode == 0:
            return WakeOutcome(True)
        lines = err[-DETAIL_BYTES:].decode(errors="replace").strip().splitlines()
        said = f": {lines[-1][:200]}" if lines else ""
        return WakeOutcome(False, f"the wake hook exited with status {process.returncode}{said}")


@dataclass(frozen=True, slots=True)
class WebhookHook:
    """The wake hook as a webhook (see the module)."""

    url: str
    timeout: float

    async def __call__(self, wake: Wake) -> WakeOutcome:
        body = {
            "code": wake.code,
            "label": wake.label,
            "gateway": wake.placement.gateway,
            "gateway_name": wake.placement.gateway_name,
            "port": wake.placement.port,
        }
        try:
            async with httpx.AsyncClient(timeout=self.timeout, follow_redirects=False) as client:
                response = await asyncio.wait_for(client.post(self.url, json=body), self.timeout)
        except (TimeoutError, httpx.TimeoutException):
            return WakeOutcome(False, f"the wake webhook did not answer within {self.timeout:g} s")
        except httpx.HTTPError as exc:
            return WakeOutcome(False, f"the wake webhook cannot be reached: {exc}")
        if not response.is_success:
            return WakeOutcome(False, f"the wake webhook answered HTTP {response.status_code}")
        try:
            said = response.json()
        except ValueError:
            said = None
        if isinstance(said, dict) and said.get("ready") is False:
            return WakeOutcome(False, str(said.get("detail") or "the wake webhook said not ready"))
        return WakeOutcome(True)


def hook_of(settings: Settings) -> WakeHook | None:
    """The wake hook the settings name, or None; a ConfigError when both are named."""
    command, url = settings.broker_wake_command, settings.broker_wake_url
    if command and url:
        raise ConfigError(
            "broker_wake_command, broker_wake_url: name one wake hook, a command or a webhook"
        )
    timeout = settings.broker_wake_timeout
    if command:
        try:
            argv = tuple(shlex.split(command))
        except ValueError as exc:
            raise ConfigError(f"broker_wake_command: cannot be split into words ({exc})") from None
        return CommandHook(argv, timeout)
    if url and not url.startswith(("http://", "https://")):
        raise ConfigError(f"broker_wake_url: {url!r} is not an http:// or https:// URL")
    return WebhookHook(url, timeout) if url else None


class Waker:
    """One wake at a time per installation (see the module). Used on one event loop."""

    def __init__(self, hook: WakeHook | None) -> None:
        self.hook = hook
        self._under_way: dict[str, asyncio.Task[WakeOutcome]] = {}

    async def wake(self, wake: Wake) -> tuple[WakeOutcome, bool]:
        """The outcome of waking `wake.code`, and whether this call joined a wake
        already under way."""
        if self.hook is None:
            return WakeOutcome(True), False
        key = wake.code.lower()
        task = self._under_way.get(key)
        joined = task is not None
        if task is None:
            task = asyncio.ensure_future(self.hook(wake))
            self._under_way[key] = task
            task.add_done_callback(lambda _done: self._under_way.pop(key, None))
        return await asyncio.shield(task), joined


def start_limiter(settings: Settings) -> ProbeLimiter:
    """`broker_rate` starts per caller per `START_WINDOW` seconds."""
    return ProbeLimiter(
        START_WINDOW,
        limit=settings.broker_rate,
        refusal="installation {key!r} asked the broker to start {limit} Live installations"
        " in the last {interval:g} s",
    )
