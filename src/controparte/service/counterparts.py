"""An installation's counterparts: every installation linked to it, either direction,
with the links between the two and what `doctor` needs to know of each.

Contracts:
- `counterparts(registry, inst)`: one `Counterpart` per installation linked to `inst`,
  caller or callee, in the order of their codes, each with every link between the two
  (as the store lists them).
- `linked_counterpart(registry, inst, name)`: the counterpart `name` (code, label or
  `<label>.<zone>`) of `inst`; NotFoundError when `name` is no installation,
  ForbiddenError when it is not linked to `inst` (what only linked installations may
  ask of each other stops there).
- `view(counterpart, zone, stale_after)`: the registry's view of the counterpart as the
  `/v1/installations/{code}/counterparts` route answers it: the public view
  (`service/status.py`) plus what the doctor needs and DNS does not publish (the port
  MxServer listens on, when it was last changed, the agent's version, the service's
  `stale_after`) and the links.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from controparte.errors import ForbiddenError
from controparte.model import Installation, Link
from controparte.service.registry import Registry
from controparte.service.status import public_view


@dataclass(frozen=True, slots=True)
class Counterpart:
    """An installation linked to another, and every link between the two."""

    installation: Installation
    links: tuple[Link, ...]


def other_end(code: str, link: Link) -> str:
    """The code at the other end of `link` from `code` (compared without case)."""
    return link.b if link.a.lower() == code.lower() else link.a


def group_links(code: str, links: Sequence[Link]) -> dict[str, tuple[Link, ...]]:
    """The links of `code` by the code at their other end (as the first link names it),
    in the order of those codes (without case). Links that do not involve `code` are
    left out. Pure."""
    grouped: dict[str, list[Link]] = {}
    names: dict[str, str] = {}
    for link in links:
        if not link.involves(code):
            continue
        other = other_end(code, link)
        names.setdefault(other.lower(), other)
        grouped.setdefault(other.lower(), []).append(link)
    return {names[key]: tuple(grouped[key]) for key in sorted(grouped)}


def counterparts(registry: Registry, inst: Installation) -> list[Counterpart]:
    """Every installation linked to `inst` (see the module's contract)."""
    found = group_links(inst.code, registry.store.links(inst.code))
    return [
        Counterpart(other, links)
        for other_code, links in found.items()
        if (other := registry.store.get(other_code)) is not None
    ]


def linked_counterpart(registry: Registry, inst: Installation, name: str) -> Counterpart:
    """The installation `name` (code, label or `<label>.<zone>`), linked to `inst`."""
    other = registry.find(name)
    links = group_links(inst.code, registry.store.links(inst.code))
    for other_code, between in links.items():
        if other_code.lower() == other.code.lower():
            return Counterpart(other, between)
    raise ForbiddenError(
        f"installation {other.code!r} is not linked to {inst.code!r}: only the"
        " installations linked to it (controparte link add) are its counterparts"
    )


def view(
    counterpart: Counterpart, zone: str, stale_after: float, now: datetime | None = None
) -> dict[str, object]:
    """The counterpart as the API shows it to the installation it is linked to: the
    public view, with private_port, gateway (the Live pool's, or None), updated,
    agent_version, stale_after and links [{feature, a, b}]."""
    inst = counterpart.installation
    return {
        **public_view(inst, zone, stale_after, now),
        "private_port": inst.private_port,
        "gateway": inst.gateway,
        "updated": inst.updated.isoformat(),
        "agent_version": inst.agent_version,
        "stale_after": stale_after,
        "links": [{"feature": ln.feature, "a": ln.a, "b": ln.b} for ln in counterpart.links],
    }
