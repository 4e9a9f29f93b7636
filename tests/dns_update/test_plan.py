"""The pure UPDATE core (`controparte.dns.update`): tables of requests against a zone
parsed from inline rows, with no sockets and no store.

Zone bp.controparte.test., in-zone name server ns1 (glue 192.0.2.53), and:

    code     label  ipv4          ipv6          port
    ALPHA-1  alpha  192.0.2.1     2001:db8::1   4443
    BETA-2   beta   198.51.100.2  -             -
    GAMMA-3  gamma  -             -             -      (an installation publishing nothing)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import dns.name
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.update
import pytest
from dns.rcode import Rcode
from dns.rdataclass import RdataClass
from dns.rdatatype import RdataType

from controparte.dns.update import (
    Record,
    UpdateContext,
    UpdateRequest,
    labels_referenced,
    parse_request,
    plan_update,
)
from controparte.dns.zone import Zone, ZoneConfig
from controparte.errors import MalformedError, response_for
from controparte.model import InstallationChange
from controparte.settings import load_settings

ZONE = "bp.controparte.test."
ORIGIN = dns.name.from_text(ZONE)
SETTINGS = load_settings(env={"CONTROPARTE_NS": "ns1=192.0.2.53"})
CONFIG = ZoneConfig.from_settings(SETTINGS)
ROWS = [
    ("alpha", "192.0.2.1", "2001:db8::1", 4443),
    ("beta", "198.51.100.2", None, None),
    ("gamma", None, None, None),
]
INSTALLATIONS = {b"alpha": "ALPHA-1", b"beta": "BETA-2", b"gamma": "GAMMA-3"}
ZONE_VIEW = Zone.build(CONFIG, 2024010101, 7, ROWS)

Step = Callable[[dns.update.UpdateMessage], object]
ALPHA_KEY = frozenset({b"alpha"})
ADMIN = None


def request(*steps: Step, zone: str = ZONE, rdclass: str = "IN") -> UpdateRequest:
    """The request dnspython's UpdateMessage builds from `steps`, read back from wire."""
    message = dns.update.UpdateMessage(zone, rdclass=RdataClass.from_text(rdclass))
    for step in steps:
        step(message)
    return parse_request(message.to_wire())


def context(
    allowed: frozenset[bytes] | None = ALPHA_KEY, *, allow_non_global: bool = True
) -> UpdateContext:
    return UpdateContext(ZONE_VIEW, INSTALLATIONS, allowed, allow_non_global)


def name(relative: str) -> dns.name.Name:
    return dns.name.from_text(relative, ORIGIN)


def rdata(rdtype: str, text: str) -> dns.rdata.Rdata:
    return dns.rdata.from_text("IN", rdtype, text)


@dataclass(frozen=True)
class Case:
    id: str
    steps: tuple[Step, ...]
    rcode: Rcode
    changes: dict[str, InstallationChange] = field(default_factory=dict)
    allowed: frozenset[bytes] | None = ALPHA_KEY


def add(owner: str, rdtype: str, text: str, ttl: int = 60) -> Step:
    return lambda m: m.add(owner, ttl, rdtype, text)


def delete(owner: str, rdtype: str | None = None, text: str | None = None) -> Step:
    if rdtype is None:
        return lambda m: m.delete(owner)
    if text is None:
        return lambda m: m.delete(owner, rdtype)
    return lambda m: m.delete(owner, rdtype, text)


def present(owner: str, rdtype: str | None = None, text: str | None = None) -> Step:
    if rdtype is None:
        return lambda m: m.present(owner)
    if text is None:
        return lambda m: m.present(owner, rdtype)
    return lambda m: m.present(owner, rdata(rdtype, text))


def absent(owner: str, rdtype: str | None = None) -> Step:
    return (lambda m: m.absent(owner)) if rdtype is None else (lambda m: m.absent(owner, rdtype))


SRV = "_mxserver._tcp.alpha"
A1 = {"ALPHA-1"}

