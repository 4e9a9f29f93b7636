"""The feature catalog and the Live settings, read from TOML (data, not code).

The packaged `features.toml` encodes the seed's table; an operator may point the
`features` setting at a file of the same shape. Loading validates every entry and
names what is wrong.
"""

from __future__ import annotations

import enum
import functools
import re
import tomllib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from controparte.errors import ConfigError, ValidationError
from controparte.model import Installation, Kind
from controparte.model.link import FEATURE_ID_RE


class Topology(enum.StrEnum):
    """Who connects to whom for a feature (see `features.toml`)."""

    SERVER_ASYNC = "server-async"
    SERVER_BOTH = "server-both"
    CLIENTS = "clients"


class Needed(enum.StrEnum):
    """How many of a set of destinations a feature needs (`live.start_live_hosts_needed`):
    any one of them (they are alternatives: the Live launcher fails over from one to the
    next) or every one."""

    ANY_OF = "any-of"
    ALL_OF = "all-of"


@dataclass(frozen=True, slots=True)
class Feature:
    """One feature of the catalog: its id (as links name it), name and topology."""

    id: str
    name: str
    topology: Topology

    @property
    def server_to_server(self) -> bool:
        return self.topology is not Topology.CLIENTS


@dataclass(frozen=True, slots=True)
class LiveSettings:
    """The catalog's `[live]` table: the Live gateways' port range and the start-live
    broker (its port, its host names, and whether any one of them or all are needed)."""

    port_low: int
    port_high: int
    start_live_port: int
    start_live_hosts: tuple[str, ...]
    start_live_hosts_needed: Needed = Needed.ANY_OF

    def in_range(self, port: int | None) -> bool:
        return port is not None and self.port_low <= port <= self.port_high

    @property
    def range_text(self) -> str:
        return f"{self.port_low}-{self.port_high}"

    def check(self, inst: Installation) -> None:
        """Refuse (ValidationError on the field `port`, naming the range) a Live
        installation whose public port lies outside the Live range: Live installations
        are reached through the Live gateways on a port of that range. A Live
        installation without a port yet, and any non-Live one, pass."""
        if inst.kind is Kind.LIVE and inst.port is not None and not self.in_range(inst.port):
            raise ValidationError(
                "port",
                f"{inst.port} is outside the Live range {self.range_text}: a Live"
                f" installation ({inst.code}) must have its public port in {self.range_text}",
            )


@dataclass(frozen=True, slots=True)
class Catalog:
    """The Live settings and the features by id, as loaded and validated."""

    live: LiveSettings
    features: dict[str, Feature]

    def feature(self, feature_id: str) -> Feature:
        """The feature `feature_id`; a ValidationError naming the field `feature` and the
        known ids when the catalog has no such feature (the id comes from a user)."""
        try:
            return self.features[feature_id]
        except KeyError:
            known = ", ".join(sorted(self.features))
            raise ValidationError(
                "feature", f"unknown feature {feature_id!r} (known: {known})"
            ) from None


_HOST_RE = re.compile(
    r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)*"
)
"""A host name (the start-live hosts): it is written into firewall scripts."""


def _port(where: str, value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= 65535:
        raise ConfigError(f"{where}: must be a port number 1-65535, got {value!r}")
    return value


def parse_catalog(text: str, source: str = "features") -> Catalog:
    """A catalog from TOML text; `source` names it in error messages."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source}: not valid TOML: {exc}") from None
    return Catalog(
        _live_settings(data.get("live"), source), _features(data.get("features"), source)
    )


def _live_settings(live: Any, source: str) -> LiveSettings:
    """The `[live]` table: the Live port range and the start-live hosts and port, and
    which of those hosts are needed (default any one)."""
    if not isinstance(live, dict):
        raise ConfigError(f"{source}: a [live] table is required")
    port_range = live.get("port_range")
    if not isinstance(port_range, list) or len(port_range) != 2:
        raise ConfigError(f"{source}: live.port_range must be [low, high]")
    low = _port(f"{source}: live.port_range", port_range[0])
    high = _port(f"{source}: live.port_range", port_range[1])
    if low > high:
        raise ConfigError(f"{source}: live.port_range must be [low, high] with low <= high")
    hosts = live.get("start_live_hosts")
    if not isinstance(hosts, list) or not hosts or not all(isinstance(h, str) for h in hosts):
        raise ConfigError(f"{source}: live.start_live_hosts must be a list of host names")
    for host in hosts:
        if len(host) > 253 or not _HOST_RE.fullmatch(host.lower().rstrip(".")):
            raise ConfigError(f"{source}: live.start_live_hosts: {host!r} is not a host name")
    needed = live.get("start_live_hosts_needed", Needed.ANY_OF.value)
    if needed not in tuple(n.value for n in Needed):
        raise ConfigError(
            f"{source}: live.start_live_hosts_needed must be "
            + " or ".join(f'"{n.value}"' for n in Needed)
            + f", got {needed!r}"
        )
    return LiveSettings(
        low,
        high,
        _port(f"{source}: live.start_live_port", live.get("start_live_port", 443)),
        tuple(h.lower().rstrip(".") for h in hosts),
        Needed(needed),
    )


def _features(table: Any, source: str) -> dict[str, Feature]:
    """The `[features]` table: each feature's id, name and topology."""
    if not isinstance(table, dict) or not table:
        raise ConfigError(f"{source}: a [features] table with at least one feature is required")
    features: dict[str, Feature] = {}
    for feature_id, entry in table.items():
        if not FEATURE_ID_RE.fullmatch(feature_id):
            raise ConfigError(
                f"{source}: features.{feature_id}: a feature id is 1-64 of a-z, 0-9 and '-'"
                " (not at either end)"
            )
        if not isinstance(entry, dict):
            raise ConfigError(f"{source}: features.{feature_id} must be a table")
        try:
            topology = Topology(str(entry.get("topology")))
        except ValueError:
            raise ConfigError(
                f"{source}: features.{feature_id}.topology must be one of "
                + ", ".join(t.value for t in Topology)
            ) from None
        features[feature_id] = Feature(feature_id, str(entry.get("name", feature_id)), topology)
    return features


@functools.cache
def packaged_catalog() -> Catalog:
    """The catalog packaged with controparte (the seed's table), read once per process."""
    text = resources.files("controparte.plan").joinpath("features.toml").read_text()
    return parse_catalog(text, "features.toml (packaged)")


def load_catalog(path: Path | None = None) -> Catalog:
    """The operator's catalog at `path`, or the packaged one. A ConfigError that names
    the setting `features` (and the file) when it cannot be read or is malformed."""
    if path is None:
        return packaged_catalog()
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"features: cannot read {path}: {exc.strerror}") from None
    return parse_catalog(text, f"features ({path})")
