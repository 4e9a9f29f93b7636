"""`Zone.rrsets`: every RRset of the zone, one at a time, in canonical order (SOA, the
apex NS, glue, then each installation by label: A, AAAA, SRV), from the same rules as
the lookup (`Zone.rrsets_at`)."""

from __future__ import annotations

import inspect

import dns.name
import dns.rdatatype
import dns.rrset
from hypothesis import HealthCheck, given, settings

from controparte.dns.zone import SRV_LABELS, Zone, ZoneRRset
from controparte.model import DnsRecord, ZoneConfig
from controparte.settings import load_settings
from tests.property.test_fastpath import zones

Z = "bp.example.test."
ORIGIN = dns.name.from_text(Z)
CONFIG = ZoneConfig.from_settings(
    load_settings(
        flags={"zone": Z, "ns": "ns1=192.0.2.53,2001:db8::53;a.ns2=198.51.100.53;ns.example.net."},
        env={},
    )
)
RECORDS = [
    DnsRecord("zulu", "192.0.2.26", None, 9026),
    DnsRecord("alpha", None, "2001:db8::1", None),
    DnsRecord("ns1", "192.0.2.99", None, 9999),  # reserved: hidden
    DnsRecord("mid", None, None, 443),
    DnsRecord("both", "192.0.2.2", "2001:db8::2", 8002),
    DnsRecord("nothing", None, None, None),
]


def listing(zone: Zone) -> list[tuple[str, str, list[str]]]:
    return [
        (
            rrset.name.relativize(ORIGIN).to_text(),
            dns.rdatatype.to_text(rrset.rdtype),
            [rdata.to_text() for rdata in rrset.rdatas],
        )
        for rrset in zone.rrsets()
    ]


def test_the_canonical_order() -> None:
    zone = Zone.build(CONFIG, 7, 0, RECORDS)
    assert listing(zone) == [
        ("@", "SOA", [f"ns1.{Z} hostmaster.{Z} 7 3600 600 1209600 60"]),
        ("@", "NS", [f"ns1.{Z}", f"a.ns2.{Z}", "ns.example.net."]),
        ("ns1", "A", ["192.0.2.53"]),
        ("ns1", "AAAA", ["2001:db8::53"]),
        ("a.ns2", "A", ["198.51.100.53"]),
        ("alpha", "AAAA", ["2001:db8::1"]),
        ("both", "A", ["192.0.2.2"]),
        ("both", "AAAA", ["2001:db8::2"]),
        ("_mxserver._tcp.both", "SRV", [f"0 0 8002 both.{Z}"]),
        ("_mxserver._tcp.mid", "SRV", [f"0 0 443 mid.{Z}"]),
        ("zulu", "A", ["192.0.2.26"]),
        ("_mxserver._tcp.zulu", "SRV", [f"0 0 9026 zulu.{Z}"]),
    ]


def test_the_rrsets_are_made_as_they_are_read() -> None:
    assert inspect.isgenerator(Zone.build(CONFIG, 7, 0, RECORDS).rrsets())


def test_a_zone_rrset_is_dnspythons_rrset_of_the_same_records() -> None:
    zone = Zone.build(CONFIG, 7, 0, RECORDS)
    srv = next(r for r in zone.rrsets() if r.rdtype == dns.rdatatype.SRV)
    assert srv.to_rrset() == dns.rrset.from_text(
        f"_mxserver._tcp.both.{Z}", 60, "IN", "SRV", f"0 0 8002 both.{Z}"
    )
    assert srv.to_rrset().ttl == 60


def relative(zone: Zone, rrset: ZoneRRset) -> tuple[bytes, ...]:
    return tuple(label.lower() for label in rrset.name.relativize(zone.config.origin).labels)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(zones())
def test_the_listing_is_what_the_lookup_serves_name_by_name(zone: Zone) -> None:
    listed = list(zone.rrsets())
    # Each RRset listed is served at its name, and listed once.
    for rrset in listed:
        assert rrset in (zone.rrsets_at(relative(zone, rrset)) or [])
    assert len({(r.name, r.rdtype) for r in listed}) == len(listed)
    # Whatever a name of the zone serves is listed: the apex, glue, each label and its
    # SRV name (a reserved label serves only the zone's own names, if any).
    names = [(), *zone.config.glue]
    for label in zone.nodes:
        names += [(label,), (*SRV_LABELS, label)]
    for name in names:
        for rrset in zone.rrsets_at(name) or []:
            assert rrset in listed, (name, rrset)
    # The order: SOA, NS, glue, then installations by label (A, AAAA, SRV).
    assert [r.rdtype for r in listed[:2]] == [dns.rdatatype.SOA, dns.rdatatype.NS]
    glue = len([r for r in listed if relative(zone, r) in zone.config.glue])
    rest = listed[2 + glue :]
    keys = [(relative(zone, r)[-1], r.rdtype == dns.rdatatype.SRV, r.rdtype) for r in rest]
    assert keys == sorted(keys)
