"""`zone_text`: a zone snapshot's master file read back with dnspython, record by record."""

from __future__ import annotations

import itertools

import dns.exception
import dns.name
import dns.rdatatype
import dns.zone
import pytest

from controparte.dns.zone import Zone
from controparte.dns.zonefile import zone_text
from controparte.errors import ConfigError
from controparte.model import DnsRecord, ZoneConfig
from controparte.settings import Settings, load_settings

ZONE = "reg.example.test."


def settings(**flags: object) -> Settings:
    return load_settings(flags={"zone": ZONE, **flags}, env={})


def export(settings: Settings, serial: int, records: list[DnsRecord]) -> str:
    """The master file of the snapshot holding `records`."""
    return zone_text(Zone.build(ZoneConfig.from_settings(settings), serial, 0, records))


def published(text: str) -> dict[tuple[str, str], set[str]]:
    """(relative owner, type) -> rdata texts (names absolute), with every TTL checked."""
    zone = dns.zone.from_text(text, origin=ZONE, relativize=False, check_origin=True)
    origin = dns.name.from_text(ZONE)
    out: dict[tuple[str, str], set[str]] = {}
    for name, ttl, rdata in zone.iterate_rdatas():
        assert ttl == 60
        key = (name.relativize(origin).to_text(), dns.rdatatype.to_text(rdata.rdtype))
        out.setdefault(key, set()).add(rdata.to_text())
    return out


RECORDS = [
    DnsRecord("both", "192.0.2.1", "2001:db8::1", 9000),
    DnsRecord("v4only", "192.0.2.2", None, None),
    DnsRecord("v6only", None, "2001:db8::3", None),
    DnsRecord("portonly", None, None, 9999),
    DnsRecord("nothing", None, None, None),
]


def test_every_record_of_the_zone() -> None:
    s = settings(ns="ns1=192.0.2.53,2001:db8::53;ns2.example.net.", negative_ttl=30)
    assert published(export(s, 2024, RECORDS)) == {
        ("@", "SOA"): {f"ns1.{ZONE} hostmaster.{ZONE} 2024 3600 600 1209600 30"},
        ("@", "NS"): {f"ns1.{ZONE}", "ns2.example.net."},
        ("ns1", "A"): {"192.0.2.53"},
        ("ns1", "AAAA"): {"2001:db8::53"},
        ("both", "A"): {"192.0.2.1"},
        ("both", "AAAA"): {"2001:db8::1"},
        ("_mxserver._tcp.both", "SRV"): {f"0 0 9000 both.{ZONE}"},
        ("v4only", "A"): {"192.0.2.2"},
        ("v6only", "AAAA"): {"2001:db8::3"},
        ("_mxserver._tcp.portonly", "SRV"): {f"0 0 9999 portonly.{ZONE}"},
    }


def test_header_directives_and_owner_names() -> None:
    lines = export(settings(), 7, RECORDS[:1]).splitlines()
    assert lines[1:3] == [f"$ORIGIN {ZONE}", "$TTL 60"]
    assert lines[3].startswith("@\t60\tIN\tSOA\t")
    assert f"_mxserver._tcp.both\t60\tIN\tSRV\t0 0 9000 both.{ZONE}" in lines


def test_the_text_does_not_depend_on_the_order_of_the_records() -> None:
    s = settings()
    texts = {export(s, 1, list(order)) for order in itertools.permutations(RECORDS)}
    assert len(texts) == 1


def test_soa_timers_serial_and_names_come_from_the_settings() -> None:
    s = settings(
        soa_mname="primary.example.net.",
        soa_rname="dns-admin.example.net.",
        soa_refresh=100,
        soa_retry=50,
        soa_expire=10000,
        negative_ttl=5,
        ttl=60,
    )
    soa = published(export(s, 4294967295, []))[("@", "SOA")]
    assert soa == {"primary.example.net. dns-admin.example.net. 4294967295 100 50 10000 5"}


def test_glue_only_for_name_servers_inside_the_zone() -> None:
    s = settings(ns="ns1=192.0.2.53;ns1=192.0.2.54;ns.example.net.=198.51.100.1")
    records = published(export(s, 1, []))
    assert records[("@", "NS")] == {f"ns1.{ZONE}", "ns.example.net."}
    assert records[("ns1", "A")] == {"192.0.2.53", "192.0.2.54"}
    assert not any(owner.startswith("ns.example") for owner, _ in records)


def test_an_in_zone_name_server_without_an_address_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"^ns: ns1\.reg\.example\.test\. is inside the zone"):
        export(settings(ns="ns1"), 1, [])


def test_installations_on_reserved_labels_are_not_published() -> None:
    # The registry refuses these labels; an installation added before the name server was
    # configured is hidden, as the DNS server hides it.
    text = export(
        settings(ns="ns1=192.0.2.53"),
        1,
        [
            DnsRecord("ns1", "192.0.2.99", None, 9000),
            DnsRecord("hostmaster", "192.0.2.98", None, None),
        ],
    )
    assert "192.0.2.99" not in text
    assert "192.0.2.98" not in text
    assert "_mxserver._tcp.ns1" not in text


@pytest.mark.parametrize(
    "record",
    [
        DnsRecord("bad", "192.0.2", None, None),
        DnsRecord("bad", None, "2001:db8::zz", None),
        DnsRecord("bad", None, None, -1),
    ],
)
def test_records_that_cannot_be_encoded_raise(record: DnsRecord) -> None:
    with pytest.raises((OSError, ValueError, dns.exception.DNSException)):
        export(settings(), 1, [record])
