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

__all__ = [
    "Installation",
    "InstallationChange",
    "Kind",
    "validate_code",
    "validate_ipv4",
    "validate_ipv6",
    "validate_label",
    "validate_port",
]
