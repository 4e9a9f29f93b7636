"""Zone transfer out of the real server (`python -m controparte serve` in a subprocess, on
free 127.0.0.1 ports) to real clients: BIND's `dig` (`-y` and `-k` with the key file
`controparte tsig-key --transfer` writes), Knot's `kdig` (`-y`), and dnspython
(`dns.query.inbound_xfr` into a `dns.zone.Zone`, which checks every message's TSIG and
applies an IXFR strictly).

The zone holds enough installations for an AXFR of several 64 KiB messages. Who may
transfer (`transfer_allow`): the key xfr.example.test. from anywhere; anyone unsigned
from 127.0.0.2; the key net.example.test. from 127.0.0.3 only (Linux answers for all of
127.0.0.0/8 on the loopback interface). Tests that change data use labels of their own.
"""

from __future__ import annotations

import base64
import re
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO

import dns.exception
import dns.message
import dns.name
import dns.query
import dns.rcode
import dns.rdatatype
import dns.tsig
import dns.xfr
import dns.zone
import httpx
import pytest
from dns.rcode import Rcode

from controparte.dns.zone import load_zone
from controparte.model import InstallationChange, ZoneConfig
from controparte.service import Registry
from controparte.service.access import Access
from controparte.service.credentials import ServerSecret
from controparte.service.services import open_services
from controparte.store import open_store
from tests.debtools import tool
from tests.dns_update.test_integration import cli, exchange, read_key, tsig_of
from tests.processes import udp_sockets_on
from tests.realserver import ServerProcess
from tests.xfrtools import Rec, snapshot_records, zone_records

pytestmark = pytest.mark.integration

ZONE = "bp.controparte.test."
XFR_KEY = "xfr.example.test."
NET_KEY = "net.example.test."
INSTALLATIONS = 2_000
ALLOW = f"key={XFR_KEY};from=127.0.0.2/32;key={NET_KEY} from=127.0.0.3/32"
TOOL_TIMEOUT = 60.0
WAIT = 10.0


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    process = ServerProcess(
        tmp_path_factory.mktemp("data"),
        {"CONTROPARTE_NS": "ns1=127.0.0.1;ns2.example.net.", "CONTROPARTE_TRANSFER_ALLOW": ALLOW},
    )
    with process.registry() as registry:
        registry.import_many(
            (
                n,
                {
                    "code": f"I-{n}",
                    "label": f"inst-{n}",
                    "ip": f"198.51.100.{n % 250 + 1}",
                    "ipv6": f"2001:db8::{n:x}" if n % 2 else "",
                    "port": str(1024 + n) if n % 4 else "",
                },
            )
            for n in range(INSTALLATIONS)
        )
        registry.add("ALPHA-1", "alpha", ipv4="192.0.2.1")
    with process:
        yield process
        assert not process.died(), process.log_text()


@pytest.fixture(scope="module")
def key_file(server: ServerProcess, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The transfer key xfr.example.test., made by the real command line."""
    out = tmp_path_factory.mktemp("keys") / "xfr.key"
    done = cli(server, "tsig-key", "--transfer", XFR_KEY, "--out", str(out))
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == XFR_KEY
    return out


@pytest.fixture(scope="module")
def xfr_key(key_file: Path) -> dns.tsig.Key:
    return read_key(key_file)


@pytest.fixture(scope="module")
def net_key(server: ServerProcess) -> dns.tsig.Key:
    return made_key(server, NET_KEY)


@pytest.fixture(scope="module")
def update_key(server: ServerProcess) -> dns.tsig.Key:
    """ALPHA-1's own RFC 2136 key: never a transfer key."""
    services = open_services(server.settings)
    try:
        made = services.access.create_tsig_key("ALPHA-1")
    finally:
        services.close()
    return dns.tsig.Key(made.name, made.secret, made.algorithm)


def made_key(server: ServerProcess, name: str) -> dns.tsig.Key:
    services = open_services(server.settings)
    try:
        made = services.access.create_transfer_key(name)
    finally:
        services.close()
    return dns.tsig.Key(made.name, made.secret, made.algorithm)


def y(key: dns.tsig.Key) -> str:
    """The key as `dig -y` and `kdig -y` take it."""
    return f"hmac-sha256:{key.name}:{base64.b64encode(key.secret).decode()}"


def run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=TOOL_TIMEOUT, check=False)


