"""The store of the store tests, once on each engine (`database`, tests/conftest.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from controparte.store import Store, open_store


@pytest.fixture
def store(tmp_path: Path, database: str) -> Iterator[Store]:
    """A new, empty store: SQLite in `tmp_path`, or a fresh PostgreSQL database."""
    opened = open_store(tmp_path, database)
    yield opened
    opened.close()
