"""`ZoneConfig.from_settings`: the zone's own names, glue and reserved labels, computed
once for DNS, the zone file and the registry alike."""

from __future__ import annotations

from pathlib import Path

import dns.name
import pytest

from controparte.errors import ValidationError
from controparte.model import ZoneConfig
from controparte.service import Registry
from controparte.settings import load_settings
from controparte.store import open_store

Z = "bp.example.test."


def config(**flags: object) -> ZoneConfig:
    return ZoneConfig.from_settings(load_settings(flags={"zone": Z, **flags}, env={}))


@pytest.mark.parametrize(
    ("flags", "reserved", "glue"),
    [
        ({}, {"ns1", "hostmaster"}, {("ns1",): (("127.0.0.1",), ())}),
        (
            {"ns": "ns.example.net.", "soa_rname": "admin.example.net."},
            set(),
            {},
        ),
        (
            {"ns": "a.ns2=192.0.2.1,2001:db8::1;ns.example.net.=198.51.100.1"},
            {"ns2", "hostmaster"},
            {("a", "ns2"): (("192.0.2.1",), ("2001:db8::1",))},
        ),
        (
            {
                "ns": "NS1=192.0.2.53;ns1=192.0.2.54,192.0.2.53",
                "soa_mname": "Primary.bp.example.test.",
            },
            {"ns1", "primary", "hostmaster"},
            {("ns1",): (("192.0.2.53", "192.0.2.54"), ())},
        ),
        ({"ns": f"{Z}=192.0.2.1"}, {"hostmaster"}, {}),  # the apex itself: no glue
    ],
    ids=["default", "all outside", "deep glue", "listed twice", "apex"],
)
def test_reserved_labels_and_glue(
    flags: dict[str, object], reserved: set[str], glue: dict[tuple[str, ...], object]
) -> None:
    c = config(**flags)
    assert c.reserved_labels == reserved
    assert c.reserved == {label.encode() for label in reserved}
    assert {tuple(label.decode() for label in k): v for k, v in c.glue.items()} == glue


def test_a_name_server_listed_twice_is_one_ns_record() -> None:
    c = config(ns="ns1=192.0.2.53;ns.example.net.;ns1=192.0.2.54")
    assert c.ns_names == (dns.name.from_text(f"ns1.{Z}"), dns.name.from_text("ns.example.net."))


@pytest.mark.parametrize("ns", ["ns1=192.0.2.53;deep.ns2=192.0.2.54", "ns.example.net."])
def test_the_registry_refuses_exactly_the_reserved_labels(tmp_path: Path, ns: str) -> None:
    settings = load_settings(
        flags={"zone": Z, "ns": ns, "data": str(tmp_path), "allow_non_global": True}, env={}
    )
    reserved = ZoneConfig.from_settings(settings).reserved_labels
    store = open_store(tmp_path)
    try:
        registry = Registry(store, settings)
        for i, label in enumerate(sorted(reserved | {"ns1", "ns2", "hostmaster", "alpha"})):
            if label in reserved:
                with pytest.raises(ValidationError, match="reserved"):
                    registry.add(f"C-{i}", label)
            else:
                registry.add(f"C-{i}", label)
        assert {i.label for i in store.installations()} == (
            {"ns1", "ns2", "hostmaster", "alpha"} - reserved
        )
    finally:
        store.close()


def test_the_fingerprint_changes_with_what_the_apex_publishes() -> None:
    def fingerprint(**env: str) -> str:
        base = {"CONTROPARTE_NS": "ns1=192.0.2.53"}
        return ZoneConfig.from_settings(load_settings(env={**base, **env})).fingerprint()

    same = fingerprint()
    assert fingerprint() == same
    assert fingerprint(CONTROPARTE_TTL="61") != same
    assert fingerprint(CONTROPARTE_NS="ns1=192.0.2.54") != same
    assert fingerprint(CONTROPARTE_NS="ns1=192.0.2.53;ns2.example.test.") != same
    assert fingerprint(CONTROPARTE_SOA_RETRY="601") != same
    assert fingerprint(CONTROPARTE_EDNS_UDP_SIZE="4096") == same  # not published
