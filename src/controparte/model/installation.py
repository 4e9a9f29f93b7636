"""The installation: its identity, its DNS label and how the world reaches it.

Every value is checked once, here, at the edge; after construction an
`Installation` is known valid (labels lower-cased, addresses normalised).
"""

from __future__ import annotations

import enum
import ipaddress
import re
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

from controparte.errors import ValidationError
from controparte.model.zone import DnsRecord

CODE_RE = re.compile(r"[A-Za-z0-9._-]{1,64}")
LABEL_RE = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")


class Kind(enum.StrEnum):
    """Where the installation runs: on the customer's premises or in the Live cloud."""

    ONPREM = "onprem"
    LIVE = "live"

    @classmethod
    def parse(cls, value: str) -> Kind:
        try:
            return cls(value.strip().lower())
        except ValueError:
            raise ValidationError("kind", "must be 'onprem' or 'live'") from None


def validate_code(code: str) -> str:
    """An installation code: 1-64 characters of A-Z a-z 0-9 . _ - (kept as given)."""
    if not isinstance(code, str) or not CODE_RE.fullmatch(code):
        raise ValidationError("code", "must be 1-64 characters of A-Z, a-z, 0-9, '.', '_', '-'")
    return code


def validate_label(label: str) -> str:
    """A DNS label (the DOMINIO): 1-63 letters, digits and hyphens, no hyphen at either
    end. Returned lower-cased: labels are unique case-insensitively."""
    if not isinstance(label, str):
        raise ValidationError("label", "must be a string")
    lowered = label.lower()
    if not 1 <= len(lowered) <= 63:
        raise ValidationError("label", "must be 1-63 characters long")
    if not LABEL_RE.fullmatch(lowered):
        raise ValidationError(
            "label",
            "must be letters, digits and hyphens only, not starting or ending with a hyphen",
        )
    return lowered


def validate_port(port: int | str) -> int:
    """A public TCP port, 1-65535."""
    try:
        value = int(port)
    except (TypeError, ValueError):
        raise ValidationError("port", "must be a whole number from 1 to 65535") from None
    if not 1 <= value <= 65535:
        raise ValidationError("port", "must be a whole number from 1 to 65535")
    return value


def _check_global(
    field_name: str, addr: ipaddress.IPv4Address | ipaddress.IPv6Address, allow_non_global: bool
) -> None:
    if addr.is_multicast or addr.is_unspecified:
        raise ValidationError(field_name, f"{addr} is not a unicast address")
    if not allow_non_global and not addr.is_global:
        raise ValidationError(
            field_name,
            f"{addr} is not a global unicast address (private, loopback, link-local and "
            "documentation ranges need the setting allow_non_global)",
        )


def validate_ipv4(value: str, *, allow_non_global: bool = False) -> str:
    """A public IPv4 address in dotted-quad form."""
    try:
        addr = ipaddress.IPv4Address(value.strip())
    except (ipaddress.AddressValueError, AttributeError):
        raise ValidationError("ip", f"{value!r} is not an IPv4 address") from None
    _check_global("ip", addr, allow_non_global)
    return str(addr)


def validate_ipv6(value: str, *, allow_non_global: bool = False) -> str:
    """A public IPv6 address, returned in its compressed canonical form."""
    try:
        addr = ipaddress.IPv6Address(value.strip())
    except (ipaddress.AddressValueError, AttributeError):
        raise ValidationError("ipv6", f"{value!r} is not an IPv6 address") from None
    if addr.ipv4_mapped is not None:
        raise ValidationError("ipv6", f"{value!r} is an IPv4-mapped address; use ip")
    _check_global("ipv6", addr, allow_non_global)
    return str(addr)


def utcnow() -> datetime:
    """Now, in UTC, to the millisecond (what storage keeps)."""
    now = datetime.now(UTC)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


@dataclass(frozen=True, slots=True)
class Installation:
    """One registered installation. `port` is the public port (what the outside world
    dials, after NAT), not the one MxServer listens on."""

    code: str
    label: str
    kind: Kind = Kind.ONPREM
    ipv4: str | None = None
    ipv6: str | None = None
    port: int | None = None
    created: datetime = field(default_factory=utcnow)
    updated: datetime = field(default_factory=utcnow)
    last_seen: datetime | None = None
    private_port: int | None = None
    """The port MxServer listens on behind NAT, as its agent reports it (not served)."""
    agent_version: str | None = None
    gateway: str | None = None
    """The Live gateway a Live installation is placed on (`service/livepool.py`): then
    its addresses are the gateway's and its port the one allocated there."""

    @classmethod
    def create(
        cls,
        code: str,
        label: str,
        *,
        kind: Kind | str = Kind.ONPREM,
        ipv4: str | None = None,
        ipv6: str | None = None,
        port: int | str | None = None,
        allow_non_global: bool = False,
        now: datetime | None = None,
    ) -> Installation:
        """Validate every field and build the value (the only way in from outside)."""
        stamp = now or utcnow()
        return cls(
            code=validate_code(code),
            label=validate_label(label),
            kind=kind if isinstance(kind, Kind) else Kind.parse(kind),
            ipv4=None
            if ipv4 in (None, "")
            else validate_ipv4(ipv4, allow_non_global=allow_non_global),
            ipv6=None
            if ipv6 in (None, "")
            else validate_ipv6(ipv6, allow_non_global=allow_non_global),
            port=None if port in (None, "") else validate_port(port),
            created=stamp,
            updated=stamp,
        )

    def with_changes(
        self,
        change: InstallationChange,
        *,
        allow_non_global: bool = False,
        now: datetime | None = None,
    ) -> Installation:
        """A copy with `change` applied and validated; `updated` moves only when
        something changed."""
        values: dict[str, object] = {}
        if change.label is not None:
            values["label"] = validate_label(change.label)
        if change.kind is not None:
            values["kind"] = Kind.parse(change.kind)
        if change.ipv4 is not None:
            values["ipv4"] = (
                None
                if change.ipv4 == ""
                else validate_ipv4(change.ipv4, allow_non_global=allow_non_global)
            )
        if change.ipv6 is not None:
            values["ipv6"] = (
                None
                if change.ipv6 == ""
                else validate_ipv6(change.ipv6, allow_non_global=allow_non_global)
            )
        if change.port is not None:
            values["port"] = None if change.port == "" else validate_port(change.port)
        candidate = replace(self, **values)  # type: ignore[arg-type]
        if candidate == self:
            return self
        return replace(candidate, updated=now or utcnow())

    def dns_view(self) -> DnsRecord:
        """What DNS serves for this installation."""
        return DnsRecord(self.label, self.ipv4, self.ipv6, self.port)

    def to_dict(self) -> dict[str, object]:
        return {
            "code": self.code,
            "label": self.label,
            "kind": self.kind.value,
            "ip": self.ipv4,
            "ipv6": self.ipv6,
            "port": self.port,
            "created": self.created.isoformat(),
            "updated": self.updated.isoformat(),
            "last_seen": None if self.last_seen is None else self.last_seen.isoformat(),
            "private_port": self.private_port,
            "agent_version": self.agent_version,
            "gateway": self.gateway,
        }


@dataclass(frozen=True, slots=True)
class InstallationChange:
    """A partial update. None leaves a field as it is; "" clears an optional one."""

    label: str | None = None
    kind: str | None = None
    ipv4: str | None = None
    ipv6: str | None = None
    port: int | str | None = None

    def is_empty(self) -> bool:
        return all(v is None for v in (self.label, self.kind, self.ipv4, self.ipv6, self.port))
