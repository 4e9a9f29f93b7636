"""A lab of Linux network namespaces for tests: hosts joined by veth pairs to one router
namespace ("the internet"), addressed only from 198.51.100.0/24 and 203.0.113.0/24.

- Names are unique per run (`cp<6 hex>-<role>`), so runs never collide and nothing of
  the host's own network is touched: traffic goes only to the namespaces' addresses.
- Processes run in a namespace with `ip netns exec`; the lab tracks the ones it starts.
- `close` stops every process it started (SIGTERM, then SIGKILL), deletes every
  namespace (their veths go with them) and every `/etc/netns/<name>` directory it made;
  (and `/etc/netns` itself when it made it and nothing else is in it); it never
  raises, so a fixture can call it in `finally`.
"""

from __future__ import annotations

import contextlib
import functools
import os
import secrets
import shutil
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tests.debtools import tool
from tests.processes import LoggedProcess

NETTOOL = Path(__file__).with_name("nettool.py")
TOOLS = ("ip", "nft", "sysctl")  # `make test` installs them: a missing one fails


@functools.cache
def unavailable() -> str | None:
    """Why this machine cannot run the lab, or None when it can; found once per run.

    The reasons are what `make test` cannot provide: root, network namespaces, veth
    pairs (CAP_NET_ADMIN), a writable /proc/sys and nftables in a namespace, /etc/netns.
    A missing tool is no such reason: it fails (`tests/debtools.py`)."""
    for name in TOOLS:
        tool(name)
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        return "network-namespace tests need root (ip netns, veth, nftables)"
    etc = Path("/etc/netns")
    if not os.access(etc if etc.exists() else etc.parent, os.W_OK):
        return f"{etc} cannot be written here (the lab's resolver files)"
    probe = f"cp{secrets.token_hex(3)}-probe"
    reason = _fails(["ip", "netns", "add", probe])
    if reason is not None:
        return reason
    try:
        for argv in (
            ["ip", "-n", probe, "link", "add", "cpv0", "type", "veth", "peer", "name", "cpv1"],
            ["ip", "netns", "exec", probe, "sysctl", "-q", "-w", "net.ipv4.ip_forward=1"],
            ["ip", "netns", "exec", probe, "nft", "add", "table", "inet", "probe"],
        ):
            reason = _fails(argv)
            if reason is not None:
                return reason
    finally:
        subprocess.run(["ip", "netns", "del", probe], check=False, capture_output=True)
    return None


def _fails(argv: list[str]) -> str | None:
    """Why `argv` failed, or None when it exits 0."""
    done = subprocess.run(argv, check=False, capture_output=True, text=True, timeout=30)
    if done.returncode == 0:
        return None
    return f"`{' '.join(argv)}` does not work here: {done.stderr.strip()}"


