"""docs/deployment.md stays true: its configuration is run, not just read.

The guide's blocks preceded by `<!-- doc-config: NAME -->` are configuration (controparte's
TOML, NSD's, Knot's and BIND's additions, the same key in three syntaxes, the parent
zone's delegation, the alert rules); those preceded by `<!-- doc-test: NAME -->` are
console sessions (`$ ` lines are commands, the lines after one its output). The test
fills them in for loopback, replacing only what a lab must (`Site.fill`):

- addresses: the primary's and the secondaries' become 127.0.0.1 or ::1 (the glue in
  the setting `ns`, which is data served rather than a place to reach, stays as written);
- ports: where the guide reaches a server on port 53 (`ADDR:53`, `ADDR@53`,
  `ADDR port 53`, `host = "ADDR", port = 53`, `dig @ADDR`), the port that server got;
  the HTTP API's 8080 likewise;
- paths: /var/lib/controparte, /etc/controparte, /var/lib/nsd, /etc/bind and
  /var/cache/bind become directories of the test;
- secrets: a key's secret in the guide becomes the secret `controparte tsig-key`
  made for that key name.

Any documentation address or system path left after that fails the test, so the
guide cannot grow a setting the test does not run. Then: the guide's key commands make
the keys; `controparte serve` runs on the guide's TOML; NSD and Knot run on the guide's
additions (tests/secondaries.py keeps only paths, logs, control and, for NSD, where it
listens: the distribution's part); both transfer the zone whole; the delegation matches
the zone's NS records and glue; a change reaches both; the guide's checks print what it
shows (numbers masked); the metrics and alert rules name what /metrics has, and
docs/http.md every metric family; and BIND takes over ns1 from NSD with the guide's BIND
configuration and gets the next change by NOTIFY.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import dns.exception
import dns.name
import dns.rrset
import httpx
import psycopg
import pytest
from typer.testing import CliRunner

from controparte.cli import app
from controparte.service.credentials import SECRET_FILE
from tests.docs.test_connectivity_doc import Step, console_steps
from tests.pgserver import PgServer
from tests.processes import free_port
from tests.realserver import ServerProcess
from tests.secondaries import (
    BindSecondary,
    KnotSecondary,
    NsdSecondary,
    Rr,
    Secondary,
    TsigKey,
    axfr_records,
)

pytestmark = [pytest.mark.integration, pytest.mark.secondaries]

ROOT = Path(__file__).resolve().parents[2]
GUIDE = ROOT / "docs" / "deployment.md"
FENCE = re.compile(
    r"^<!-- doc-(?P<kind>config|test): (?P<name>[\w.-]+) -->\n```[^\n]*\n(?P<text>.*?)^```$",
    re.MULTILINE | re.DOTALL,
)
BLOCKS = {
    "config": {"key-bind", "key-nsd", "key-knot", "controparte", "nsd", "knot", "bind"}
    | {"parent", "alerts", "nodes", "node-1", "node-2", "pgpass", "nsd-nodes"},
    "test": {"keys", "start-log", "serials", "axfr", "nsd-control", "knotc"}
    | {"pg-setup", "backup", "restore"},
}
ZONE = "bp.example.net."
TOOL_TIMEOUT = 60.0
FIRST_TIMEOUT = 60.0  # controparte started -> a secondary serves the zone
CHANGE_TIMEOUT = 20.0  # a change committed -> a secondary serves it
ADD_ONE: tuple[str, ...] = ("installation", "add", "ACME-01", "--label", "acme")
ADD_ONE += ("--port", "9001", "--ip", "203.0.113.10", "--allow-non-global")  # a doc address

LOOPBACK = {
    "192.0.2.1": "127.0.0.1",
    "192.0.2.2": "127.0.0.1",  # node 2 (section 10)
    "192.0.2.10": "127.0.0.1",  # the load balancer: the test's client
    "192.0.2.20": "127.0.0.1",  # PostgreSQL
    "192.0.2.0/24": "127.0.0.0/8",
    "198.51.100.53": "127.0.0.1",
    "2001:db8:5::53": "::1",
    "203.0.113.53": "127.0.0.1",
    "2001:db8:7::53": "::1",
}
"""The guide's addresses (and prefix) -> where the test's servers are."""
ENDPOINTS = {
    ("192.0.2.1", 53): "primary",
    ("192.0.2.2", 53): "node-2",
    ("127.0.0.1", 8080): "http",
    ("192.0.2.1", 8080): "http",
    ("192.0.2.2", 8080): "http-2",
    ("192.0.2.20", 5432): "postgres",
    ("198.51.100.53", 53): "ns1",
    ("2001:db8:5::53", 53): "ns1",
    ("203.0.113.53", 53): "ns2",
    ("2001:db8:7::53", 53): "ns2",
}
"""Where the guide reaches a server: its address and port -> which server."""
_ADDRESS = "|".join(re.escape(a) for a in sorted(LOOPBACK, key=len, reverse=True))
ENDPOINT = re.compile(
    rf'(?P<addr>{_ADDRESS}|127\.0\.0\.1)(?P<sep>:|@| port |", port = )(?P<port>\d+)\b'
)
ADDRESS = re.compile(rf"(?<![\w.:])(?:{_ADDRESS})(?![\w.:/])")
DIG_AT = re.compile(rf"@(?P<addr>{_ADDRESS})(?![\w.:])")
DOCUMENTATION = re.compile(r"192\.0\.2\.|198\.51\.100\.|203\.0\.113\.|2001:db8:|/etc/|/var/")
KEY_SECRET = re.compile(
    r'(?:name: "|- id: )(?P<name>[^"\s]+)"?\s+algorithm: \S+\s+secret: "?(?P<secret>[^"\s]+)'
)
NS_SETTING = re.compile(r"^ns = \[\n.*?^\]\n", re.MULTILINE | re.DOTALL)


# -- the guide ----------------------------------------------------------------------------------


def blocks() -> dict[str, str]:
    """The guide's marked blocks by name; each name is one of BLOCKS, each marker is
    right before its fence, and no block is missing."""
    text = GUIDE.read_text()
    found = {m["name"]: m["text"] for m in FENCE.finditer(text)}
    kinds = {m["name"]: m["kind"] for m in FENCE.finditer(text)}
    markers = re.findall(r"^<!-- doc-(?:config|test): [\w.-]+ -->$", text, re.MULTILINE)
    assert len(markers) == len(found), "a doc marker is not right before a fence, or twice"
    for kind, names in BLOCKS.items():
        assert {n for n, k in kinds.items() if k == kind} == names, kind
    return found


def masked(lines: list[str] | tuple[str, ...]) -> list[str]:
    """Lines as compared with the guide's: Knot's timers (`+59m59s`) and every other
    number (serials, times, counts) masked, trailing spaces and blank lines dropped."""
    timers = (re.sub(r"[+-](?:\d+[Dhms])+", "+T", line.rstrip()) for line in lines)
    return [re.sub(r"\d+", "N", line) for line in timers if line]


def normal_key(name: str) -> str:
    return dns.name.from_text(name).to_text().lower()


# -- the test's site: where the guide's servers are ---------------------------------------------


@dataclass
class Site:
    """The test's stand-ins for the guide's hosts: ports, directories and keys."""

    ports: dict[str, int]  # primary, http, ns1, ns2
    paths: dict[str, Path]  # the guide's path -> the test's
    keys: dict[str, TsigKey] = field(default_factory=dict)  # by name, lower case, absolute

    def fill(self, text: str) -> str:
        """`text` with the guide's addresses, ports, paths and secrets replaced by the
        test's (see the module); AssertionError if a documentation address or a
        system path is left."""

        def endpoint(found: re.Match[str]) -> str:
            where = (found["addr"], int(found["port"]))
            assert where in ENDPOINTS, f"the guide reaches {where}, which the test does not run"
            address = LOOPBACK.get(found["addr"], found["addr"])
            return f"{address}{found['sep']}{self.ports[ENDPOINTS[where]]}"

        text = ENDPOINT.sub(endpoint, text)
        text = ADDRESS.sub(lambda found: LOOPBACK[found[0]], text)
        paths = re.compile("|".join(re.escape(p) for p in sorted(self.paths, key=len)[::-1]))
        left = DOCUMENTATION.search(paths.sub("", text))
        assert left is None, f"the test does not replace {left[0]!r} in:\n{text}"
        text = paths.sub(lambda found: str(self.paths[found[0]]), text)
        for found in KEY_SECRET.finditer(text):
            key = self.keys[normal_key(found["name"])]
            text = text.replace(found["secret"], key.secret)
        return text

    def fill_settings(self, text: str) -> str:
        """The guide's TOML filled, but for the setting `ns` (the glue it names is the
        zone's data, checked against the parent zone's delegation)."""
        ns = NS_SETTING.search(text)
        assert ns is not None, "the guide's settings name no `ns`"
        return self.fill(text[: ns.start()]) + ns[0] + self.fill(text[ns.end() :])

    def command(self, line: str) -> str:
        """A guide's command line for this site: `dig @ADDR` gets the port too."""

        def at(found: re.Match[str]) -> str:
            port = self.ports[ENDPOINTS[found["addr"], 53]]
            return f"-p {port} @{LOOPBACK[found['addr']]}"

        return self.fill(DIG_AT.sub(at, line))


