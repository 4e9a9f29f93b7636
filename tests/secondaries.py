"""Real name servers on loopback for the zone-transfer tests and benchmarks: NSD, Knot and
BIND as secondaries of a primary, and Knot as a primary (a reference to compare
controparte with, and the primary the harness proves itself against).

Each server lives in a directory of its own (its configuration, zone data, journal,
control socket and log are all under it), listens on a free port of 127.0.0.1, runs in
the foreground as a child of this process and is stopped by its process ids (SIGTERM,
then SIGKILL of every process of its tree that is left, also after a `kill`). The
configurations are the ones verified in the issue 8 research (NSD 4.6, Knot 3.2, BIND
9.18): NSD reloads as soon as a transfer is in (`xfrd-reload-timeout: 0`), Knot waits
5 s for each message of a transfer it sends (`tcp-io-timeout`: a Python reader is
slow) and keeps large zones in its journal, and every secondary accepts NOTIFY from
127.0.0.1 signed with the transfer key and lets the tests transfer the zone back out
(AXFR, signed with the same key) to compare it with the primary's.

    with NsdSecondary(home, ZONE, primary=(HOST, port), key=key) as nsd:
        nsd.wait_serial(2024, timeout=10)
        assert nsd.axfr() == expected

The whole zone is compared as a set of `Rr`: owner (lower case), TTL, type, data.
"""

from __future__ import annotations

import base64
import contextlib
import os
import re
import secrets
import signal
import socket
import struct
import subprocess
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, NamedTuple

import dns.exception
import dns.message
import dns.name
import dns.query
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rrset
import dns.tsig
import dns.xfr
import dns.zone

from controparte.dns.zone import load_zone
from controparte.dns.zonefile import zone_text
from controparte.model.zone import ZoneConfig
from controparte.service import Registry
from controparte.settings import Settings
from controparte.store import Store
from tests.debtools import tool
from tests.processes import (
    HOST,
    STOP_TIMEOUT,
    LoggedProcess,
    alive,
    free_port,
    process_tree,
    remember_secret,
)

START_TIMEOUT = 30.0
CONTROL_TIMEOUT = 30.0
QUERY_TIMEOUT = 0.5
XFR_TIMEOUT = 30.0  # per message of a transfer read back out of a server
POLL = 0.02
ALGORITHM = "hmac-sha256"
SOCKET_PATH_MAX = 107  # sun_path holds 108 bytes with the terminating NUL


class Rr(NamedTuple):
    """One record, as zones are compared: owner (absolute, lower case), TTL, type, data
    (names absolute)."""

    owner: str
    ttl: int
    rdtype: str
    rdata: str


def records(rrsets: Iterable[dns.rrset.RRset]) -> set[Rr]:
    """The records of `rrsets` (absolute names) as `Rr`."""
    return {
        Rr(rrset.name.to_text().lower(), rrset.ttl, dns.rdatatype.to_text(rrset.rdtype), str(rd))
        for rrset in rrsets
        for rd in rrset
    }


def add_installations(registry: Registry, prefix: str, count: int) -> None:
    """`count` installations PREFIX-0, PREFIX-1, ... (the code is the label): an
    address each, an IPv6 address every other one, a port three in four."""
    for i in range(count):
        registry.add(
            f"{prefix}-{i}",
            f"{prefix}-{i}",
            ipv4=f"192.0.2.{i % 250 + 1}",
            ipv6=f"2001:db8::{i + 1:x}" if i % 2 == 0 else None,
            port=None if i % 4 == 3 else 4000 + i,
        )


def exported(store: Store, settings: Settings) -> tuple[int, str]:
    """What `controparte zone export` writes for `store` now: the serial and the text."""
    snapshot = load_zone(store, ZoneConfig.from_settings(settings))
    return snapshot.serial, zone_text(snapshot)


def zone_file_records(text: str, zone: str) -> set[Rr]:
    """The records of a master file (what `controparte zone export` writes)."""
    parsed = dns.zone.from_text(text, zone, relativize=False, check_origin=True)
    return records(
        dns.rrset.from_rdata_list(name, rdataset.ttl, list(rdataset))
        for name, rdataset in parsed.iterate_rdatasets()
    )


