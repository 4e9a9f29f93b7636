"""Pure domain values and their rules. No I/O."""

from controparte.model.installation import (
    Installation,
    InstallationChange,
    Kind,
    validate_code,
    validate_ipv4,
    validate_ipv6,
    validate_label,
    validate_port,
)
from controparte.model.link import Link, validate_feature_id
from controparte.model.zone import SRV_SERVICE, DnsRecord, ZoneConfig, label_of

__all__ = [
    "SRV_SERVICE",
    "DnsRecord",
    "Installation",
    "InstallationChange",
    "Kind",
    "Link",
    "ZoneConfig",
    "label_of",
    "validate_code",
    "validate_feature_id",
    "validate_ipv4",
    "validate_ipv6",
    "validate_label",
    "validate_port",
]
