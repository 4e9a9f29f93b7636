"""One write rule: the same change of the same installation, made through the registry
(`Registry.update`) and through a heartbeat (`HeartbeatWriter`), has the same outcome,
because both are checked and written by `Registry.write`.

A rule refuses new claims and evicts nothing: an installation stored before a rule (a
Live one under a wider Live range, one whose label a name server took later) keeps
taking changes of its other fields on every path, a heartbeat reporting the port it has
included (issue 7); a new port outside the Live range is refused on every path."""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest

from controparte.errors import ValidationError
from controparte.model import Installation, InstallationChange, Kind
from controparte.plan.catalog import LiveSettings
from controparte.service.heartbeat import Beat, HeartbeatWriter
from controparte.service.registry import Registry
from controparte.settings import load_settings
from controparte.store import Origin, open_store

LIVE = LiveSettings(9000, 9999, 8443, ("broker.example.test",))
"""The Live range now; the stored installations below predate it (or a narrower one)."""
ZONE = "bp.controparte.test."
NS = f"ns1.{ZONE}=192.0.2.53;ns9.{ZONE}=192.0.2.54"  # ns9 arrived after N-9 took "ns9"
CREATED = datetime(2024, 1, 1, tzinfo=UTC)


def stored(
    code: str, label: str, kind: Kind = Kind.LIVE, ipv4: str | None = None, port: int | None = None
) -> Installation:
    return Installation(code, label, kind, ipv4, port=port, created=CREATED, updated=CREATED)


@dataclass(frozen=True)
class Case:
    name: str
    before: Installation  # as stored, written past the rules of today
    source: str  # the new address: the heartbeat's source, the update's ip or ipv6
    port: int
    refused: str | None  # the field of the ValidationError; None: accepted
    allow_non_global: bool = True


CASES = [
    Case(
        "issue 7: Live under a wider range, the port it has, a new address",
        stored("L-1", "live1", ipv4="192.0.2.1", port=4443),
        "198.51.100.7",
        4443,
        None,
    ),
    Case(
        "Live under a wider range, the port it has, from IPv6",
        stored("L-1", "live1", ipv4="192.0.2.1", port=4443),
        "2001:db8::7",
        4443,
        None,
    ),
    Case(
        "Live under a wider range, a new port outside the range",
        stored("L-1", "live1", ipv4="192.0.2.1", port=4443),
        "192.0.2.1",
        4444,
        "port",
    ),
    Case(
        "Live under a wider range, a new port inside the range",
        stored("L-1", "live1", ipv4="192.0.2.1", port=4443),
        "192.0.2.1",
        9443,
        None,
    ),
    Case(
        "Live without a port yet, a port outside the range",
        stored("L-1", "live1"),
        "192.0.2.1",
        4443,
        "port",
    ),
    Case(
        "Live without a port yet, a port inside the range",
        stored("L-1", "live1"),
        "192.0.2.1",
        9000,
        None,
    ),
    Case(
        "on-premises: any port",
        stored("O-1", "onprem1", Kind.ONPREM, ipv4="192.0.2.1", port=4443),
        "192.0.2.2",
        5555,
        None,
    ),
    Case(
        "a label reserved after it was taken: a new address",
        stored("N-9", "ns9", Kind.ONPREM, ipv4="192.0.2.1", port=4443),
        "198.51.100.9",
        4443,
        None,
    ),
    Case(
        "an address that may not be published",
        stored("O-1", "onprem1", Kind.ONPREM, ipv4="8.8.8.8", port=4443),
        "10.1.2.3",
        4443,
        "ip",
        allow_non_global=False,
    ),
    Case(
        "nothing new",
        stored("L-1", "live1", ipv4="192.0.2.1", port=4443),
        "192.0.2.1",
        4443,
        None,
    ),
]

Outcome = tuple[str | None, Installation]
"""(the field refused or None, the installation as stored afterwards)."""
MakeRegistry = Callable[[Case, str], Registry]


@pytest.fixture
def make_registry(tmp_path: Path) -> Iterator[MakeRegistry]:
    opened: list[Registry] = []

    def make(case: Case, name: str) -> Registry:
        env = {
            "CONTROPARTE_DATA": str(tmp_path / name),
            "CONTROPARTE_ZONE": ZONE,
            "CONTROPARTE_NS": NS,
            "CONTROPARTE_ALLOW_NON_GLOBAL": "1" if case.allow_non_global else "0",
        }
        settings = load_settings(env=env)
        store = open_store(settings.data)
        with store.transaction(Origin(via="test")) as tx:
            tx.insert(case.before)
        registry = Registry(store, settings, live=LIVE)
        opened.append(registry)
        return registry

    yield make
    for registry in opened:
        registry.store.close()


def through_update(registry: Registry, case: Case) -> Outcome:
    v6 = ipaddress.ip_address(case.source).version == 6
    change = InstallationChange(
        ipv4=None if v6 else case.source, ipv6=case.source if v6 else None, port=case.port
    )
    refused = None
    try:
        registry.update(case.before.code, change)
    except ValidationError as exc:
        refused = exc.field
    return refused, registry.get(case.before.code)


def through_heartbeat(registry: Registry, case: Case) -> Outcome:
    writer = HeartbeatWriter(registry)
    refused = None
    try:
        writer.submit(Beat(case.before.code, case.source, case.port)).result(5)
    except ValidationError as exc:
        refused = exc.field
    finally:
        writer.close()
    return refused, registry.get(case.before.code)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_both_paths_decide_alike(case: Case, make_registry: MakeRegistry) -> None:
    by_update = through_update(make_registry(case, "update"), case)
    by_beat = through_heartbeat(make_registry(case, "heartbeat"), case)
    assert by_update[0] == by_beat[0] == case.refused
    if case.refused is not None:  # nothing of a refused change is stored, not even last-seen
        assert by_update[1] == by_beat[1] == case.before
    else:
        assert by_update[1].dns_view() == by_beat[1].dns_view()
        assert by_update[1].kind == by_beat[1].kind == case.before.kind
        assert by_beat[1].last_seen is not None
        assert by_beat[1].port == case.port


def test_a_new_installation_is_held_to_every_rule(make_registry: MakeRegistry) -> None:
    registry = make_registry(CASES[0], "add")
    with pytest.raises(ValidationError, match="Live range"):
        registry.add("L-2", "live2", kind="live", port=4443)
    with pytest.raises(ValidationError, match="reserved"):
        registry.add("N-1", "ns1")
    assert [i.code for i in registry.list()] == ["L-1"]
