"""docs/ARCHITECTURE.md stays true: every module of the package is named in its table of
concepts, and every module the table names exists (so "where does X happen?" has an
answer on the page for every module, and no answer points nowhere)."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "src" / "controparte"
PAGE = ROOT / "docs" / "ARCHITECTURE.md"


def named_on_the_page() -> set[str]:
    """Module paths (relative to the package) in the table's module column."""
    named: set[str] = set()
    for line in PAGE.read_text().splitlines():
        cells = line.split("|")
        if line.startswith("| ") and len(cells) > 3 and not line.startswith("| concept"):
            named.update(re.findall(r"`([a-z0-9_/]+\.(?:py|toml))`", cells[2]))
    return named


def modules() -> set[str]:
    return {
        str(path.relative_to(PACKAGE))
        for path in PACKAGE.rglob("*.py")
        if path.name != "__init__.py" or path.parent.name == "cli"
    }


def test_every_module_is_on_the_page() -> None:
    assert sorted(modules() - named_on_the_page()) == []


def test_every_module_on_the_page_exists() -> None:
    assert sorted(p for p in named_on_the_page() if not (PACKAGE / p).is_file()) == []


def test_the_reader_sees_the_table() -> None:
    """The check can fail: the page names the commonest modules."""
    assert {"dns/zone.py", "service/registry.py", "errors.py"} <= named_on_the_page()
