"""TCP connection slots: a cap on all connections and one per client, so that one
client holding every slot open (idle, or trickling) cannot shut the others out.

A client is its source address, or its /64 for IPv6 (one subscriber's prefix: an
attacker has the whole /64 to draw from); an IPv4-mapped IPv6 address is the IPv4
address. Pure bookkeeping, no sockets: the TCP server takes a slot when it accepts a
connection and gives it back when the connection ends (RFC 7766 6.2.2: a server may
limit the connections it accepts from one client).
"""

from __future__ import annotations

import ipaddress

TOTAL = "total"
"""Refused: every slot is taken."""
PER_CLIENT = "per_client"
"""Refused: the client holds its share of the slots."""

REFUSALS = (TOTAL, PER_CLIENT)
IPV6_CLIENT_PREFIX = 64


def client_of(address: str) -> str:
    """The client `address` belongs to: itself for IPv4, its /64 for IPv6, the IPv4
    address of an IPv4-mapped one; the text itself when it is no address."""
    if ":" not in address:  # IPv4 (what an IPv4 socket's peer always is): itself
        return address
    try:
        ip = ipaddress.ip_address(address.partition("%")[0])
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, IPV6_CLIENT_PREFIX), strict=False))
    return str(ip)


class Slots:
    """At most `total` connections at once, and at most `per_client` of one client
    (`client_of`). Not thread-safe: one event loop uses it."""

    def __init__(self, total: int, per_client: int) -> None:
        self.total = total
        self.per_client = per_client
        self._held: dict[str, int] = {}
        self.open = 0
        self.refused = dict.fromkeys(REFUSALS, 0)

    def take(self, client: str) -> bool:
        """Take a slot for `client`: False (the refusal counted) when none is left for
        it; after True, `give` it back once."""
        held = self._held.get(client, 0)
        if self.open >= self.total:
            self.refused[TOTAL] += 1
            return False
        if held >= self.per_client:
            self.refused[PER_CLIENT] += 1
            return False
        self._held[client] = held + 1
        self.open += 1
        return True

    def give(self, client: str) -> None:
        """Give back a slot `client` took."""
        held = self._held[client] - 1
        if held:
            self._held[client] = held
        else:
            del self._held[client]
        self.open -= 1

    def clients(self) -> int:
        """Clients holding a slot now."""
        return len(self._held)
