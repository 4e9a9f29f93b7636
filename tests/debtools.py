"""The Debian tools the tests and the benchmarks drive for real, and the packages that
hold them. `make test` installs every one of these packages (the Makefile's
DEB_PACKAGES; `tests/unit/test_debtools.py` keeps the two in step), so a tool that is
missing fails the test that needs it: it is never a reason to skip."""

from __future__ import annotations

import glob
import os
import shutil
from pathlib import Path

PACKAGES = {
    "curl": "curl",  # docs/agent.md's DynDNS2 example
    "chromium": "chromium",  # tests/browser: the dashboard in headless Chromium
    "ddclient": "ddclient",
    "dig": "bind9-dnsutils",
    "dnsperf": "dnsperf",  # bench/dns_bench.py
    "initdb": "postgresql",  # tests/pgserver.py
    "ip": "iproute2",  # the network-namespace lab
    "kdig": "knot-dnsutils",
    "knotc": "knot",  # tests/secondaries.py
    "knotd": "knot",  # bench/dns_bench.py, tests/secondaries.py
    "named": "bind9",  # tests/secondaries.py
    "named-checkzone": "bind9-utils",
    "nft": "nftables",
    "nsd": "nsd",  # tests/secondaries.py
    "nsd-checkconf": "nsd",
    "nsd-control": "nsd",
    "nsupdate": "bind9-dnsutils",
    "postgres": "postgresql",  # tests/pgserver.py
    "rndc": "bind9-utils",  # tests/secondaries.py
    "sysctl": "procps",  # the network-namespace lab's router
    "systemd-analyze": "systemd",  # docs/controparte-agent.service
    "wrk": "wrk",  # bench/heartbeat_bench.py
}


class MissingToolError(AssertionError):
    """A tool of PACKAGES is not installed (an AssertionError: the test fails)."""


def _postgresql_bindirs() -> list[str]:
    """Where Debian keeps PostgreSQL's server programs, one directory per major version
    (/usr/lib/postgresql/<version>/bin), the newest first."""
    found = glob.glob("/usr/lib/postgresql/*/bin")
    return sorted(found, key=lambda path: int(Path(path).parent.name), reverse=True)


def tool(name: str) -> str:
    """The path of the tool `name` (one of PACKAGES; sbin directories are searched too,
    as root's PATH would, and the newest PostgreSQL's programs); MissingToolError,
    naming its package, when it is not installed."""
    package = PACKAGES[name]
    extra = os.pathsep.join(["/usr/sbin", "/sbin", *_postgresql_bindirs()])
    found = shutil.which(name) or shutil.which(name, path=extra)
    if found is None:
        raise MissingToolError(
            f"`{name}` is not installed: `make debs` installs it (Debian package {package})"
        )
    return found