def dig(server: ServerProcess, *args: str) -> subprocess.CompletedProcess[str]:
    return run(tool("dig"), f"@{server.host}", "-p", str(server.port), *args)


def kdig(server: ServerProcess, *args: str) -> subprocess.CompletedProcess[str]:
    return run(tool("kdig"), f"@{server.host}", "-p", str(server.port), *args)


def printed(text: str) -> list[Rec]:
    """The records a transfer printed by dig or kdig (comments and TSIG left out), as
    `tests.xfrtools.Rec`."""
    out = []
    for line in text.splitlines():
        if not line.strip() or line.startswith(";"):
            continue
        name, ttl, rdclass, rdtype, *data = line.split()
        if rdtype == "TSIG":
            continue
        assert rdclass == "IN", line
        out.append((name.lower(), int(ttl), rdtype, " ".join(data).lower()))
    return out


def served_zone(server: ServerProcess) -> set[Rec]:
    """What the server must transfer: the registry's zone as the snapshot lists it."""
    store = open_store(server.data)
    try:
        return snapshot_records(load_zone(store, ZoneConfig.from_settings(server.settings)))
    finally:
        store.close()


def inbound(
    server: ServerProcess,
    target: dns.zone.Zone,
    key: dns.tsig.Key | None,
    *,
    serial: int | None = None,
    source: str | None = None,
    udp_mode: dns.query.UDPMode = dns.query.UDPMode.NEVER,
) -> None:
    """dnspython's transfer into `target`: AXFR when `serial` is None, else IXFR."""
    query, _ = dns.xfr.make_query(target, serial=serial, keyring=key)
    dns.query.inbound_xfr(
        server.host,
        target,
        query,
        port=server.port,
        timeout=WAIT,
        source=source,
        udp_mode=udp_mode,
    )


def axfr_copy(
    server: ServerProcess, key: dns.tsig.Key | None, source: str | None = None
) -> dns.zone.Zone:
    target = dns.zone.Zone(ZONE, relativize=False)
    inbound(server, target, key, source=source)
    return target


def metrics(server: ServerProcess) -> str:
    server.wait_http()
    return httpx.get(server.http_url + "/metrics", timeout=10).text


def metric(server: ServerProcess, line_start: str) -> float:
    """The value of the sample whose line starts with `line_start` (0 when absent)."""
    for line in metrics(server).splitlines():
        if line.startswith(line_start + " "):
            return float(line.split()[-1])
    return 0.0


def transfers(server: ServerProcess, kind: str, peer: str = XFR_KEY) -> float:
    """How many transfers of `kind` to `peer` the server (its main process) counted."""
    return metric(server, f'controparte_transfers_total{{type="{kind}",peer="{peer}"}}')


def wait_serial(server: ServerProcess, serial: int) -> None:
    """Until the server serves `serial` (it follows the journal other processes write)."""
    deadline = time.monotonic() + WAIT
    while server.serial() != serial:
        assert time.monotonic() < deadline, f"serial {serial} not served in {WAIT} s"
        time.sleep(0.02)


# -- AXFR ------------------------------------------------------------------------------------


def test_dnspython_axfr_signed_is_the_zone(server: ServerProcess, xfr_key: dns.tsig.Key) -> None:
    messages = list(
        dns.query.xfr(
            server.host, ZONE, port=server.port, keyring={xfr_key.name: xfr_key}, relativize=False
        )
    )
    assert len(messages) > 1  # several 64 KiB messages, each verified in the chain
    assert all(m.had_tsig for m in messages)
    assert zone_records(axfr_copy(server, xfr_key)) == served_zone(server)


