"""Property: whatever the registry holds, the exported master file, read back by
dnspython, publishes exactly those records (and nothing for reserved labels)."""

from __future__ import annotations

import ipaddress

import dns.name
import dns.rdatatype
import dns.rdtypes.IN.A
import dns.rdtypes.IN.AAAA
import dns.rdtypes.IN.SRV
import dns.zone
from hypothesis import given, settings
from hypothesis import strategies as st

from controparte.dns.zone import Zone
from controparte.dns.zonefile import zone_text
from controparte.model import DnsRecord, ZoneConfig
from controparte.model.installation import LABEL_RE
from controparte.settings import load_settings

ZONE = "reg.example.test."
CONFIG = ZoneConfig.from_settings(
    load_settings(flags={"zone": ZONE, "ns": "ns1=192.0.2.53"}, env={})
)
RESERVED = {"ns1", "hostmaster"}

Published = set[tuple[str, str, object]]

fields = st.tuples(
    st.none() | st.ip_addresses(v=4).map(str),
    st.none() | st.ip_addresses(v=6).map(str),
    st.none() | st.integers(1, 65535),
)
registries = st.dictionaries(st.from_regex(LABEL_RE, fullmatch=True), fields, max_size=20)


def expected(records: list[DnsRecord]) -> Published:
    out: Published = set()
    for label, ipv4, ipv6, port in records:
        if label in RESERVED:
            continue
        if ipv4 is not None:
            out.add((label, "A", ipaddress.ip_address(ipv4)))
        if ipv6 is not None:
            out.add((label, "AAAA", ipaddress.ip_address(ipv6)))
        if port is not None:
            out.add((f"_mxserver._tcp.{label}", "SRV", (port, f"{label}.{ZONE}")))
    return out


def read_back(text: str) -> Published:
    zone = dns.zone.from_text(text, origin=ZONE, relativize=False)
    origin = dns.name.from_text(ZONE)
    out: Published = set()
    for name, _ttl, rdata in zone.iterate_rdatas():
        owner = name.relativize(origin).to_text()
        kind = dns.rdatatype.to_text(rdata.rdtype)
        if owner in ("@", "ns1"):
            continue  # SOA, NS and glue: checked by the unit tests
        if isinstance(rdata, dns.rdtypes.IN.SRV.SRV):
            assert (rdata.priority, rdata.weight) == (0, 0)
            out.add((owner, kind, (rdata.port, rdata.target.to_text())))
        else:
            assert isinstance(rdata, dns.rdtypes.IN.A.A | dns.rdtypes.IN.AAAA.AAAA)
            out.add((owner, kind, ipaddress.ip_address(rdata.address)))
    return out


@settings(max_examples=200, deadline=None)
@given(registries, st.integers(1, 2**32 - 1))
def test_the_file_publishes_exactly_the_registry(
    registry: dict[str, tuple[str | None, str | None, int | None]], serial: int
) -> None:
    records = [DnsRecord(label, *values) for label, values in registry.items()]
    text = zone_text(Zone.build(CONFIG, serial, 0, records))
    assert read_back(text) == expected(records)
    assert dns.zone.from_text(text, origin=ZONE).get_soa().serial == serial
