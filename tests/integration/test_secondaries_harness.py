"""The secondaries harness (`tests/secondaries.py`) proves itself against a primary that
already serves transfers: Knot (`knotd`), serving the zone file controparte exports
(`controparte zone export`'s renderer over a registry this test changes), NOTIFYing real
NSD, Knot and BIND secondaries, everything signed with one TSIG key.

Each secondary gets the whole zone; a change (a new zone file with a higher serial and
`knotc zone-reload`) reaches all of them by NOTIFY alone; a secondary stopped and
started again serves its zone at once and catches up on `refresh`; a primary whose key
changed is refused and every secondary keeps serving the zone it had; `kill` and `stop`
leave no process behind. The zones are small: these tests are quick
(`pytest -m secondaries`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import dns.exception
import pytest

from controparte.model.installation import InstallationChange
from controparte.service import Registry
from controparte.settings import Settings, load_settings
from controparte.store import open_store
from tests.processes import HOST, alive
from tests.secondaries import (
    SECONDARIES,
    KnotPrimary,
    KnotSecondary,
    Rr,
    Secondary,
    TsigKey,
    add_installations,
    axfr_records,
    axfr_wire,
    exported,
    wire_as_text,
    zone_file_records,
)

pytestmark = [pytest.mark.integration, pytest.mark.secondaries]

ZONE = "xfr.controparte.test."
KEY_NAME = f"transfer.{ZONE}"
INSTALLATIONS = 40
CHANGE_TIMEOUT = 15.0  # NOTIFY -> served, at most (NSD ~0.1 s, Knot up to ~1 s)


@dataclass
class Lab:
    """A registry, the zone file exported from it, Knot serving that file as the
    primary, and one secondary of each kind."""

    registry: Registry
    settings: Settings
    zonefile: Path
    primary: KnotPrimary
    secondaries: dict[str, Secondary]

    def publish(self) -> tuple[int, set[Rr]]:
        """Export the registry's zone to the primary's file; its serial and records."""
        serial, text = exported(self.registry.store, self.settings)
        self.zonefile.write_text(text, encoding="ascii")
        return serial, zone_file_records(text, ZONE)

    def first_transfer(self) -> tuple[int, set[Rr]]:
        """Publish, start everything, wait until every secondary serves the zone."""
        published = self.publish()
        self.primary.start()
        for secondary in self.secondaries.values():
            secondary.start()
        for secondary in self.secondaries.values():
            secondary.wait_serial(published[0], timeout=CHANGE_TIMEOUT)
        return published

    def change(self, round_: int) -> None:
        """One of every kind of change, each its own serial: an address, a port, a label
        renamed, an installation removed, one added."""
        registry = self.registry
        registry.update("inst-1", InstallationChange(ipv4=f"198.51.100.{round_}"))
        registry.update("inst-2", InstallationChange(port=5000 + round_))
        registry.update("inst-3", InstallationChange(label=f"renamed-{round_}"))
        registry.remove(f"inst-{10 + round_}")
        registry.add(f"NEW-{round_}", f"new-{round_}", ipv4="203.0.113.7", port=7000 + round_)


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[Lab]:
    settings = load_settings(
        env={
            "CONTROPARTE_DATA": str(tmp_path / "data"),
            "CONTROPARTE_ZONE": ZONE,
            "CONTROPARTE_NS": f"ns1={HOST}",
            "CONTROPARTE_ALLOW_NON_GLOBAL": "1",
        }
    )
    key = TsigKey.generate(KEY_NAME)
    store = open_store(settings.data)
    zonefile = tmp_path / "primary.zone"
    primary = KnotPrimary(tmp_path / "primary", ZONE, zonefile, key)
    secondaries = {
        kind: make(tmp_path / kind, ZONE, (primary.host, primary.port), key)
        for kind, make in SECONDARIES.items()
    }
    primary.notify = [(s.host, s.port) for s in secondaries.values()]
    with contextlib.ExitStack() as stack:
        stack.callback(store.close)
        stack.callback(primary.stop)
        for secondary in secondaries.values():
            stack.callback(secondary.stop)
        registry = Registry(store, settings)
        add_installations(registry, "inst", INSTALLATIONS)
        yield Lab(registry, settings, zonefile, primary, secondaries)


def test_every_secondary_transfers_the_whole_zone(lab: Lab) -> None:
    serial, expected = lab.first_transfer()
    assert len(expected) > 2 * INSTALLATIONS
    primary = lab.primary
    assert axfr_records(primary.host, primary.port, ZONE, primary.key) == expected
    for kind, secondary in lab.secondaries.items():
        assert secondary.serial() == serial, kind
        assert secondary.axfr() == expected, kind
        # The fast reader (for large zones) reads the same records.
        assert wire_as_text(secondary.axfr_wire()) == expected, kind
    assert wire_as_text(axfr_wire(primary.host, primary.port, ZONE, primary.key)) == expected


def test_a_change_reaches_every_secondary_by_notify_alone(lab: Lab) -> None:
    first, _ = lab.first_transfer()
    for round_ in (1, 2):
        lab.change(round_)
        serial, expected = lab.publish()
        assert serial > first
        lab.primary.reload()
        for kind, secondary in lab.secondaries.items():
            secondary.wait_serial(serial, timeout=CHANGE_TIMEOUT)
            assert secondary.axfr() == expected, kind
        first = serial
    knot = lab.secondaries["knot"]
    assert isinstance(knot, KnotSecondary)
    knot.wait_log(r"IXFR, incoming, .*finished", count=2)  # incremental, each time


def test_a_restarted_secondary_serves_its_zone_and_refresh_catches_up(lab: Lab) -> None:
    before, old = lab.first_transfer()
    for secondary in lab.secondaries.values():
        secondary.stop()
    lab.change(1)
    serial, expected = lab.publish()
    lab.primary.reload()  # its NOTIFYs find nobody
    for kind, secondary in lab.secondaries.items():
        secondary.start()
        # Its zone, kept over the restart (it asks the primary for news only on a
        # NOTIFY, a refresh, or when the SOA refresh interval, an hour, runs out).
        assert secondary.wait_zone() == before, kind
        assert secondary.axfr() == old, kind
        secondary.refresh()
        secondary.wait_serial(serial, timeout=CHANGE_TIMEOUT)
        assert secondary.axfr() == expected, kind
        done = len(secondary.wait_log(secondary.transferred))
        secondary.retransfer()
        secondary.wait_log(secondary.transferred, count=done + 1, timeout=CHANGE_TIMEOUT)
        assert secondary.axfr() == expected, kind


def test_a_wrong_key_is_refused_and_every_secondary_keeps_its_zone(lab: Lab) -> None:
    before, old = lab.first_transfer()
    primary = lab.primary
    primary.rekey(TsigKey.generate(KEY_NAME))  # same name, another secret
    lab.change(1)
    serial, _ = lab.publish()
    primary.reload()
    # Every secondary answers the NOTIFY signed with the new secret BADSIG.
    primary.wait_log(r"notify, outgoing, .*BADSIG", count=len(lab.secondaries))
    for kind, secondary in lab.secondaries.items():
        secondary.refresh()  # signed with the old secret: the primary refuses
        secondary.wait_log(secondary.refresh_failed, timeout=CHANGE_TIMEOUT)
        assert secondary.serial() == before, kind
        assert secondary.axfr() == old, kind
    assert serial != before
    with pytest.raises(dns.exception.DNSException):
        axfr_records(primary.host, primary.port, ZONE, None)  # unsigned
    with pytest.raises(dns.exception.DNSException):
        axfr_wire(primary.host, primary.port, ZONE, None)
    with pytest.raises(dns.exception.DNSException):
        axfr_records(primary.host, primary.port, ZONE, lab.secondaries["nsd"].key)


@pytest.mark.parametrize("kind", sorted(SECONDARIES))
def test_kill_and_stop_leave_no_process(tmp_path: Path, kind: str) -> None:
    nowhere = (HOST, 9)  # no primary: nothing to transfer
    key = TsigKey.generate(KEY_NAME)
    secondary = SECONDARIES[kind](tmp_path / "a", ZONE, nowhere, key)
    secondary.start()
    pids = secondary.pids()
    secondary.kill()
    assert not any(alive(pid) for pid in pids), pids
    assert secondary.serial() is None  # nothing answers on its port
    secondary.start()  # again, in the same directory
    pids = secondary.pids()
    secondary.pause()  # down: stopped with SIGSTOP
    secondary.stop()
    assert not any(alive(pid) for pid in pids), pids