@pytest.mark.parametrize("form", ["-y", "-k"])
def test_dig_axfr_signed(
    server: ServerProcess, xfr_key: dns.tsig.Key, key_file: Path, form: str
) -> None:
    key = y(xfr_key) if form == "-y" else str(key_file)
    done = dig(server, form, key, ZONE, "AXFR")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "failed" not in done.stdout.lower(), done.stdout
    size = re.search(r";; XFR size: (\d+) records \(messages (\d+),", done.stdout)
    assert size is not None, done.stdout
    assert int(size.group(2)) > 1
    records = printed(done.stdout)
    assert set(records) == served_zone(server)
    assert records[0] == records[-1] and records[0][2] == "SOA"
    tsigs = [line for line in done.stdout.splitlines() if line.split()[3:4] == ["TSIG"]]
    assert len(tsigs) == int(size.group(2))  # every message signed, each verified by dig


def test_kdig_axfr_signed(server: ServerProcess, xfr_key: dns.tsig.Key) -> None:
    done = kdig(server, "-y", y(xfr_key), ZONE, "AXFR")
    assert done.returncode == 0, done.stdout + done.stderr
    received = re.search(r";; Received \d+ B \((\d+) messages, (\d+) records\)", done.stdout)
    assert received is not None, done.stdout + done.stderr
    assert int(received.group(1)) > 1
    assert set(printed(done.stdout)) == served_zone(server)


def test_unsigned_axfr_is_refused(server: ServerProcess) -> None:
    done = dig(server, ZONE, "AXFR")
    assert "Transfer failed" in done.stdout
    with pytest.raises(dns.xfr.TransferError) as caught:
        axfr_copy(server, None)
    assert caught.value.rcode == Rcode.REFUSED


def test_unsigned_axfr_from_an_allowed_address(server: ServerProcess) -> None:
    assert zone_records(axfr_copy(server, None, source="127.0.0.2")) == served_zone(server)
    done = dig(server, "-b", "127.0.0.2", ZONE, "AXFR")
    assert "failed" not in done.stdout.lower() and set(printed(done.stdout)) == served_zone(server)
    assert metric(server, 'controparte_transfers_total{type="axfr",peer="127.0.0.2"}') >= 2


def test_a_key_allowed_from_one_prefix_only(server: ServerProcess, net_key: dns.tsig.Key) -> None:
    assert zone_records(axfr_copy(server, net_key, source="127.0.0.3")) == served_zone(server)
    with pytest.raises(dns.xfr.TransferError) as caught:
        axfr_copy(server, net_key, source="127.0.0.1")
    assert caught.value.rcode == Rcode.REFUSED


@pytest.mark.parametrize(
    ("name", "error", "client", "tcp"),
    [
        (XFR_KEY, dns.rcode.BADSIG, "dig", False),
        (XFR_KEY, dns.rcode.BADSIG, "dig", True),
        ("nobody.example.test.", dns.rcode.BADKEY, "kdig", True),
    ],
    ids=["wrong MAC, udp: BADSIG", "wrong MAC, tcp: BADSIG", "unknown key: BADKEY"],
)
def test_tsig_failures_are_notauth_unsigned(
    server: ServerProcess, name: str, error: int, client: str, tcp: bool
) -> None:
    """RFC 8945 5.2: NOTAUTH with the TSIG error and an empty MAC; as the tools say."""
    forged = dns.tsig.Key(name, b"\x07" * 32)
    query = dns.message.make_query(ZONE, "AXFR" if tcp else "SOA")
    query.use_tsig(forged)
    response = exchange(server, query.to_wire(), tcp=tcp)
    assert response.rcode() == Rcode.NOTAUTH
    assert (tsig_of(response).error, tsig_of(response).mac) == (error, b"")
    done = (dig if client == "dig" else kdig)(server, "-y", y(forged), ZONE, "AXFR")
    assert dns.rcode.to_text(Rcode.make(error), tsig=True) in done.stdout + done.stderr


