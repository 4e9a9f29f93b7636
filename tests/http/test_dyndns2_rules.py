"""The pure part of DynDNS2: hostnames, addresses, credentials and the answer text."""

from __future__ import annotations

import base64

import pytest

from controparte import errors
from controparte.errors import BadAddressError
from controparte.http.dyndns2 import (
    Addresses,
    Code,
    Decision,
    badip_line,
    basic_credentials,
    body,
    decide,
    hostname_label,
    requested_addresses,
    source_addresses,
    split_hostnames,
)
from controparte.model import Installation, InstallationChange

ZONE = "bp.controparte.test."


@pytest.mark.parametrize(
    ("hostname", "expected"),
    [
        ("alpha.bp.controparte.test", "alpha"),
        ("ALPHA.BP.Controparte.Test.", "alpha"),
        ("alpha", Code.NOTFQDN),
        ("", Code.NOTFQDN),
        ("alpha..bp.controparte.test", Code.NOTFQDN),
        ("x" * 64 + ".bp.controparte.test", Code.NOTFQDN),
        ("alpha.example.net", Code.NOHOST),
        ("bp.controparte.test", Code.NOHOST),  # the apex is no installation
        ("a.alpha.bp.controparte.test", Code.NOHOST),
        ("_mxserver._tcp.alpha.bp.controparte.test", Code.NOHOST),
        ("-bad.bp.controparte.test", Code.NOHOST),
        ("alpha.bp.controparte.test.evil.example", Code.NOHOST),
    ],
)
def test_hostname_label(hostname: str, expected: str) -> None:
    assert hostname_label(hostname, ZONE) == expected


DUAL = Installation("A-1", "alpha", ipv4="192.0.2.1", ipv6="2001:db8::1", port=4443)
V4 = Installation("A-1", "alpha", ipv4="192.0.2.1")


@pytest.mark.parametrize(
    ("current", "label", "target", "expected"),
    [
        (None, "alpha", Addresses("192.0.2.9"), Decision("nohost")),  # gone meanwhile
        (DUAL, "beta", Addresses("192.0.2.9"), Decision("nohost")),  # not its label
        (DUAL, "alpha", Addresses("192.0.2.1"), Decision("nochg 192.0.2.1")),
        (DUAL, "alpha", Addresses(None, "2001:db8::1"), Decision("nochg 2001:db8::1")),
        (
            DUAL,
            "alpha",
            Addresses("192.0.2.1", "2001:db8::1"),
            Decision("nochg 192.0.2.1,2001:db8::1"),
        ),
        (
            DUAL,
            "alpha",
            Addresses("192.0.2.9"),
            Decision("good 192.0.2.9", InstallationChange(ipv4="192.0.2.9")),
        ),
        (
            DUAL,
            "alpha",
            Addresses("192.0.2.1", "2001:db8::9"),  # one family new: the request is written
            Decision(
                "good 192.0.2.1,2001:db8::9",
                InstallationChange(ipv4="192.0.2.1", ipv6="2001:db8::9"),
            ),
        ),
        (
            V4,
            "alpha",
            Addresses(None, "2001:db8::9"),  # a family it had not: added, IPv4 kept
            Decision("good 2001:db8::9", InstallationChange(ipv6="2001:db8::9")),
        ),
    ],
)
def test_decide(
    current: Installation | None, label: str, target: Addresses, expected: Decision
) -> None:
    assert decide(current, label, target) == expected


def test_split_hostnames_keeps_order_and_empty_items() -> None:
    assert split_hostnames(None) == []
    assert split_hostnames("  ") == []
    assert split_hostnames("b.x.test, a.x.test,,c.x.test") == [
        "b.x.test",
        "a.x.test",
        "",
        "c.x.test",
    ]


