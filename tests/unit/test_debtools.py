"""`make test` installs every Debian tool the tests and the benchmarks run: each tool of
`tests/debtools.PACKAGES` is installed, comes from the package named there (or one it
depends on directly), and that package is in the Makefile's DEB_PACKAGES (which `make
debs` installs before the tests)."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

from tests.debtools import PACKAGES, MissingToolError, tool

MAKEFILE = Path(__file__).resolve().parents[2] / "Makefile"


def deb_packages() -> set[str]:
    found = re.search(r"^DEB_PACKAGES := (.*)$", MAKEFILE.read_text(), re.MULTILINE)
    assert found is not None, "the Makefile names its Debian packages in DEB_PACKAGES"
    return set(found[1].split())


def owners(path: str) -> set[str]:
    """The Debian packages that ship `path` (or, on a merged /usr, its /bin or /sbin twin;
    or what a symbolic link, /usr/local/bin/initdb say, points to)."""
    real = os.path.realpath(path)
    for candidate in (path, path.removeprefix("/usr"), real, real.removeprefix("/usr")):
        done = subprocess.run(
            ["dpkg-query", "-S", candidate], capture_output=True, text=True, check=False
        )
        if done.returncode == 0:
            return {
                package.strip()
                for line in done.stdout.splitlines()
                for package in line.partition(": ")[0].split(",")
            }
    return set()


def installed_by(package: str) -> set[str]:
    """`package` and the packages it depends on directly (a metapackage such as
    `postgresql` installs its programs through `postgresql-<version>`)."""
    done = subprocess.run(
        ["dpkg-query", "-W", "-f", "${Depends}", package],
        capture_output=True,
        text=True,
        check=False,
    )
    depends = done.stdout.replace("|", ",").split(",") if done.returncode == 0 else []
    return {package} | {d.split()[0] for d in depends if d.strip()}


def test_the_makefile_installs_every_package() -> None:
    assert sorted(set(PACKAGES.values()) - deb_packages()) == []


@pytest.mark.parametrize("name", sorted(PACKAGES))
def test_each_tool_is_installed_from_its_package(name: str) -> None:
    assert owners(tool(name)) & installed_by(PACKAGES[name])


def test_a_missing_tool_fails_naming_its_package(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")  # nsupdate is in /usr/bin: not searched
    with pytest.raises(MissingToolError, match=r"`nsupdate` is not installed: .*bind9-dnsutils"):
        tool("nsupdate")