def run_cli(env: Mapping[str, str], words: list[str]) -> list[str]:
    """`controparte WORDS` in process with `env` and no other CONTROPARTE_* setting; the
    lines it printed (stdout, then stderr)."""
    result = CliRunner().invoke(app, words, env=dict(env))
    assert result.exit_code == 0, (words, result.stdout, result.stderr)
    return (result.stdout + result.stderr).splitlines()


def run_shell(site: Site, step: Step, cwd: Path, env: Mapping[str, str] | None = None) -> list[str]:
    """One console command of the guide (dig, diff, sort, echo, PostgreSQL's tools),
    through the shell, as `site.command` makes it, with the environment variables
    `env` besides this process's; its output lines."""
    done = subprocess.run(
        site.command(step.command),
        shell=True,
        cwd=cwd,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=TOOL_TIMEOUT,
        check=False,
    )
    assert done.returncode == 0, (step.command, done.stdout, done.stderr)
    return done.stdout.splitlines()


def zone_records(site: Site) -> set[Rr]:
    """The zone as controparte serves it (AXFR signed with the operators' key)."""
    key = site.keys[normal_key("ops.transfer.bp.example.net")]
    return axfr_records("127.0.0.1", site.ports["primary"], ZONE, key)


def parent_records(text: str) -> set[tuple[str, str, str]]:
    """The delegation's records: owner, type, data (TTLs differ by design)."""
    found = set()
    for line in text.splitlines():
        owner, ttl, rdclass, rdtype, data = line.split(None, 4)
        rrset = dns.rrset.from_text(owner, int(ttl), rdclass, rdtype, data)
        found |= {(rrset.name.to_text().lower(), rdtype, str(rd)) for rd in rrset}
    return found