# -- TSIG keys -------------------------------------------------------------------------------


@dataclass(frozen=True)
class TsigKey:
    """A TSIG key as the servers' configurations name it: `name` absolute."""

    name: str
    secret: str  # base64
    algorithm: str = ALGORITHM

    def __post_init__(self) -> None:
        remember_secret(self.secret)  # no log of the session may show it

    @classmethod
    def generate(cls, name: str) -> TsigKey:
        """A new random hmac-sha256 key called `name`."""
        absolute = dns.name.from_text(name).to_text()
        return cls(absolute, base64.b64encode(secrets.token_bytes(32)).decode("ascii"))

    @classmethod
    def from_bind_file(cls, path: Path) -> TsigKey:
        """The key of a BIND `key "NAME" { algorithm ...; secret "..."; };` file (what
        `controparte tsig-key --transfer NAME --out FILE` writes)."""
        text = path.read_text(encoding="ascii")
        found = re.search(
            r'key\s+"([^"]+)"\s*\{\s*algorithm\s+([\w-]+);\s*secret\s+"([^"]+)";\s*\};', text
        )
        if found is None:
            raise ValueError(f"{path} holds no key statement:\n{text}")
        return cls(dns.name.from_text(found[1]).to_text(), found[3], found[2])

    def dns_key(self) -> dns.tsig.Key:
        return dns.tsig.Key(self.name, self.secret, self.algorithm)

    def bind_text(self) -> str:
        """The BIND `key` statement (named.conf, `dig -k`, `nsupdate -k`)."""
        secret = f'\tsecret "{self.secret}";\n'
        return f'key "{self.name}" {{\n\talgorithm {self.algorithm};\n{secret}}};\n'

    def nsd_text(self) -> str:
        """The key as nsd.conf declares it."""
        return (
            f'key:\n    name: "{self.name}"\n    algorithm: {self.algorithm}\n'
            f'    secret: "{self.secret}"\n'
        )

    def knot_text(self) -> str:
        """The key as knot.conf declares it."""
        return (
            f"key:\n  - id: {self.name}\n    algorithm: {self.algorithm}\n"
            f"    secret: {self.secret}\n"
        )


def axfr_records(
    host: str, port: int, zone: str, key: TsigKey | None, timeout: float = XFR_TIMEOUT
) -> set[Rr]:
    """The whole zone from HOST:`port` by AXFR over TCP (signed with `key`, every
    message's TSIG checked by dnspython); dns.xfr.TransferError with the rcode when the
    server refuses, dns.exception.DNSException for a TSIG failure."""
    found: set[Rr] = set()
    tsig = None if key is None else key.dns_key()
    for message in dns.query.xfr(
        host,
        zone,
        port=port,
        timeout=timeout,
        lifetime=None,
        relativize=False,
        keyring=None if tsig is None else {tsig.name: tsig},
        keyname=None if tsig is None else tsig.name,
    ):
        found |= records(message.answer)
    return found


class WireRr(NamedTuple):
    """One record as it travels, for comparing large zones fast (`axfr_wire`): the
    owner and the names inside the data uncompressed and in lower case."""

    owner: bytes
    rdtype: int
    rdclass: int
    ttl: int
    rdata: bytes


_SOA = int(dns.rdatatype.SOA)
# Where the data of a type holds names (RFC 3597 section 4; SRV's is never compressed,
# but reading it as a name costs nothing): bytes before the names, names, bytes after.
_NAMES_IN_DATA = {
    int(dns.rdatatype.NS): (0, 1),
    int(dns.rdatatype.CNAME): (0, 1),
    int(dns.rdatatype.PTR): (0, 1),
    int(dns.rdatatype.SOA): (0, 2),
    int(dns.rdatatype.MX): (2, 1),
    int(dns.rdatatype.SRV): (6, 1),
}


def _wire_name(wire: bytes, offset: int) -> tuple[bytes, int]:
    """The name at `offset` of the message `wire`, pointers followed, uncompressed and
    in lower case (length bytes are below 64: `lower` leaves them alone); the offset
    after it."""
    parts: list[bytes] = []
    after = -1
    for _ in range(256):  # at most 127 labels, and as many pointers
        length = wire[offset]
        if length >= 0xC0:
            after = offset + 2 if after < 0 else after
            offset = (length & 0x3F) << 8 | wire[offset + 1]
        elif length == 0:
            parts.append(b"\0")
            return b"".join(parts).lower(), offset + 1 if after < 0 else after
        else:
            parts.append(wire[offset : offset + length + 1])
            offset += length + 1
    raise ValueError(f"a name with a pointer loop at offset {offset}")