@dataclass
class Lab:
    """Namespaces and what runs in them; `directory` holds the logs."""

    directory: Path
    env: Mapping[str, str]
    prefix: str = field(default_factory=lambda: f"cp{secrets.token_hex(3)}")
    namespaces: list[str] = field(default_factory=list)
    processes: list[LoggedProcess] = field(default_factory=list)
    etc_dirs: list[Path] = field(default_factory=list)
    router: str | None = None

    def ns(self, role: str) -> str:
        """The namespace name of `role` (unique to this lab)."""
        return f"{self.prefix}-{role}"

    # -- building -------------------------------------------------------------------------

    def _ip(self, *args: str) -> None:
        done = subprocess.run(["ip", *args], check=False, capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"ip {' '.join(args)}: {done.stderr.strip()}")

    def _add_ns(self, role: str) -> str:
        name = self.ns(role)
        self._ip("netns", "add", name)
        self.namespaces.append(name)
        self._ip("-n", name, "link", "set", "lo", "up")
        return name

    def add_router(self, role: str = "net") -> None:
        """The namespace that routes between every host (the internet)."""
        self.router = self._add_ns(role)
        self.run(role, "sysctl", "-q", "-w", "net.ipv4.ip_forward=1")

    def add_host(self, role: str, addresses: Sequence[str], router_side: str) -> None:
        """A host namespace joined to the router by a veth pair: `addresses` (with
        prefix lengths; the first one's subnet is the link) on its `eth0`,
        `router_side` (with prefix length) on the router's end, which is its gateway."""
        assert self.router is not None, "add the router first"
        name = self._add_ns(role)
        router_end = f"v{role}"[:15]
        self._ip(
            "link", "add", "eth0", "netns", name, "type", "veth",
            "peer", "name", router_end, "netns", self.router,
        )  # fmt: skip
        for address in addresses:
            self._ip("-n", name, "addr", "add", address, "dev", "eth0")
        self._ip("-n", name, "link", "set", "eth0", "up")
        self._ip("-n", self.router, "addr", "add", router_side, "dev", router_end)
        self._ip("-n", self.router, "link", "set", router_end, "up")
        gateway = router_side.split("/", maxsplit=1)[0]
        self._ip("-n", name, "route", "add", "default", "via", gateway)

    def hosts_file(self, role: str, entries: Mapping[str, str]) -> None:
        """Names for `role`'s resolver: `ip netns exec` mounts /etc/netns/<ns>/hosts
        over /etc/hosts for the processes it starts."""
        lines = ["127.0.0.1 localhost", "::1 localhost"]
        lines += [f"{address} {name}" for name, address in entries.items()]
        self.etc_file(role, "hosts", "\n".join(lines) + "\n")

    def resolv_conf(self, role: str, *nameservers: str) -> None:
        """`role`'s resolver asks `nameservers` (one try of 1 s each, so that a dead one
        fails fast); the next `ip netns exec` sees it."""
        lines = [f"nameserver {address}" for address in nameservers]
        self.etc_file(role, "resolv.conf", "\n".join([*lines, "options timeout:1 attempts:1", ""]))

    def etc_file(self, role: str, name: str, text: str) -> None:
        """/etc/netns/<ns>/NAME, which `ip netns exec` mounts over /etc/NAME."""
        parent = Path("/etc/netns")
        if not parent.exists():
            parent.mkdir()
            self.etc_dirs.append(parent)  # made here: removed last, if left empty
        directory = parent / self.ns(role)
        if not directory.exists():
            directory.mkdir()
            self.etc_dirs.insert(0, directory)
        (directory / name).write_text(text)

    # -- running --------------------------------------------------------------------------

    def command(self, role: str, *argv: str) -> list[str]:
        return ["ip", "netns", "exec", self.ns(role), *argv]

    def run(
        self,
        role: str,
        *argv: str,
        input_text: str | None = None,
        check: bool = True,
        timeout: float = 60.0,
    ) -> subprocess.CompletedProcess[str]:
        """Run `argv` in `role`'s namespace; with `check`, fail (showing its output)
        unless it exits 0."""
        done = subprocess.run(
            self.command(role, *argv),
            check=False,
            input=input_text,
            capture_output=True,
            text=True,
            env=dict(self.env),
            timeout=timeout,
        )
        if check and done.returncode != 0:
            raise AssertionError(
                f"in {role}: {' '.join(argv)} exited {done.returncode}:\n"
                f"{done.stdout}\n{done.stderr}"
            )
        return done

    def spawn(self, role: str, *argv: str, name: str | None = None) -> LoggedProcess:
        """Start `argv` in `role`'s namespace, output to a log file; stopped by `close`
        (or earlier, by `LoggedProcess.stop`)."""
        label = name or f"{role}-{len(self.processes)}"
        process = LoggedProcess(
            self.command(role, *argv), self.directory / f"{label}.log", self.env, name=label
        )
        self.processes.append(process)
        return process

    def listen(self, role: str, *addresses: str) -> LoggedProcess:
        """Plain TCP listeners (accept, close) on `addresses` in `role`."""
        process = self.spawn(role, sys.executable, str(NETTOOL), "listen", *addresses)
        process.wait_log("listening")
        return process

    def wait_port(self, role: str, address: str, timeout: float = 20.0) -> None:
        """Until a connection from `role` to `address` (HOST:PORT) is accepted."""
        done = self.run(
            role, sys.executable, str(NETTOOL), "wait", address, str(timeout), check=False
        )
        if done.returncode != 0:
            raise AssertionError(f"nothing accepts connections on {address} from {role}")

    def nft(self, role: str, rules: str) -> None:
        """Load an nftables script in `role`'s namespace."""
        self.run(role, "nft", "-f", "-", input_text=rules)

    def flush_nft(self, role: str) -> None:
        self.run(role, "nft", "flush", "ruleset")

    # -- tearing down ---------------------------------------------------------------------

    def close(self) -> None:
        """Stop every process, delete every namespace and /etc/netns directory."""
        for process in reversed(self.processes):
            with contextlib.suppress(Exception):
                process.stop()
        self.processes.clear()
        for name in reversed(self.namespaces):
            subprocess.run(["ip", "netns", "del", name], check=False, capture_output=True)
        self.namespaces.clear()
        for directory in self.etc_dirs:
            if directory.name == "netns":
                with contextlib.suppress(OSError):
                    directory.rmdir()  # only if nothing else uses it
            else:
                shutil.rmtree(directory, ignore_errors=True)
        self.etc_dirs.clear()
