"""RFC 2136 UPDATE with TSIG against the real server (`python -m controparte serve` in a
subprocess, on free 127.0.0.1 ports), with keys made by the real CLI and sent by the
real `nsupdate` (BIND) over UDP and TCP, and by dnspython for the TSIG failures.

Each test changes an installation of its own, so they share one server.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import dns.message
import dns.query
import dns.rcode
import dns.rdatatype
import dns.rdtypes.ANY.TSIG
import dns.rrset
import dns.tsig
import dns.update
import pytest
from dns.rcode import Rcode
from dns.rdataclass import RdataClass
from dns.rdatatype import RdataType

from tests.debtools import tool
from tests.realserver import ServerProcess

pytestmark = pytest.mark.integration

ZONE = "bp.controparte.test."
TOOL_TIMEOUT = 30.0
INSTALLATIONS = [
    # code, label, ipv4, port
    ("UDP-1", "udp", "192.0.2.1", None),
    ("TCP-2", "tcp", "192.0.2.2", None),
    ("SRV-3", "srv", "192.0.2.3", None),
    ("OWNER-4", "owner", "192.0.2.4", None),
    ("VICTIM-5", "victim", "198.51.100.5", None),
    ("ADMIN-6", "admin-target", "198.51.100.6", 4443),
    ("PRE-7", "pre", "192.0.2.7", None),
    ("TSIG-8", "tsig", "192.0.2.8", None),
    ("PIPE-9", "pipe", "192.0.2.9", None),
]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    process = ServerProcess(tmp_path_factory.mktemp("data"))
    with process.registry() as registry:
        for code, label, ipv4, port in INSTALLATIONS:
            registry.add(code, label, ipv4=ipv4, port=port)
    with process:
        yield process


def cli(server: ServerProcess, *args: str) -> subprocess.CompletedProcess[str]:
    """The real command line, configured as the server is."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith("CONTROPARTE_")}
    environment.update(server.settings_env)
    return subprocess.run(
        [sys.executable, "-m", "controparte", *args],
        env=environment,
        capture_output=True,
        text=True,
        timeout=TOOL_TIMEOUT,
        check=False,
    )


def key_file(server: ServerProcess, tmp_path: Path, code: str | None) -> Path:
    """A key made by `controparte installation tsig-key CODE` (or `tsig-key --admin`)."""
    out = tmp_path / f"{code or 'admin'}.key"
    args = ("tsig-key", "--admin") if code is None else ("installation", "tsig-key", code)
    done = cli(server, *args, "--out", str(out))
    assert done.returncode == 0, done.stderr
    assert out.stat().st_mode & 0o777 == 0o600
    name = done.stdout.strip()
    assert name == (f"{code.lower()}.tsig.{ZONE}" if code else f"admin.tsig.{ZONE}")
    return out


def read_key(path: Path) -> dns.tsig.Key:
    """The key in a BIND key file, as `nsupdate -k` reads it."""
    text = path.read_text()
    name = re.search(r'key "([^"]+)"', text)
    algorithm = re.search(r"algorithm ([\w-]+);", text)
    secret = re.search(r'secret "([^"]+)";', text)
    assert name and algorithm and secret
    return dns.tsig.Key(name.group(1), secret.group(1), algorithm.group(1))


def nsupdate(
    server: ServerProcess, key: Path, *commands: str, tcp: bool = False
) -> subprocess.CompletedProcess[str]:
    """`nsupdate -k KEY` (with -v: TCP) sending `commands` to the server."""
    script = "".join(
        f"{line}\n"
        for line in (f"server {server.host} {server.port}", f"zone {ZONE}", *commands, "send")
    )
    argv = [tool("nsupdate"), "-t", "10", "-k", str(key), *(["-v"] if tcp else [])]
    return subprocess.run(
        argv, input=script, capture_output=True, text=True, timeout=TOOL_TIMEOUT, check=False
    )


def addresses(server: ServerProcess, label: str, rdtype: str = "A") -> set[str]:
    response = server.query(f"{label}.{ZONE}", rdtype)
    return {rdata.to_text() for rrset in response.answer for rdata in rrset}


# -- nsupdate -----------------------------------------------------------------------------