UPDATES = [
    # -- the address and the port of one's own installation ------------------------------
    Case(
        "add A replaces the address",
        (add("alpha", "A", "192.0.2.9"),),
        Rcode.NOERROR,
        {"ALPHA-1": InstallationChange(ipv4="192.0.2.9")},
    ),
    Case(
        "delete RRset then add A",
        (delete("alpha", "A"), add("alpha", "A", "192.0.2.9")),
        Rcode.NOERROR,
        {"ALPHA-1": InstallationChange(ipv4="192.0.2.9")},
    ),
    Case(
        "add then delete A, in that order, clears it",
        (add("alpha", "A", "192.0.2.9"), delete("alpha", "A")),
        Rcode.NOERROR,
        {"ALPHA-1": InstallationChange(ipv4="")},
    ),
    Case(
        "the last of two additions wins",
        (add("alpha", "A", "192.0.2.8"), add("alpha", "A", "192.0.2.9")),
        Rcode.NOERROR,
        {"ALPHA-1": InstallationChange(ipv4="192.0.2.9")},
    ),
    Case(
        "adding the address held changes nothing",
        (add("alpha", "A", "192.0.2.1"),),
        Rcode.NOERROR,
    ),
    Case(
        "delete the A RRset",
        (delete("alpha", "A"),),
        Rcode.NOERROR,
        {"ALPHA-1": InstallationChange(ipv4="")},
    ),
    Case(
        "delete the A record held",
        (delete("alpha", "A", "192.0.2.1"),),
        Rcode.NOERROR,
        {"ALPHA-1": InstallationChange(ipv4="")},
    ),
    Case(
        "delete an A record not held: ignored",
        (delete("alpha", "A", "192.0.2.200"),),
        Rcode.NOERROR,
    ),
    Case(
        "add AAAA (stored compressed)",
        (add("alpha", "AAAA", "2001:0db8:0:0:0:0:0:0042"),),
        Rcode.NOERROR,
        {"ALPHA-1": InstallationChange(ipv6="2001:db8::42")},
    ),
    Case(
        "delete the AAAA record held, written uncompressed",
        (delete("alpha", "AAAA", "2001:db8:0:0:0:0:0:1"),),
        Rcode.NOERROR,
        {"ALPHA-1": InstallationChange(ipv6="")},
    ),
    Case(
        "delete all RRsets at the name clears both addresses",
        (delete("alpha"),),
        Rcode.NOERROR,
        {"ALPHA-1": InstallationChange(ipv4="", ipv6="")},
    ),
    Case(
        "name matching is case-insensitive",
        (add("ALPHA", "A", "192.0.2.9"),),
        Rcode.NOERROR,
        {"ALPHA-1": InstallationChange(ipv4="192.0.2.9")},
    ),
    Case(
        "add SRV sets the port",
        (add(SRV, "SRV", f"0 0 8443 alpha.{ZONE}"),),
        Rcode.NOERROR,
        {"ALPHA-1": InstallationChange(port=8443)},
    ),
    Case(
        "SRV target case does not matter",
        (add(SRV, "SRV", f"0 0 8443 ALPHA.{ZONE.upper()}"),),
        Rcode.NOERROR,
        {"ALPHA-1": InstallationChange(port=8443)},
    ),
    Case(
        "delete the SRV RRset clears the port",
        (delete(SRV, "SRV"),),
        Rcode.NOERROR,
        {"ALPHA-1": InstallationChange(port="")},
    ),
    Case(
        "delete the SRV record held clears the port",
        (delete(SRV, "SRV", f"0 0 4443 alpha.{ZONE}"),),
        Rcode.NOERROR,
        {"ALPHA-1": InstallationChange(port="")},
    ),
    Case(
        "delete another SRV record: ignored",
        (delete(SRV, "SRV", f"0 0 9999 alpha.{ZONE}"),),
        Rcode.NOERROR,
    ),
    Case(
        "delete all RRsets at the SRV name clears the port only",
        (delete(SRV),),
        Rcode.NOERROR,
        {"ALPHA-1": InstallationChange(port="")},
    ),
    Case(
        "address and port in one update",
        (add("alpha", "A", "192.0.2.9"), add(SRV, "SRV", f"0 0 8443 alpha.{ZONE}")),
        Rcode.NOERROR,
        {"ALPHA-1": InstallationChange(ipv4="192.0.2.9", port=8443)},
    ),
    Case(
        "deleting what is not there: nothing to do",
        (delete("beta", "AAAA"),),
        Rcode.NOERROR,
        allowed=ADMIN,
    ),
    # -- the admin key -------------------------------------------------------------------
    Case(
        "admin changes another installation",
        (add("beta", "A", "198.51.100.9"),),
        Rcode.NOERROR,
        {"BETA-2": InstallationChange(ipv4="198.51.100.9")},
        allowed=ADMIN,
    ),
    Case(
        "admin gives an installation that publishes nothing its first records",
        (
            add("gamma", "AAAA", "2001:db8::3"),
            add("_mxserver._tcp.gamma", "SRV", f"0 0 443 gamma.{ZONE}"),
        ),
        Rcode.NOERROR,
        {"GAMMA-3": InstallationChange(ipv6="2001:db8::3", port=443)},
        allowed=ADMIN,
    ),
    Case(
        "admin changes two installations at once",
        (add("alpha", "A", "192.0.2.9"), delete("beta", "A")),
        Rcode.NOERROR,
        {"ALPHA-1": InstallationChange(ipv4="192.0.2.9"), "BETA-2": InstallationChange(ipv4="")},
        allowed=ADMIN,
    ),
    # -- REFUSED: permissions and what the model cannot hold -----------------------------
    Case("another installation's name", (add("beta", "A", "192.0.2.9"),), Rcode.REFUSED),
    Case("another installation's SRV", (delete("_mxserver._tcp.beta"),), Rcode.REFUSED),
    Case(
        "all or nothing: own change, then another's",
        (add("alpha", "A", "192.0.2.9"), add("beta", "A", "192.0.2.9")),
        Rcode.REFUSED,
    ),
    Case(
        "no installation has the label",
        (add("nobody", "A", "192.0.2.9"),),
        Rcode.REFUSED,
        allowed=ADMIN,
    ),
    Case("another type", (add("alpha", "TXT", '"hello"'),), Rcode.REFUSED),
    Case("deleting another type", (delete("alpha", "MX"),), Rcode.REFUSED),
    Case("SRV at the address name", (add("alpha", "SRV", f"0 0 1 alpha.{ZONE}"),), Rcode.REFUSED),
    Case("A at the SRV name", (add(SRV, "A", "192.0.2.9"),), Rcode.REFUSED),
    Case("SRV with a priority", (add(SRV, "SRV", f"1 0 8443 alpha.{ZONE}"),), Rcode.REFUSED),
    Case("SRV with a weight", (add(SRV, "SRV", f"0 5 8443 alpha.{ZONE}"),), Rcode.REFUSED),
    Case("SRV to another target", (add(SRV, "SRV", f"0 0 8443 beta.{ZONE}"),), Rcode.REFUSED),
    Case("SRV to port 0", (add(SRV, "SRV", f"0 0 0 alpha.{ZONE}"),), Rcode.REFUSED),
    Case(
        "another service", (add("_http._tcp.alpha", "SRV", f"0 0 80 alpha.{ZONE}"),), Rcode.REFUSED
    ),
    Case("the empty non-terminal _tcp", (delete("_tcp.alpha"),), Rcode.REFUSED),
    Case("below an installation", (add("www.alpha", "A", "192.0.2.9"),), Rcode.REFUSED),
    Case("the apex A", (add("@", "A", "192.0.2.9"),), Rcode.REFUSED, allowed=ADMIN),
    Case("the apex NS", (delete("@", "NS"),), Rcode.REFUSED, allowed=ADMIN),
    Case("the apex, everything", (delete("@"),), Rcode.REFUSED, allowed=ADMIN),
    Case(
        "the SOA",
        (add("@", "SOA", f"ns1.{ZONE} hostmaster.{ZONE} 2024010199 3600 600 1209600 60"),),
        Rcode.REFUSED,
        allowed=ADMIN,
    ),
    Case("the name server's glue", (add("ns1", "A", "192.0.2.9"),), Rcode.REFUSED, allowed=ADMIN),
    Case("IPv4-mapped IPv6", (add("alpha", "AAAA", "::ffff:192.0.2.9"),), Rcode.REFUSED),
    Case("multicast", (add("alpha", "A", "224.0.0.1"),), Rcode.REFUSED),
    # -- NOTZONE -------------------------------------------------------------------------
    Case("update outside the zone", (add("host.example.net.", "A", "192.0.2.9"),), Rcode.NOTZONE),
]


