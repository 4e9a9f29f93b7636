"""Settings, read once: flags, then environment `CONTROPARTE_*`, then a TOML file
(`--config` / `CONTROPARTE_CONFIG`), then defaults. Typed, validated, passed explicitly.

A missing or malformed value raises `ConfigError` naming the key.
"""

from __future__ import annotations

import ipaddress
import os
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, TypeVar

import dns.name

from controparte.errors import ConfigError

T = TypeVar("T")

ENV_PREFIX = "CONTROPARTE_"
DEFAULT_ZONE = "bp.controparte.test."


@dataclass(frozen=True, slots=True)
class HostPort:
    host: str
    port: int

    @classmethod
    def parse(cls, key: str, value: object) -> HostPort:
        text = str(value).strip()
        host, sep, port = text.rpartition(":")
        if not sep:
            raise ConfigError(f"{key}: expected HOST:PORT, got {text!r}")
        host = host.strip("[]")
        try:
            ipaddress.ip_address(host)
        except ValueError:
            if host != "localhost":
                raise ConfigError(f"{key}: {host!r} is not an IP address") from None
            host = "127.0.0.1"
        try:
            number = int(port)
        except ValueError:
            raise ConfigError(f"{key}: port {port!r} is not a number") from None
        if not 0 <= number <= 65535:
            raise ConfigError(f"{key}: port {number} is out of range 0-65535")
        return cls(host, number)

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


@dataclass(frozen=True, slots=True)
class NameServer:
    """One NS record of the zone; `addresses` are its glue when the name is in the zone."""

    name: str  # absolute, lower-case, with the trailing dot
    addresses: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Settings:
    data: Path = Path("var")
    zone: str = DEFAULT_ZONE
    dns: HostPort = HostPort("127.0.0.1", 8053)
    http: HostPort = HostPort("127.0.0.1", 8080)
    ttl: int = 60
    negative_ttl: int = 60
    ns: tuple[NameServer, ...] = ()
    soa_mname: str = ""
    soa_rname: str = ""
    soa_refresh: int = 3600
    soa_retry: int = 600
    soa_expire: int = 1_209_600
    allow_non_global: bool = False
    edns_udp_size: int = 1232
    tcp_idle_timeout: float = 10.0
    tcp_max_connections: int = 1024
    journal_poll_interval: float = 0.02
    """Seconds between looks at the journal for changes other processes made (HTTP
    workers, a CLI, another server): the worst-case delay before DNS serves them. Each
    look is one indexed `SELECT max(seq)` on a read-only connection."""
    dns_workers: int = 1
    http_workers: int = 1
    """HTTP processes on the same port (SO_REUSEPORT): the first is the main process
    (with DNS), each other one runs the HTTP app over services of its own."""
    admin_token: str = ""
    trusted_proxies: tuple[str, ...] = ()
    stale_after: float = 900.0
    heartbeat_interval: float = 300.0
    features: Path | None = None
    """The feature catalog (TOML, the shape of the packaged `plan/features.toml`): the
    features, their topology and the Live settings. None: the packaged catalog."""


def _absolute(key: str, name: str, zone: str) -> str:
    """A name from the configuration: relative names are taken under the zone."""
    try:
        if name.endswith("."):
            parsed = dns.name.from_text(name)
        else:
            parsed = dns.name.from_text(name, origin=dns.name.from_text(zone))
    except dns.exception.DNSException as exc:
        raise ConfigError(f"{key}: {name!r} is not a valid domain name ({exc})") from None
    return parsed.to_text().lower()


def _int(key: str, value: object, low: int, high: int) -> int:
    try:
        number = int(str(value).strip())
    except ValueError:
        raise ConfigError(f"{key}: expected a whole number, got {value!r}") from None
    if not low <= number <= high:
        raise ConfigError(f"{key}: {number} is outside {low}-{high}")
    return number


def _float(key: str, value: object, low: float, high: float) -> float:
    try:
        number = float(str(value).strip())
    except ValueError:
        raise ConfigError(f"{key}: expected a number, got {value!r}") from None
    if not low <= number <= high:
        raise ConfigError(f"{key}: {number} is outside {low}-{high}")
    return number


def _bool(key: str, value: object) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off", ""):
        return False
    raise ConfigError(f"{key}: expected true or false, got {value!r}")


def _admin_token(key: str, value: object) -> str:
    text = str(value).strip()
    if text and len(text) < 20:
        raise ConfigError(f"{key}: an admin token needs at least 20 characters")
    return text


def _networks(key: str, value: object) -> tuple[str, ...]:
    """Trusted proxy addresses or networks: a list, or text separated by commas."""
    items = value if isinstance(value, list) else str(value).split(",")
    out = []
    for item in items:
        text = str(item).strip()
        if not text:
            continue
        try:
            out.append(str(ipaddress.ip_network(text, strict=False)))
        except ValueError:
            raise ConfigError(f"{key}: {text!r} is not an address or network") from None
    return tuple(out)