def wait_for(secondary: Secondary, serial: int, expected: set[Rr], timeout: float) -> None:
    """Until `secondary` serves `serial`; then its whole zone is `expected`."""
    secondary.wait_serial(serial, timeout=timeout)
    theirs = secondary.axfr()
    missing, extra = sorted(expected - theirs)[:5], sorted(theirs - expected)[:5]
    assert theirs == expected, f"{secondary.kind}: missing {missing}, extra {extra}"


def metric_labels(text: str) -> dict[str, set[str]]:
    """The metrics of a Prometheus exposition with a sample, each with its label names."""
    found: dict[str, set[str]] = {}
    for line in text.splitlines():
        sample = re.match(r"^([a-z_]+)(?:\{(.*)\})? \S+$", line)
        if sample is not None:
            labels = set(re.findall(r'(\w+)="', sample[2] or ""))
            found.setdefault(sample[1], set()).update(labels)
    return found


# -- the deployment -------------------------------------------------------------------------


@dataclass
class Deployment:
    """The guide's deployment on loopback: controparte and its secondaries."""

    site: Site
    server: ServerProcess
    secondaries: dict[str, Secondary]  # ns1, ns2
    env: dict[str, str]  # the CLI's settings: the guide's TOML
    home: Path

    def change(self, *words: str) -> tuple[int, set[Rr]]:
        """A change through the CLI; the new serial and zone, once controparte serves it."""
        before = self.server.serial()
        run_cli(self.env, list(words))
        deadline = time.monotonic() + CHANGE_TIMEOUT
        while (serial := self.server.serial()) == before:
            assert time.monotonic() < deadline, f"controparte still serves {before} after {words}"
            time.sleep(0.02)
        return serial, zone_records(self.site)