def wire_records(wire: bytes) -> tuple[int, list[WireRr]]:
    """The rcode and the answer records of the DNS message `wire`."""
    rcode = wire[3] & 0x0F
    questions, answers = struct.unpack_from("!HH", wire, 4)
    offset = 12
    for _ in range(questions):
        offset = _wire_name(wire, offset)[1] + 4
    found: list[WireRr] = []
    for _ in range(answers):
        owner, offset = _wire_name(wire, offset)
        rdtype, rdclass, ttl, size = struct.unpack_from("!HHIH", wire, offset)
        offset += 10
        end = offset + size
        where = _NAMES_IN_DATA.get(rdtype)
        if where is None:
            rdata = wire[offset:end]
        else:
            before, names = where
            parts = [wire[offset : offset + before]]
            at = offset + before
            for _ in range(names):
                name, at = _wire_name(wire, at)
                parts.append(name)
            parts.append(wire[at:end])
            rdata = b"".join(parts)
        found.append(WireRr(owner, rdtype, rdclass, ttl, rdata))
        offset = end
    return rcode, found


def axfr_wire(
    host: str, port: int, zone: str, key: TsigKey | None, timeout: float = XFR_TIMEOUT
) -> set[WireRr]:
    """The whole zone from HOST:`port` by AXFR over TCP (the request signed with `key`),
    read without dnspython's objects: about twenty times faster than `axfr_records`, for
    zones of many thousand installations. The answers' TSIG is not checked (the tests
    of small zones do that). dns.xfr.TransferError when the server answers an error,
    EOFError when the transfer ends before its last SOA."""
    query = dns.message.make_query(zone, "AXFR")
    if key is not None:
        query.use_tsig(key.dns_key())
    request = query.to_wire()
    apex = dns.name.from_text(zone).to_digestable()  # uncompressed, lower case
    found: set[WireRr] = set()
    soas = 0
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.sendall(struct.pack("!H", len(request)) + request)
        stream = sock.makefile("rb", buffering=1 << 20)
        while soas < 2:  # the zone's SOA comes first and last
            head = stream.read(2)
            message = stream.read(struct.unpack("!H", head)[0]) if len(head) == 2 else b""
            if not message:
                raise EOFError(f"the transfer from {host}@{port} ended before its last SOA")
            rcode, rrs = wire_records(message)
            if rcode != dns.rcode.NOERROR:
                raise dns.xfr.TransferError(rcode)  # type: ignore[no-untyped-call]
            soas += sum(1 for rr in rrs if rr.rdtype == _SOA and rr.owner == apex)
            found.update(rrs)
    return found


def wire_as_text(found: Iterable[WireRr]) -> set[Rr]:
    """`WireRr`s as `Rr`s (to compare them with `axfr_records`, or to show them)."""
    out: set[Rr] = set()
    for rr in found:
        owner = dns.name.from_wire(rr.owner, 0)[0]
        rdtype = dns.rdatatype.RdataType(rr.rdtype)
        rdclass = dns.rdataclass.RdataClass(rr.rdclass)
        rdata = dns.rdata.from_wire(rdclass, rdtype, rr.rdata, 0, len(rr.rdata))
        out.add(Rr(owner.to_text(), rr.ttl, dns.rdatatype.to_text(rdtype), str(rdata)))
    return out


def soa_serial(host: str, port: int, zone: str, timeout: float = QUERY_TIMEOUT) -> int | None:
    """The SOA serial HOST:`port` serves for `zone` (one UDP query); None when it does
    not answer, answers an error, or answers without the SOA."""
    query = dns.message.make_query(zone, "SOA")
    try:
        response = dns.query.udp(query, host, port=port, timeout=timeout)
    except (dns.exception.DNSException, OSError):
        return None
    if response.rcode() != dns.rcode.NOERROR:
        return None
    for rrset in response.answer:
        if rrset.rdtype == dns.rdatatype.SOA:
            return int(rrset[0].serial)
    return None


