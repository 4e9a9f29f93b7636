"""The client address rule, as a table: forwarding headers count only from a trusted
peer, and then the right-most untrusted hop is the client."""

from __future__ import annotations

import pytest

from controparte.http.clientaddr import (
    Client,
    forwarded_hops,
    parse_networks,
    parse_node,
    resolve_client,
)

TRUSTED = parse_networks(["10.0.0.0/8", "2001:db8:ffff::/48"])

# (peer, Forwarded headers, X-Forwarded-For headers, expected address, expected bad hop)
CASES: list[tuple[str, list[str], list[str], str | None, str | None]] = [
    # an untrusted peer: headers are ignored, whatever they say
    ("198.51.100.7", [], ["192.0.2.1"], "198.51.100.7", None),
    ("198.51.100.7", ["for=192.0.2.1"], [], "198.51.100.7", None),
    ("198.51.100.7", [], ["garbage"], "198.51.100.7", None),
    # a trusted peer without headers is the client itself
    ("10.1.2.3", [], [], "10.1.2.3", None),
    # X-Forwarded-For: the right-most untrusted hop
    ("10.1.2.3", [], ["192.0.2.1"], "192.0.2.1", None),
    ("10.1.2.3", [], ["203.0.113.66, 192.0.2.1"], "192.0.2.1", None),  # left is spoofable
    ("10.1.2.3", [], ["203.0.113.66, 192.0.2.1, 10.9.9.9"], "192.0.2.1", None),
    ("10.1.2.3", [], ["203.0.113.66", "192.0.2.1, 10.9.9.9"], "192.0.2.1", None),  # 2 headers
    ("10.1.2.3", [], ["10.5.5.5, 10.9.9.9"], "10.5.5.5", None),  # all trusted: left-most
    ("10.1.2.3", [], ["unknown, 192.0.2.1"], "192.0.2.1", None),  # garbage left of client
    ("10.1.2.3", [], ["192.0.2.1, unknown"], None, "unknown"),  # garbage reached
    ("10.1.2.3", [], ["192.0.2.1:5555"], "192.0.2.1", None),
    ("10.1.2.3", [], ["2001:db8::7"], "2001:db8::7", None),
    ("10.1.2.3", [], ["[2001:db8::7]:443"], "2001:db8::7", None),
    ("10.1.2.3", [], ["::ffff:192.0.2.1"], "192.0.2.1", None),
    # Forwarded (RFC 7239) wins over X-Forwarded-For
    (
        "10.1.2.3",
        ["for=192.0.2.60;proto=http;by=203.0.113.43"],
        ["198.51.100.1"],
        "192.0.2.60",
        None,
    ),
    ("10.1.2.3", ['for="[2001:db8:cafe::17]:4711"'], [], "2001:db8:cafe::17", None),
    ("10.1.2.3", ["for=192.0.2.43, for=198.51.100.17"], [], "198.51.100.17", None),
    ("10.1.2.3", ["for=192.0.2.43", "for=10.7.7.7"], [], "192.0.2.43", None),
    ("10.1.2.3", ['for="_hidden"'], [], None, "_hidden"),
    ("10.1.2.3", ["for=unknown"], [], None, "unknown"),
    ("10.1.2.3", ['for=192.0.2.1;by="a,b", for=198.51.100.9'], [], "198.51.100.9", None),
    # Forwarded without any for= falls back to X-Forwarded-For
    ("10.1.2.3", ["proto=https"], ["192.0.2.5"], "192.0.2.5", None),
    # IPv6 trusted proxy, IPv4-mapped peers
    ("2001:db8:ffff::1", [], ["192.0.2.1"], "192.0.2.1", None),
    ("::ffff:10.1.2.3", [], ["192.0.2.1"], "192.0.2.1", None),
    ("::ffff:198.51.100.7", [], ["192.0.2.1"], "198.51.100.7", None),
]


@pytest.mark.parametrize(("peer", "forwarded", "xff", "address", "bad"), CASES)
def test_client_address(
    peer: str, forwarded: list[str], xff: list[str], address: str | None, bad: str | None
) -> None:
    client = resolve_client(peer, forwarded, xff, TRUSTED)
    assert (client.address, client.bad_hop) == (address, bad)


def test_no_trusted_proxies_means_headers_never_count() -> None:
    client = resolve_client("10.1.2.3", ["for=192.0.2.1"], ["192.0.2.1"], ())
    assert client == Client("10.1.2.3", "10.1.2.3")


def test_a_peer_that_is_no_address_is_reported() -> None:
    client = resolve_client(None, [], [], TRUSTED)
    assert client.address is None
    assert client.key == "unknown"
    assert resolve_client("testclient", [], [], TRUSTED).key == "testclient"


@pytest.mark.parametrize(
    ("node", "expected"),
    [
        ("192.0.2.1", "192.0.2.1"),
        ('"192.0.2.1:80"', "192.0.2.1"),
        ("[2001:db8::1]", "2001:db8::1"),
        ("[2001:db8::1]:80", "2001:db8::1"),
        ("[192.0.2.1]", None),  # brackets are for IPv6 only
        ("[2001:db8::1]x", None),
        ("2001:db8::1:80", "2001:db8::1:80"),  # a bare IPv6 address, not a port
        ("192.0.2.1:http", None),
        ("unknown", None),
        ("_obf", None),
        ("", None),
    ],
)
def test_parse_node(node: str, expected: str | None) -> None:
    parsed = parse_node(node)
    assert (None if parsed is None else str(parsed)) == expected


def test_forwarded_elements_without_for_are_unknown_hops() -> None:
    assert forwarded_hops(["for=192.0.2.1, proto=https"]) == ["192.0.2.1", "unknown"]
    assert forwarded_hops(["proto=https", "by=10.0.0.1"]) is None
    assert forwarded_hops(['for="\\"quoted\\""']) == ['"quoted"']