@pytest.mark.parametrize(
    ("myip", "myipv4", "myipv6", "expected"),
    [
        (None, None, None, None),
        ("", "", "", None),
        ("192.0.2.1", None, None, Addresses("192.0.2.1")),
        ("2001:db8::1", None, None, Addresses(None, "2001:db8::1")),
        ("192.0.2.1,2001:DB8:0::1", None, None, Addresses("192.0.2.1", "2001:db8::1")),
        (" 2001:db8::1 , 192.0.2.1 ", None, None, Addresses("192.0.2.1", "2001:db8::1")),
        (None, "192.0.2.1", "2001:db8::1", Addresses("192.0.2.1", "2001:db8::1")),
        ("192.0.2.1", "192.0.2.1", None, Addresses("192.0.2.1")),  # the same, twice
        ("192.0.2.1", None, "2001:db8::1", Addresses("192.0.2.1", "2001:db8::1")),
    ],
)
def test_requested_addresses(
    myip: str | None, myipv4: str | None, myipv6: str | None, expected: Addresses | None
) -> None:
    assert requested_addresses(myip, myipv4, myipv6, allow_non_global=True) == expected


@pytest.mark.parametrize(
    ("myip", "myipv4", "myipv6", "bad"),
    [
        ("not-an-ip", None, None, "not-an-ip"),
        ("192.0.2.300", None, None, "192.0.2.300"),
        ("192.0.2.1,192.0.2.2", None, None, "192.0.2.2"),
        ("192.0.2.1,2001:db8::1,2001:db8::2", None, None, "2001:db8::2"),
        (None, "2001:db8::1", None, "2001:db8::1"),  # wrong family
        (None, None, "192.0.2.1", "192.0.2.1"),
        ("192.0.2.1", "192.0.2.2", None, "192.0.2.2"),
        ("224.0.0.1", None, None, "224.0.0.1"),  # multicast is never published
        ("::ffff:192.0.2.1", None, None, "::ffff:192.0.2.1"),
    ],
)
def test_bad_requested_addresses(
    myip: str | None, myipv4: str | None, myipv6: str | None, bad: str
) -> None:
    with pytest.raises(BadAddressError) as caught:
        requested_addresses(myip, myipv4, myipv6, allow_non_global=True)
    assert caught.value.value == bad
    assert badip_line(caught.value).startswith("badip ")


def test_non_global_addresses_need_the_setting() -> None:
    with pytest.raises(BadAddressError, match="global"):
        requested_addresses("10.0.0.1", None, None, allow_non_global=False)
    with pytest.raises(BadAddressError):
        source_addresses("127.0.0.1", allow_non_global=False)
    assert source_addresses("127.0.0.1", allow_non_global=True) == Addresses("127.0.0.1")
    assert source_addresses("2001:db8::5", allow_non_global=True) == Addresses(None, "2001:db8::5")


def test_badip_line_is_one_token_on_one_line() -> None:
    line = badip_line(BadAddressError("1.2.3.4\r\ngood 5.6.7.8", "x"))
    assert "\n" not in line
    assert "\r" not in line
    assert line.split(" ") == ["badip", "1.2.3.4%0D%0Agood%205.6.7.8"]


def _basic(text: str) -> str:
    return "Basic " + base64.b64encode(text.encode()).decode()


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, None),
        ("", None),
        ("Bearer abc", None),
        ("Basic", None),
        ("Basic !!!", None),
        ("Basic QTE6c2Vjcm\xdf}V0", None),  # a Latin-1 byte, as Starlette decodes headers
        ("Basic " + base64.b64encode(b"A-1:\xff").decode(), None),  # not UTF-8
        (_basic("no-colon"), None),
        (_basic("A-1:tok:en"), ("A-1", "tok:en")),
        (_basic("A-1:"), ("A-1", "")),
        ("basic " + base64.b64encode(b"a:b").decode(), ("a", "b")),
    ],
)
def test_basic_credentials(header: str | None, expected: tuple[str, str] | None) -> None:
    assert basic_credentials(header) == expected


def test_body_ends_every_line() -> None:
    assert body(["good 192.0.2.1", "nohost"]) == "good 192.0.2.1\nnohost\n"


def test_http_status_of_codes() -> None:
    assert {code: code.http_status for code in Code if code.http_status != 200} == {
        Code.BADAUTH: 401,
        Code.BADIP: 400,
    }


def test_every_dyndns2_code_of_the_error_table_is_a_protocol_code() -> None:
    table = errors._RESPONSES
    assert {row.dyndns2 for row in table.values()} <= {code.value for code in Code}