def dual_stack_port() -> int:
    """A port free for UDP and TCP on 127.0.0.1 and on ::1 (the guide's secondaries
    listen on both)."""
    for _ in range(100):
        port = free_port()
        try:
            for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
                with socket.socket(socket.AF_INET6, kind) as sock:
                    sock.bind(("::1", port))
        except OSError:
            continue
        return port
    raise AssertionError("no port is free on both 127.0.0.1 and ::1")


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No CONTROPARTE_* setting of the machine running the tests leaks in."""
    for key in list(os.environ):
        if key.startswith("CONTROPARTE_"):
            monkeypatch.delenv(key)


@pytest.fixture
def deployment(tmp_path: Path) -> Iterator[Deployment]:
    """controparte on the guide's settings with the guide's keys, and the guide's NSD
    (ns1) and Knot (ns2), not started: the test starts them. Everything is stopped at
    teardown."""
    guide = blocks()
    data, etc = tmp_path / "data", tmp_path / "etc"
    etc.mkdir()
    server = ServerProcess(data)
    http = int(server.settings_env["CONTROPARTE_HTTP"].rsplit(":", 1)[1])
    nsd = NsdSecondary(tmp_path / "nsd", ZONE, (server.host, server.port), None)
    knot = KnotSecondary(tmp_path / "knot", ZONE, (server.host, server.port), None)
    nsd.port, knot.port = dual_stack_port(), dual_stack_port()
    site = Site(
        ports={"primary": server.port, "http": http, "ns1": nsd.port, "ns2": knot.port},
        paths={
            "/var/lib/controparte": data,
            "/etc/controparte": etc,
            "/var/lib/nsd": nsd.home,
            "/etc/bind": tmp_path / "bind",
            "/var/cache/bind": tmp_path / "bind",
        },
    )
    config = etc / "controparte.toml"
    config.write_text(site.fill_settings(guide["controparte"]))
    # The server reads the guide's settings and nothing else.
    server.settings_env = {"CONTROPARTE_CONFIG": str(config)}
    env = {"CONTROPARTE_CONFIG": str(config)}
    made = Deployment(site, server, {"ns1": nsd, "ns2": knot}, env, tmp_path)
    yield made
    for secondary in {nsd, knot, *made.secondaries.values()}:
        secondary.stop()
    server.stop()


# -- the checks -------------------------------------------------------------------------------


def make_keys(deployment: Deployment, guide: dict[str, str]) -> None:
    """The guide's `controparte tsig-key` commands, run as written (paths replaced),
    each printing what the guide shows; the keys they write become the site's."""
    site = deployment.site
    for step in console_steps(guide["keys"]):
        words = shlex.split(site.fill(step.command))
        assert words[0] == "controparte", step.command
        printed = run_cli({}, words[1:])
        assert printed == [site.fill(line) for line in step.output], step.command
        if words[1] == "init":
            continue
        key = TsigKey.from_bind_file(Path(words[words.index("--out") + 1]))
        site.keys[normal_key(key.name)] = key


def check_key_syntaxes(guide: dict[str, str]) -> None:
    """The guide's key in BIND's, NSD's and Knot's syntax is one key: same name, same
    algorithm, same secret."""
    bind = re.search(
        r'key "(?P<name>[^"]+)" \{\n\talgorithm (?P<alg>\S+);\n\tsecret "(?P<secret>[^"]+)";',
        guide["key-bind"],
    )
    assert bind is not None, guide["key-bind"]
    for name in ("key-nsd", "key-knot"):
        other = KEY_SECRET.search(guide[name])
        assert other is not None, guide[name]
        assert normal_key(other["name"]) == normal_key(bind["name"]), name
        assert other["secret"] == bind["secret"], name
        assert f"algorithm: {bind['alg']}" in guide[name], name


def start_secondary(deployment: Deployment, name: str, text: str) -> Secondary:
    """The secondary `name` started on the guide's configuration `text`, with the key
    that configuration names (for reading its zone back)."""
    secondary = deployment.secondaries[name]
    found = KEY_SECRET.search(text)
    key_name = found["name"] if found is not None else f"{name}.transfer.bp.example.net"
    secondary.key = deployment.site.keys[normal_key(key_name)]
    secondary.given = deployment.site.fill(text)
    secondary.start()
    return secondary


def status_parts(lines: list[str] | tuple[str, ...]) -> set[str]:
    """A status report as the lines (NSD) or ` | ` fields (Knot) it has, numbers masked:
    both list an event only while it is scheduled or running."""
    return {part for line in masked(lines) for part in line.split(" | ")}