def test_an_update_key_cannot_transfer(server: ServerProcess, update_key: dns.tsig.Key) -> None:
    """Refused, and signed: the key is known, only not for this."""
    query = dns.message.make_query(ZONE, "AXFR")
    query.use_tsig(update_key)
    response = dns.query.tcp(query, server.host, port=server.port, timeout=WAIT)  # verified
    assert response.rcode() == Rcode.REFUSED and response.had_tsig
    assert metric(server, 'controparte_transfers_refused_total{reason="update_key"}') >= 1


def test_a_transfer_key_cannot_update(server: ServerProcess, key_file: Path) -> None:
    script = f"server {server.host} {server.port}\nzone {ZONE}\n"
    script += f"update add alpha.{ZONE} 60 A 192.0.2.99\nsend\n"
    done = subprocess.run(
        [tool("nsupdate"), "-t", "10", "-k", str(key_file)],
        input=script,
        capture_output=True,
        text=True,
        timeout=TOOL_TIMEOUT,
        check=False,
    )
    assert done.returncode != 0 and "REFUSED" in done.stdout + done.stderr
    assert server.records("alpha") == ["192.0.2.1"]


# -- IXFR --------------------------------------------------------------------------------


def change(server: ServerProcess, *steps: tuple[str, InstallationChange | None]) -> int:
    """Changes by another process (as the CLI or an HTTP worker would), one serial
    each; the serial served once the server has them."""
    with server.registry() as registry:
        for code, step in steps:
            if step is None:
                registry.remove(code)
            else:
                registry.update(code, step)
        serial = registry.store.serial()
    wait_serial(server, serial)
    return serial


def test_ixfr_up_to_date(server: ServerProcess, xfr_key: dns.tsig.Key) -> None:
    serial = server.serial()
    for run_tool in (dig, kdig):
        done = run_tool(server, "-y", y(xfr_key), ZONE, f"IXFR={serial}")
        records = printed(done.stdout)
        assert [r[2] for r in records] == ["SOA"], done.stdout
        assert records[0][3].split()[2] == str(serial)


def test_ixfr_incremental(server: ServerProcess, xfr_key: dns.tsig.Key) -> None:
    copy = axfr_copy(server, xfr_key)
    old = copy.get_soa().serial
    before = transfers(server, "ixfr")
    change(
        server,
        ("I-1", InstallationChange(ipv4="192.0.2.101")),
        ("I-2", InstallationChange(label="inst-2-renamed")),
        ("I-3", None),
        ("I-5", InstallationChange(port="")),
    )
    done = dig(server, "-y", y(xfr_key), ZONE, f"IXFR={old}")
    assert [r[2] for r in printed(done.stdout)].count("SOA") == 4, done.stdout  # one sequence
    inbound(server, copy, xfr_key, serial=old)  # applied strictly by dnspython
    assert zone_records(copy) == zone_records(axfr_copy(server, xfr_key)) == served_zone(server)
    assert transfers(server, "ixfr") == (before + 2)
    assert metric(server, f'controparte_secondary_serial{{peer="{XFR_KEY}"}}') == server.serial()


def test_ixfr_after_the_journal_was_pruned_is_axfr_style(
    server: ServerProcess, xfr_key: dns.tsig.Key
) -> None:
    copy = axfr_copy(server, xfr_key)
    old = copy.get_soa().serial
    change(server, ("I-6", InstallationChange(ipv4="192.0.2.106")))
    store = open_store(server.data)
    try:
        assert store.prune_journal(0, 0, datetime.now(UTC)) > 0
    finally:
        store.close()
    before = transfers(server, "ixfr_axfr_style")
    inbound(server, copy, xfr_key, serial=old)
    assert zone_records(copy) == served_zone(server)
    assert transfers(server, "ixfr_axfr_style") == (before + 1)


