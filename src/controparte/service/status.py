"""What the service tells about an installation beyond its stored fields: whether it is
stale, and the public view (what DNS publishes anyway, never a secret).

Pure functions; every front end (HTTP API, CLI) uses them so they all agree.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from controparte.model import Installation
from controparte.model.installation import utcnow


def is_stale(inst: Installation, stale_after: float, now: datetime | None = None) -> bool:
    """True when the installation was last seen (by a heartbeat) more than `stale_after`
    seconds before `now`. An installation never seen is not stale: its address was set
    by hand (CLI, API, DynDNS2), and nothing expects it to beat."""
    if inst.last_seen is None:
        return False
    return (now or utcnow()) - inst.last_seen > timedelta(seconds=stale_after)


def fqdn(inst: Installation, zone: str) -> str:
    """`<label>.<zone>`, absolute (with the trailing dot)."""
    return f"{inst.label}.{zone}"


def public_view(
    inst: Installation, zone: str, stale_after: float, now: datetime | None = None
) -> dict[str, object]:
    """The resolution of one installation: code, label, fqdn, kind, ip, ipv6, port,
    last_seen (ISO 8601 or None) and stale. No credentials, no private port."""
    return {
        "code": inst.code,
        "label": inst.label,
        "fqdn": fqdn(inst, zone),
        "kind": inst.kind.value,
        "ip": inst.ipv4,
        "ipv6": inst.ipv6,
        "port": inst.port,
        "last_seen": None if inst.last_seen is None else inst.last_seen.isoformat(),
        "stale": is_stale(inst, stale_after, now),
    }
