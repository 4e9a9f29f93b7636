"""The layering that docs/ARCHITECTURE.md draws, enforced: every `controparte` import
in src/ is read (with `ast`, so imports inside functions and `TYPE_CHECKING` blocks
count too) and checked against the table of what each part may import.

A part is a top-level module or package of `controparte` (`model`, `dns`, `cli`, ...).
Dependencies point inward; a new part must be added to the table (and to the page)."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src" / "controparte"

# What each part may import besides itself, inner layers first.
ALLOWED: dict[str, frozenset[str]] = {
    "errors": frozenset(),
    "settings": frozenset({"errors"}),
    "claim": frozenset({"errors"}),
    "logs": frozenset({"errors", "settings"}),
    "model": frozenset({"errors", "settings"}),
    "plan": frozenset({"errors", "settings", "model"}),
    "store": frozenset({"errors", "settings", "model"}),
    "service": frozenset({"errors", "settings", "model", "plan", "store"}),
    "dns": frozenset({"errors", "settings", "model", "plan", "store", "service", "claim", "logs"}),
    "http": frozenset({"errors", "settings", "model", "plan", "store", "service", "web"}),
    "web": frozenset({"errors", "settings", "model", "plan", "store", "service"}),
    "agent": frozenset({"errors", "model", "plan"}),
    "cli": frozenset(
        {"errors", "settings", "model", "plan", "store", "service", "dns", "agent", "serve"}
    ),
    "fdlimit": frozenset({"errors", "settings"}),
    "serve": frozenset(
        {
            "errors",
            "settings",
            "model",
            "plan",
            "store",
            "service",
            "dns",
            "http",
            "fdlimit",
            "claim",
            "logs",
        }
    ),
    "__main__": frozenset({"cli"}),
    "__init__": frozenset(),
}
"""`__init__` is the package's own `controparte/__init__.py` (the version): any part may
import it."""

PURE_DNS = frozenset(
    {
        "zone",
        "lookup",
        "answer",
        "fastpath",
        "engine",
        "screen",
        "slots",
        "update",
        "zonefile",
        "notify",
        "xfrwire",
        "ixfr",
    }
)
"""Modules of `dns` that are pure: they may import the model and the store's types
(`store.base`), never a store engine, the service layer or sockets."""


def modules() -> Iterator[tuple[str, Path]]:
    for path in sorted(SRC.rglob("*.py")):
        yield ".".join(path.relative_to(SRC.parent).with_suffix("").parts), path


def imports(module: str, path: Path) -> Iterator[str]:
    """Every `controparte...` module that `path` imports (absolute or relative)."""
    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            yield from (a.name for a in node.names if a.name.split(".")[0] == "controparte")
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = ".".join(package[: len(package) - node.level + 1])
                if node.module is None:  # `from . import x`: x is a module
                    yield from (f"{base}.{alias.name}" for alias in node.names)
                    continue
                target = f"{base}.{node.module}"
            else:
                target = node.module or ""
            if target.split(".")[0] != "controparte":
                continue
            if target == "controparte":  # `from controparte import x`: x is a part,
                for alias in node.names:  # or a name of the package's own (__version__)
                    dunder = alias.name.startswith("__")
                    yield "controparte" if dunder else f"controparte.{alias.name}"
            else:
                yield target


def part(module: str) -> str:
    parts = module.split(".")
    return "__init__" if len(parts) == 1 else parts[1]


ALL = list(modules())


@pytest.mark.parametrize(("module", "path"), ALL, ids=[m for m, _ in ALL])
def test_imports_point_inward(module: str, path: Path) -> None:
    own = part(module)
    assert own in ALLOWED, f"{module}: part {own!r} is not in the layering table"
    wrong = sorted(
        target
        for target in set(imports(module, path))
        if part(target) not in (own, "__init__") and part(target) not in ALLOWED[own]
    )
    assert wrong == [], f"{module} imports outward: {wrong}"


@pytest.mark.parametrize(
    ("module", "path"),
    [(m, p) for m, p in ALL if m.split(".")[1:2] == ["dns"] and p.stem in PURE_DNS],
    ids=lambda v: v if isinstance(v, str) else "",
)
def test_the_pure_dns_modules_do_no_io(module: str, path: Path) -> None:
    wrong = sorted(
        t
        for t in set(imports(module, path))
        if (part(t) in ("store", "service") and t != "controparte.store.base")
        or t in ("controparte.dns.server", "controparte.dns.updater")
    )
    assert wrong == [], f"{module} (pure) imports {wrong}"


def test_the_checker_sees_an_outward_import(tmp_path: Path) -> None:
    """The check can fail: a model module importing the service layer is caught."""
    bad = tmp_path / "controparte" / "model" / "bad.py"
    bad.parent.mkdir(parents=True)
    bad.write_text("from controparte.service.registry import Registry\nfrom . import zone\n")
    found = set(imports("controparte.model.bad", bad))
    assert found == {"controparte.service.registry", "controparte.model.zone"}
    assert "service" not in ALLOWED["model"]
