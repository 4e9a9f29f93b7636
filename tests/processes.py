"""Ports and processes, shared by the tests and the benchmarks (bench/ imports it too):
free loopback ports, the `controparte` command and a clean environment for it, a child
process with its output in a log file, and a process tree, its CPU time and its memory
as Linux /proc shows them."""

from __future__ import annotations

import contextlib
import os
import random
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

HOST = "127.0.0.1"
STOP_TIMEOUT = 5.0
CLK_TCK = os.sysconf("SC_CLK_TCK")
KIB_PER_MIB = 1024
SECRET_SETTINGS = frozenset({"CONTROPARTE_ADMIN_TOKEN"})
"""Environment variables whose value is a secret (`remember_secret`)."""
PORT_BAND = 6_000  # ports per band below the ephemeral range: see `free_port`


# -- ports ---------------------------------------------------------------------------------


def _bindable(kind: socket.SocketKind, port: int) -> bool:
    with socket.socket(socket.AF_INET, kind) as sock:
        try:
            sock.bind((HOST, port))
        except OSError:
            return False
        return True


def _ephemeral_low() -> int:
    """The first port of the kernel's ephemeral range (what binding port 0 hands out)."""
    with contextlib.suppress(OSError, ValueError, IndexError):
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    return 32768


_HANDED_OUT: set[int] = set()
"""Every port `_pick` returned in this process: never returned again, since a port
picked is often bound only later (a test picks a server's ports and its secondaries'
before any of them starts, and two picks of the same free port collided: Knot could not
bind a port the test had also given another server)."""
_HANDING = threading.Lock()


def _pick(kind: socket.SocketKind, *, for_bench: bool) -> int:
    low = _ephemeral_low()
    top = low - PORT_BAND if not for_bench else low
    with _HANDING:
        for _ in range(200):
            port = random.randrange(max(1024, top - PORT_BAND), top)
            if port in _HANDED_OUT:
                continue
            if _bindable(kind, port) and (
                kind == socket.SOCK_STREAM or _bindable(socket.SOCK_STREAM, port)
            ):
                _HANDED_OUT.add(port)
                return port
    raise RuntimeError(f"no port is free on {HOST}")


def free_port(*, for_bench: bool = False) -> int:
    """A port free on HOST for both UDP and TCP right now.

    Never in the kernel's ephemeral range: an outgoing connection (a test's client, a
    secondary's transfer) may take any ephemeral port between this pick and the server's
    bind. The tests pick in one band just below that range and, with `for_bench`, the
    benchmarks in the band above it, so that a test suite running beside a benchmark
    never binds one of its ports with SO_REUSEPORT and takes part of its traffic."""
    return _pick(socket.SOCK_DGRAM, for_bench=for_bench)


def free_tcp_port(*, for_bench: bool = False) -> int:
    """A TCP port free on HOST right now, from the same bands as `free_port`."""
    return _pick(socket.SOCK_STREAM, for_bench=for_bench)


def udp_sockets_on(port: int) -> int:
    """How many UDP sockets are bound to HOST:port (one per serving process)."""
    local = f"0100007F:{port:04X}"
    lines = Path("/proc/net/udp").read_text().splitlines()[1:]
    return sum(1 for line in lines if line.split()[1] == local)


# -- the controparte command -----------------------------------------------------------------


def controparte_command() -> list[str]:
    """The installed console script beside this Python, else `python -m controparte`."""
    script = Path(sys.executable).with_name("controparte")
    return [str(script)] if script.exists() else [sys.executable, "-m", "controparte"]