def check_console(deployment: Deployment, block: str, text: str) -> None:
    """Every command of a console block of the guide prints what the guide shows,
    numbers masked: dig and the shell here, the lines exactly; `nsd-control` and
    `knotc` through the secondaries' control channels, every part of the status the
    guide shows (more may come and go)."""
    secondaries = deployment.secondaries
    controls = {"nsd-control": secondaries["ns1"], "knotc": secondaries["ns2"]}
    for step in console_steps(text):
        words = shlex.split(step.command)
        control = controls.get(words[0])
        if control is None:
            printed = run_shell(deployment.site, step, deployment.home)
            same = masked(printed) == masked(step.output)
        else:
            printed = control.control(*words[1:]).splitlines()
            same = status_parts(step.output) <= status_parts(printed)
        assert same, f"docs/deployment.md, {block}: `{step.command}` printed:\n" + "\n".join(
            printed
        )


def check_log(deployment: Deployment, text: str) -> None:
    """Every `... ` line of the guide's log excerpt ends a line of controparte's log
    (numbers masked)."""
    log = masked(deployment.server.log_text().splitlines())
    for line in text.splitlines():
        if line.startswith("... "):
            want = masked([deployment.site.fill(line.removeprefix("... "))])[0]
            found = any(seen.endswith(want) for seen in log)
            assert found, f"no log line ends {want!r}:\n" + "\n".join(log)


def check_serials(deployment: Deployment, text: str, serial: int) -> None:
    """The guide's SOA queries print one line, the same everywhere, with `serial`."""
    printed = {
        line
        for step in console_steps(text)
        for line in run_shell(deployment.site, step, deployment.home)
    }
    assert len(printed) == 1, printed
    assert f" {serial} " in printed.pop()


def check_monitoring(deployment: Deployment, guide: dict[str, str]) -> None:
    """The metrics table of section 7 and the alert rules name metrics /metrics has,
    with the labels they use; docs/http.md names every family /metrics has, and no
    other; the transfers count under the secondaries' key names."""
    text = httpx.get(deployment.server.http_url + "/metrics", timeout=10).text
    have = metric_labels(text)
    page = GUIDE.read_text()
    table = page[page.index("## 7. What to monitor") : page.index("<!-- doc-config: alerts -->")]
    for metric, labels in re.findall(r"^\| `(controparte_\w+)` \| ([^|]*)\|", table, re.M):
        assert metric in have, f"{metric} has no sample in /metrics:\n{text}"
        assert set(re.findall(r"`(\w+)`", labels)) == have[metric], metric
    for rule in guide["alerts"].split("- alert: ")[1:]:
        expr = re.search(r"expr: (.*)", rule)
        assert expr is not None, rule
        metrics = set(re.findall(r"controparte_\w+", expr[1]))
        assert metrics <= set(have), (expr[1], sorted(have))
        used = set(re.findall(r"\$labels\.(\w+)", rule))
        for pair in re.findall(r"ignoring\((\w+)\)|\{(\w+)[!=~]", expr[1]):
            used |= {name for name in pair if name}
        known = set().union(*(have[m] for m in metrics))
        assert used <= known, (rule, used - known)
    http_md = (ROOT / "docs" / "http.md").read_text()
    section = http_md[http_md.index("## Metrics") : http_md.index("## Command line")]
    families = set(re.findall(r"^# HELP (\w+) ", text, re.MULTILINE))
    assert families == set(re.findall(r"`(controparte_\w+)", section)), "docs/http.md"
    peers = {
        peer
        for line in text.splitlines()
        if line.startswith("controparte_transfers_total{")
        for peer in re.findall(r'peer="([^"]+)"', line)
    }
    assert {"ns1.transfer.bp.example.net.", "ns2.transfer.bp.example.net."} <= peers, peers


# -- the test ---------------------------------------------------------------------------------


