"""Settings, read once: flags, then environment `CONTROPARTE_*`, then a TOML file
(`--config` / `CONTROPARTE_CONFIG`), then defaults. Typed, validated, passed explicitly.

Each setting is one field of `Settings` that carries its default and its parser
(`setting`), so the key, the type, the default and the rule live together.
`settings_from` merges the sources and is pure; `load_settings` is the edge that reads
the process environment and the TOML file, once. A missing or malformed value raises
`ConfigError` naming where it came from (`--ttl`, `CONTROPARTE_TTL` or `file:ttl`).
"""

from __future__ import annotations

import ipaddress
import os
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

import dns.exception
import dns.name

from controparte.errors import ConfigError

ENV_PREFIX = "CONTROPARTE_"
DEFAULT_ZONE = "bp.controparte.test."

Parser = Callable[[str, object, str], Any]
"""(where the value came from, the raw value, the zone) -> the typed value, or a
ConfigError naming where."""


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
class TransferRule:
    """One rule of who may transfer the zone: a TSIG key (by name, of the transfer role),
    address prefixes, or both, and then both must match. Text form: `key=NAME`,
    `from=PREFIX[,PREFIX...]`, or both separated by a space."""

    key: str | None  # absolute, lower-case, with the trailing dot
    networks: tuple[str, ...] = ()  # canonical prefixes; none: any address


@dataclass(frozen=True, slots=True)
class Secondary:
    """A secondary name server to NOTIFY of every new serial; `key` (a transfer key's
    name) signs the NOTIFY. Text form: `HOST[:PORT][ key=NAME]` (port 53 by default)."""

    host: str
    port: int = 53
    key: str | None = None

    def __str__(self) -> str:
        where = str(HostPort(self.host, self.port))
        return where if self.key is None else f"{where} key={self.key}"


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


def _choice(*allowed: str) -> Callable[[str, object], str]:
    """A parser of one of `allowed` (case-insensitive)."""

    def parse(key: str, value: object) -> str:
        text = str(value).strip().lower()
        if text not in allowed:
            raise ConfigError(f"{key}: expected one of {', '.join(allowed)}, got {value!r}")
        return text

    return parse


def _admin_token(key: str, value: object) -> str:
    text = str(value).strip()
    if text and len(text) < 20:
        raise ConfigError(f"{key}: an admin token needs at least 20 characters")
    return text


def _address(key: str, value: object) -> str:
    """An IP address, canonical; "" for none."""
    text = str(value).strip().strip("[]")
    if not text:
        return ""
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        raise ConfigError(f"{key}: {text!r} is not an IP address") from None


def _addresses(key: str, value: object) -> tuple[str, ...]:
    """IP addresses, canonical, each once: a list, or text separated by commas."""
    items = value if isinstance(value, list) else str(value).split(",")
    found = (_address(key, item) for item in items)
    return tuple(dict.fromkeys(a for a in found if a))


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


POSTGRES_SCHEMES = ("postgresql", "postgres")


def redacted_database(url: str) -> str:
    """The database URL fit to show: without its password (in the user part or a
    `password=` parameter)."""
    parts = urlsplit(url)
    userinfo, at, hosts = parts.netloc.rpartition("@")
    netloc = f"{userinfo.partition(':')[0]}@{hosts}" if at else hosts
    query = "&".join(
        p for p in parts.query.split("&") if p and not p.lower().startswith("password=")
    )
    return urlunsplit((parts.scheme, netloc, parts.path, query, ""))


def _secrets(url: str) -> set[str]:
    """The password of `url` as written and decoded (to keep out of messages)."""
    parts = urlsplit(url)
    found = {parts.netloc.rpartition("@")[0].partition(":")[2]}
    found |= {p.partition("=")[2] for p in parts.query.split("&") if p.startswith("password=")}
    return {text for raw in found for text in (raw, unquote(raw)) if text}


