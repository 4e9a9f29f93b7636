"""Helpers for tests that drive `controparte agent` as a subprocess against a real
server (`tests/realserver.py`): tokens issued on the server's store, the agent's log
watched as it is written, every agent process ended at teardown."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import dns.rdatatype

from controparte.service.access import Access
from controparte.service.credentials import ServerSecret
from controparte.store import open_store
from tests.realserver import ServerProcess

STOP_TIMEOUT = 5.0


def controparte_command() -> list[str]:
    """The installed console script beside this Python, else `python -m controparte`."""
    script = Path(sys.executable).with_name("controparte")
    return [str(script)] if script.exists() else [sys.executable, "-m", "controparte"]


def clean_env(**extra: str) -> dict[str, str]:
    """This environment without CONTROPARTE_* settings and proxies (loopback only)."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("CONTROPARTE_") and "proxy" not in k.lower()
    }
    env["PYTHONUNBUFFERED"] = "1"
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    return env | extra


def issue_token(server: ServerProcess, code: str) -> str:
    """A new token for `code`, made on the server's store (as an operator would)."""
    store = open_store(server.data)
    try:
        access = Access(store, ServerSecret.load_or_create(server.data), server.settings)
        return access.issue_token(code)
    finally:
        store.close()


def write_token(path: Path, token: str) -> Path:
    path.write_text(token + "\n")
    path.chmod(0o600)
    return path


def http_url(server: ServerProcess) -> str:
    http = server.settings.http
    return f"http://{http.host}:{http.port}"


def wait_http(server: ServerProcess, timeout: float = 20.0) -> None:
    """Until the server's HTTP port accepts connections."""
    http = server.settings.http
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((http.host, http.port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise AssertionError(f"HTTP on {http} did not come up in {timeout} s:\n{server.log_text()}")


def answer_a(server: ServerProcess, relative: str) -> list[str]:
    response = server.query(server.name(relative), "A")
    return sorted(
        rdata.to_text()
        for rrset in response.answer
        if rrset.rdtype == dns.rdatatype.A
        for rdata in rrset
    )


def wait_for_a(server: ServerProcess, relative: str, address: str, timeout: float = 5.0) -> float:
    """Poll DNS until `relative` answers `address`; the seconds it took."""
    start = time.monotonic()
    seen: list[str] = []
    while time.monotonic() - start < timeout:
        seen = answer_a(server, relative)
        if seen == [address]:
            return time.monotonic() - start
        time.sleep(0.02)
    raise AssertionError(f"{relative} still answers {seen}, not {address}, after {timeout} s")


class AgentProcess:
    """`controparte agent ARGS` with its stderr in a file."""

    def __init__(self, args: Sequence[str], log_path: Path, env: dict[str, str]) -> None:
        self.args = list(args)
        self.log_path = log_path
        self._log = log_path.open("ab")
        self.process = subprocess.Popen(
            [*controparte_command(), "agent", *self.args],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_log(self, pattern: str, count: int = 1, timeout: float = 20.0) -> list[re.Match[str]]:
        """Until `pattern` matches `count` times in the log; the matches."""
        regex = re.compile(pattern, re.MULTILINE)
        deadline = time.monotonic() + timeout
        while True:
            found = list(regex.finditer(self.log()))
            if len(found) >= count:
                return found
            if self.process.poll() is not None:
                found = list(regex.finditer(self.log()))
                if len(found) >= count:
                    return found
                raise AssertionError(
                    f"the agent exited ({self.process.returncode}) before {count} x"
                    f" {pattern!r}:\n{self.log()}"
                )
            if time.monotonic() > deadline:
                raise AssertionError(f"no {count} x {pattern!r} in {timeout} s:\n{self.log()}")
            time.sleep(0.05)

    def wait(self, timeout: float = 30.0) -> int:
        try:
            return self.process.wait(timeout)
        finally:
            self._log.close()

    def stop(self) -> int:
        """SIGTERM (a clean stop), then SIGKILL after STOP_TIMEOUT; the exit code."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(STOP_TIMEOUT)
        self._log.close()
        return self.process.returncode


class AgentRunner:
    """Starts agents with their logs in `directory`; `stop_all` ends every one."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.started: list[AgentProcess] = []

    def __call__(self, *args: str, env: dict[str, str] | None = None) -> AgentProcess:
        log_path = self.directory / f"agent-{len(self.started)}.log"
        agent = AgentProcess(args, log_path, env or clean_env())
        self.started.append(agent)
        return agent

    def stop_all(self) -> None:
        for agent in self.started:
            agent.stop()