def test_the_deployment_guide_runs(deployment: Deployment) -> None:
    guide = blocks()
    check_key_syntaxes(guide)
    make_keys(deployment, guide)
    server, site = deployment.server, deployment.site
    server.start()  # the keys `notify` names exist, or it would stop here
    server.wait_http()
    zone = zone_records(site)

    # The delegation in the parent zone is the zone's own NS RRset and glue.
    served = {(rr.owner, rr.rdtype, rr.rdata) for rr in zone}
    delegation = parent_records(guide["parent"])
    assert delegation <= served, sorted(delegation - served)
    assert {r for r in served if r[1] == "NS"} == {r for r in delegation if r[1] == "NS"}

    # NSD and Knot on the guide's configuration get the zone whole, then a change.
    nsd = start_secondary(deployment, "ns1", guide["nsd"])
    knot = start_secondary(deployment, "ns2", guide["knot"])
    serial = server.serial()
    for secondary in (nsd, knot):
        wait_for(secondary, serial, zone, FIRST_TIMEOUT)
    serial, zone = deployment.change(*ADD_ONE)
    for secondary in (nsd, knot):
        wait_for(secondary, serial, zone, CHANGE_TIMEOUT)

    # controparte logs what the guide shows, and the guide's checks print it.
    check_log(deployment, guide["start-log"])
    for block in ("serials", "axfr", "nsd-control", "knotc"):
        check_console(deployment, block, guide[block])
    check_serials(deployment, guide["serials"], serial)
    unsigned = Step(f"dig @192.0.2.1 {ZONE} AXFR", ())
    assert "; Transfer failed." in run_shell(site, unsigned, deployment.home)
    check_monitoring(deployment, guide)

    # BIND takes ns1 over from NSD (same key, same address and port): it transfers the
    # zone, and the next change reaches it by NOTIFY.
    nsd.stop()
    bind = BindSecondary(deployment.home / "bind", ZONE, (server.host, server.port), None)
    bind.port = nsd.port
    deployment.secondaries["ns1"] = bind
    key_file = site.fill("/etc/bind/ns1.transfer.bp.example.net.key")
    Path(key_file).parent.mkdir(parents=True, exist_ok=True)
    Path(key_file).write_text(site.keys[normal_key("ns1.transfer.bp.example.net")].bind_text())
    start_secondary(deployment, "ns1", guide["bind"])
    wait_for(bind, serial, zone, FIRST_TIMEOUT)
    serial, zone = deployment.change("installation", "update", "ACME-01", "--port", "9002")
    wait_for(bind, serial, zone, CHANGE_TIMEOUT)


# -- section 10: several nodes on PostgreSQL ------------------------------------------------

POSTGRES_ROLE = "controparte"


def node_settings(guide: dict[str, str], number: int) -> str:
    """Node `number`'s file as the guide says: section 2's settings with the node's own
    `dns`, `http` and `notify_source`, and section 10's settings added."""
    text = guide["controparte"]
    for line in guide[f"node-{number}"].splitlines():
        key = line.partition("=")[0].strip()
        text, replaced = re.subn(rf"^{key} = .*$", line, text, count=1, flags=re.MULTILINE)
        assert replaced == 1, f"section 2 has no {key} for node {number}'s line {line!r}"
    return text + "\n" + guide["nodes"]


def require_password(server: PgServer) -> None:
    """The server asks controparte's role for its password (scram-sha-256) over TCP, as
    the guide's pg_hba.conf line does; its superuser still gets in without one."""
    hba = server.data / "pg_hba.conf"
    rule = f"host {POSTGRES_ROLE} {POSTGRES_ROLE} 127.0.0.1/32 scram-sha-256\n"
    hba.write_text(rule + hba.read_text())
    assert server.proc is not None
    server.proc.send_signal(signal.SIGHUP)  # reload


def run_console(site: Site, text: str, cwd: Path, env: Mapping[str, str], block: str) -> None:
    """Every command of a console block, through the shell; each prints what the guide
    shows (numbers masked)."""
    for step in console_steps(text):
        printed = run_shell(site, step, cwd, env)
        assert masked(printed) == masked(list(step.output)), (
            f"docs/deployment.md, {block}: `{step.command}` printed:\n" + "\n".join(printed)
        )


def served(node: ServerProcess, name: str, address: str) -> None:
    """Until `node`'s DNS answers `name` (relative to the zone) with `address`."""
    deadline = time.monotonic() + CHANGE_TIMEOUT
    while node.records(name) != [address]:
        assert time.monotonic() < deadline, f"{name} is not {address} on port {node.port}"
        time.sleep(0.02)


