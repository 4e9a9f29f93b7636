"""Helpers for tests that drive `controparte agent` as a subprocess against a real
server (`tests/realserver.py`): tokens issued on the server's store, agents started
with their logs in files (`tests/processes.py`), every agent ended at teardown."""

from __future__ import annotations

from pathlib import Path

from controparte.service.access import Access
from controparte.service.credentials import ServerSecret
from controparte.store import open_store
from tests.processes import LoggedProcess, clean_env, controparte_command, remember_secret
from tests.realserver import ServerProcess


def issue_token(server: ServerProcess, code: str) -> str:
    """A new token for `code`, made on the server's store (as an operator would)."""
    store = open_store(server.data)
    try:
        access = Access(store, ServerSecret.load_or_create(server.data), server.settings)
        return remember_secret(access.issue_token(code))
    finally:
        store.close()


def write_token(path: Path, token: str) -> Path:
    path.write_text(remember_secret(token) + "\n")
    path.chmod(0o600)
    return path


class AgentRunner:
    """Starts `controparte agent ARGS` with its log in `directory`; `stop_all` ends
    every one it started (SIGTERM, then SIGKILL)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.started: list[LoggedProcess] = []

    def __call__(self, *args: str, env: dict[str, str] | None = None) -> LoggedProcess:
        log_path = self.directory / f"agent-{len(self.started)}.log"
        agent = LoggedProcess(
            [*controparte_command(), "agent", *args], log_path, env or clean_env(), name="agent"
        )
        self.started.append(agent)
        return agent

    def stop_all(self) -> None:
        for agent in self.started:
            agent.stop()
