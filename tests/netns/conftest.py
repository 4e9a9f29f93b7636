"""The world of the network tests, built once per module with network namespaces:

    namespace  address(es)                          what runs there
    net        .1 of each link                      the router ("the internet")
    svc        198.51.100.2                         controparte serve: DNS :53, HTTP :8080
    sl         198.51.100.18, .19, .20              start-live hosts, listening on 443
    live       198.51.100.34                        the Live gateway of live-l (L1), :9100
    dns2       198.51.100.42                        a name server a test may start (NSD)
    a          203.0.113.2                          the caller's MxServer host (per test)
    b          203.0.113.6                          studio-b (B1): NAT 8443 -> MxServer :8000,
                                                    its agent running (heartbeats, relay)

Every host is joined to `net` by its own veth pair (/30 or /28 links). studio-b's port
forward is an nftables `redirect` in its own namespace (its host is its own NAT), as
`controparte firewall` renders it. The caller's resolver (`/etc/netns/<a>/hosts`) knows
the start-live names of the test's feature catalog (`CATALOG`), which the doctor reads
with `--features`, and asks the service's DNS (`/etc/netns/<a>/resolv.conf`): the
zone's name server answers for the zone, as a resolver would. The service's probes come
from its own address, which the setting `probe_sources` declares. Each test makes its
own caller installation (the probe is limited per installation) with the `site`
fixture, which undoes the test's firewall rules and stops its processes afterwards.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from controparte.service import Registry
from controparte.service.access import Access
from controparte.service.credentials import ServerSecret
from controparte.settings import Settings, load_settings
from controparte.store import open_store
from controparte.store.base import Origin
from tests.agentproc import write_token
from tests.netns.netlab import Lab, unavailable
from tests.processes import LoggedProcess, clean_env, controparte_command

SERVICE = "198.51.100.2"
SERVER_URL = f"http://{SERVICE}:8080"
DNS_AT = f"{SERVICE}:53"
CALLER_ADDRESS = "203.0.113.2"
CALLEE_ADDRESS = "203.0.113.6"
LIVE_ADDRESS = "198.51.100.34"
DNS2_ADDRESS = "198.51.100.42"
START_LIVE = {
    "start-live.example.test": "198.51.100.18",
    "start-live01.example.test": "198.51.100.19",
    "start-live02.example.test": "198.51.100.20",
}
CATALOG = """\
# The operator's catalog of the network tests: the packaged features, with start-live
# hosts of the test's own (the caller's resolver maps them to the `sl` namespace).
[live]
port_range = [9000, 9999]
start_live_port = 443
start_live_hosts = ["start-live.example.test", "start-live01.example.test",
                    "start-live02.example.test"]

[features.einvoice]
name = "Electronic invoice"
topology = "server-async"

[features.primanota]
name = "Prima nota transmission (company to accountant)"
topology = "server-async"

[features.sprix]
name = "Remote Sprix"
topology = "server-async"

[features.easypass]
name = "EasyPass assistance request"
topology = "server-async"

[features.realtime]
name = "Real Time (external iDesk studio)"
topology = "server-both"

[features.remote-access]
name = "Remote access (iDesk clients to the remote server)"
topology = "clients"
"""
CALLEE = ("B1", "studio-b")
LIVE = ("L1", "live-l")
NAT_B = """\
table ip nat {
  chain prerouting {
    type nat hook prerouting priority dstnat; policy accept;
    tcp dport 8443 redirect to :8000 comment "port forward: public 8443 -> MxServer 8000"
  }
}
"""


def port_forward(public: int, private: int) -> str:
    """The nftables port forward of a host that is its own NAT: public -> private."""
    return f"""\
