"""The shared server of the DNS integration tests, and its data.

Zone bp.controparte.test. (the default), name servers ns1 (in the zone, glue 127.0.0.1
and ::1) and ns2.example.net. (outside, no glue), TTL 300, negative TTL 60, and:

    code     label  ipv4          ipv6          port
    ALPHA-1  alpha  192.0.2.1     2001:db8::1   4443
    BETA-2   beta   198.51.100.2  -             -
    GAMMA-3  gamma  -             2001:db8::3   -
    DELTA-4  delta  203.0.113.4   -             8443

Tests that change data use labels of their own, so they can share this server.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from controparte.service import Registry
from tests.realserver import ServerProcess

ZONE = "bp.controparte.test."
STANDARD_ENV = {
    "CONTROPARTE_NS": "ns1=127.0.0.1,::1;ns2.example.net.",
    "CONTROPARTE_TTL": "300",
    "CONTROPARTE_NEGATIVE_TTL": "60",
}


def seed_standard(registry: Registry) -> None:
    registry.add("ALPHA-1", "alpha", ipv4="192.0.2.1", ipv6="2001:db8::1", port=4443)
    registry.add("BETA-2", "beta", ipv4="198.51.100.2")
    registry.add("GAMMA-3", "gamma", ipv6="2001:db8::3")
    registry.add("DELTA-4", "delta", ipv4="203.0.113.4", port=8443)


@pytest.fixture(scope="module")
def dns_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One server with the standard data for a test module."""
    server = ServerProcess(tmp_path_factory.mktemp("data"), STANDARD_ENV)
    with server.registry() as registry:
        seed_standard(registry)
    with server:
        yield server
        assert not server.died(), f"the server exited by itself:\n{server.log_text()}"
