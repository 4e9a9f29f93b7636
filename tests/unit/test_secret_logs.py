"""The session's check that no process logged a secret (tests/conftest.py,
`pytest_sessionfinish`) can fail: a log that shows a remembered secret, or anything
shaped like a token, is named; a clean one is not."""

from __future__ import annotations

from pathlib import Path

import pytest

from controparte.service.credentials import new_token
from tests.processes import LOG_FILES, SECRETS, LoggedProcess, clean_env, secrets_in_logs


def test_a_log_showing_a_secret_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The session's own sets stay as they were: this test's log and secrets are its own.
    monkeypatch.setattr("tests.processes.LOG_FILES", set(LOG_FILES))
    monkeypatch.setattr("tests.processes.SECRETS", set(SECRETS))
    admin, token = "admin-token-made-by-this-test-0123456789", new_token()
    env = clean_env(CONTROPARTE_ADMIN_TOKEN=admin)  # remembered as a secret by the process
    clean = LoggedProcess(["echo", "nothing to hide"], tmp_path / "clean.log", env)
    leaky = LoggedProcess(["echo", f"{admin} {token}"], tmp_path / "leaky.log", env)
    assert clean.wait() == 0 and leaky.wait() == 0
    assert secrets_in_logs() == [f"{leaky.log_path}: {admin}", f"{leaky.log_path}: {token}"]
