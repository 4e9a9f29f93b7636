"""The heartbeat on the wire, as the agent sees it (the client half of the JSON API's
schema; no import of the HTTP app, which depends on the service layer).

`POST /v1/installations/{code}/heartbeat` with `Authorization: Bearer <token>` and
`{"port": N, "private_port"?: N, "version"?: "..."}`; a 200 carries the record as the
service now serves it. `classify` turns any HTTP answer into one of three outcomes:
done, retry later, or give up (retrying cannot help).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from urllib.parse import quote

from controparte.model import validate_code, validate_port

HEARTBEAT_PATH = "/v1/installations/{code}/heartbeat"

RETRY_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})
"""Statuses worth retrying (besides any other 5xx): the server may answer later."""
AUTH_STATUSES = frozenset({401, 403})


def heartbeat_url(server: str, code: str) -> str:
    """The heartbeat endpoint of `server` (a base URL, path prefix allowed) for `code`."""
    return server.rstrip("/") + HEARTBEAT_PATH.format(code=quote(validate_code(code), safe=""))


@dataclass(frozen=True, slots=True)
class HeartbeatRequest:
    port: int
    private_port: int | None = None
    version: str | None = None

    def __post_init__(self) -> None:
        validate_port(self.port)
        if self.private_port is not None:
            validate_port(self.private_port)

    def to_json(self) -> dict[str, object]:
        body: dict[str, object] = {"port": self.port}
        if self.private_port is not None:
            body["private_port"] = self.private_port
        if self.version is not None:
            body["version"] = self.version
        return body


class BadReplyError(ValueError):
    """A 200 whose body is not the heartbeat reply."""


def _str(body: dict[str, object], key: str) -> str | None:
    value = body.get(key)
    if value is None or isinstance(value, str):
        return value
    raise BadReplyError(f"{key}: expected a string, got {value!r}")


def _int(body: dict[str, object], key: str) -> int | None:
    value = body.get(key)
    if value is None or (isinstance(value, int) and not isinstance(value, bool)):
        return value
    raise BadReplyError(f"{key}: expected a whole number, got {value!r}")


def _seconds(body: dict[str, object], key: str) -> float | None:
    value = body.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None  # absent, or not a number of seconds: not ours to interpret
    number = float(value)
    return number if math.isfinite(number) and number > 0 else None


@dataclass(frozen=True, slots=True)
class HeartbeatReply:
    """What the service answered: the record as DNS now serves it."""

    code: str
    label: str | None
    fqdn: str | None
    ip: str | None
    ipv6: str | None
    port: int | None
    changed: bool
    serial: int | None
    heartbeat_interval: float | None
    stale_after: float | None

    @classmethod
    def from_json(cls, body: object) -> HeartbeatReply:
        if not isinstance(body, dict):
            raise BadReplyError("expected a JSON object")
        code = body.get("code")
        if not isinstance(code, str):
            raise BadReplyError("code: missing")
        return cls(
            code=code,
            label=_str(body, "label"),
            fqdn=_str(body, "fqdn"),
            ip=_str(body, "ip"),
            ipv6=_str(body, "ipv6"),
            port=_int(body, "port"),
            changed=bool(body.get("changed", False)),
            serial=_int(body, "serial"),
            heartbeat_interval=_seconds(body, "heartbeat_interval"),
            stale_after=_seconds(body, "stale_after"),
        )

    def endpoints(self) -> tuple[str, ...]:
        """How the world reaches the installation: `ip:port`, `[ipv6]:port`."""
        port = "?" if self.port is None else str(self.port)
        out = []
        if self.ip is not None:
            out.append(f"{self.ip}:{port}")
        if self.ipv6 is not None:
            out.append(f"[{self.ipv6}]:{port}")
        return tuple(out)

    def where(self) -> str:
        """One line: the endpoints and the name that resolves to them."""
        text = ", ".join(self.endpoints()) or "no address"
        name = self.fqdn or self.label
        return f"{text} ({name})" if name else text


# -- outcomes ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Done:
    reply: HeartbeatReply


@dataclass(frozen=True, slots=True)
class Retry:
    reason: str
    retry_after: float | None = None


@dataclass(frozen=True, slots=True)
class GiveUp:
    """Retrying cannot help: `auth` marks refused credentials (401, 403)."""

    reason: str
    auth: bool = False


Outcome = Done | Retry | GiveUp


def error_detail(body: bytes) -> str:
    """The server's own words for an error, from a JSON body's `detail`, `error` or
    `message` (first line, bounded); empty when there are none."""
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return ""
    if not isinstance(data, dict):
        return ""
    for key in ("detail", "error", "message"):
        value = data.get(key)
        if isinstance(value, str) and value.strip():
            return " ".join(value.split())[:200]
    return ""


def classify(
    status: int, body: bytes, retry_after: float | None = None, *, location: str | None = None
) -> Outcome:
    """What one HTTP answer to a heartbeat means for the agent."""
    detail = error_detail(body) if status != 200 else ""
    said = f"HTTP {status}" + (f": {detail}" if detail else "")
    if 300 <= status < 400:
        where = f" to {location}" if location else ""
        return GiveUp(f"{said}: redirected{where}; check the --server URL")
    if status == 200:
        try:
            return Done(HeartbeatReply.from_json(json.loads(body)))
        except (ValueError, UnicodeDecodeError) as exc:  # BadReplyError is a ValueError
            return Retry(f"the server's reply is not a heartbeat reply ({exc})")
    if status in AUTH_STATUSES:
        return GiveUp(said, auth=True)
    if status in RETRY_STATUSES or status >= 500:
        return Retry(said, retry_after)
    return GiveUp(said)