@pytest.mark.parametrize("case", UPDATES, ids=lambda c: c.id)
def test_update_section(case: Case) -> None:
    plan = plan_update(request(*case.steps), context(case.allowed))
    assert (plan.rcode, dict(plan.changes)) == (case.rcode, case.changes), plan.reason


PREREQUISITES = [
    # (id, prerequisite, rcode): each followed by an allowed update of alpha's address.
    ("name in use", present("alpha"), Rcode.NOERROR),
    ("name in use: the SRV name", present(SRV), Rcode.NOERROR),
    ("name in use: the apex", present("@"), Rcode.NOERROR),
    ("name in use: not, an installation with no records", present("gamma"), Rcode.NXDOMAIN),
    ("name in use: not, no such name", present("nobody"), Rcode.NXDOMAIN),
    ("name in use: not, an empty non-terminal", present("_tcp.alpha"), Rcode.NXDOMAIN),
    ("name not in use", absent("nobody"), Rcode.NOERROR),
    ("name not in use: an empty non-terminal is not in use", absent("_tcp.alpha"), Rcode.NOERROR),
    ("name not in use: but it is", absent("alpha"), Rcode.YXDOMAIN),
    ("name not in use: but the SRV name is", absent(SRV), Rcode.YXDOMAIN),
    ("RRset exists", present("alpha", "AAAA"), Rcode.NOERROR),
    ("RRset exists: the SOA", present("@", "SOA"), Rcode.NOERROR),
    ("RRset exists: not", present("beta", "AAAA"), Rcode.NXRRSET),
    ("RRset exists: not, the port", present("_mxserver._tcp.beta", "SRV"), Rcode.NXRRSET),
    ("RRset does not exist", absent("beta", "AAAA"), Rcode.NOERROR),
    ("RRset does not exist: but it does", absent("alpha", "A"), Rcode.YXRRSET),
    ("RRset value", present("alpha", "A", "192.0.2.1"), Rcode.NOERROR),
    ("RRset value: SRV", present(SRV, "SRV", f"0 0 4443 alpha.{ZONE}"), Rcode.NOERROR),
    ("RRset value: differs", present("alpha", "A", "192.0.2.2"), Rcode.NXRRSET),
    ("RRset value: no RRset", present("beta", "AAAA", "2001:db8::2"), Rcode.NXRRSET),
    ("RRset value: NS at the apex", present("@", "NS", f"ns1.{ZONE}"), Rcode.NOERROR),
    ("outside the zone", present("example.net."), Rcode.NOTZONE),
]