def test_nsupdate_over_udp_changes_the_address(server: ServerProcess, tmp_path: Path) -> None:
    key = key_file(server, tmp_path, "UDP-1")
    serial = server.serial()
    done = nsupdate(server, key, f"update add udp.{ZONE} 60 A 192.0.2.101")
    assert done.returncode == 0, done.stdout + done.stderr
    assert addresses(server, "udp") == {"192.0.2.101"}  # at once: no waiting
    assert server.dig("udp") == ["192.0.2.101"]
    assert server.serial() > serial
    with server.registry() as registry:
        assert registry.get("UDP-1").ipv4 == "192.0.2.101"
        last = registry.store.history("UDP-1")[-1]
    assert (last["actor"], last["via"], last["source"]) == ("UDP-1", "rfc2136", "127.0.0.1")


def test_nsupdate_over_tcp_deletes_the_address(server: ServerProcess, tmp_path: Path) -> None:
    key = key_file(server, tmp_path, "TCP-2")
    serial = server.serial()
    done = nsupdate(server, key, f"update delete tcp.{ZONE} A", tcp=True)
    assert done.returncode == 0, done.stdout + done.stderr
    assert addresses(server, "tcp") == set()
    assert server.serial() > serial
    done = nsupdate(server, key, f"update add tcp.{ZONE} 60 A 192.0.2.102", tcp=True)
    assert done.returncode == 0, done.stdout + done.stderr
    assert addresses(server, "tcp") == {"192.0.2.102"}


def test_nsupdate_sets_the_port_with_srv(server: ServerProcess, tmp_path: Path) -> None:
    key = key_file(server, tmp_path, "SRV-3")
    srv = f"_mxserver._tcp.srv.{ZONE}"
    done = nsupdate(server, key, f"update add {srv} 60 SRV 0 0 8443 srv.{ZONE}")
    assert done.returncode == 0, done.stdout + done.stderr
    assert server.dig("_mxserver._tcp.srv", "SRV") == [f"0 0 8443 srv.{ZONE}"]
    done = nsupdate(server, key, f"update add {srv} 60 SRV 5 0 8443 srv.{ZONE}")
    assert done.returncode != 0 and "REFUSED" in done.stdout + done.stderr
    done = nsupdate(server, key, f"update delete {srv} SRV")
    assert done.returncode == 0
    assert server.query(srv, "SRV").rcode() == Rcode.NXDOMAIN


def test_nsupdate_refused_for_another_installation(server: ServerProcess, tmp_path: Path) -> None:
    key = key_file(server, tmp_path, "OWNER-4")
    serial = server.serial()
    done = nsupdate(server, key, f"update add victim.{ZONE} 60 A 192.0.2.66")
    assert done.returncode != 0
    assert "REFUSED" in done.stdout + done.stderr
    done = nsupdate(server, key, f"update delete victim.{ZONE}", tcp=True)
    assert "REFUSED" in done.stdout + done.stderr
    done = nsupdate(server, key, f"update add owner.{ZONE} 60 TXT hello")
    assert "REFUSED" in done.stdout + done.stderr
    assert addresses(server, "victim") == {"198.51.100.5"}
    assert server.serial() == serial