def _ns_list(key: str, value: object, zone: str) -> tuple[NameServer, ...]:
    """NS servers: a TOML list of {name, addresses} tables, or the text form
    `name[=addr,addr];name...` (environment and flags)."""
    items: list[tuple[str, list[str]]] = []
    if isinstance(value, list):
        for entry in value:
            if not isinstance(entry, dict) or "name" not in entry:
                raise ConfigError(f"{key}: each entry needs a 'name'")
            items.append((str(entry["name"]), [str(a) for a in entry.get("addresses", [])]))
    else:
        for part in str(value).split(";"):
            if not part.strip():
                continue
            name, _, addr_text = part.strip().partition("=")
            items.append((name.strip(), [a.strip() for a in addr_text.split(",") if a.strip()]))
    if not items:
        raise ConfigError(f"{key}: at least one name server is needed")
    servers = []
    for name, addrs in items:
        for addr in addrs:
            try:
                ipaddress.ip_address(addr)
            except ValueError:
                raise ConfigError(f"{key}: {addr!r} is not an IP address") from None
        servers.append(NameServer(_absolute(key, name, zone), tuple(addrs)))
    return tuple(servers)


_PARSERS: dict[str, Callable[[str, object, str], object]] = {
    "data": lambda k, v, z: Path(str(v)),
    "dns": lambda k, v, z: HostPort.parse(k, v),
    "http": lambda k, v, z: HostPort.parse(k, v),
    "ttl": lambda k, v, z: _int(k, v, 0, 2**31 - 1),
    "negative_ttl": lambda k, v, z: _int(k, v, 0, 2**31 - 1),
    "ns": _ns_list,
    "soa_mname": lambda k, v, z: _absolute(k, str(v), z),
    "soa_rname": lambda k, v, z: _absolute(k, str(v), z),
    "soa_refresh": lambda k, v, z: _int(k, v, 0, 2**31 - 1),
    "soa_retry": lambda k, v, z: _int(k, v, 0, 2**31 - 1),
    "soa_expire": lambda k, v, z: _int(k, v, 0, 2**31 - 1),
    "allow_non_global": lambda k, v, z: _bool(k, v),
    "edns_udp_size": lambda k, v, z: _int(k, v, 512, 65535),
    "tcp_idle_timeout": lambda k, v, z: _float(k, v, 0.1, 3600),
    "tcp_max_connections": lambda k, v, z: _int(k, v, 1, 1_000_000),
    "journal_poll_interval": lambda k, v, z: _float(k, v, 0.01, 60),
    "dns_workers": lambda k, v, z: _int(k, v, 1, 64),
    "http_workers": lambda k, v, z: _int(k, v, 1, 64),
    "admin_token": lambda k, v, z: _admin_token(k, v),
    "trusted_proxies": lambda k, v, z: _networks(k, v),
    "stale_after": lambda k, v, z: _float(k, v, 1, 365 * 86400),
    "heartbeat_interval": lambda k, v, z: _float(k, v, 1, 86400),
    "features": lambda k, v, z: Path(str(v)) if str(v).strip() else None,
}


def load_settings(
    flags: Mapping[str, object | None] | None = None,
    env: Mapping[str, str] | None = None,
    config_file: Path | None = None,
) -> Settings:
    """Merge the sources (flags > environment > TOML file > defaults) into `Settings`."""
    env = os.environ if env is None else env
    flags = {k: v for k, v in (flags or {}).items() if v is not None}
    path = config_file or (
        Path(env[ENV_PREFIX + "CONFIG"]) if ENV_PREFIX + "CONFIG" in env else None
    )
    from_file: dict[str, Any] = {}
    if path is not None:
        try:
            from_file = tomllib.loads(path.read_text())
        except OSError as exc:
            raise ConfigError(f"config: cannot read {path}: {exc.strerror}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config: {path} is not valid TOML: {exc}") from None
        unknown = set(from_file) - set(_PARSERS) - {"zone"}
        if unknown:
            raise ConfigError(f"config: unknown key(s) in {path}: {', '.join(sorted(unknown))}")

    def raw(key: str) -> tuple[str, object] | None:
        if key in flags:
            return f"--{key.replace('_', '-')}", flags[key]
        env_key = ENV_PREFIX + key.upper()
        if env_key in env:
            return env_key, env[env_key]
        if key in from_file:
            return f"{path}:{key}", from_file[key]
        return None

    zone_raw = raw("zone")
    zone = DEFAULT_ZONE if zone_raw is None else _absolute(zone_raw[0], str(zone_raw[1]), ".")
    if zone == ".":
        raise ConfigError("zone: the root zone cannot be served")
    values: dict[str, object] = {"zone": zone}
    for f in fields(Settings):
        if f.name == "zone":
            continue
        found = raw(f.name)
        if found is not None:
            values[f.name] = _PARSERS[f.name](found[0], found[1], zone)
    settings = Settings(**values)  # type: ignore[arg-type]
    return _with_defaults(settings)


def _with_defaults(s: Settings) -> Settings:
    """Fill the values that derive from others: NS, SOA MNAME and RNAME."""
    if not s.ns and ipaddress.ip_address(s.dns.host).is_unspecified:
        raise ConfigError(
            f"ns: the DNS server listens on {s.dns.host}, which is no address to publish;"
            " name the zone's name servers and their addresses (CONTROPARTE_NS)"
        )
    ns = s.ns or (NameServer("ns1." + s.zone, (s.dns.host,)),)
    for server in ns:
        if server.name.endswith("." + s.zone) and not server.addresses:
            raise ConfigError(
                f"ns: {server.name} is inside the zone, so it needs its addresses (glue):"
                " write it as name=address[,address]"
            )
    mname = s.soa_mname or ns[0].name
    rname = s.soa_rname or "hostmaster." + s.zone
    return Settings(
        **{
            **{f.name: getattr(s, f.name) for f in fields(Settings)},
            "ns": ns,
            "soa_mname": mname,
            "soa_rname": rname,
        }
    )