def postgres_url(key: str, value: object, *, otherwise: str = "") -> str:
    """A PostgreSQL URL as libpq reads it (`postgresql://` or `postgres://`); else a
    ConfigError naming `key` (and what else it may be, `otherwise`) that never repeats
    the password."""
    text = str(value).strip()
    scheme, sep, _rest = text.partition("://")
    if not sep or scheme.lower() not in POSTGRES_SCHEMES:
        raise ConfigError(f"{key}: expected a postgresql:// URL{otherwise}")
    from psycopg import Error  # noqa: PLC0415 (only when PostgreSQL is asked for)
    from psycopg.conninfo import conninfo_to_dict  # noqa: PLC0415

    try:
        conninfo_to_dict(text)
    except Error as exc:
        reason = str(exc).strip()
        for secret in _secrets(text):
            reason = reason.replace(secret, "***")
        raise ConfigError(f"{key}: not a PostgreSQL URL libpq reads ({reason})") from None
    return text


def _database(key: str, value: object) -> str:
    """Where the registry is kept: "" for the SQLite file in the data directory, or a
    PostgreSQL URL (`postgres_url`)."""
    text = str(value).strip()
    if not text:
        return ""
    return postgres_url(key, text, otherwise=", or nothing for SQLite in the data directory")


def _key_name(key: str, name: str) -> str:
    """A TSIG key's name: a domain name, absolute, lower-case."""
    absolute = _absolute(key, name.strip(), ".")
    if absolute == ".":
        raise ConfigError(f"{key}: a key needs a name")
    return absolute


def _items(key: str, value: object) -> list[object]:
    """A list setting: a TOML list, or text with items separated by ';'."""
    if isinstance(value, list):
        return list(value)
    if isinstance(value, str):
        return [part.strip() for part in value.split(";") if part.strip()]
    raise ConfigError(f"{key}: expected a list or text, got {value!r}")


def _fields(key: str, text: str, allowed: tuple[str, ...]) -> dict[str, str]:
    """`name=value` words of one item of a list setting, each name at most once."""
    found: dict[str, str] = {}
    for word in text.split():
        name, sep, val = word.partition("=")
        if not sep or name not in allowed or name in found or not val:
            raise ConfigError(
                f"{key}: {word!r} is not one of {', '.join(n + '=...' for n in allowed)}"
            )
        found[name] = val
    return found


def _transfer_rules(key: str, value: object) -> tuple[TransferRule, ...]:
    """Transfer rules: TOML tables `{key = NAME, from = [PREFIX, ...]}` or their text
    form (see `TransferRule`); every rule names a key, prefixes, or both."""
    rules = []
    for item in _items(key, value):
        if isinstance(item, dict):
            unknown = set(item) - {"key", "from"}
            if unknown:
                raise ConfigError(f"{key}: unknown field(s) {', '.join(sorted(unknown))}")
            name, nets = item.get("key"), item.get("from", [])
        else:
            fields_ = _fields(key, str(item), ("key", "from"))
            name, nets = fields_.get("key"), fields_.get("from", "")
        if name is None and not nets:
            raise ConfigError(f"{key}: a rule names a key, address prefixes, or both")
        rules.append(
            TransferRule(
                None if name is None else _key_name(key, str(name)),
                _networks(key, nets),
            )
        )
    return tuple(rules)


def _secondaries(key: str, value: object) -> tuple[Secondary, ...]:
    """Secondaries to NOTIFY: TOML tables `{host, port, key}` or the text form
    `HOST[:PORT][ key=NAME]` (see `Secondary`)."""
    out = []
    for item in _items(key, value):
        if isinstance(item, dict):
            unknown = set(item) - {"host", "port", "key"}
            if unknown:
                raise ConfigError(f"{key}: unknown field(s) {', '.join(sorted(unknown))}")
            where = f"{item.get('host', '')}:{item.get('port', 53)}"
            name = item.get("key")
        else:
            head, _, rest = str(item).strip().partition(" ")
            name = _fields(key, rest, ("key",)).get("key")
            bracketed = head.startswith("[") and "]:" in head
            plain_v4 = head.count(":") == 1
            where = head if bracketed or plain_v4 else f"[{head.strip('[]')}]:53"
        address = HostPort.parse(key, where)
        if address.port == 0:
            raise ConfigError(f"{key}: {address} has no port to send to")
        out.append(
            Secondary(
                address.host, address.port, None if name is None else _key_name(key, str(name))
            )
        )
    return tuple(out)