def test_ixfr_over_udp_whole_or_the_soa_alone(server: ServerProcess, xfr_key: dns.tsig.Key) -> None:
    """RFC 1995 2: the whole answer when it fits the datagram, else the current SOA."""
    copy = axfr_copy(server, xfr_key)
    old = copy.get_soa().serial
    new = change(server, ("I-7", InstallationChange(ipv4="192.0.2.107")))
    done = dig(server, "+notcp", "-y", y(xfr_key), ZONE, f"IXFR={old}")
    assert [r[2] for r in printed(done.stdout)] == ["SOA", "SOA", "A", "SOA", "A", "SOA"], (
        done.stdout
    )
    assert ";; SERVER:" in done.stdout and "(UDP)" in done.stdout
    inbound(server, copy, xfr_key, serial=old, udp_mode=dns.query.UDPMode.ONLY)
    assert copy.get_soa().serial == new
    newer = change(
        server, *((f"I-{n}", InstallationChange(ipv4=f"192.0.2.{n}")) for n in range(10, 40))
    )
    done = dig(server, "+notcp", "+noedns", "-y", y(xfr_key), ZONE, f"IXFR={new}")
    assert [r[2] for r in printed(done.stdout)] == ["SOA"], done.stdout  # "use TCP"
    with pytest.raises(dns.xfr.UseTCP):
        inbound(server, copy, xfr_key, serial=new, udp_mode=dns.query.UDPMode.ONLY)
    inbound(server, copy, xfr_key, serial=new, udp_mode=dns.query.UDPMode.TRY_FIRST)
    assert copy.get_soa().serial == newer
    assert zone_records(copy) == served_zone(server)


# -- signed queries ----------------------------------------------------------------------------


@pytest.mark.parametrize("tcp", [False, True], ids=["udp", "tcp"])
def test_signed_soa_query_is_answered_signed(
    server: ServerProcess, xfr_key: dns.tsig.Key, tcp: bool
) -> None:
    """What Knot (TCP) and BIND (UDP) ask before an IXFR; dnspython checks the TSIG."""
    query = dns.message.make_query(ZONE, "SOA")
    query.use_tsig(xfr_key)
    send = dns.query.tcp if tcp else dns.query.udp
    response = send(query, server.host, port=server.port, timeout=WAIT)
    assert response.rcode() == Rcode.NOERROR and response.had_tsig
    assert response.answer[0][0].serial == server.serial()
    done = dig(server, "+tcp" if tcp else "+notcp", "-y", y(xfr_key), ZONE, "SOA")
    assert "status: NOERROR" in done.stdout and "tsig" not in done.stderr.lower(), done.stdout
    done = kdig(server, "+tcp" if tcp else "+notcp", "-y", y(xfr_key), ZONE, "SOA")
    assert "status: NOERROR" in done.stdout and done.returncode == 0, done.stdout + done.stderr


def test_signed_soa_query_with_an_update_key_is_refused_signed(
    server: ServerProcess, update_key: dns.tsig.Key
) -> None:
    query = dns.message.make_query(ZONE, "SOA")
    query.use_tsig(update_key)
    response = dns.query.udp(query, server.host, port=server.port, timeout=WAIT)
    assert response.rcode() == Rcode.REFUSED and response.had_tsig


# -- the connection --------------------------------------------------------------------------


def read_messages(stream: BinaryIO, until_soa_twice: bool) -> list[dns.message.Message]:
    """Framed messages from `stream`, without checking TSIG: one, or an AXFR's."""
    out: list[dns.message.Message] = []
    soas = 0
    while True:
        length = int.from_bytes(stream.read(2), "big")
        message = dns.message.from_wire(stream.read(length), keyring=False, one_rr_per_rrset=True)
        out.append(message)
        soas += sum(1 for rrset in message.answer if rrset.rdtype == dns.rdatatype.SOA)
        if not until_soa_twice or soas >= 2:
            return out


def test_queries_after_an_axfr_on_the_same_connection(
    server: ServerProcess, xfr_key: dns.tsig.Key
) -> None:
    """RFC 5936 4.1, RFC 7766: a query pipelined behind an AXFR is answered after it."""
    axfr = dns.message.make_query(ZONE, "AXFR")
    axfr.use_tsig(xfr_key)
    first, second = dns.message.make_query(f"alpha.{ZONE}", "A"), dns.message.make_query(ZONE, "NS")
    wires = [axfr.to_wire(), first.to_wire()]
    with socket.create_connection((server.host, server.port), timeout=WAIT) as conn:
        conn.sendall(b"".join(len(w).to_bytes(2, "big") + w for w in wires))
        stream = conn.makefile("rb")
        transfer = read_messages(stream, until_soa_twice=True)
        assert {m.id for m in transfer} == {axfr.id} and len(transfer) > 1
        [answer] = read_messages(stream, until_soa_twice=False)
        assert answer.id == first.id and answer.answer[0][0].to_text() == "192.0.2.1"
        wire = second.to_wire()
        conn.sendall(len(wire).to_bytes(2, "big") + wire)
        [answer] = read_messages(stream, until_soa_twice=False)
        assert answer.id == second.id and answer.rcode() == Rcode.NOERROR