@pytest.mark.parametrize(
    ("prerequisite", "rcode"), [pytest.param(p, r, id=i) for i, p, r in PREREQUISITES]
)
def test_prerequisite_section(prerequisite: Step, rcode: Rcode) -> None:
    plan = plan_update(request(prerequisite, add("alpha", "A", "192.0.2.9")), context())
    assert plan.rcode == rcode, plan.reason
    expected = {"ALPHA-1": InstallationChange(ipv4="192.0.2.9")} if rcode == Rcode.NOERROR else {}
    assert dict(plan.changes) == expected


def test_value_prerequisite_needs_the_whole_rrset() -> None:
    """RFC 2136 3.2.3: the RRset built from the prerequisites must equal the zone's."""
    both = request(
        present("alpha", "A", "192.0.2.1"),
        present("alpha", "A", "192.0.2.2"),
        add("alpha", "A", "192.0.2.9"),
    )
    assert plan_update(both, context()).rcode == Rcode.NXRRSET


def test_prerequisites_are_checked_before_permissions() -> None:
    """RFC 2136 order: a failed prerequisite answers before the permission check."""
    plan = plan_update(request(absent("alpha"), add("beta", "A", "192.0.2.9")), context())
    assert plan.rcode == Rcode.YXDOMAIN


def test_non_global_address_refused_without_the_setting() -> None:
    plan = plan_update(request(add("alpha", "A", "192.0.2.9")), context(allow_non_global=False))
    assert plan.rcode == Rcode.REFUSED
    assert "global" in plan.reason
    public = plan_update(request(add("alpha", "A", "8.8.8.8")), context(allow_non_global=False))
    assert dict(public.changes) == {"ALPHA-1": InstallationChange(ipv4="8.8.8.8")}