@dataclass(frozen=True, slots=True)
class LiveGateway:
    """A Live gateway host: its public addresses (at least one), the port range its
    Live installations are reached on (`low`-`high`, inside the catalog's Live range:
    checked by the pool, which knows the catalog) and how many it holds at most
    (`capacity`, None: one per port). Text form: `name=N ipv4=A ipv6=A ports=LOW-HIGH
    capacity=C`, words in any order."""

    name: str
    ipv4: str | None = None
    ipv6: str | None = None
    low: int = 9000
    high: int = 9999
    capacity: int | None = None

    @property
    def size(self) -> int:
        """How many installations the gateway holds at most."""
        ports = self.high - self.low + 1
        return ports if self.capacity is None else min(ports, self.capacity)

    @property
    def ports_text(self) -> str:
        return f"{self.low}-{self.high}"


_GATEWAY_FIELDS = ("name", "ipv4", "ipv6", "ports", "capacity")


def _gateway_address(key: str, value: object, version: int) -> str | None:
    text = _address(key, value)
    if text and ipaddress.ip_address(text).version != version:
        raise ConfigError(f"{key}: {text!r} is not an IPv{version} address")
    return text or None


def _live_gateways(key: str, value: object) -> tuple[LiveGateway, ...]:
    """Live gateways: TOML tables (`[[live_gateways]]`: name, ipv4, ipv6, ports as
    "LOW-HIGH", capacity) or their text form (see `LiveGateway`); names are labels,
    each once."""
    out: list[LiveGateway] = []
    for item in _items(key, value):
        if isinstance(item, dict):
            unknown = set(item) - set(_GATEWAY_FIELDS)
            if unknown:
                raise ConfigError(f"{key}: unknown field(s) {', '.join(sorted(unknown))}")
            given: dict[str, object] = dict(item)
        else:
            given = dict(_fields(key, str(item), _GATEWAY_FIELDS))
        name = str(given.get("name", "")).strip().lower()
        where = f"{key} {name or '?'}"
        if not name or not all(c.isalnum() or c == "-" for c in name) or len(name) > 63:
            raise ConfigError(f"{key}: a gateway's name is 1-63 letters, digits and hyphens")
        if name in {g.name for g in out}:
            raise ConfigError(f"{key}: the gateway {name!r} is named twice")
        low_text, sep, high_text = str(given.get("ports", "9000-9999")).partition("-")
        if not sep:
            raise ConfigError(f"{where}: ports: expected LOW-HIGH, got {given['ports']!r}")
        low = _int(f"{where}: ports", low_text, 1, 65535)
        high = _int(f"{where}: ports", high_text, low, 65535)
        capacity = given.get("capacity")
        gateway = LiveGateway(
            name,
            _gateway_address(f"{where}: ipv4", given.get("ipv4", ""), 4),
            _gateway_address(f"{where}: ipv6", given.get("ipv6", ""), 6),
            low,
            high,
            None if capacity is None else _int(f"{where}: capacity", capacity, 1, 65535),
        )
        if gateway.ipv4 is None and gateway.ipv6 is None:
            raise ConfigError(f"{where}: a gateway needs a public address (ipv4, ipv6 or both)")
        out.append(gateway)
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


def setting(default: Any, parse: Parser) -> Any:
    """A field of `Settings`: its default and how a raw value becomes its type."""
    return field(default=default, metadata={"parse": parse})


def _keyed(parse: Callable[[str, object], Any]) -> Parser:
    """A parser from one that needs no zone: (where from, the raw value) -> the value."""
    return lambda key, value, _zone: parse(key, value)


def _path(_key: str, value: object) -> Path:
    return Path(str(value))


def _optional_path(_key: str, value: object) -> Path | None:
    """A path; empty text for none."""
    return Path(str(value)) if str(value).strip() else None


def _whole(low: int, high: int) -> Parser:
    return lambda key, value, _zone: _int(key, value, low, high)


def _number(low: float, high: float) -> Parser:
    return lambda key, value, _zone: _float(key, value, low, high)


