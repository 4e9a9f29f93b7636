"""What one `controparte serve` holds for itself alone, and who holds it when it is
taken: its data directory and its listening sockets.

- The data directory: the lock file `serve.lock` in it (flock, held as long as the
  service runs, the holder's pid written in it). A second service over the same
  directory refuses to start, naming the first's pid. The CLI's commands do not take it
  (they write beside a running server through the store's own lock).
- Listening sockets (`bind`): without SO_REUSEPORT, so a port in use is an error, as it
  should be. A service whose own processes share a port (`dns_workers`, `http_workers`
  > 1) sets SO_REUSEPORT, which would let any process of the same user join the port
  and take part of its traffic: its main process first binds the port without it
  (`shared="first"`), which fails when anyone holds the port, and only then binds it
  shared. (Two services started within the same instant on a shared port could still
  both pass; the DNS TCP socket, never shared, and the data directory's lock catch a
  second service on the same DNS port or directory whatever the timing.)
- A socket that cannot be bound is a `ConfigError` naming the setting, the address, why,
  and the process that holds it (`holder`, from /proc): one line and exit code 2.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import ipaddress
import os
import socket
import sys
from pathlib import Path
from typing import Literal

from controparte.errors import ConfigError

LOCK_FILE = "serve.lock"
Shared = Literal["no", "first", "yes"]
"""`bind`'s SO_REUSEPORT: not at all; the main process of a service whose workers will
share the port (checked free first); a worker joining its main process's port."""

_KIND = {socket.SOCK_DGRAM: "udp", socket.SOCK_STREAM: "tcp"}
_TCP_LISTEN = "0A"


class DataDirLock:
    """The data directory `data` claimed by this process (see the module); `release()`
    gives it back (so does the process's end)."""

    def __init__(self, data: Path) -> None:
        data.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.path = data / LOCK_FILE
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            held_by = os.read(fd, 32).decode(errors="replace").strip()
            os.close(fd)
            raise ConfigError(
                f"data: {data} is in use by another controparte serve"
                f" ({'pid ' + held_by if held_by.isdigit() else 'pid unknown'}): one data"
                " directory serves one service (several nodes: one data directory each)"
            ) from None
        except BaseException:
            os.close(fd)
            raise
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd: int | None = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the only descriptor releases the flock
            self._fd = None


def bind(kind: socket.SocketKind, host: str, port: int, *, shared: Shared = "no") -> socket.socket:
    """A socket of `kind` (SOCK_DGRAM or SOCK_STREAM, not listening yet) bound to
    host:port, SO_REUSEPORT as `shared` says (see the module). TCP sockets take
    SO_REUSEADDR (a restart must not wait for the last run's TIME_WAIT; on Linux it
    never lets two listeners share a port); UDP sockets never do (on UDP it would).
    Raises the bind's OSError."""
    if shared == "first" and port != 0:
        bind(kind, host, port).close()  # fails when any other socket holds the port
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, kind)
    try:
        if kind == socket.SOCK_STREAM:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if shared != "no":
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
    except BaseException:
        sock.close()
        raise
    return sock


def bind_error(
    setting: str, kind: socket.SocketKind, host: str, port: int, exc: OSError
) -> ConfigError:
    """The failed bind `exc` of host:port as one line naming the setting and, when the
    address is in use, the process holding it."""
    where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    if exc.errno == errno.EADDRINUSE:
        who = holder(kind, host, port)
        why = "in use" + (f" by {who}" if who else " by another process")
    elif exc.errno == errno.EADDRNOTAVAIL:
        why = f"{host} is not an address of this machine"
    elif exc.errno == errno.EACCES:
        why = "permission denied (ports below 1024 need root or CAP_NET_BIND_SERVICE)"
    else:
        why = exc.strerror or str(exc)
    return ConfigError(f"{setting}: cannot listen on {where} ({_KIND[kind]}): {why}")


def holder(kind: socket.SocketKind, host: str, port: int) -> str | None:
    """The process holding a socket of `kind` on port (on host, or on every address),
    as `pid N (command line)`; None when /proc does not tell (another namespace, no
    permission)."""
    inodes = _socket_inodes(kind, ipaddress.ip_address(host), port)
    if not inodes:
        return None
    targets = {f"socket:[{inode}]" for inode in inodes}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            for fd in (proc / "fd").iterdir():
                with contextlib.suppress(OSError):
                    if os.readlink(fd) in targets:
                        return f"pid {proc.name} ({_command(proc)})"
    return None


def _command(proc: Path, limit: int = 100) -> str:
    try:
        words = (proc / "cmdline").read_bytes().rstrip(b"\0").split(b"\0")
    except OSError:
        return "?"
    text = " ".join(w.decode(errors="replace") for w in words)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _socket_inodes(
    kind: socket.SocketKind, host: ipaddress.IPv4Address | ipaddress.IPv6Address, port: int
) -> list[str]:
    """The inodes of the sockets that /proc/net lists on `port` at `host` or at the
    wildcard address (TCP: listening ones only)."""
    name = _KIND[kind]
    found: list[str] = []
    for table in (name, name + "6"):
        with contextlib.suppress(OSError):
            for line in Path("/proc/net", table).read_text().splitlines()[1:]:
                fields = line.split()
                address, _, hex_port = fields[1].partition(":")
                if int(hex_port, 16) != port or (name == "tcp" and fields[3] != _TCP_LISTEN):
                    continue
                local = _address(address)
                if isinstance(local, ipaddress.IPv6Address) and local.ipv4_mapped is not None:
                    local = local.ipv4_mapped
                if local.is_unspecified or host.is_unspecified or local == host:
                    found.append(fields[9])
    return found


def _address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    """An address as /proc/net writes it: 32-bit words in host (little-endian) order."""
    raw = bytes.fromhex(text)
    if sys.byteorder == "little":
        raw = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
    return ipaddress.ip_address(raw)
