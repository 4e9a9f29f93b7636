"""The TSIG replay guard holds across a restart of `controparte serve` and across DNS
worker processes: the bytes of a signed UPDATE captured on the wire and sent again are
refused (NOTAUTH, TSIG error BADTIME, signed: RFC 8945 5.2.3) and change nothing, even
when a later update moved the record on (the replay would revert it)."""

from __future__ import annotations

from pathlib import Path

import dns.rcode
import dns.update
import pytest
from dns.rcode import Rcode

from controparte.model import InstallationChange
from tests.dns_update.test_integration import ZONE, exchange, key_file, read_key, tsig_of
from tests.realserver import ServerProcess

pytestmark = pytest.mark.integration


def signed_update(key_path: Path, label: str, address: str) -> bytes:
    message = dns.update.UpdateMessage(ZONE)
    message.replace(label, 60, "A", address)
    message.use_tsig(read_key(key_path))
    return message.to_wire()


def assert_replay_refused(server: ServerProcess, wire: bytes) -> None:
    response = exchange(server, wire)
    assert response.rcode() == Rcode.NOTAUTH
    tsig = tsig_of(response)
    assert tsig.error == dns.rcode.BADTIME
    assert len(tsig.mac) == 32  # signed with the key, as RFC 8945 5.2.3 wants


def test_a_replay_after_a_restart_is_refused(
    tmp_path_factory: pytest.TempPathFactory, tmp_path: Path
) -> None:
    server = ServerProcess(tmp_path_factory.mktemp("data"))
    with server.registry() as registry:
        registry.add("REPLAY-1", "replay", ipv4="192.0.2.1")
    with server:
        key = key_file(server, tmp_path, "REPLAY-1")
        captured = signed_update(key, "replay", "192.0.2.50")
        assert exchange(server, captured).rcode() == Rcode.NOERROR
        assert exchange(server, signed_update(key, "replay", "192.0.2.60")).rcode() == 0
        server.wait_for("replay", ["192.0.2.60"])
        assert_replay_refused(server, captured)  # at once
        server.stop()
        server.start()
        assert_replay_refused(server, captured)  # after a restart
        assert server.records("replay") == ["192.0.2.60"]
        with server.registry() as registry:
            assert registry.get("REPLAY-1").ipv4 == "192.0.2.60"
        assert "Traceback" not in server.log_text()


def test_a_replay_to_another_worker_is_refused(
    tmp_path_factory: pytest.TempPathFactory, tmp_path: Path
) -> None:
    """With `dns_workers` = 2 each datagram from a new source port may reach either
    process: every replay is refused whichever answers."""
    server = ServerProcess(tmp_path_factory.mktemp("data"), {"CONTROPARTE_DNS_WORKERS": "2"})
    with server.registry() as registry:
        registry.add("WORKER-1", "worker", ipv4="192.0.2.1")
    with server:
        key = key_file(server, tmp_path, "WORKER-1")
        captured = signed_update(key, "worker", "192.0.2.70")
        assert exchange(server, captured).rcode() == Rcode.NOERROR
        with server.registry() as registry:
            registry.update("WORKER-1", InstallationChange(ipv4="192.0.2.71"))  # moved on
        for _ in range(12):  # a new socket (source port) each: both processes answer
            assert_replay_refused(server, captured)
        with server.registry() as registry:
            assert registry.get("WORKER-1").ipv4 == "192.0.2.71"