_SECONDS_32 = _whole(0, 2**31 - 1)


@dataclass(frozen=True, slots=True)
class Settings:
    data: Path = setting(Path("var"), _keyed(_path))
    database: str = setting("", _keyed(_database))
    """Where the registry is kept: "" for the SQLite file in `data` (one machine), or a
    PostgreSQL URL (`postgresql://controparte@db.example.test/controparte`) for one
    database that several service nodes share. It may hold a password: show it with
    `redacted_database`."""
    zone: str = setting(DEFAULT_ZONE, lambda k, v, _z: _absolute(k, str(v), "."))
    """Parsed first: relative names of the other settings are taken under it."""
    dns: HostPort = setting(HostPort("127.0.0.1", 8053), _keyed(HostPort.parse))
    http: HostPort = setting(HostPort("127.0.0.1", 8080), _keyed(HostPort.parse))
    ttl: int = setting(60, _SECONDS_32)
    negative_ttl: int = setting(60, _SECONDS_32)
    ns: tuple[NameServer, ...] = setting((), _ns_list)
    soa_mname: str = setting("", lambda k, v, z: _absolute(k, str(v), z))
    soa_rname: str = setting("", lambda k, v, z: _absolute(k, str(v), z))
    soa_refresh: int = setting(3600, _SECONDS_32)
    soa_retry: int = setting(600, _SECONDS_32)
    soa_expire: int = setting(1_209_600, _SECONDS_32)
    allow_non_global: bool = setting(False, _keyed(_bool))
    edns_udp_size: int = setting(1232, _whole(512, 65535))
    tcp_idle_timeout: float = setting(10.0, _number(0.1, 3600))
    """Seconds a DNS TCP connection may wait for its next query, or take to send one
    or to read an answer, before the server closes it (RFC 7766 6.2.3)."""
    tcp_max_connections: int = setting(1024, _whole(1, 1_000_000))
    """DNS TCP connections open at once; more are closed at once. Lowered at start,
    with a warning, to what the file-descriptor limit leaves room for."""
    tcp_max_connections_per_client: int = setting(16, _whole(1, 1_000_000))
    """DNS TCP connections open at once from one client (an IPv4 address, an IPv6
    /64), so that one client cannot hold every slot."""
    rrl: str = setting(
        "auto",
        lambda k, v, _z: "auto" if str(v).strip().lower() == "auto" else ("off", "on")[_bool(k, v)],
    )
    """Response rate limiting of UDP answers (`dns/rrl.py`): "auto" (on unless `dns` is a
    loopback address), "on" or "off" (or any of `_bool`'s spellings)."""
    rrl_rate: int = setting(20, _whole(0, 1_000_000))
    """Answers (and NODATA) a second to one source prefix for one question (0: no limit)."""
    rrl_errors_rate: int = setting(10, _whole(0, 1_000_000))
    """NXDOMAIN, and error answers, a second to one source prefix, each kind together."""
    rrl_slip: int = setting(2, _whole(0, 10))
    """Every Nth limited answer leaves truncated (TC), the others are dropped (0: all)."""
    rrl_window: int = setting(15, _whole(1, 3600))
    """Seconds over which a source's rate is counted (how long a flood is remembered)."""
    rrl_ipv4_prefix: int = setting(24, _whole(1, 32))
    rrl_ipv6_prefix: int = setting(56, _whole(1, 128))
    rrl_table_size: int = setting(100_000, _whole(100, 100_000_000))
    """Buckets kept at most (idle ones are forgotten first)."""
    rrl_whitelist: tuple[str, ...] = setting((), _keyed(_networks))
    """Source networks whose answers are never limited."""
    journal_poll_interval: float = setting(0.02, _number(0.01, 60))
    """On SQLite, seconds between looks at the journal for changes other processes made
    (HTTP workers, a CLI, another server): the worst-case delay before DNS serves them.
    Each look is one indexed `SELECT max(seq)` on a read-only connection."""
    journal_check_interval: float = setting(1.0, _number(0.01, 3600))
    """On PostgreSQL, where every commit wakes the DNS followers of every node (LISTEN/
    NOTIFY), seconds between two safety reads of the journal all the same: the
    longest a change waits should a notification be lost, and about the largest
    `controparte_zone_snapshot_age_seconds` while the database answers."""
    dns_workers: int = setting(1, _whole(1, 64))
    http_workers: int = setting(1, _whole(1, 64))
    """HTTP processes on the same port (SO_REUSEPORT): the first is the main process
    (with DNS), each other one runs the HTTP app over services of its own."""
    http_max_body: int = setting(1_048_576, _whole(1, 2**31 - 1))
    """Bytes of a request body the HTTP server reads at most: a larger one (by its
    Content-Length, or counted as a chunked body arrives) is answered 413 before its
    route, so before authentication, and the connection is closed."""
    http_max_header_bytes: int = setting(16_384, _whole(1024, 1_048_576))
    """Bytes of a request head (request line and header fields) at most: 431 beyond."""
    http_max_headers: int = setting(100, _whole(1, 10_000))
    """Header fields of a request at most: 431 beyond."""
    http_header_timeout: float = setting(10.0, _number(0.1, 3600))
    """Seconds a connection has to send a request's whole head, from its first byte (on
    a new connection, from the connect): silence is closed, a partial head answered 408."""
    http_body_timeout: float = setting(30.0, _number(0.1, 3600))
    """Seconds a request's whole body may take to arrive, from the end of its head: 408."""
    http_keepalive_timeout: float = setting(5.0, _number(0.1, 3600))
    """Seconds an idle keep-alive connection is kept open after an answer."""
    http_max_connections: int = setting(10_000, _whole(1, 1_000_000))
    """HTTP connections one HTTP process holds at most (lowered to fit its file
    descriptor limit). At the limit a new connection takes the place of the one idle
    longest (no request in progress: silent, keep-alive or still sending its head);
    when every one is busy, it is answered 503 and closed."""
    admin_token: str = setting("", _keyed(_admin_token))
    trusted_proxies: tuple[str, ...] = setting((), _keyed(_networks))
    stale_after: float = setting(900.0, _number(1, 365 * 86400))
    heartbeat_interval: float = setting(300.0, _number(1, 86400))
    journal_keep_entries: int = setting(1_000_000, _whole(0, 2**31 - 1))
    """Journal entries kept for IXFR (and for DNS processes that fell behind); older ones
    are pruned, whole serials at a time. A secondary further behind gets a full
    transfer."""
    journal_keep_age: float = setting(7 * 86400.0, _number(0, 10 * 365 * 86400))
    """Seconds a journal entry is kept at most (whichever limit comes first)."""
    transfer_allow: tuple[TransferRule, ...] = setting((), _keyed(_transfer_rules))
    """Who may transfer the zone (AXFR, IXFR); nobody by default (REFUSED)."""
    notify: tuple[Secondary, ...] = setting((), _keyed(_secondaries))
    """Secondaries told of every new serial (RFC 1996 NOTIFY)."""
    notify_source: str = setting("", _keyed(_address))
    """The address NOTIFYs leave from ("": the system's choice): secondaries match it
    against their list of primaries."""
    probe_sources: tuple[str, ...] = setting((), _keyed(_addresses))
    """The public addresses the service's probes leave from (IPv4, IPv6; one per node
    and family when the nodes sit behind NAT): `controparte firewall` admits them where
    it limits inbound to the counterparts, and the probes report the one of the
    target's family as their `source`. Empty: the probes report the local address the
    host dials from, and `controparte firewall` notes that its inbound rules keep the
    probe out."""
    features: Path | None = setting(None, _keyed(_optional_path))
    """The feature catalog (TOML, the shape of the packaged `plan/features.toml`): the
    features, their topology and the Live settings. None: the packaged catalog."""
    live_gateways: tuple[LiveGateway, ...] = setting((), _keyed(_live_gateways))
    """The Live gateway hosts (`[[live_gateways]]`, see `LiveGateway`): a Live
    installation added without a port is given a free (gateway, port) of theirs, and
    DNS serves it at its gateway's addresses. None: Live installations keep the
    address and port they are given (within the catalog's Live range)."""
    live_quarantine: float = setting(3600.0, _number(0, 365 * 86400))
    """Seconds a (gateway, port) freed by a removal or a move stays out of the pool, so
    that a caller still holding the old placement does not reach the next tenant."""
    log_level: str = setting("info", _keyed(_choice("debug", "info", "warning", "error")))
    """The least severe log records `controparte serve` writes (every change of the
    registry is one `info` line; a refused change `debug`)."""
    log_format: str = setting("text", _keyed(_choice("text", "json")))
    """`text`: one line a record, its time in UTC; `json`: one JSON object a line."""
    ui_session_lifetime: float = setting(8 * 3600.0, _number(60, 30 * 86400))
    """Seconds a dashboard session lasts from its sign-in (`/ui`)."""
    ui_secure_cookie: bool = setting(False, _keyed(_bool))
    """Mark the dashboard's cookies Secure even when the request came over plain HTTP
    (a TLS proxy in front that is not a trusted proxy); over HTTPS they always are."""
    broker_https: HostPort = setting(HostPort("127.0.0.1", 8443), _keyed(HostPort.parse))
    """Where `controparte broker serve` listens, HTTPS (443 in production, one broker
    behind each start-live name)."""
    broker_cert: Path | None = setting(None, _keyed(_optional_path))
    """The broker's certificate chain (PEM), valid for the start-live names."""
    broker_key: Path | None = setting(None, _keyed(_optional_path))
    """The private key of `broker_cert` (PEM)."""
    broker_wake_command: str = setting("", _keyed(lambda _k, v: str(v).strip()))
    """The wake hook as a command (split into words as a shell would, run without one):
    the label is its last argument; docs/live.md has the contract."""
    broker_wake_url: str = setting("", _keyed(lambda _k, v: str(v).strip()))
    """The wake hook as a webhook: an http(s) URL that is POSTed the installation."""
    broker_wake_timeout: float = setting(30.0, _number(0.1, 600))
    """Seconds the wake hook is given; then the answer is `ready: false`."""
    broker_rate: int = setting(30, _whole(1, 1_000_000))
    """Start requests one caller may make to one broker a minute (429 beyond)."""