table ip nat {{
  chain prerouting {{
    type nat hook prerouting priority dstnat; policy accept;
    tcp dport {public} redirect to :{private}
  }}
}}
"""


@dataclass
class World:
    lab: Lab
    directory: Path
    settings: Settings
    catalog: Path
    tokens: dict[str, Path] = field(default_factory=dict)

    def add(self, code: str, label: str, **fields: object) -> Path:
        """Register an installation (as the operator, on the service's store) and write
        its token to a file of mode 600; the file."""
        store = open_store(self.settings.data)
        try:
            Registry(store, self.settings).add(code, label, **fields)  # type: ignore[arg-type]
            access = Access(store, ServerSecret.load_or_create(self.settings.data), self.settings)
            token = access.issue_token(code)
        finally:
            store.close()
        path = write_token(self.directory / f"{code}.token", token)
        self.tokens[code] = path
        return path

    def link(self, a: str, b: str, feature: str) -> None:
        """`controparte link add A B --feature F`, as the operator, on the registry."""
        self.operator("link", "add", a, b, "--feature", feature)

    def controparte(self, role: str, *args: str, check: bool = True) -> str:
        """`controparte ARGS` in `role`'s namespace; its stdout."""
        return self.lab.run(role, *controparte_command(), *args, check=check).stdout

    def operator(self, *args: str) -> str:
        """`controparte ARGS` as the operator, on the registry; its stdout."""
        done = subprocess.run(
            [*controparte_command(), *args],
            check=False,
            capture_output=True,
            text=True,
            env=clean_env(
                CONTROPARTE_DATA=str(self.settings.data),
                CONTROPARTE_FEATURES=str(self.catalog),
                CONTROPARTE_ALLOW_NON_GLOBAL="1",
                CONTROPARTE_PROBE_SOURCES=SERVICE,
            ),
        )
        assert done.returncode == 0, f"{' '.join(args)}: {done.stdout}{done.stderr}"
        return done.stdout

    def last_seen_ago(self, code: str, seconds: float) -> None:
        """Make `code`'s last heartbeat `seconds` old (time passing, for staleness)."""
        store = open_store(self.settings.data)
        try:
            with store.transaction(Origin("test", "test")) as tx:
                inst = tx.get(code)
                assert inst is not None and inst.last_seen is not None
                when = datetime.now(UTC) - timedelta(seconds=seconds)
                tx.update(inst, dataclasses.replace(inst, last_seen=when))
        finally:
            store.close()

    def agent(self, role: str, code: str, port: int, private_port: int | None = None) -> None:
        """`controparte agent` for `code` running in `role` (heartbeats and the relay)."""
        argv = self._agent_args(code, port, private_port)
        process = self.lab.spawn(role, *controparte_command(), *argv, name=f"agent-{code}")
        process.wait_log("relay")

    def _agent_args(self, code: str, port: int, private_port: int | None) -> list[str]:
        """`agent --server ... --code CODE --token-file ... --port PORT [--private-port]`."""
        extra = [] if private_port is None else ["--private-port", str(private_port)]
        token = str(self.tokens[code])
        return ["agent", "--server", SERVER_URL, "--code", code, "--token-file", token,
                "--port", str(port), *extra]  # fmt: skip

    def heartbeat(self, role: str, code: str, port: int, private_port: int | None = None) -> None:
        """One heartbeat from `role`'s namespace: the service registers its address."""
        self.controparte(role, *self._agent_args(code, port, private_port), "--once")

    def listen_agent(
        self, role: str, code: str, port: int, token_of: str | None = None
    ) -> LoggedProcess:
        """`controparte agent listen` for `code` (with the token of `token_of`)."""
        process = self.lab.spawn(
            role,
            *controparte_command(),
            "agent",
            "listen",
            "--code",
            code,
            "--token-file",
            str(self.tokens[token_of or code]),
            "--port",
            str(port),
            name=f"listen-{code}-{port}",
        )
        process.wait_log("answering controparte probes")
        return process


@dataclass(frozen=True)
class DoctorRun:
    exit_code: int
    report: dict[str, object]
    stderr: str

    @property
    def checks(self) -> list[dict[str, object]]:
        checks = self.report["checks"]
        assert isinstance(checks, list)
        return checks

    @property
    def flows(self) -> dict[str, dict[str, object]]:
        """The flows of the (one) check, by id."""
        assert len(self.checks) == 1
        flows = self.checks[0]["flows"]
        assert isinstance(flows, list)
        return {str(f["id"]): f for f in flows}

    def status(self) -> dict[str, str]:
        return {key: str(flow["status"]) for key, flow in self.flows.items()}


@dataclass
class Site:
    """One test's caller side: installations, rules and processes, undone afterwards."""

    world: World
    processes: list[LoggedProcess] = field(default_factory=list)
    touched: set[str] = field(default_factory=set)

    def caller(
        self,
        slug: str,
        *,
        port: int,
        private_port: int | None = None,
        forward: bool = False,
        listen_on: int | None = None,
        listen_as: str | None = None,
        code: str | None = None,
        label: str | None = None,
    ) -> str:
        """A caller installation `A-<slug>` (label `shop-<slug>`, unless `code` and
        `label` say otherwise), registered by a heartbeat from namespace a with `port`
        (and `private_port`); with `forward`, the port forward port -> private_port;
        with `listen_on`, `controparte agent listen` on that port (as installation
        `listen_as`, with its token). Its code."""
        code, label = code or f"A-{slug}", label or f"shop-{slug}"
        self.world.add(code, label)
        self.world.heartbeat("a", code, port, private_port)
        if forward:
            assert private_port is not None
            self.nft("a", port_forward(port, private_port))
        if listen_on is not None:
            self.processes.append(
                self.world.listen_agent("a", listen_as or code, listen_on, token_of=listen_as)
            )
        return code

    def nft(self, role: str, rules: str) -> None:
        self.touched.add(role)
        self.world.lab.nft(role, rules)

    def flush(self, role: str) -> None:
        self.touched.add(role)
        self.world.lab.flush_nft(role)

    def doctor_command(
        self, code: str, to: str | None, feature: str | None, *extra: str, timeout: int = 2
    ) -> list[str]:
        """`controparte doctor` for `code` towards `to` (None: its links) for `feature`
        (None: the links'), against the lab's service, with `timeout` s per test."""
        chosen = [] if to is None else ["--to", to]
        chosen += [] if feature is None else ["--feature", feature]
        return [
            *controparte_command(),
            "doctor",
            "--from",
            code,
            *chosen,
            "--server",
            SERVER_URL,
            "--token-file",
            str(self.world.tokens[code]),
            "--dns",
            DNS_AT,
            "--features",
            str(self.world.catalog),
            "--timeout",
            str(timeout),
            *extra,
        ]

    def doctor(self, code: str, to: str | None, feature: str | None, *extra: str) -> DoctorRun:
        """`controparte doctor --json` (`doctor_command`) in namespace a; its report."""
        argv = self.doctor_command(code, to, feature, "--json", *extra)
        done = self.world.lab.run("a", *argv, check=False)
        assert done.returncode in (0, 1, 3), f"doctor failed:\n{done.stdout}\n{done.stderr}"
        return DoctorRun(done.returncode, json.loads(done.stdout), done.stderr)

    def resolver(self, *nameservers: str) -> None:
        """The caller's resolver asks `nameservers` for this test."""
        self.touched.add("resolver")
        self.world.lab.resolv_conf("a", *nameservers)

    def old_zone_copy(self) -> None:
        """NSD in namespace dns2 serving the zone as it is now (a copy that will fall
        behind), and the caller's resolver asking it."""
        lab, directory = self.world.lab, self.world.directory / "dns2"
        directory.mkdir(exist_ok=True)
        zone = self.world.settings.zone
        (directory / "zone.db").write_text(self.world.operator("zone", "export"))
        (directory / "nsd.conf").write_text(
            f"""server:
    ip-address: {DNS2_ADDRESS}@53
    do-ip6: no
    username: ""
    chroot: ""
    zonesdir: "{directory}"
    database: ""
    zonelistfile: "{directory / "zone.list"}"
    xfrdfile: "{directory / "xfrd.state"}"
    pidfile: "{directory / "nsd.pid"}"
    verbosity: 1
remote-control:
    control-enable: no
zone:
    name: "{zone}"
    zonefile: "zone.db"
"""
        )
        self.processes.append(
            lab.spawn("dns2", "nsd", "-d", "-c", str(directory / "nsd.conf"), name="nsd-dns2")
        )
        lab.wait_port("a", f"{DNS2_ADDRESS}:53")
        self.resolver(DNS2_ADDRESS)

    def close(self) -> None:
        for process in self.processes:
            process.stop()
        self.world.lab.flush_nft("a")  # the caller's rules are always the test's own
        for role in self.touched - {"a", "resolver"}:
            self.world.lab.flush_nft(role)
            if role == "b":
                self.world.lab.nft("b", NAT_B)
        if "resolver" in self.touched:
            self.world.lab.resolv_conf("a", SERVICE)


def _build(lab: Lab, world: World) -> None:
    lab.add_router()
    lab.add_host("svc", ["198.51.100.2/30"], "198.51.100.1/30")
    lab.add_host("sl", [f"{a}/28" for a in START_LIVE.values()], "198.51.100.17/28")
    lab.add_host("live", [f"{LIVE_ADDRESS}/30"], "198.51.100.33/30")
    lab.add_host("a", [f"{CALLER_ADDRESS}/30"], "203.0.113.1/30")
    lab.add_host("b", [f"{CALLEE_ADDRESS}/30"], "203.0.113.5/30")
    lab.add_host("dns2", [f"{DNS2_ADDRESS}/30"], "198.51.100.41/30")
    lab.hosts_file("a", START_LIVE)
    lab.resolv_conf("a", SERVICE)
    # The registry, before the service starts (it creates the server secret).
    world.add(*CALLEE)
    world.add(*LIVE, kind="live", ipv4=LIVE_ADDRESS, port=9100)
    settings = world.settings
    env = [
        f"CONTROPARTE_DATA={settings.data}",
        f"CONTROPARTE_DNS={DNS_AT}",
        f"CONTROPARTE_HTTP={SERVICE}:8080",
        "CONTROPARTE_ALLOW_NON_GLOBAL=1",
        f"CONTROPARTE_FEATURES={world.catalog}",
        f"CONTROPARTE_PROBE_SOURCES={SERVICE}",
    ]
    server = lab.spawn("svc", "env", *env, *controparte_command(), "serve", name="serve")
    lab.wait_port("svc", f"{SERVICE}:8080")
    assert server.running(), server.log()
    lab.listen("sl", *(f"{a}:443" for a in START_LIVE.values()))
    lab.listen("live", f"{LIVE_ADDRESS}:9100")
    # studio-b: MxServer on 8000 behind its own port forward 8443 -> 8000.
    lab.listen("b", f"{CALLEE_ADDRESS}:8000")
    lab.nft("b", NAT_B)
    world.agent("b", CALLEE[0], 8443, 8000)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    """The lab and the service in it, for one test module; torn down even on failure."""
    reason = unavailable()
    if reason is not None:
        pytest.skip(reason)
    directory = tmp_path_factory.mktemp("netns")
    catalog = directory / "features.toml"
    catalog.write_text(CATALOG)
    settings = load_settings(
        env={
            "CONTROPARTE_DATA": str(directory / "data"),
            "CONTROPARTE_DNS": DNS_AT,
            "CONTROPARTE_HTTP": f"{SERVICE}:8080",
            "CONTROPARTE_ALLOW_NON_GLOBAL": "1",
            "CONTROPARTE_FEATURES": str(catalog),
        }
    )
    lab = Lab(directory, clean_env())
    world = World(lab, directory, settings, catalog)
    try:
        _build(lab, world)
        yield world
    finally:
        lab.close()


@pytest.fixture
def site(world: World) -> Iterator[Site]:
    """One test's caller side, undone after the test (rules flushed, processes ended)."""
    found = Site(world)
    try:
        yield found
    finally:
        found.close()


def curl(world: World, role: str, *args: str) -> subprocess.CompletedProcess[str]:
    """An HTTP request from `role` with Python (no curl needed): `method url [token]`."""
    script = (
        "import sys, urllib.request, urllib.error\n"
        "method, url, token = sys.argv[1], sys.argv[2], sys.argv[3]\n"
        "request = urllib.request.Request(url, method=method,"
        " headers={'Authorization': 'Bearer ' + token})\n"
        "try:\n"
        "    answer = urllib.request.urlopen(request, timeout=20)\n"
        "    print(answer.status); print(answer.headers.get('Retry-After'));"
        " print(answer.read().decode())\n"
        "except urllib.error.HTTPError as exc:\n"
        "    print(exc.code); print(exc.headers.get('Retry-After')); print(exc.read().decode())\n"
    )
    return world.lab.run(role, sys.executable, "-c", script, *args)