def test_admin_key_changes_any_installation(server: ServerProcess, tmp_path: Path) -> None:
    key = key_file(server, tmp_path, None)
    done = nsupdate(
        server,
        key,
        f"update delete admin-target.{ZONE} A",
        f"update add admin-target.{ZONE} 60 AAAA 2001:db8::6",
        f"update delete _mxserver._tcp.admin-target.{ZONE}",
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert addresses(server, "admin-target", "A") == set()
    assert addresses(server, "admin-target", "AAAA") == {"2001:db8::6"}
    srv = server.query(f"_mxserver._tcp.admin-target.{ZONE}", "SRV")
    assert srv.rcode() == Rcode.NXDOMAIN
    with server.registry() as registry:
        assert registry.store.history("ADMIN-6")[-1]["actor"] == f"admin.tsig.{ZONE}"


def test_nsupdate_prerequisites(server: ServerProcess, tmp_path: Path) -> None:
    key = key_file(server, tmp_path, "PRE-7")
    name = f"pre.{ZONE}"
    failed = nsupdate(server, key, f"prereq nxdomain {name}", f"update add {name} 60 A 192.0.2.77")
    assert failed.returncode != 0 and "YXDOMAIN" in failed.stdout + failed.stderr
    failed = nsupdate(
        server, key, f"prereq yxrrset {name} A 192.0.2.70", f"update add {name} 60 A 192.0.2.77"
    )
    assert failed.returncode != 0 and "NXRRSET" in failed.stdout + failed.stderr
    assert addresses(server, "pre") == {"192.0.2.7"}
    done = nsupdate(
        server, key, f"prereq yxrrset {name} A 192.0.2.7", f"update add {name} 60 A 192.0.2.77"
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert addresses(server, "pre") == {"192.0.2.77"}


# -- TSIG failures, with dnspython --------------------------------------------------------


def exchange(server: ServerProcess, wire: bytes, *, tcp: bool = False) -> dns.message.Message:
    """Send raw bytes, read the response without checking its TSIG."""
    if tcp:
        with socket.create_connection((server.host, server.port), timeout=5) as conn:
            conn.sendall(len(wire).to_bytes(2, "big") + wire)
            raw = _read_framed(conn)
    else:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.settimeout(5)
            udp.sendto(wire, (server.host, server.port))
            raw = udp.recv(65535)
    return dns.message.from_wire(raw, keyring=False)


def _read_framed(conn: socket.socket) -> bytes:
    def exactly(count: int) -> bytes:
        data = b""
        while len(data) < count:
            chunk = conn.recv(count - len(data))
            assert chunk, "the server closed the connection"
            data += chunk
        return data

    return exactly(int.from_bytes(exactly(2), "big"))


def tsig_of(message: dns.message.Message) -> dns.rdtypes.ANY.TSIG.TSIG:
    assert message.tsig is not None
    rdata = message.tsig[0]
    assert isinstance(rdata, dns.rdtypes.ANY.TSIG.TSIG)
    return rdata


def tsig_update(address: str = "192.0.2.188") -> dns.update.UpdateMessage:
    message = dns.update.UpdateMessage(ZONE)
    message.add("tsig", 60, "A", address)
    return message


@pytest.fixture
def tsig_key(server: ServerProcess, tmp_path: Path) -> dns.tsig.Key:
    return read_key(key_file(server, tmp_path, "TSIG-8"))


@pytest.mark.parametrize("tcp", [False, True], ids=["udp", "tcp"])
def test_wrong_secret_is_badsig(server: ServerProcess, tsig_key: dns.tsig.Key, tcp: bool) -> None:
    forged = dns.tsig.Key(tsig_key.name, b"\x07" * 32)
    message = tsig_update()
    message.use_tsig(forged)
    response = exchange(server, message.to_wire(), tcp=tcp)
    assert response.rcode() == Rcode.NOTAUTH
    assert (tsig_of(response).error, tsig_of(response).mac) == (dns.rcode.BADSIG, b"")
    with pytest.raises(dns.tsig.PeerBadSignature):
        _client(server, forged)
    assert addresses(server, "tsig") == {"192.0.2.8"}


def _client(server: ServerProcess, key: dns.tsig.Key) -> dns.message.Message:
    """What a dnspython client sees (it raises on a TSIG error)."""
    message = tsig_update()
    message.use_tsig(key)
    return dns.query.udp(message, server.host, port=server.port, timeout=5)


def test_unknown_key_is_badkey(server: ServerProcess, tsig_key: dns.tsig.Key) -> None:
    unknown = dns.tsig.Key(f"nobody.tsig.{ZONE}", tsig_key.secret)
    message = tsig_update()
    message.use_tsig(unknown)
    response = exchange(server, message.to_wire())
    assert response.rcode() == Rcode.NOTAUTH
    assert (tsig_of(response).error, tsig_of(response).mac) == (dns.rcode.BADKEY, b"")
    with pytest.raises(dns.tsig.PeerBadKey):
        _client(server, unknown)
    assert addresses(server, "tsig") == {"192.0.2.8"}


def test_bad_time_is_badtime_with_our_time(server: ServerProcess, tsig_key: dns.tsig.Key) -> None:
    then = int(time.time()) - 3600
    message = tsig_update()
    unsigned = message.to_wire()
    template = dns.rdtypes.ANY.TSIG.TSIG(  # type: ignore[no-untyped-call]
        RdataClass.ANY, RdataType.TSIG, tsig_key.algorithm, then, 300, b"", message.id, 0, b""
    )
    rdata, _ = dns.tsig.sign(unsigned, tsig_key, template, then, b"")  # type: ignore[no-untyped-call]
    message.tsig = dns.rrset.from_rdata(tsig_key.name, 0, rdata)
    wire = message.to_wire()
    response = exchange(server, wire)
    assert response.rcode() == Rcode.NOTAUTH
    tsig = tsig_of(response)
    assert tsig.error == dns.rcode.BADTIME
    assert tsig.time_signed == then
    assert len(tsig.mac) == 32  # signed
    assert abs(int.from_bytes(tsig.other, "big") - time.time()) < 30
    assert addresses(server, "tsig") == {"192.0.2.8"}


@pytest.mark.parametrize("tcp", [False, True], ids=["udp", "tcp"])
def test_unsigned_is_refused(server: ServerProcess, tcp: bool) -> None:
    response = exchange(server, tsig_update().to_wire(), tcp=tcp)
    assert response.rcode() == Rcode.REFUSED
    assert not response.had_tsig
    assert addresses(server, "tsig") == {"192.0.2.8"}


def test_another_zone_is_notauth_signed(server: ServerProcess, tsig_key: dns.tsig.Key) -> None:
    message = dns.update.UpdateMessage("example.net.")
    message.add("host", 60, "A", "192.0.2.1")
    message.use_tsig(tsig_key)
    response = dns.query.udp(message, server.host, port=server.port, timeout=5)  # verifies
    assert response.rcode() == Rcode.NOTAUTH
    assert tsig_of(response).error == 0


def test_signed_success_verifies_with_dnspython(
    server: ServerProcess, tsig_key: dns.tsig.Key
) -> None:
    message = tsig_update("192.0.2.199")
    message.use_tsig(tsig_key)
    response = dns.query.tcp(message, server.host, port=server.port, timeout=5)
    assert response.rcode() == Rcode.NOERROR
    assert addresses(server, "tsig") == {"192.0.2.199"}


def test_tcp_pipelined_update_then_query(server: ServerProcess, tmp_path: Path) -> None:
    """On one connection, the query sent right after an UPDATE sees its change."""
    key = read_key(key_file(server, tmp_path, "PIPE-9"))
    message = dns.update.UpdateMessage(ZONE)
    message.add("pipe", 60, "A", "192.0.2.209")
    message.use_tsig(key)
    update_wire = message.to_wire()
    query = dns.message.make_query(f"pipe.{ZONE}", "A")
    query_wire = query.to_wire()
    with socket.create_connection((server.host, server.port), timeout=5) as conn:
        conn.sendall(b"".join(len(w).to_bytes(2, "big") + w for w in (update_wire, query_wire)))
        first = dns.message.from_wire(_read_framed(conn), keyring=False)
        second = dns.message.from_wire(_read_framed(conn))
    assert (first.id, first.rcode()) == (message.id, Rcode.NOERROR)
    assert second.id == query.id
    assert {rd.to_text() for rrset in second.answer for rd in rrset} == {"192.0.2.209"}
    assert second.answer[0].rdtype == dns.rdatatype.A


def test_updates_reach_every_worker_process(
    tmp_path_factory: pytest.TempPathFactory, tmp_path: Path
) -> None:
    """With `dns_workers` = 2 two processes share the UDP port; an UPDATE is answered
    by whichever receives it, and every one is applied."""
    process = ServerProcess(tmp_path_factory.mktemp("data"), {"CONTROPARTE_DNS_WORKERS": "2"})
    with process.registry() as registry:
        registry.add("MANY-1", "many", ipv4="192.0.2.1")
    with process:
        key = read_key(key_file(process, tmp_path, "MANY-1"))
        for last in range(10, 30):  # a new socket (source port) each: both processes serve
            message = dns.update.UpdateMessage(ZONE)
            message.add("many", 60, "A", f"192.0.2.{last}")
            message.use_tsig(key)
            response = dns.query.udp(message, process.host, port=process.port, timeout=5)
            assert response.rcode() == Rcode.NOERROR
        with process.registry() as registry:
            assert registry.get("MANY-1").ipv4 == f"192.0.2.{last}"
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:  # the other process follows the journal
            seen = {frozenset(addresses(process, "many")) for _ in range(10)}
            if seen == {frozenset({f"192.0.2.{last}"})}:
                break
            time.sleep(0.1)
        assert seen == {frozenset({f"192.0.2.{last}"})}
        assert "Traceback" not in process.log_text()