def clean_env(**extra: str) -> dict[str, str]:
    """This environment without CONTROPARTE_* settings and proxies (loopback only),
    unbuffered, with this Python's scripts first on PATH; then `extra`."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("CONTROPARTE_") and "proxy" not in k.lower()
    }
    env["PYTHONUNBUFFERED"] = "1"
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    return env | extra


# -- secrets the tests made, and every log their processes wrote ------------------------------

SECRETS: set[str] = set()
"""Every token, admin token and TSIG secret the test helpers made or handed to a process
(`remember_secret`): none may appear in any log of `LOG_FILES` (tests/conftest.py
checks them all at the end of the session)."""
LOG_FILES: set[Path] = set()
"""The log of every `LoggedProcess` of the session (servers, agents, tools)."""
TOKEN = re.compile(r"cpt_[A-Za-z0-9_-]{32}")
"""An installation token as the service makes them (`service/credentials.py`): caught
in a log even when no helper remembered it."""


def remember_secret(secret: str) -> str:
    """`secret` (a token, an admin token, a TSIG key's secret), registered so that the
    session fails if any log shows it; returns it."""
    SECRETS.add(secret)
    return secret


def secrets_in_logs() -> list[str]:
    """`log: secret` for every secret (`SECRETS`, or anything shaped like a token) that
    a log of `LOG_FILES` shows."""
    found = []
    for path in sorted(LOG_FILES):
        try:
            text = path.read_text(errors="replace")
        except OSError:
            continue
        found += [f"{path}: {secret}" for secret in sorted(SECRETS) if secret in text]
        found += [f"{path}: {token}" for token in sorted(set(TOKEN.findall(text)) - SECRETS)]
    return found


# -- a child process with a log --------------------------------------------------------------


class LoggedProcess:
    """`argv` started now, stdin closed, stdout and stderr appended to `log_path`;
    `name` stands for it in messages. With `new_session`, it leads a session of its own
    (a terminal's Ctrl-C does not reach it)."""

    def __init__(
        self,
        argv: Sequence[str],
        log_path: Path,
        env: Mapping[str, str],
        *,
        name: str | None = None,
        cwd: Path | None = None,
        new_session: bool = False,
    ) -> None:
        self.name = name or Path(argv[0]).name
        self.log_path = log_path
        LOG_FILES.add(log_path)
        for key, value in env.items():
            if key in SECRET_SETTINGS:
                remember_secret(value)
        self._log: IO[bytes] | None = log_path.open("ab")
        try:
            self.popen = subprocess.Popen(
                list(argv),
                env=dict(env),
                stdin=subprocess.DEVNULL,
                stdout=self._log,
                stderr=subprocess.STDOUT,
                cwd=cwd,
                start_new_session=new_session,
            )
        except BaseException:
            self._close_log()
            raise

    @property
    def pid(self) -> int:
        return self.popen.pid

    def running(self) -> bool:
        return self.popen.poll() is None

    def pids(self) -> list[int]:
        """This process and every process below it, now."""
        return process_tree(self.popen.pid)

    def log(self) -> str:
        """Its output so far ("" when the log cannot be read)."""
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def log_tail(self, lines: int = 20) -> str:
        return "\n".join(self.log().splitlines()[-lines:])

    def wait_log(self, pattern: str, count: int = 1, timeout: float = 20.0) -> list[re.Match[str]]:
        """Until the regular expression `pattern` matches `count` times in the log; the
        matches. Fails, with the log, when the process ends first or time runs out."""
        regex = re.compile(pattern, re.MULTILINE)
        deadline = time.monotonic() + timeout
        while True:
            ended = not self.running()
            found = list(regex.finditer(self.log()))
            if len(found) >= count:
                return found
            if ended:
                raise AssertionError(
                    f"{self.name} exited ({self.popen.returncode}) before {count} x"
                    f" {pattern!r}:\n{self.log()}"
                )
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"no {count} x {pattern!r} from {self.name} in {timeout} s:\n{self.log()}"
                )
            time.sleep(0.05)

    def wait(self, timeout: float = 30.0) -> int:
        """Until it exits by itself (at most `timeout`); its exit code."""
        try:
            return self.popen.wait(timeout)
        finally:
            self._close_log()

    def stop(self, sig: signal.Signals = signal.SIGTERM, timeout: float = STOP_TIMEOUT) -> int:
        """`sig` (unless it has exited), then SIGKILL after `timeout`; its exit code."""
        if self.running():
            with contextlib.suppress(ProcessLookupError):
                self.popen.send_signal(sig)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(timeout)
        self._close_log()
        return self.popen.returncode

    def kill(self, timeout: float = STOP_TIMEOUT) -> None:
        """SIGKILL: no chance to clean up (a crash)."""
        self.popen.kill()
        self.popen.wait(timeout)
        self._close_log()

    def _close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None


# -- process trees (Linux /proc) -------------------------------------------------------------


def stat_fields(pid: int) -> list[str]:
    """/proc/PID/stat after the command name: [state, ppid, ...] (OSError when gone)."""
    text = Path(f"/proc/{pid}/stat").read_text()
    return text[text.rindex(")") + 2 :].split()


def alive(pid: int) -> bool:
    """Whether `pid` runs (a zombie waiting for its reaper has ended)."""
    try:
        return stat_fields(pid)[0] != "Z"
    except (OSError, ValueError, IndexError):
        return False


def descendants(pid: int) -> list[int]:
    """The processes below `pid`, now: children (of any of its threads), theirs, ..."""
    found: list[int] = []
    parents = [pid]
    while parents:
        parent = parents.pop()
        for task in Path(f"/proc/{parent}/task").glob("*"):
            try:
                children = [int(c) for c in (task / "children").read_text().split()]
            except OSError:
                continue
            found += children
            parents += children
    return found


def process_tree(pid: int) -> list[int]:
    """`pid` and every process below it, now."""
    return [pid, *descendants(pid)]


def cpu_seconds(pids: Sequence[int]) -> float:
    """CPU seconds (user + system, every thread) used so far by `pids`; a process that
    is gone counts 0."""
    ticks = 0
    for pid in pids:
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = stat_fields(pid)
            ticks += int(fields[11]) + int(fields[12])
    return ticks / CLK_TCK


@dataclass
class Memory:
    rss_mib: float
    pss_mib: float
    processes: int


def memory(pids: Sequence[int]) -> Memory:
    """Rss and Pss (smaps_rollup) summed over `pids`, and how many were read."""
    rss = pss = count = 0
    for pid in pids:
        with contextlib.suppress(OSError, ValueError):
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                key, _, value = line.partition(":")
                if key == "Rss":
                    rss += int(value.split()[0])
                elif key == "Pss":
                    pss += int(value.split()[0])
            count += 1
    return Memory(round(rss / KIB_PER_MIB, 1), round(pss / KIB_PER_MIB, 1), count)