@pytest.mark.parametrize(
    ("zone", "rdclass"),
    [
        pytest.param("example.net.", "IN", id="another zone"),
        pytest.param(f"sub.{ZONE}", "IN", id="a zone below ours"),
        pytest.param(ZONE, "CH", id="another class"),
    ],
)
def test_zone_section_not_ours_is_notauth(zone: str, rdclass: str) -> None:
    plan = plan_update(request(zone=zone, rdclass=rdclass), context(ADMIN))
    assert plan.rcode == Rcode.NOTAUTH
    assert not plan.changes


# -- FORMERR: RRs the UpdateMessage API will not build, so made by hand -----------------


def rr(
    relative: str, rdclass: int, rdtype: int, ttl: int = 0, data: dns.rdata.Rdata | None = None
) -> Record:
    return Record(name(relative), rdclass, rdtype, ttl, data)


A_DATA = rdata("A", "192.0.2.9")
MALFORMED_PREREQUISITES = [
    pytest.param(rr("alpha", RdataClass.ANY, RdataType.ANY, ttl=5), id="name in use, TTL 5"),
    pytest.param(rr("alpha", RdataClass.NONE, RdataType.A, ttl=1), id="RRset absent, TTL 1"),
    pytest.param(rr("alpha", RdataClass.IN, RdataType.A, 60, A_DATA), id="value with a TTL"),
    pytest.param(rr("alpha", RdataClass.CH, RdataType.A, 0, A_DATA), id="class CH"),
]


@pytest.mark.parametrize("prerequisite", MALFORMED_PREREQUISITES)
def test_malformed_prerequisite_is_formerr(prerequisite: Record) -> None:
    req = UpdateRequest(ORIGIN, RdataClass.IN, (prerequisite,), ())
    assert plan_update(req, context()).rcode == Rcode.FORMERR


MALFORMED_UPDATES = [
    pytest.param(rr("alpha", RdataClass.ANY, RdataType.A, ttl=60), id="delete RRset, TTL 60"),
    pytest.param(rr("alpha", RdataClass.ANY, RdataType.A, 0, A_DATA), id="delete RRset, data"),
    pytest.param(rr("alpha", RdataClass.ANY, RdataType.AXFR), id="delete AXFR"),
    pytest.param(rr("alpha", RdataClass.IN, RdataType.ANY, 60, A_DATA), id="add type ANY"),
    pytest.param(rr("alpha", RdataClass.IN, RdataType.MAILA, 60, A_DATA), id="add MAILA"),
    pytest.param(rr("alpha", RdataClass.NONE, RdataType.A, 60, A_DATA), id="delete RR, TTL"),
    pytest.param(rr("alpha", RdataClass.NONE, RdataType.ANY, 0, A_DATA), id="delete RR, ANY"),
    pytest.param(rr("alpha", RdataClass.NONE, RdataType.A), id="delete RR, no data"),
    pytest.param(rr("alpha", RdataClass.CH, RdataType.A, 60, A_DATA), id="class CH"),
]


@pytest.mark.parametrize("update", MALFORMED_UPDATES)
def test_malformed_update_is_formerr(update: Record) -> None:
    req = UpdateRequest(ORIGIN, RdataClass.IN, (), (update,))
    assert plan_update(req, context(ADMIN)).rcode == Rcode.FORMERR


def test_prescan_before_permissions() -> None:
    """A malformed RR answers FORMERR even after a refused one (prescan first)."""
    req = UpdateRequest(
        ORIGIN,
        RdataClass.IN,
        (),
        (
            rr("beta", RdataClass.IN, RdataType.A, 60, A_DATA),
            rr("alpha", RdataClass.ANY, RdataType.A, ttl=60),
        ),
    )
    assert plan_update(req, context()).rcode == Rcode.FORMERR


