"""Changes made by another process (this test process through `Registry`, or the CLI)
on the server's data directory are served within one second, with a new SOA serial
(RFC 1982 greater); what was committed survives `kill -9` of the server."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import dns.message
import dns.rcode
import dns.rdatatype
import pytest

from controparte.model import InstallationChange
from tests.conftest import StartServer
from tests.integration.conftest import STANDARD_ENV, ZONE, seed_standard
from tests.realserver import ServerProcess

pytestmark = pytest.mark.integration

PROPAGATION_LIMIT = 1.0  # seconds, from the commit to the first answer that shows it
POLL_TIMEOUT = 5.0  # give up waiting after this (the assertion on the limit still fails)
NOERROR = dns.rcode.NOERROR
GONE = (dns.rcode.NXDOMAIN, set[str]())  # the answer for a name no longer served


def serial_greater(new: int, old: int) -> bool:
    """RFC 1982 section 3.2, SERIAL_BITS = 32."""
    return new != old and (new - old) % 2**32 < 2**31


def served(server: ServerProcess, qname: str, qtype: str) -> tuple[int, set[str]]:
    response = server.query(qname, qtype, timeout=0.5)
    rdtype = dns.rdatatype.from_text(qtype)
    values = {rd.to_text() for rrset in response.answer if rrset.rdtype == rdtype for rd in rrset}
    return response.rcode(), values


def wait_served(
    server: ServerProcess, qname: str, qtype: str, expected: tuple[int, set[str]]
) -> float:
    """Seconds until the server answers `expected`: (rcode, values)."""
    start = time.monotonic()
    while True:
        if served(server, qname, qtype) == expected:
            return time.monotonic() - start
        elapsed = time.monotonic() - start
        if elapsed > POLL_TIMEOUT:
            return elapsed
        time.sleep(0.01)


def assert_new_serial(server: ServerProcess, before: int) -> int:
    """The served serial is the store's and later than `before`."""
    serial = server.serial()
    assert serial_greater(serial, before), (serial, before)
    with server.registry() as registry:
        assert registry.store.serial() == serial
    return serial


def test_add_update_remove_are_served_within_a_second(dns_server: ServerProcess) -> None:
    qname = f"prop1.{ZONE}"
    srv = f"_mxserver._tcp.prop1.{ZONE}"
    serial = dns_server.serial()
    assert served(dns_server, qname, "A")[0] == dns.rcode.NXDOMAIN

    with dns_server.registry() as registry:
        registry.add("PROP-1", "prop1", ipv4="192.0.2.10")
    took = wait_served(dns_server, qname, "A", (NOERROR, {"192.0.2.10"}))
    assert took < PROPAGATION_LIMIT
    serial = assert_new_serial(dns_server, serial)

    with dns_server.registry() as registry:
        registry.update("PROP-1", InstallationChange(ipv4="192.0.2.11"))
    took = wait_served(dns_server, qname, "A", (NOERROR, {"192.0.2.11"}))
    assert took < PROPAGATION_LIMIT
    serial = assert_new_serial(dns_server, serial)

    with dns_server.registry() as registry:
        registry.update("PROP-1", InstallationChange(ipv6="2001:db8::10", port=7000))
    took = wait_served(dns_server, srv, "SRV", (NOERROR, {f"0 0 7000 prop1.{ZONE}"}))
    assert took < PROPAGATION_LIMIT
    assert served(dns_server, qname, "AAAA") == (dns.rcode.NOERROR, {"2001:db8::10"})
    serial = assert_new_serial(dns_server, serial)

    with dns_server.registry() as registry:
        registry.update("PROP-1", InstallationChange(label="prop1b"))
    took = wait_served(dns_server, qname, "A", GONE)
    assert took < PROPAGATION_LIMIT
    assert served(dns_server, f"prop1b.{ZONE}", "A") == (dns.rcode.NOERROR, {"192.0.2.11"})
    assert served(dns_server, srv, "SRV")[0] == dns.rcode.NXDOMAIN
    serial = assert_new_serial(dns_server, serial)

    with dns_server.registry() as registry:
        registry.remove("PROP-1")
    took = wait_served(dns_server, f"prop1b.{ZONE}", "A", GONE)
    assert took < PROPAGATION_LIMIT
    serial = assert_new_serial(dns_server, serial)
    # The NXDOMAIN carries the new serial in its SOA.
    response = dns_server.query(f"prop1b.{ZONE}")
    assert response.authority[0][0].serial == serial