def test_other_clients_are_served_while_a_transfer_waits(
    server: ServerProcess, xfr_key: dns.tsig.Key
) -> None:
    """A client that stops reading mid-transfer holds its connection, not the server:
    UDP and other TCP connections are answered meanwhile; then the transfer completes."""
    axfr = dns.message.make_query(ZONE, "AXFR")
    axfr.use_tsig(xfr_key)
    wire = axfr.to_wire()
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as slow:
        slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        slow.settimeout(WAIT)
        slow.connect((server.host, server.port))
        slow.sendall(len(wire).to_bytes(2, "big") + wire)
        assert len(slow.recv(2, socket.MSG_PEEK)) == 2  # the transfer has begun, and waits
        for _ in range(20):
            assert server.records("alpha") == ["192.0.2.1"]
            assert server.query(f"alpha.{ZONE}", "A", tcp=True).rcode() == Rcode.NOERROR
        assert len(read_messages(slow.makefile("rb"), until_soa_twice=True)) > 1


def test_the_transfer_metrics(server: ServerProcess, xfr_key: dns.tsig.Key) -> None:
    axfr_copy(server, xfr_key)
    text = metrics(server)
    assert f'controparte_transfers_total{{type="axfr",peer="{XFR_KEY}"}}' in text
    assert f'controparte_secondary_serial{{peer="{XFR_KEY}"}} {server.serial()}' in text
    assert 'controparte_transfers_refused_total{reason="not_allowed"}' in text


def test_worker_processes_answer_signed_queries_and_ixfr_over_udp(
    start_server: Callable[..., ServerProcess],
) -> None:
    """With `dns_workers` 2, UDP datagrams reach either process (SO_REUSEPORT): each
    answers signed queries signed and IXFR over UDP, with its own keys and journal."""
    made: list[dns.tsig.Key] = []

    def seed(registry: Registry) -> None:
        registry.add("ALPHA-1", "alpha", ipv4="192.0.2.1")
        secret = ServerSecret.load_or_create(registry.settings.data)
        key = Access(registry.store, secret, registry.settings).create_transfer_key(XFR_KEY)
        made.append(dns.tsig.Key(key.name, key.secret, key.algorithm))

    env = {"CONTROPARTE_DNS_WORKERS": "2", "CONTROPARTE_TRANSFER_ALLOW": f"key={XFR_KEY}"}
    server = start_server(env, seed)
    deadline = time.monotonic() + WAIT
    while udp_sockets_on(server.port) < 2:  # the worker binds once its zone is loaded
        assert time.monotonic() < deadline, "the worker process did not bind its socket"
        time.sleep(0.05)
    [key] = made
    serial = server.serial()
    tries = 40
    for _ in range(tries):  # a new socket, a new source port each time
        query = dns.message.make_query(ZONE, "SOA")
        query.use_tsig(key)
        response = dns.query.udp(query, server.host, port=server.port, timeout=WAIT)
        assert response.rcode() == Rcode.NOERROR and response.had_tsig
        target = dns.zone.Zone(ZONE, relativize=False)
        request, _ = dns.xfr.make_query(target, serial=serial, keyring=key)
        dns.query.inbound_xfr(
            server.host, target, request, port=server.port, udp_mode=dns.query.UDPMode.ONLY
        )
    in_main = transfers(server, "ixfr_up_to_date")
    assert 0 < in_main < tries  # the main process counts its own: the worker took some
