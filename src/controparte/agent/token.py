"""The installation token, read from a file: its first line, stripped.

The file is a secret. On POSIX systems a token file that every user may read is
refused (as ssh refuses such a private key) and one that the group may read is
accepted with a warning. Windows has no such mode bits: protect the file with an ACL.
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

from controparte.errors import ConfigError

log = logging.getLogger("controparte.agent")

MAX_TOKEN_FILE = 4096


def read_token(path: Path, *, check_mode: bool = os.name == "posix") -> str:
    """The token in `path`. Raises `ConfigError` (naming the file and what to do) when
    it is missing, unreadable, empty, or readable by every user."""
    try:
        info = path.stat()
        if check_mode and info.st_mode & stat.S_IROTH:
            raise ConfigError(
                f"token file: {path} is readable by every user"
                f" (mode {stat.S_IMODE(info.st_mode):04o}); run: chmod 600 {path}"
            )
        with path.open("rb") as source:
            raw = source.read(MAX_TOKEN_FILE)
    except FileNotFoundError:
        raise ConfigError(f"token file: {path} does not exist") from None
    except IsADirectoryError:
        raise ConfigError(f"token file: {path} is a directory") from None
    except OSError as exc:
        raise ConfigError(f"token file: cannot read {path}: {exc.strerror or exc}") from None
    try:
        text = raw.decode("utf-8-sig")  # a BOM, as Windows Notepad writes, is not the token
    except UnicodeDecodeError:
        raise ConfigError(f"token file: {path} is not UTF-8 text") from None
    lines = text.splitlines()
    token = lines[0].strip() if lines else ""
    if not token:
        raise ConfigError(f"token file: the first line of {path} is empty")
    if check_mode and info.st_mode & stat.S_IRGRP:
        log.warning("token file %s is readable by its group; chmod 600 keeps it private", path)
    return token