def test_plan_does_not_change_the_view() -> None:
    before = dict(ZONE_VIEW.nodes)
    plan_update(request(delete("alpha"), add("beta", "A", "192.0.2.9")), context(ADMIN))
    assert ZONE_VIEW.nodes == before


# -- parsing ------------------------------------------------------------------------------


def test_parse_keeps_wire_order_and_metavalues() -> None:
    req = request(
        present("alpha"),
        absent("beta", "AAAA"),
        add("alpha", "A", "192.0.2.9", ttl=120),
        delete("alpha", "A"),
        delete("alpha", "A", "192.0.2.9"),
    )
    assert req.zone_name == ORIGIN and req.zone_class == RdataClass.IN
    assert [(r.rdclass, r.rdtype, r.ttl, r.rdata) for r in req.prerequisites] == [
        (RdataClass.ANY, RdataType.ANY, 0, None),
        (RdataClass.NONE, RdataType.AAAA, 0, None),
    ]
    assert [(r.rdclass, r.rdtype, r.ttl, r.rdata) for r in req.updates] == [
        (RdataClass.IN, RdataType.A, 120, A_DATA),
        (RdataClass.ANY, RdataType.A, 0, None),
        (RdataClass.NONE, RdataType.A, 0, A_DATA),
    ]


def _wire(zocount: int, body: bytes, counts: tuple[int, int] = (0, 0)) -> bytes:
    header = (1234).to_bytes(2, "big") + b"\x28\x00"
    for count in (zocount, *counts, 0):
        header += count.to_bytes(2, "big")
    return header + body


def _name_wire(text: str) -> bytes:
    wire = name(text).to_wire()
    assert wire is not None
    return wire


ORIGIN_WIRE = _name_wire("@")
ZONE_RR = ORIGIN_WIRE + b"\x00\x06\x00\x01"
ALPHA = _name_wire("alpha")


@pytest.mark.parametrize(
    "wire",
    [
        pytest.param(_wire(0, b""), id="no zone"),
        pytest.param(_wire(2, ZONE_RR * 2), id="two zones"),
        pytest.param(_wire(1, ORIGIN_WIRE + b"\x00\x01\x00\x01"), id="zone type A"),
        pytest.param(_wire(1, ZONE_RR[:-2]), id="truncated zone"),
        pytest.param(_wire(1, ZONE_RR, (0, 1)), id="missing update RR"),
        pytest.param(
            _wire(
                1,
                ZONE_RR + ALPHA + b"\x00\x01\x00\xff\x00\x00\x00\x00\x00\x04\xc0\x00\x02\x09",
                (0, 1),
            ),
            id="delete RRset with data",
        ),
        pytest.param(
            _wire(
                1,
                ZONE_RR + ALPHA + b"\x00\x01\x00\xfe\x00\x00\x00\x00\x00\x04\xc0\x00\x02\x09",
                (1, 0),
            ),
            id="RRset absent with data",
        ),
        pytest.param(
            _wire(
                1, ZONE_RR + ALPHA + b"\x00\x01\x00\x01\x00\x00\x00\x3c\x00\x03\xc0\x00\x02", (0, 1)
            ),
            id="A of 3 bytes",
        ),
        pytest.param(b"\x00" * 5, id="shorter than a header"),
    ],
)
def test_parse_malformed(wire: bytes) -> None:
    with pytest.raises(MalformedError) as caught:
        parse_request(wire)
    assert response_for(caught.value).dns_rcode == Rcode.FORMERR
    assert str(caught.value)  # the message stands alone


def test_labels_referenced() -> None:
    req = request(
        present("Alpha"),
        present("example.net."),
        add("_mxserver._tcp.beta", "SRV", f"0 0 1 beta.{ZONE}"),
        delete("@", "NS"),
        delete("-bad-", "A"),
        delete("x.gamma"),
    )
    assert labels_referenced(req, ORIGIN) == {"alpha", "beta", "gamma"}