KEYS = tuple(f.name for f in fields(Settings))
"""Every setting's name (the TOML key; `CONTROPARTE_<NAME>` in the environment)."""


def settings_from(
    flags: Mapping[str, object | None],
    env: Mapping[str, str],
    file_values: Mapping[str, Any] | None = None,
    file_name: str = "config",
) -> Settings:
    """Merge the sources (flags > environment > the TOML file's values > defaults)
    into `Settings`. Pure. `file_name` names the file in error messages."""
    given = {k: v for k, v in flags.items() if v is not None}
    from_file = dict(file_values or {})
    unknown = set(from_file) - set(KEYS)
    if unknown:
        raise ConfigError(f"config: unknown key(s) in {file_name}: {', '.join(sorted(unknown))}")

    def raw(key: str) -> tuple[str, object] | None:
        if key in given:
            return f"--{key.replace('_', '-')}", given[key]
        env_key = ENV_PREFIX + key.upper()
        if env_key in env:
            return env_key, env[env_key]
        if key in from_file:
            return f"{file_name}:{key}", from_file[key]
        return None

    by_name = {f.name: f for f in fields(Settings)}
    values: dict[str, Any] = {}
    for name in ("zone", *(k for k in KEYS if k != "zone")):
        found = raw(name)
        if found is not None:
            zone = str(values.get("zone", DEFAULT_ZONE))
            values[name] = by_name[name].metadata["parse"](found[0], found[1], zone)
    if values.get("zone") == ".":
        raise ConfigError("zone: the root zone cannot be served")
    return _with_defaults(Settings(**values))


def load_settings(
    flags: Mapping[str, object | None] | None = None,
    env: Mapping[str, str] | None = None,
    config_file: Path | None = None,
) -> Settings:
    """The settings of this process: `settings_from` over `flags`, the environment
    (`env`, default the process's own) and the TOML file (`config_file`, else
    `CONTROPARTE_CONFIG`), which is read here."""
    env = os.environ if env is None else env
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
    return settings_from(flags or {}, env, from_file, str(path))


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
