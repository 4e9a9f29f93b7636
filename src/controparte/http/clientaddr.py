"""The client's address: the direct peer, unless that peer is a trusted proxy.

Contract (pure, no I/O):
- When the direct peer is not in the trusted networks, forwarding headers are ignored
  (anyone can write them) and the peer is the client.
- When it is, the hops named by `Forwarded` (RFC 7239, the `for=` parameters of every
  element of every header, in order) are used, or, when no element has `for=`, those of
  `X-Forwarded-For`. Walking from the right, each trusted hop is skipped; the first
  untrusted one is the client. If every hop is trusted, the left-most is the client; if
  there is no hop at all, the peer is.
- A hop that is reached on that walk and is not an IP address (`unknown`, an obfuscated
  `_name`, garbage) means the client cannot be told: `address` is None and `bad_hop`
  names what the proxy sent. Hops left of the client are never looked at.
- IPv4-mapped IPv6 addresses (`::ffff:192.0.2.1`) are taken as the IPv4 address.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True, slots=True)
class Client:
    """Who sent the request. `address` is None when a trusted proxy forwarded a hop
    that is not an address (`bad_hop` holds it)."""

    peer: str
    address: str | None
    bad_hop: str | None = None

    @property
    def key(self) -> str:
        """What to count failures and log by: the address, else the direct peer."""
        return self.address or self.peer or "unknown"


def parse_networks(items: Iterable[str]) -> tuple[IPNetwork, ...]:
    """Networks from their text form (as `Settings.trusted_proxies` holds them)."""
    return tuple(ipaddress.ip_network(item, strict=False) for item in items)


def parse_ip(text: str) -> IPAddress | None:
    """An address, IPv4-mapped IPv6 taken as IPv4; None if `text` is not one."""
    try:
        address = ipaddress.ip_address(text.strip())
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def parse_node(text: str) -> IPAddress | None:
    """The address of a forwarded hop: `192.0.2.1`, `192.0.2.1:8080`, `2001:db8::1`,
    `[2001:db8::1]` or `[2001:db8::1]:4711`, optionally in double quotes. None for
    `unknown`, obfuscated identifiers and anything else."""
    node = text.strip().strip('"').strip()
    address = parse_ip(node)
    if address is not None:
        return address
    if node.startswith("["):
        end = node.find("]")
        if end < 0 or (end + 1 < len(node) and node[end + 1] != ":"):
            return None
        inner = parse_ip(node[1:end])
        return inner if isinstance(inner, ipaddress.IPv6Address) else None
    host, sep, port = node.rpartition(":")
    if sep and port.isdigit():
        inner = parse_ip(host)
        return inner if isinstance(inner, ipaddress.IPv4Address) else None
    return None


def _split_outside_quotes(text: str, separator: str) -> list[str]:
    """`text` split at `separator` where it is not inside a quoted string."""
    parts: list[str] = []
    current: list[str] = []
    quoted = escaped = False
    for char in text:
        if escaped:
            current.append(char)
            escaped = False
        elif quoted and char == "\\":
            current.append(char)
            escaped = True
        elif char == '"':
            current.append(char)
            quoted = not quoted
        elif char == separator and not quoted:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    parts.append("".join(current))
    return parts


def _unquote(value: str) -> str:
    value = value.strip()
    if len(value) >= 2 and value[0] == value[-1] == '"':
        inner = value[1:-1]
        out: list[str] = []
        escaped = False
        for char in inner:
            if escaped or char != "\\":
                out.append(char)
                escaped = False
            else:
                escaped = True
        return "".join(out)
    return value


def forwarded_hops(headers: Sequence[str]) -> list[str] | None:
    """The `for=` values of the `Forwarded` headers, in order; None when no element
    carries one. An element without `for=` counts as the hop `unknown`."""
    hops: list[str] = []
    found = False
    for header in headers:
        for element in _split_outside_quotes(header, ","):
            if not element.strip():
                continue
            value = "unknown"
            for pair in _split_outside_quotes(element, ";"):
                key, sep, raw = pair.partition("=")
                if sep and key.strip().lower() == "for":
                    value = _unquote(raw)
                    found = True
            hops.append(value)
    return hops if found else None


def x_forwarded_for_hops(headers: Sequence[str]) -> list[str]:
    """The comma-separated entries of the `X-Forwarded-For` headers, in order."""
    return [item.strip() for header in headers for item in header.split(",") if item.strip()]


def resolve_client(
    peer: str | None,
    forwarded: Sequence[str],
    x_forwarded_for: Sequence[str],
    trusted: Sequence[IPNetwork],
) -> Client:
    """The client of a request whose direct peer is `peer`, given the values of its
    `Forwarded` and `X-Forwarded-For` headers (see the module contract)."""
    peer_text = peer or ""
    peer_ip = parse_ip(peer_text)
    if peer_ip is None:
        return Client(peer_text, None, peer_text or "no peer address")
    if not _within(peer_ip, trusted):
        return Client(peer_text, str(peer_ip))
    hops = forwarded_hops(forwarded)
    if hops is None:
        hops = x_forwarded_for_hops(x_forwarded_for)
    candidate = peer_ip
    for hop in reversed(hops):
        address = parse_node(hop)
        if address is None:
            return Client(peer_text, None, hop)
        candidate = address
        if not _within(address, trusted):
            break
    return Client(peer_text, str(candidate))


def _within(address: IPAddress, networks: Sequence[IPNetwork]) -> bool:
    return any(address.version == net.version and address in net for net in networks)
