"""The resolution step's facts against a real `controparte serve` on loopback: one name
server asked directly (RD=0) for an installation's addresses, SRV port and the zone's
SOA; a name that does not exist; a zone it does not serve; a server that never answers;
and this machine's resolver for a name of /etc/hosts and one that does not exist."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from controparte.agent.evidence import Status
from controparte.agent.resolution import (
    SYSTEM,
    Lookup,
    Outcome,
    ask_server,
    ask_servers,
    judge_resolution,
    system_lookup,
    zone_servers,
)
from tests.integration.conftest import ZONE
from tests.processes import HOST, free_port
from tests.realserver import ServerProcess

pytestmark = pytest.mark.integration

TIMEOUT = 2.0
ALPHA = "alpha." + ZONE


def test_a_name_server_says_what_it_serves(dns_server: ServerProcess) -> None:
    alpha = ask_server(HOST, dns_server.port, ALPHA, ZONE, TIMEOUT, name="ns1")
    assert alpha.via == f"ns1 ({HOST}:{dns_server.port})"
    assert alpha.outcome is Outcome.ANSWER
    assert alpha.addresses == ("192.0.2.1", "2001:db8::1")
    assert (alpha.port_outcome, alpha.port) == (Outcome.ANSWER, 4443)
    assert (alpha.ttl, alpha.negative_ttl) == (300, 60)
    serial = dns_server.query(ZONE, "SOA").answer[0][0].serial
    assert alpha.serial == serial
    beta = ask_server(HOST, dns_server.port, "beta." + ZONE, ZONE, TIMEOUT)
    assert (beta.outcome, beta.addresses) == (Outcome.ANSWER, ("198.51.100.2",))
    assert beta.port_outcome.answered and beta.port is None  # no port: no SRV record


def test_a_name_that_does_not_exist_is_nxdomain_with_the_serial(
    dns_server: ServerProcess,
) -> None:
    nobody = ask_server(HOST, dns_server.port, "nobody." + ZONE, ZONE, TIMEOUT)
    assert nobody.outcome is Outcome.NXDOMAIN and nobody.addresses == ()
    assert "NXDOMAIN" in nobody.text
    assert nobody.serial is not None and nobody.negative_ttl == 60


def test_a_zone_the_server_does_not_serve_is_refused(dns_server: ServerProcess) -> None:
    found = ask_server(HOST, dns_server.port, "alpha.other.test.", "other.test.", TIMEOUT)
    assert found.outcome is Outcome.REFUSED and "REFUSED" in found.text


@pytest.fixture
def mute_server() -> Iterator[int]:
    """A UDP port that receives and never answers (a name server dropped on the way)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((HOST, free_port()))
        yield sock.getsockname()[1]


def test_a_server_that_does_not_answer_is_a_timeout(mute_server: int) -> None:
    found = ask_server(HOST, mute_server, ALPHA, ZONE, 0.3)
    assert found.outcome is Outcome.TIMEOUT and found.serial is None
    assert f"no answer from {HOST}:{mute_server} in 0.3 s" == found.text


def test_the_dns_override_is_the_one_server_asked(
    dns_server: ServerProcess, mute_server: int
) -> None:
    servers = zone_servers(ZONE, TIMEOUT, override=(HOST, dns_server.port))
    assert [(s.name, s.addresses, s.port) for s in servers.servers] == [
        (HOST, (HOST,), dns_server.port)
    ]
    (asked,) = ask_servers(servers, ALPHA, TIMEOUT)
    assert asked.addresses == ("192.0.2.1", "2001:db8::1")
    # What the doctor does with it: this machine resolving as the registry holds passes,
    # and a machine still resolving an old address fails with the name server's evidence.
    system = Lookup(SYSTEM, Outcome.ANSWER, asked.addresses, Outcome.ANSWER, 4443)
    registered = ["192.0.2.1", "2001:db8::1"]
    passed = judge_resolution(
        ALPHA, ZONE, system, [asked], registry_addresses=registered, registry_port=4443
    )
    assert passed.status is Status.PASSED
    old = Lookup(SYSTEM, Outcome.ANSWER, ("192.0.2.99",), Outcome.ANSWER, 4443)
    verdict = judge_resolution(
        ALPHA, ZONE, old, [asked], registry_addresses=registered, registry_port=4443
    )
    assert verdict.status is Status.FAILED
    assert verdict.reason.startswith("DNS still serves the old address")
    assert "wait up to 300 s" in str(verdict.fix)
    silent = ask_servers(zone_servers(ZONE, TIMEOUT, override=(HOST, mute_server)), ALPHA, 0.3)
    assert [s.outcome for s in silent] == [Outcome.TIMEOUT]


def test_this_machines_resolver_reads_etc_hosts() -> None:
    found = system_lookup("localhost", TIMEOUT)
    assert found.via == SYSTEM and found.outcome is Outcome.ANSWER
    assert "127.0.0.1" in found.addresses
    assert found.port_outcome is not Outcome.ANSWER and found.port is None


def test_this_machines_resolver_failing_is_an_outcome_not_an_exception() -> None:
    found = system_lookup("nothing.invalid", TIMEOUT)
    assert found.outcome is not Outcome.ANSWER and found.addresses == ()
    assert found.text  # what getaddrinfo (and the resolvers) said