def test_change_by_the_cli_is_served_within_a_second(dns_server: ServerProcess) -> None:
    serial = dns_server.serial()
    environment = {k: v for k, v in os.environ.items() if not k.startswith("CONTROPARTE_")}
    environment.update(dns_server.settings_env)
    argv = [sys.executable, "-m", "controparte", "installation", "add", "CLI-1"]
    argv += ["--label", "bycli", "--ip", "192.0.2.20", "--ipv6", "2001:db8::20", "--port", "9000"]
    done = subprocess.run(
        argv, env=environment, capture_output=True, text=True, timeout=30, check=False
    )
    assert done.returncode == 0, done.stderr
    took = wait_served(dns_server, f"bycli.{ZONE}", "A", (NOERROR, {"192.0.2.20"}))
    assert took < PROPAGATION_LIMIT
    assert_new_serial(dns_server, serial)
    assert served(dns_server, f"bycli.{ZONE}", "AAAA")[1] == {"2001:db8::20"}
    assert served(dns_server, f"_mxserver._tcp.bycli.{ZONE}", "SRV")[1] == {
        f"0 0 9000 bycli.{ZONE}"
    }


def test_many_changes_in_a_row_end_served_exactly(dns_server: ServerProcess) -> None:
    """Fifty quick writes (fifty journal entries, fifty serials): the last one wins."""
    serial = dns_server.serial()
    with dns_server.registry() as registry:
        registry.add("BURST-1", "burst", ipv4="192.0.2.100")
        for n in range(1, 50):
            registry.update("BURST-1", InstallationChange(ipv4=f"192.0.2.{100 + n}"))
    took = wait_served(dns_server, f"burst.{ZONE}", "A", (NOERROR, {"192.0.2.149"}))
    assert took < PROPAGATION_LIMIT
    new = assert_new_serial(dns_server, serial)
    assert (new - serial) % 2**32 == 50


def test_sigterm_stops_cleanly(start_server: StartServer) -> None:
    server = start_server(STANDARD_ENV)
    assert server.stop() == 0, server.log_text()


def test_committed_data_survives_kill_9(start_server: StartServer) -> None:
    server = start_server(STANDARD_ENV, seed=seed_standard)
    with server.registry() as registry:
        registry.add("DUR-1", "durable", ipv4="192.0.2.30", port=1234)
    assert wait_served(server, f"durable.{ZONE}", "A", (NOERROR, {"192.0.2.30"})) < 1.0
    serial = server.serial()

    server.kill()  # SIGKILL: nothing flushed, nothing closed by the server
    with server.registry() as registry:  # written while no server runs
        registry.update("BETA-2", InstallationChange(ipv4="198.51.100.22"))
    server.start()

    assert served(server, f"durable.{ZONE}", "A") == (dns.rcode.NOERROR, {"192.0.2.30"})
    assert served(server, f"_mxserver._tcp.durable.{ZONE}", "SRV")[1] == {
        f"0 0 1234 durable.{ZONE}"
    }
    assert served(server, f"beta.{ZONE}", "A")[1] == {"198.51.100.22"}
    assert served(server, f"alpha.{ZONE}", "AAAA")[1] == {"2001:db8::1"}
    assert serial_greater(server.serial(), serial)

    # And the restarted server follows the journal again.
    with server.registry() as registry:
        registry.remove("DUR-1")
    took = wait_served(server, f"durable.{ZONE}", "A", GONE)
    assert took < PROPAGATION_LIMIT


def test_response_ids_and_question_match_under_changes(dns_server: ServerProcess) -> None:
    """Answers stay well-formed while the zone is being swapped under them."""
    with dns_server.registry() as registry:
        registry.add("SWAP-1", "swap", ipv4="192.0.2.50")
        for n in range(20):
            registry.update("SWAP-1", InstallationChange(ipv4=f"192.0.2.{51 + n % 2}"))
            message = dns.message.make_query(f"swap.{ZONE}", "A")
            response = dns_server.send(message)
            assert response.id == message.id
            assert response.question == message.question
            assert response.rcode() in (dns.rcode.NOERROR, dns.rcode.NXDOMAIN)