def answers(host: str, port: int, zone: str) -> bool:
    """Does HOST:`port` answer a query at all (any rcode)?"""
    query = dns.message.make_query(zone, "SOA")
    try:
        dns.query.udp(query, host, port=port, timeout=0.2)
    except (dns.exception.DNSException, OSError):
        return False
    return True


# -- a server process ------------------------------------------------------------------------


class NameServer:
    """A name server for `zone` in the directory `home`, on a free port of HOST; started
    by `start`, stopped by `stop` (or `with`). Subclasses write the configuration
    (`configure`) and name the command (`argv`) and its control commands."""

    kind: ClassVar[str]  # "nsd", "knot", "bind": names the directory and the log

    def __init__(self, home: Path, zone: str, key: TsigKey | None) -> None:
        self.home = home
        self.zone = dns.name.from_text(zone).to_text()
        self.key = key
        self.host = HOST
        self.port = free_port()
        self.log_path = home / f"{self.kind}.log"
        self._child: LoggedProcess | None = None
        home.mkdir(parents=True, exist_ok=True)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.host}@{self.port} {self.home}>"

    # -- what subclasses provide -------------------------------------------------------------

    def configure(self) -> None:
        """Write the configuration files under `home` (again before each start)."""
        raise NotImplementedError

    def argv(self) -> list[str]:
        """The daemon in the foreground."""
        raise NotImplementedError

    # -- the process -------------------------------------------------------------------------

    def start(self, timeout: float = START_TIMEOUT) -> NameServer:
        """Write the configuration, start the daemon and wait until it answers DNS (any
        answer: a secondary has no zone to serve before its first transfer)."""
        assert self._child is None, f"{self!r} is running"
        self.configure()
        self._child = LoggedProcess(
            self.argv(), self.log_path, os.environ, name=self.kind, cwd=self.home
        )
        deadline = time.monotonic() + timeout
        while not answers(self.host, self.port, self.zone):
            if not self._child.running() or time.monotonic() > deadline:
                failure = "exited" if not self._child.running() else f"no answer in {timeout} s"
                self.stop()
                raise AssertionError(f"{self.kind}: {failure}:\n{self.log_text()}")
            time.sleep(POLL)
        return self

    def running(self) -> bool:
        return self._child is not None and self._child.running()

    def pids(self) -> list[int]:
        """The daemon's processes now (NSD forks a transfer daemon and servers)."""
        assert self._child is not None, f"{self!r} is not running"
        return self._child.pids()

    def stop(self) -> None:
        """SIGTERM (after SIGCONT, should it be paused), then SIGKILL after STOP_TIMEOUT;
        then SIGKILL to any process of its tree still there (by id: only its own).
        Nothing when not running."""
        if self._child is None:
            return
        child, self._child = self._child, None
        family = process_tree(child.pid) if child.running() else []
        _signal_all(family, signal.SIGCONT)
        child.stop(timeout=STOP_TIMEOUT)
        _kill_left(family[1:])

    def kill(self) -> None:
        """SIGKILL to every process of its tree: a crash, no chance to clean up."""
        if self._child is None:
            return
        child, self._child = self._child, None
        family = process_tree(child.pid) if child.running() else []
        child.kill()
        _kill_left(family[1:])

    def pause(self) -> None:
        """SIGSTOP to every process of its tree: down, but keeping its state and port
        (`resume` wakes it up)."""
        _signal_all(self.pids(), signal.SIGSTOP)

    def resume(self) -> None:
        _signal_all(self.pids(), signal.SIGCONT)

    def __enter__(self) -> NameServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def log_lines(self, pattern: str) -> list[str]:
        """The lines of its log the regular expression `pattern` matches, now."""
        regex = re.compile(pattern)
        return [line for line in self.log_text().splitlines() if regex.search(line)]

    def wait_log(self, pattern: str, count: int = 1, timeout: float = 20.0) -> list[str]:
        """Until the regular expression `pattern` matched `count` lines of the log (a
        positive barrier); the lines. AssertionError, with the log, on timeout."""
        deadline = time.monotonic() + timeout
        while True:
            found = self.log_lines(pattern)
            if len(found) >= count:
                return found
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"{self.kind}: no {count} x {pattern!r} in {timeout} s:\n{self.log_text()}"
                )
            time.sleep(POLL)

    # -- DNS -------------------------------------------------------------------------------

    def serial(self) -> int | None:
        """The SOA serial it serves now (a query to it); None when it serves no zone."""
        return soa_serial(self.host, self.port, self.zone)

    def wait_zone(self, timeout: float = 20.0) -> int:
        """Until it serves the zone (a daemon answers before its zone is loaded); the
        serial it serves then."""
        deadline = time.monotonic() + timeout
        while (seen := self.serial()) is None:
            if not self.running() or time.monotonic() > deadline:
                raise AssertionError(
                    f"{self.kind} serves no zone after {timeout} s (running:"
                    f" {self.running()}):\n{self.log_text()}"
                )
            time.sleep(POLL)
        return seen

    def wait_serial(self, serial: int, timeout: float = 20.0) -> float:
        """Until it serves `serial`; the seconds that took. AssertionError (with what it
        serves and its log) on timeout, or when the daemon exits."""
        started = time.monotonic()
        while (seen := self.serial()) != serial:
            if not self.running() or time.monotonic() - started > timeout:
                raise AssertionError(
                    f"{self.kind} serves serial {seen}, not {serial}, after"
                    f" {time.monotonic() - started:.1f} s (running: {self.running()}):\n"
                    f"{self.log_text()}"
                )
            time.sleep(POLL)
        return time.monotonic() - started

    def axfr(self, timeout: float = XFR_TIMEOUT) -> set[Rr]:
        """The whole zone out of this server (AXFR signed with its key)."""
        return axfr_records(self.host, self.port, self.zone, self.key, timeout)

    def axfr_wire(self, timeout: float = XFR_TIMEOUT) -> set[WireRr]:
        """The whole zone out of this server, fast (see `axfr_wire`)."""
        return axfr_wire(self.host, self.port, self.zone, self.key, timeout)

    def control(self, *args: str, timeout: float = CONTROL_TIMEOUT) -> str:
        """Its control tool with `args` (see `control_argv`); the output. AssertionError
        when it fails."""
        argv = self.control_argv(*args)
        done = subprocess.run(
            argv, capture_output=True, text=True, timeout=timeout, check=False, cwd=self.home
        )
        if done.returncode != 0:
            raise AssertionError(
                f"{' '.join(argv)} failed ({done.returncode}):\n{done.stdout}{done.stderr}"
            )
        return done.stdout

    def control_argv(self, *args: str) -> list[str]:
        raise NotImplementedError

    def _control_socket(self, name: str) -> Path:
        path = self.home / name
        if len(str(path)) > SOCKET_PATH_MAX:
            raise AssertionError(f"{path} is too long for a unix socket: use a shorter home")
        return path