def test_several_nodes_on_postgresql(
    private_pg: PgServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    guide = blocks()
    nodes = [ServerProcess(tmp_path / f"node-{n}" / "data") for n in (1, 2)]
    nsd = NsdSecondary(tmp_path / "nsd", ZONE, (nodes[0].host, nodes[0].port), None)
    nsd.port = dual_stack_port()
    ports = {"primary": nodes[0].port, "node-2": nodes[1].port, "ns1": nsd.port}
    ports |= {"ns2": free_port(), "postgres": private_pg.port}
    ports |= {
        f"http{suffix}": int(node.settings_env["CONTROPARTE_HTTP"].rsplit(":", 1)[1])
        for suffix, node in (("", nodes[0]), ("-2", nodes[1]))
    }
    sites = [
        Site(
            ports,
            {
                "/var/lib/controparte": node.data,
                "/etc/controparte": node.data.parent / "etc",
                "/var/lib/nsd": nsd.home,
            },
        )
        for node in nodes
    ]
    # The database, as the guide makes it: its superuser runs psql on the server.
    require_password(private_pg)
    superuser = {"PGHOST": "127.0.0.1", "PGPORT": str(private_pg.port), "PGUSER": "postgres"}
    run_console(sites[0], guide["pg-setup"], tmp_path, superuser, "pg-setup")
    role = f"postgresql://{POSTGRES_ROLE}@127.0.0.1:{private_pg.port}/controparte"
    with pytest.raises(psycopg.OperationalError, match="password"):  # pg_hba.conf's rule
        psycopg.connect(role, passfile=os.devnull, connect_timeout=5).close()
    pgpass = tmp_path / "pgpass"
    pgpass.write_text(sites[0].fill(guide["pgpass"]))
    pgpass.chmod(0o600)
    monkeypatch.setenv("PGPASSFILE", str(pgpass))  # the in-process CLI's, and the tools'

    # Each node's file; the keys made once, through node 1; its secret copied to node 2.
    for node, site, number in zip(nodes, sites, (1, 2), strict=True):
        config = site.paths["/etc/controparte"] / "controparte.toml"
        config.parent.mkdir(parents=True)
        config.write_text(site.fill_settings(node_settings(guide, number)))
        node.settings_env = {"CONTROPARTE_CONFIG": str(config), "PGPASSFILE": str(pgpass)}
    through_config = "--config /etc/controparte/controparte.toml"
    node_1 = Deployment(sites[0], nodes[0], {}, dict(nodes[0].settings_env), tmp_path)
    # On PostgreSQL the database is the registry (named by the setting): no `init`.
    keys = re.sub(r"\$ controparte init .*\n.*\n", "", guide["keys"])
    make_keys(node_1, {"keys": keys.replace("--data /var/lib/controparte", through_config)})
    for site in sites[1:]:
        site.keys = sites[0].keys
    nodes[1].data.mkdir()
    shutil.copy2(nodes[0].data / SECRET_FILE, nodes[1].data / SECRET_FILE)
    try:
        for node in nodes:
            node.spawn()
        for node in nodes:
            node.wait_http()
            assert httpx.get(node.http_url + "/healthz", timeout=10).status_code == 200

        # A change through node 2 is served by both; NSD, told of it by both, has it.
        run_cli(nodes[1].settings_env, list(ADD_ONE))
        for node in nodes:
            served(node, "acme", "203.0.113.10")
        nsd.key = sites[0].keys[normal_key("ns1.transfer.bp.example.net")]
        nsd_text = guide["nsd"]
        nsd.given = sites[0].fill(nsd_text[: nsd_text.index("zone:")] + guide["nsd-nodes"])
        nsd.start()
        wait_for(nsd, nodes[1].serial(), zone_records(sites[0]), FIRST_TIMEOUT)

        # Node 1 gone: node 2 takes the next change, and NSD transfers it from node 2.
        nodes[0].stop()
        before = nodes[1].serial()
        run_cli(nodes[1].settings_env, ["installation", "update", "ACME-01", "--port", "9002"])
        deadline = time.monotonic() + CHANGE_TIMEOUT
        while (serial := nodes[1].serial()) == before:
            assert time.monotonic() < deadline, f"node 2 still serves {before}"
            time.sleep(0.02)
        zone = axfr_records("127.0.0.1", nodes[1].port, ZONE, nsd.key)
        wait_for(nsd, serial, zone, CHANGE_TIMEOUT)

        # A backup while node 2 runs; restored once it is stopped; node 1 serves it.
        user = {"PGPASSFILE": str(pgpass)}
        run_console(sites[0], guide["backup"], tmp_path, user, "backup")
        nodes[1].stop()
        run_console(sites[0], guide["restore"], tmp_path, superuser | user, "restore")
        nodes[0].start()
        assert nodes[0].serial() == serial
        assert axfr_records("127.0.0.1", nodes[0].port, ZONE, nsd.key) == zone
    finally:
        nsd.stop()
        for node in nodes:
            node.stop()
