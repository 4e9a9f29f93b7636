"""The token file: first line, stripped; refused when missing, empty or world-readable."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from controparte.agent.token import read_token
from controparte.errors import ConfigError


def token_file(tmp_path: Path, content: bytes, mode: int = 0o600) -> Path:
    path = tmp_path / "agent.token"
    path.write_bytes(content)
    path.chmod(mode)
    return path


@pytest.mark.parametrize(
    ("content", "token"),
    [
        (b"cpt_abc\n", "cpt_abc"),
        (b"  cpt_abc  \r\nsecond line\n", "cpt_abc"),
        (b"cpt_abc", "cpt_abc"),
        (b"\xef\xbb\xbfcpt_abc\r\n", "cpt_abc"),  # Notepad's BOM
    ],
)
def test_first_line_stripped(tmp_path: Path, content: bytes, token: str) -> None:
    assert read_token(token_file(tmp_path, content)) == token


@pytest.mark.parametrize("content", [b"", b"\n", b"   \ncpt_abc\n"])
def test_empty_first_line(tmp_path: Path, content: bytes) -> None:
    with pytest.raises(ConfigError, match=r"first line of .* is empty"):
        read_token(token_file(tmp_path, content))


def test_missing(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"token file: .*nope does not exist"):
        read_token(tmp_path / "nope")


def test_directory(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="is a directory"):
        read_token(tmp_path)


def test_not_utf8(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not UTF-8"):
        read_token(token_file(tmp_path, b"\xff\xfe\x00"))


@pytest.mark.parametrize("mode", [0o644, 0o604, 0o666])
def test_world_readable_is_refused_with_the_fix(tmp_path: Path, mode: int) -> None:
    path = token_file(tmp_path, b"cpt_abc\n", mode)
    with pytest.raises(ConfigError, match=f"readable by every user.*chmod 600 {path}"):
        read_token(path)
    assert read_token(path, check_mode=False) == "cpt_abc"  # Windows: no mode bits


def test_group_readable_is_a_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = token_file(tmp_path, b"cpt_abc\n", 0o640)
    with caplog.at_level(logging.WARNING, "controparte.agent"):
        assert read_token(path) == "cpt_abc"
    assert "readable by its group" in caplog.text
    assert "cpt_abc" not in caplog.text  # never log the secret
