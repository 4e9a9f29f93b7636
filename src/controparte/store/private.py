"""The data directory and what it holds (the SQLite database and its -wal and -shm, the
server secret, lock files) are for their owner only: the directory is created 0700 and
each file 0600, whatever the umask; `exposed` names what an operator left open to
others, for the warning `controparte serve` logs at start.

SQLite gives a database's -wal and -shm files the mode of the database file itself, so
creating that file 0600 before SQLite opens it is enough for all three."""

from __future__ import annotations

import os
import stat
from pathlib import Path

DIR_MODE = 0o700
FILE_MODE = 0o600
OTHERS = 0o077
"""The bits that give the group or anyone else access."""


def make_dir(path: Path) -> None:
    """Make the directory `path` (and its missing parents) unless it exists; `path`
    itself is made 0700 whatever the umask (an existing one is left as it is)."""
    if path.is_dir():
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        path.mkdir(mode=DIR_MODE)
    except FileExistsError:
        return
    path.chmod(DIR_MODE)


def create_file(path: Path, flags: int = os.O_WRONLY) -> int | None:
    """Create `path` exclusively, 0600 whatever the umask, and return it open with
    `flags`; None when it exists already (then nothing changes)."""
    try:
        fd = os.open(path, flags | os.O_CREAT | os.O_EXCL, FILE_MODE)
    except FileExistsError:
        return None
    os.fchmod(fd, FILE_MODE)
    return fd


def ensure_file(path: Path) -> None:
    """`path` exists: created empty and 0600 when missing."""
    fd = create_file(path)
    if fd is not None:
        os.close(fd)


def exposed(data_dir: Path) -> list[tuple[Path, int]]:
    """The data directory and the files directly in it that the group or others may
    access, with their modes (permission bits); none when the directory is missing."""
    try:
        entries = [data_dir, *sorted(data_dir.iterdir())]
    except OSError:
        return []
    found = []
    for entry in entries:
        try:
            info = entry.lstat()
        except OSError:
            continue
        if (stat.S_ISDIR(info.st_mode) or stat.S_ISREG(info.st_mode)) and info.st_mode & OTHERS:
            found.append((entry, stat.S_IMODE(info.st_mode)))
    return found
