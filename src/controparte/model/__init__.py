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
from controparte.model.zone import label_of

__all__ = [
    "Installation",
    "InstallationChange",
    "Kind",
    "Link",
    "label_of",
    "validate_code",
    "validate_feature_id",
    "validate_ipv4",
    "validate_ipv6",
    "validate_label",
    "validate_port",
]