def _check_config(*argv: str) -> None:
    """Run a server's configuration checker; AssertionError with what it says when it
    refuses the configuration."""
    check = subprocess.run(
        argv, capture_output=True, text=True, timeout=CONTROL_TIMEOUT, check=False
    )
    if check.returncode != 0:
        raise AssertionError(f"{' '.join(argv)}: {check.stdout}{check.stderr}")


def _signal_all(pids: Sequence[int], sig: signal.Signals) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


def _kill_left(pids: Sequence[int]) -> None:
    """SIGKILL to those of `pids` (processes of a server we started) still alive."""
    for pid in pids:
        if alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + STOP_TIMEOUT
    while any(alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(POLL)


# -- secondaries -------------------------------------------------------------------------------


class Secondary(NameServer):
    """A secondary of `zone` that transfers it from the primary HOST:PORT `primary`
    (signed with `key`), accepts its NOTIFYs (from 127.0.0.1, signed) and gives the
    zone back out by AXFR to whoever signs with `key`. It keeps its zone across a
    `stop` and `start` (not across a `kill`), and serves it at once when started
    again; it asks the primary for news on a NOTIFY or a `refresh`.

    `received`, `transferred` and `refresh_failed` match its log's line for a transfer
    received whole (it may still be loading it), for one it serves, and for a refresh
    or transfer that failed (refused, TSIG error, connection lost): barriers for the
    tests.

    `given`, when set (before `start`), is the operator's part of its configuration as
    text, a guide's for instance: the keys, the zone and whom it trusts, as an operator
    adds them to the distribution's configuration. It replaces the harness's own part;
    the harness keeps the rest (paths, logging, the control channel, no privilege drop)
    and says where it listens unless `given` does (Knot's `server: listen`). Then the
    transfers, NOTIFYs and the AXFR back out (`axfr`, signed with `key`) work as far as
    `given` allows them."""

    received: ClassVar[str]
    transferred: ClassVar[str]
    refresh_failed: ClassVar[str]

    def __init__(
        self, home: Path, zone: str, primary: tuple[str, int], key: TsigKey | None
    ) -> None:
        super().__init__(home, zone, key)
        self.primary = primary
        self.given: str | None = None

    def notified(self, serial: int) -> str:
        """The regular expression of its log's line for a NOTIFY of `serial` from
        127.0.0.1 that it accepted (signed as its configuration asks). NSD and Knot
        only: BIND 9.18 logs a NOTIFY's serial only once it has the zone and while no
        refresh is under way ("notify from ...: no serial", "refresh in progress")."""
        raise NotImplementedError

    def refresh(self) -> None:
        """Check the primary's serial now and transfer (IXFR) when it is newer."""
        raise NotImplementedError

    def retransfer(self) -> None:
        """A full transfer (AXFR) now, whatever the serials."""
        raise NotImplementedError


class NsdSecondary(Secondary):
    """NSD (`nsd -d`): a parent, its transfer daemon (xfrd) and one server process;
    controlled by `nsd-control` over a unix socket in `home`."""

    kind = "nsd"
    received = r'xfrd: zone \S+ committed "received update'
    transferred = r"info: zone \S+ serial \d+ is updated to \d+"
    refresh_failed = r"error: xfrd: (zone \S+ .*(error|bad)|failed)"

    @property
    def config(self) -> Path:
        return self.home / "nsd.conf"

    def configure(self) -> None:
        given = self.given
        self.config.write_text(
            self._server_text() + (self._zone_text() if given is None else given),
            encoding="ascii",
        )
        _check_config(tool("nsd-checkconf"), str(self.config))

    def _server_text(self) -> str:
        """The server and remote-control sections: its port, paths and control socket."""
        # A given configuration stands for the distribution's, which listens on every
        # address: both loopback addresses here.
        more = "" if self.given is None else f"    ip-address: ::1@{self.port}\n"
        return f"""server:
    ip-address: {self.host}@{self.port}
{more}    do-ip6: {"no" if self.given is None else "yes"}
    username: ""
    chroot: ""
    zonesdir: "{self.home}"
    database: ""
    zonelistfile: "{self.home / "zone.list"}"
    xfrdfile: "{self.home / "xfrd.state"}"
    xfrdir: "{self.home}"
    pidfile: "{self.home / "nsd.pid"}"
    logfile: "{self.log_path}"
    verbosity: 2
    xfrd-reload-timeout: 0
    zonefiles-write: 0
remote-control:
    control-enable: yes
    control-interface: "{self._control_socket("ctl")}"
"""

    def _zone_text(self) -> str:
        """The harness's key and zone sections."""
        key = self.key
        sign = "NOKEY" if key is None else key.name
        host, port = self.primary
        keys = "" if key is None else key.nsd_text()
        return f"""{keys}zone:
    name: "{self.zone}"
    zonefile: "zone.db"
    request-xfr: {host}@{port} {sign}
    allow-notify: 127.0.0.1 {sign}
    allow-axfr-fallback: yes
    provide-xfr: 127.0.0.1 {sign}
"""

    def argv(self) -> list[str]:
        return [tool("nsd"), "-d", "-c", str(self.config)]

    def stop(self) -> None:
        """Write the zone file first (NSD keeps a transferred zone in memory only), so
        that the next start serves it at once and asks for what changed since."""
        if self.running():
            with contextlib.suppress(AssertionError, subprocess.TimeoutExpired):
                self.resume()
                self.control("write", self.zone, timeout=STOP_TIMEOUT)
        super().stop()

    def control_argv(self, *args: str) -> list[str]:
        return [tool("nsd-control"), "-c", str(self.config), *args]

    def notified(self, serial: int) -> str:
        return rf"notify for {re.escape(self.zone)} from 127\.0\.0\.1 serial {serial}$"

    def refresh(self) -> None:
        self.control("transfer", self.zone)

    def retransfer(self) -> None:
        self.control("force_transfer", self.zone)


class KnotServer(NameServer):
    """Knot (`knotd` in the foreground, its log on stderr), controlled by `knotc` over
    the unix socket in `home`; its journal, timers and zone files under `home` too."""

    kind = "knot"

    @property
    def config(self) -> Path:
        return self.home / "knot.conf"

    def argv(self) -> list[str]:
        return [tool("knotd"), "-c", str(self.config)]

    def control_argv(self, *args: str) -> list[str]:
        return [tool("knotc"), "-c", str(self.config), "-t", "30", *args]

    def _server_section(self, *, own: bool = True) -> str:
        """Its server, control, log and database sections; with `own`, where it listens
        and its key too (else a `given` configuration says them)."""
        key = self.key
        keys = "" if key is None or not own else key.knot_text()
        listen = f"    listen: {self.host}@{self.port}\n" if own else ""
        return f"""server:
    rundir: "{self.home}"
{listen}    tcp-io-timeout: 5000
control:
    listen: "{self._control_socket("knot.sock")}"
log:
  - target: stderr
    any: info
database:
    storage: "{self.home}"
    journal-db-max-size: 8G
{keys}"""

    def _write(self, text: str) -> None:
        self.config.write_text(text, encoding="ascii")
        _check_config(tool("knotc"), "-c", str(self.config), "conf-check")

    def _key_line(self) -> str:
        return "" if self.key is None else f"    key: {self.key.name}\n"

    def _acl(self, name: str, action: str) -> str:
        """An acl entry: `action` allowed from 127.0.0.1, signed with the key if any."""
        return f"  - id: {name}\n    address: 127.0.0.1\n{self._key_line()}    action: {action}\n"

    def _template(self) -> str:
        """Zone files and journals under `home` (not Knot's /var/lib/knot)."""
        return f'template:\n  - id: default\n    storage: "{self.home}"\n'


class KnotSecondary(KnotServer, Secondary):
    """Knot as a secondary: the zone lives in its journal (`journal-content: all`, room
    for a zone of a million installations), never in a zone file."""

    received = r"(AXFR|IXFR), incoming, .*finished"
    transferred = r"refresh, remote \S+, zone updated"
    refresh_failed = r"refresh, .*failed"

    def configure(self) -> None:
        if self.given is not None:
            self._write(self._server_section(own=False) + self._template() + self.given)
            return
        host, port = self.primary
        self._write(
            self._server_section()
            + f"""remote:
  - id: primary
    address: {host}@{port}
{self._key_line()}acl:
{self._acl("notify-from-primary", "notify")}{self._acl("transfer-to-tests", "transfer")}\
{self._template()}zone:
  - domain: {self.zone}
    master: primary
    acl: [notify-from-primary, transfer-to-tests]
    file: zone.db
    zonefile-sync: -1
    zonefile-load: none
    journal-content: all
    journal-max-usage: 4G
    retry-min-interval: 1
    refresh-min-interval: 2
"""
        )

    def notified(self, serial: int) -> str:
        zone = re.escape(self.zone)
        return rf"\[{zone}\] notify, incoming, remote 127\.0\.0\.1@\d+, serial {serial}$"

    def refresh(self) -> None:
        self.control("zone-refresh", self.zone)

    def retransfer(self) -> None:
        self.control("zone-retransfer", self.zone)


class BindSecondary(Secondary):
    """BIND (`named -g`: foreground, every log line on stderr), controlled by `rndc`
    over TCP on a free port with a key of its own."""

    kind = "bind"
    received = r"Transfer completed:"
    transferred = r"Transfer completed:"
    refresh_failed = r"refresh: failure trying primary|Transfer status: (?!success)"

    def __init__(
        self, home: Path, zone: str, primary: tuple[str, int], key: TsigKey | None
    ) -> None:
        super().__init__(home, zone, primary, key)
        self.control_port = free_port()
        self.rndc_key = TsigKey.generate("rndc-key")

    @property
    def config(self) -> Path:
        return self.home / "named.conf"

    def configure(self) -> None:
        key = self.key
        (self.home / "rndc.key").write_text(self.rndc_key.bind_text(), encoding="ascii")
        if self.given is not None:
            self.config.write_text(self._options_text("") + self.given, encoding="ascii")
            return
        host, port = self.primary
        if key is None:
            keys, signed, allowed = "", "", "127.0.0.1;"
        else:
            (self.home / "transfer.key").write_text(key.bind_text(), encoding="ascii")
            keys = f'include "{self.home / "transfer.key"}";\n'
            signed, allowed = f' key "{key.name}"', f'key "{key.name}";'
        self.config.write_text(
            keys
            + self._options_text(f"    notify no;\n    allow-transfer {{ {allowed} }};\n")
            + f"""zone "{self.zone}" {{
    type secondary;
    primaries port {port} {{ {host}{signed}; }};
    file "zone.db";
    allow-notify {{ {allowed} }};
}};
""",
            encoding="ascii",
        )

    def _options_text(self, more: str) -> str:
        """The rndc key, the options (its port and paths, then `more`) and the controls."""
        return f"""include "{self.home / "rndc.key"}";
options {{
    directory "{self.home}";
    pid-file "{self.home / "named.pid"}";
    session-keyfile "{self.home / "session.key"}";
    managed-keys-directory "{self.home}";
    listen-on port {self.port} {{ {self.host}; }};
    listen-on-v6 {{ none; }};
    recursion no;
{more}}};
controls {{
    inet {self.host} port {self.control_port}
        allow {{ {self.host}; }} keys {{ "{self.rndc_key.name}"; }};
}};
"""

    def argv(self) -> list[str]:
        return [tool("named"), "-g", "-u", "root", "-c", str(self.config)]

    def control_argv(self, *args: str) -> list[str]:
        where = ["-s", self.host, "-p", str(self.control_port)]
        return [tool("rndc"), "-k", str(self.home / "rndc.key"), *where, *args]

    def refresh(self) -> None:
        self.control("refresh", self.zone)

    def retransfer(self) -> None:
        self.control("retransfer", self.zone)


SECONDARIES: dict[str, type[Secondary]] = {
    "nsd": NsdSecondary,
    "knot": KnotSecondary,
    "bind": BindSecondary,
}


# -- Knot as the primary -----------------------------------------------------------------------


class KnotPrimary(KnotServer):
    """Knot serving `zonefile` as the primary: transfers to 127.0.0.1 signed with `key`,
    NOTIFY (signed) to each HOST:PORT of `notify`. Change the zone by rewriting the file
    with a higher serial and calling `reload` (Knot computes the difference, so it can
    answer IXFR)."""

    def __init__(
        self,
        home: Path,
        zone: str,
        zonefile: Path,
        key: TsigKey | None,
        notify: Sequence[tuple[str, int]] = (),
    ) -> None:
        super().__init__(home, zone, key)
        self.zonefile = zonefile
        self.notify = list(notify)

    def configure(self) -> None:
        remotes = "".join(
            f"  - id: secondary-{i}\n    address: {host}@{port}\n{self._key_line()}"
            for i, (host, port) in enumerate(self.notify)
        )
        names = ", ".join(f"secondary-{i}" for i in range(len(self.notify)))
        self._write(
            self._server_section()
            + (f"remote:\n{remotes}" if remotes else "")
            + f"""acl:
{self._acl("transfer", "transfer")}{self._template()}zone:
  - domain: {self.zone}
    file: "{self.zonefile}"
    acl: [transfer]
    zonefile-load: difference
    journal-content: changes
    journal-max-usage: 4G
    zonefile-sync: -1
"""
            + (f"    notify: [{names}]\n" if names else "")
        )

    def reload(self) -> None:
        """Read the zone file again (and NOTIFY the secondaries when its serial moved);
        returns once Knot has loaded it."""
        self.control("-b", "zone-reload", self.zone)

    def rekey(self, key: TsigKey) -> None:
        """Use `key` from now on (the configuration is written and read again)."""
        self.key = key
        self.configure()
        self.control("reload")
