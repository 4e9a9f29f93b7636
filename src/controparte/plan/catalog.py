"""The feature catalog and the Live settings, read from TOML (data, not code).

The packaged `features.toml` encodes the seed's table; an operator may point the
`features` setting at a file of the same shape. Loading validates every entry and
names what is wrong.
"""

from __future__ import annotations

import enum
import tomllib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from controparte.errors import ConfigError


class Topology(enum.StrEnum):
    SERVER_ASYNC = "server-async"
    SERVER_BOTH = "server-both"
    CLIENTS = "clients"


@dataclass(frozen=True, slots=True)
class Feature:
    id: str
    name: str
    topology: Topology

    @property
    def server_to_server(self) -> bool:
        return self.topology is not Topology.CLIENTS


@dataclass(frozen=True, slots=True)
class LiveSettings:
    port_low: int
    port_high: int
    start_live_port: int
    start_live_hosts: tuple[str, ...]

    def in_range(self, port: int | None) -> bool:
        return port is not None and self.port_low <= port <= self.port_high

    @property
    def range_text(self) -> str:
        return f"{self.port_low}-{self.port_high}"


@dataclass(frozen=True, slots=True)
class Catalog:
    live: LiveSettings
    features: dict[str, Feature]

    def feature(self, feature_id: str) -> Feature:
        try:
            return self.features[feature_id]
        except KeyError:
            known = ", ".join(sorted(self.features))
            raise ConfigError(f"feature: unknown feature {feature_id!r} (known: {known})") from None


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
    live = data.get("live")
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
    settings = LiveSettings(
        low,
        high,
        _port(f"{source}: live.start_live_port", live.get("start_live_port", 443)),
        tuple(h.lower().rstrip(".") for h in hosts),
    )
    features: dict[str, Feature] = {}
    table = data.get("features")
    if not isinstance(table, dict) or not table:
        raise ConfigError(f"{source}: a [features] table with at least one feature is required")
    for feature_id, entry in table.items():
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
    return Catalog(settings, features)


def load_catalog(path: Path | None = None) -> Catalog:
    """The operator's catalog at `path`, or the packaged one."""
    if path is None:
        text = resources.files("controparte.plan").joinpath("features.toml").read_text()
        return parse_catalog(text, "features.toml (packaged)")
    try:
        return parse_catalog(path.read_text(), str(path))
    except OSError as exc:
        raise ConfigError(f"features: cannot read {path}: {exc.strerror}") from None
