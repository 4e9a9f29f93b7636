"""controparte as the hidden primary of real NSD, Knot and BIND secondaries (issue 8,
item 5), everything on 127.0.0.1: `controparte serve` (tests/realserver.py) with the
settings `transfer_allow` (one transfer key per secondary, each made by `controparte
tsig-key --transfer NAME --out FILE`) and `notify` (every secondary, signed with its
key), and the secondaries of tests/secondaries.py pointed at it.

- After the first transfer, 1,000 mixed changes (add, address, port, rename, remove)
  through the CLI, the HTTP API, heartbeats, DynDNS2 and RFC 2136 (`nsupdate`) leave
  every secondary serving exactly the zone controparte serves (whole-zone AXFR);
- later transfers are incremental (`controparte_transfers_total`, per peer);
- unsigned or wrongly signed transfer requests are refused, a transfer key cannot
  update and an update key cannot transfer, a secondary with a wrong secret never gets
  the zone;
- a secondary that was down while the journal was pruned past its serial catches up
  by a full transfer, on controparte's NOTIFY retries alone;
- `kill -9` of controparte during a large transfer: each secondary keeps serving its
  last complete zone, and the next transfer completes.

Where a test first needs a transfer, it checks that controparte serves one (a signed
AXFR by a key `transfer_allow` names) and fails with TransfersNotServedError, which
says so, when it does not.
"""

from __future__ import annotations

import contextlib
import os
import random
import re
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import dns.exception
import dns.message
import dns.query
import dns.rcode
import dns.rrset
import dns.tsig
import dns.xfr
import httpx
import pytest
from typer.testing import CliRunner

from controparte.cli import app
from controparte.service import Registry
from tests.debtools import tool
from tests.processes import HOST
from tests.realserver import ServerProcess
from tests.secondaries import (
    SECONDARIES,
    Rr,
    Secondary,
    TsigKey,
    add_installations,
    axfr_records,
    axfr_wire,
    exported,
    zone_file_records,
)

pytestmark = [pytest.mark.integration, pytest.mark.secondaries]


class TransfersNotServedError(AssertionError):
    """controparte refused or failed a signed AXFR by a key `transfer_allow` names."""


ZONE = "xfr.controparte.test."
KINDS = tuple(SECONDARIES)  # nsd, knot, bind
ADMIN = "admin-token-for-secondaries-0123456789"
TOOL_TIMEOUT = 60.0
SERVED_TIMEOUT = 10.0  # a commit -> controparte's DNS serves it
FIRST_TIMEOUT = 60.0  # the first transfer of a small zone
CHANGES_TIMEOUT = 60.0  # the last of many changes -> every secondary serves it
CATCH_UP_TIMEOUT = 150.0  # NOTIFY retries back off (up to a minute) while a secondary is down
LARGE = 100_000  # installations: a transfer long enough to stop controparte in its middle
LARGE_TIMEOUT = 300.0  # a transfer of LARGE installations, received and loaded
WORKLOAD = {"cli": 100, "api": 350, "heartbeat": 200, "dyndns2": 150, "rfc2136": 200}
HEARTBEAT_SOURCES = 16  # loopback addresses heartbeats come from (one HTTP client each)
SEED_POOLS = {"cli": 60, "api": 80, "heartbeat": 50, "dyndns2": 40, "rfc2136": 50}
NSUPDATE_BATCH = 40  # UPDATE messages (one `send` each) per nsupdate run


def needs_transfers(missing: str | None) -> None:
    """From here on the test needs controparte to serve transfers."""
    if missing is not None:
        raise TransfersNotServedError(missing)


# -- the deployment ---------------------------------------------------------------------------


def run_cli(server: ServerProcess, *args: str) -> str:
    """`controparte ARGS` in process (the command line's own code; a process each would
    cost a second), configured as `server`; its output."""
    env: dict[str, str | None] = {k: None for k in os.environ if k.startswith("CONTROPARTE_")}
    env |= server.settings_env
    result = CliRunner().invoke(app, list(args), env=env)
    assert result.exit_code == 0, (args, result.stdout, result.stderr)
    return result.stdout


@dataclass
class Deployment:
    """controparte with its secondaries, and the ways to change and read it."""

    server: ServerProcess
    keys: dict[str, TsigKey]  # each secondary's transfer key, by kind
    reader: TsigKey  # the tests' own transfer key (their AXFRs count under its name)
    update_key: Path  # an admin RFC 2136 key (`controparte tsig-key --admin`)
    secondaries: dict[str, Secondary]
    home: Path
    http: httpx.Client = field(init=False)

    def __post_init__(self) -> None:
        self.http = httpx.Client(
            base_url=self.server.http_url,
            timeout=30,
            headers={"authorization": f"Bearer {ADMIN}"},
        )

    # -- controparte ----------------------------------------------------------------------

    def cli(self, *args: str) -> str:
        return run_cli(self.server, *args)

    def key_file(self, kind: str) -> Path:
        """The file `controparte tsig-key --transfer` wrote the key of `kind` to."""
        return self.home / f"{kind}.key"

    def settle(self) -> int:
        """The serial of the last change committed, once controparte's DNS serves it."""
        with self.server.registry() as registry:
            serial = registry.store.serial()
        deadline = time.monotonic() + SERVED_TIMEOUT
        while (served := self.server.serial()) != serial:
            assert time.monotonic() < deadline, f"controparte serves {served}, not {serial}"
            time.sleep(0.02)
        return serial

    def zone(self) -> tuple[int, set[Rr]]:
        """The serial and the records of the last change committed (what `controparte
        zone export` writes), once controparte's DNS serves that serial."""
        self.settle()
        with self.server.registry() as registry:
            serial, text = exported(registry.store, self.server.settings)
        return serial, zone_file_records(text, ZONE)

    def probe(self) -> str | None:
        """None when controparte serves a signed AXFR to a key `transfer_allow` names,
        else what went wrong (the zone must be small: this reads it with dnspython)."""
        key = self.reader
        try:
            axfr_records(self.server.host, self.server.port, ZONE, key, timeout=10)
        except (dns.exception.DNSException, OSError) as exc:
            return f"a signed AXFR by the transfer key {key.name} failed: {exc!r}"
        return None

    def first_transfer(self) -> str | None:
        """The probe; when transfers are served, every secondary's first one, waited
        for and compared whole with the store's zone."""
        missing = self.probe()
        if missing is None:
            serial, expected = self.zone()
            for kind, secondary in self.secondaries.items():
                secondary.wait_serial(serial, timeout=FIRST_TIMEOUT)
                assert secondary.axfr() == expected, kind
        return missing

    def assert_everywhere(self, timeout: float = CHANGES_TIMEOUT) -> None:
        """Every secondary serves the store's serial and exactly its records, and so
        does controparte's own AXFR."""
        serial, expected = self.zone()
        for secondary in self.secondaries.values():
            secondary.wait_serial(serial, timeout=timeout)
        primary = axfr_records(self.server.host, self.server.port, ZONE, self.reader)
        assert primary == expected, "controparte's AXFR is not its zone"
        for kind, secondary in self.secondaries.items():
            theirs = secondary.axfr()
            missing, extra = sorted(expected - theirs)[:5], sorted(theirs - expected)[:5]
            assert theirs == expected, f"{kind}: missing {missing}, extra {extra}"

    # -- /metrics -------------------------------------------------------------------------

    def transfers(self, kind: str) -> Counter[str]:
        """controparte_transfers_total of the peer `kind` (its key's name), by type."""
        name = self.keys[kind].name.rstrip(".").lower()
        counts: Counter[str] = Counter()
        for metric, labels, value in metrics(self.http.get("/metrics").text):
            if metric != "controparte_transfers_total":
                continue
            if labels.get("peer", "").rstrip(".").lower() == name:
                counts[labels.get("type", "")] += int(value)
        return counts

    def close(self) -> None:
        self.http.close()


_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def metrics(text: str) -> list[tuple[str, dict[str, str], float]]:
    """The samples of a Prometheus text exposition: name, labels, value."""
    found = []
    for line in text.splitlines():
        sample = _SAMPLE.match(line)
        if sample is not None and not line.startswith("#"):
            labels = dict(_LABEL.findall(sample[2] or ""))
            found.append((sample[1], labels, float(sample[3])))
    return found


Deploy = Callable[..., Deployment]


def seed_pools(registry: Registry) -> None:
    """Installations in pools, one per front end of the workload (each front end
    changes only its own), with A, some AAAA and some SRV records."""
    for front, count in SEED_POOLS.items():
        add_installations(registry, front, count)


def transfer_key(server: ServerProcess, out: Path, name: str) -> TsigKey:
    """A transfer key called `name`, made by `controparte tsig-key --transfer NAME --out
    FILE`."""
    printed = run_cli(server, "tsig-key", "--transfer", name, "--out", str(out))
    key = TsigKey.from_bind_file(out)
    assert key.name == printed.strip()
    return key


@pytest.fixture
def deploy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deploy]:
    """`deploy(kinds=KINDS)`: controparte over the installations of `seed_pools`, with
    one transfer key per secondary of `kinds` and one for the tests' own transfers,
    `transfer_allow` naming those keys and `notify` naming those secondaries; then the
    secondaries, started. Every process is stopped at teardown."""
    made: list[Deployment] = []
    with contextlib.ExitStack() as stack:

        def make(kinds: tuple[str, ...] = KINDS) -> Deployment:
            home = tmp_path_factory.mktemp("xfr")
            server = ServerProcess(
                home / "data",
                {
                    "CONTROPARTE_ZONE": ZONE,
                    "CONTROPARTE_NS": f"ns1={HOST}",
                    "CONTROPARTE_ADMIN_TOKEN": ADMIN,
                },
            )
            (home / "data").mkdir()
            with server.registry() as registry:
                seed_pools(registry)
            keys = {
                kind: transfer_key(server, home / f"{kind}.key", f"{kind}.transfer.{ZONE}")
                for kind in kinds
            }
            reader = transfer_key(server, home / "tests.key", f"tests.transfer.{ZONE}")
            run_cli(server, "tsig-key", "--admin", "--out", str(home / "update.key"))
            secondaries = {
                kind: SECONDARIES[kind](home / kind, ZONE, (server.host, server.port), keys[kind])
                for kind in kinds
            }
            server.settings_env["CONTROPARTE_TRANSFER_ALLOW"] = "; ".join(
                f"key={key.name}" for key in [reader, *keys.values()]
            )
            server.settings_env["CONTROPARTE_NOTIFY"] = "; ".join(
                f"{s.host}:{s.port} key={keys[kind].name}" for kind, s in secondaries.items()
            )
            stack.callback(server.stop)
            server.start()
            server.wait_http()
            for secondary in secondaries.values():
                stack.callback(secondary.stop)
                secondary.start()
            deployment = Deployment(server, keys, reader, home / "update.key", secondaries, home)
            stack.callback(deployment.close)
            made.append(deployment)
            return deployment

        yield make
        died = [d.server.log_text() for d in made if d.server.died()]
        assert not died, "controparte exited by itself:\n" + "\n".join(died)


# -- the workload: changes through every front end ---------------------------------------------


@dataclass
class Workload:
    """Mixed changes through five front ends, each one's own pool of installations
    (so that batches of one front end never race another's), every change checked as
    accepted. Every change moves what DNS serves: addresses and ports are new each time."""

    deployment: Deployment
    rng: random.Random
    pools: dict[str, dict[str, str]] = field(default_factory=dict)  # front -> code -> label
    tokens: dict[str, str] = field(default_factory=dict)  # code -> token
    fresh: int = 0
    made: Counter[str] = field(default_factory=Counter)
    queued: list[str] = field(default_factory=list)  # nsupdate commands not sent yet
    clients: dict[str, httpx.Client] = field(default_factory=dict)  # by local address

    def __post_init__(self) -> None:
        self.pools = {
            front: {f"{front}-{i}": f"{front}-{i}" for i in range(count)}
            for front, count in SEED_POOLS.items()
        }

    def client(self, source: str | None = None) -> httpx.Client:
        """An HTTP client of the server's API (from the local address `source`), kept
        open for the run: making one costs more than a request."""
        key = source or ""
        if key not in self.clients:
            transport = None if source is None else httpx.HTTPTransport(local_address=source)
            self.clients[key] = httpx.Client(
                base_url=self.deployment.server.http_url, transport=transport, timeout=30
            )
        return self.clients[key]

    def address(self) -> str:
        self.fresh += 1
        return f"10.{self.fresh >> 16 & 255}.{self.fresh >> 8 & 255}.{self.fresh & 255}"

    def port(self) -> int:
        self.fresh += 1
        return 1024 + self.fresh % 60_000

    def pick(self, front: str) -> tuple[str, str]:
        code = self.rng.choice(sorted(self.pools[front]))
        return code, self.pools[front][code]

    def token(self, code: str) -> str:
        if code not in self.tokens:
            answer = self.deployment.http.post(f"/v1/installations/{code}/token")
            assert answer.status_code == 200, answer.text
            self.tokens[code] = answer.json()["token"]
        return self.tokens[code]

    def run(self, counts: Mapping[str, int]) -> Counter[str]:
        """`counts` changes per front end, interleaved at random; the changes made."""
        fronts = [front for front, count in counts.items() for _ in range(count)]
        self.rng.shuffle(fronts)
        try:
            for front in fronts:
                getattr(self, front)()
                self.made[front] += 1
            self.flush()
        finally:
            for client in self.clients.values():
                client.close()
            self.clients.clear()
        return self.made

    def what(self, front: str) -> str:
        """add, address, port, rename or remove (remove while the pool is large)."""
        kinds = ["add", "address", "address", "port", "rename"]
        if len(self.pools[front]) > 20:
            kinds.append("remove")
        return self.rng.choice(kinds)

    # -- the front ends -----------------------------------------------------------------

    def cli(self) -> None:
        pool, what = self.pools["cli"], self.what("cli")
        if what == "add":
            code = f"cli-new-{self.fresh}"
            self.deployment.cli(
                "installation", "add", code, "--label", code, "--ip", self.address()
            )
            pool[code] = code
            return
        code, _ = self.pick("cli")
        if what == "remove":
            self.deployment.cli("installation", "remove", code)
            del pool[code]
        elif what == "rename":
            pool[code] = f"cli-renamed-{self.fresh}"
            self.fresh += 1
            self.deployment.cli("installation", "update", code, "--label", pool[code])
        elif what == "port":
            self.deployment.cli("installation", "update", code, "--port", str(self.port()))
        else:
            self.deployment.cli("installation", "update", code, "--ip", self.address())

    def api(self) -> None:
        http, pool, what = self.deployment.http, self.pools["api"], self.what("api")
        if what == "add":
            code = f"api-new-{self.fresh}"
            body = {"code": code, "label": code, "ip": self.address(), "port": self.port()}
            answer = http.post("/v1/installations", json=body)
            assert answer.status_code == 201, answer.text
            pool[code] = code
            return
        code, _ = self.pick("api")
        if what == "remove":
            answer = http.delete(f"/v1/installations/{code}")
            assert answer.status_code == 204, answer.text
            del pool[code]
            return
        change: dict[str, object] = {"ip": self.address()}
        if what == "rename":
            pool[code] = f"api-renamed-{self.fresh}"
            change = {"label": pool[code]}
        elif what == "port":
            change = {"port": self.port()}
        answer = http.patch(f"/v1/installations/{code}", json=change)
        assert answer.status_code == 200, answer.text

    def heartbeat(self) -> None:
        """A heartbeat from a loopback address of its own, with a new port: both the
        address and the SRV record change."""
        code, _ = self.pick("heartbeat")
        source = f"127.0.8.{self.rng.randrange(1, HEARTBEAT_SOURCES + 1)}"
        answer = self.client(source).post(
            f"/v1/installations/{code}/heartbeat",
            json={"port": self.port(), "version": "test"},
            headers={"authorization": f"Bearer {self.token(code)}"},
        )
        assert answer.status_code == 200, answer.text
        assert answer.json()["changed"] is True, answer.text

    def dyndns2(self) -> None:
        code, label = self.pick("dyndns2")
        address = self.address()
        answer = self.client().get(
            "/nic/update",
            params={"hostname": f"{label}.{ZONE}".rstrip("."), "myip": address},
            auth=(code, self.token(code)),
            headers={"user-agent": "controparte-tests"},
        )
        assert answer.text.strip() == f"good {address}", answer.text

    def rfc2136(self) -> None:
        """One UPDATE (queued: `flush` sends them with nsupdate): a new address, a new
        IPv6 address or a new port."""
        _, label = self.pick("rfc2136")
        name = f"{label}.{ZONE}"
        what = self.rng.choice(["A", "AAAA", "SRV"])
        if what == "A":
            line = f"update add {name} 60 A {self.address()}"
        elif what == "AAAA":
            self.fresh += 1
            line = f"update add {name} 60 AAAA 2001:db8:1::{self.fresh:x}"
        else:
            line = f"update add _mxserver._tcp.{name} 60 SRV 0 0 {self.port()} {name}"
        self.queued.append(line)
        if len(self.queued) >= NSUPDATE_BATCH:
            self.flush()

    def flush(self) -> None:
        """Send the queued UPDATEs with `nsupdate -k` (one message, one transaction,
        each)."""
        if not self.queued:
            return
        server = self.deployment.server
        script = f"server {server.host} {server.port}\nzone {ZONE}\n"
        script += "".join(f"{line}\nsend\n" for line in self.queued)
        done = subprocess.run(
            [tool("nsupdate"), "-t", "10", "-k", str(self.deployment.update_key)],
            input=script,
            capture_output=True,
            text=True,
            timeout=TOOL_TIMEOUT,
            check=False,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        self.queued.clear()


# -- the scenarios ---------------------------------------------------------------------------


def full_prune(deployment: Deployment) -> int:
    """Prune the whole journal now (what `journal_keep_entries` 0 would do): no serial
    before the current one can be answered incrementally any more; entries removed."""
    with deployment.server.registry() as registry:
        return registry.store.prune_journal(0, 10 * 365 * 86400.0, datetime.now(UTC))


def unsigned(rdtype: str, serial: int) -> dns.message.Message:
    """An AXFR, or an IXFR from `serial` (its SOA in the authority section)."""
    query = dns.message.make_query(ZONE, rdtype)
    if rdtype == "IXFR":
        soa = f". . {serial} 0 0 0 0"
        query.authority.append(dns.rrset.from_text(ZONE, 0, "IN", "SOA", soa))
    return query


def test_a_thousand_changes_through_every_front_end_reach_every_secondary(
    deploy: Deploy,
) -> None:
    deployment = deploy()
    missing = deployment.first_transfer()
    before = deployment.settle()
    made = Workload(deployment, random.Random(8)).run(WORKLOAD)
    assert made == Counter(WORKLOAD)
    assert deployment.settle() - before == sum(WORKLOAD.values())  # one serial each
    needs_transfers(missing)
    deployment.assert_everywhere()


def test_later_transfers_are_incremental(deploy: Deploy) -> None:
    deployment = deploy()
    needs_transfers(deployment.first_transfer())
    first = {kind: deployment.transfers(kind) for kind in deployment.secondaries}
    for kind, counts in first.items():
        assert counts["axfr"] + counts["ixfr_axfr_style"] == 1, (kind, counts)
    Workload(deployment, random.Random(9)).run({"api": 40, "rfc2136": 20})
    deployment.assert_everywhere()
    for kind in deployment.secondaries:
        later = deployment.transfers(kind) - first[kind]
        assert later["ixfr"] >= 1, (kind, later)
        assert later["axfr"] == later["ixfr_axfr_style"] == 0, (kind, later)
    deployment.secondaries["knot"].wait_log(r"IXFR, incoming, .*finished")  # Knot's word too


def test_transfers_are_refused_without_the_right_key(deploy: Deploy) -> None:
    deployment = deploy()
    server = deployment.server
    host, port = server.host, server.port
    # A transfer key cannot update (RFC 2136 refuses it): this needs no transfers.
    serial = deployment.settle()
    done = subprocess.run(
        [tool("nsupdate"), "-t", "10", "-k", str(deployment.key_file("nsd"))],
        input=f"server {host} {port}\nzone {ZONE}\n"
        f"update add rfc2136-0.{ZONE} 60 A 198.51.100.99\nsend\n",
        capture_output=True,
        text=True,
        timeout=TOOL_TIMEOUT,
        check=False,
    )
    assert done.returncode != 0
    assert "REFUSED" in done.stdout + done.stderr
    assert deployment.settle() == serial
    needs_transfers(deployment.first_transfer())
    for rdtype in ("AXFR", "IXFR"):
        answer = dns.query.tcp(unsigned(rdtype, serial), host, port=port, timeout=10)
        assert answer.rcode() == dns.rcode.REFUSED, (rdtype, answer)
    key = deployment.reader
    wrong_secret = TsigKey(key.name, TsigKey.generate(key.name).secret)
    with pytest.raises(dns.tsig.PeerBadSignature):  # NOTAUTH, BADSIG (RFC 8945 5.2.2)
        axfr_records(host, port, ZONE, wrong_secret)
    with pytest.raises(dns.tsig.PeerBadKey):  # NOTAUTH, BADKEY (5.2.1)
        axfr_records(host, port, ZONE, TsigKey.generate(f"unknown.{ZONE}"))
    # An update key cannot transfer: REFUSED, signed (dnspython checked the signature).
    with pytest.raises(dns.xfr.TransferError) as refused:
        axfr_records(host, port, ZONE, TsigKey.from_bind_file(deployment.update_key))
    assert refused.value.rcode == dns.rcode.REFUSED
    where = ["-p", str(port), f"@{host}"]
    dig = subprocess.run(
        [tool("dig"), *where, "-k", str(deployment.update_key), ZONE, "AXFR"],
        capture_output=True,
        text=True,
        timeout=TOOL_TIMEOUT,
        check=False,
    )
    assert "Transfer failed" in dig.stdout, dig.stdout
    # A real secondary with a wrong secret never gets the zone.
    wrong = SECONDARIES["nsd"](deployment.home / "wrong", ZONE, (host, port), wrong_secret)
    with wrong:
        wrong.refresh()
        wrong.wait_log(wrong.refresh_failed)
        assert wrong.serial() is None


def test_a_secondary_down_while_the_journal_was_pruned_catches_up_by_a_full_transfer(
    deploy: Deploy,
) -> None:
    deployment = deploy()
    missing = deployment.first_transfer()
    old_serial = deployment.settle()
    first = {kind: deployment.transfers(kind) for kind in deployment.secondaries}
    for secondary in deployment.secondaries.values():
        secondary.stop()
    Workload(deployment, random.Random(10)).run({"api": 30})
    deployment.settle()
    with deployment.server.registry() as registry:
        assert registry.store.journal_reach(old_serial) is not None
    assert full_prune(deployment) > 0
    with deployment.server.registry() as registry:
        assert registry.store.journal_reach(old_serial) is None  # pruned past it
    needs_transfers(missing)
    # Each comes back with the zone it had (its serial now out of the journal's reach:
    # tests/integration/test_secondaries_harness.py shows they keep it over a restart)
    # and asks for what changed since: no refresh, no operator, controparte's NOTIFY
    # retries bring each of them back, and the answer is the whole zone.
    for secondary in deployment.secondaries.values():
        secondary.start()
    deployment.assert_everywhere(timeout=CATCH_UP_TIMEOUT)
    for kind in deployment.secondaries:
        later = deployment.transfers(kind) - first[kind]
        assert later["ixfr_axfr_style"] >= 1, (kind, later)


def large_rows(count: int) -> Iterator[tuple[int, dict[str, object]]]:
    for i in range(count):
        address = f"10.1.{i >> 8 & 255}.{i & 255}"
        port = str(1024 + i % 60_000)
        yield i, {"code": f"large-{i}", "label": f"large-{i}", "ip": address, "port": port}


def test_kill_9_during_a_large_transfer_keeps_the_last_complete_zone(deploy: Deploy) -> None:
    deployment = deploy(("nsd", "knot"))
    needs_transfers(deployment.first_transfer())
    server, secondaries = deployment.server, deployment.secondaries
    knot = secondaries["knot"]
    with server.registry() as registry:
        registry.import_many(large_rows(LARGE))
    # The last complete zone: the large one, then one small change (an IXFR).
    Workload(deployment, random.Random(11)).run({"api": 1})
    kept_serial = deployment.settle()
    for secondary in secondaries.values():
        secondary.wait_serial(kept_serial, timeout=LARGE_TIMEOUT)
    kept = axfr_wire(server.host, server.port, ZONE, deployment.reader)
    # Down, a change, the journal pruned: the next transfer is the whole zone.
    for secondary in secondaries.values():
        secondary.stop()
    Workload(deployment, random.Random(12)).run({"api": 1})
    serial = deployment.settle()
    full_prune(deployment)
    done = {kind: len(s.log_lines(s.received)) for kind, s in secondaries.items()}
    started = r"(AXFR|IXFR), incoming, .*started"
    knot_started = len(knot.log_lines(started))
    for secondary in secondaries.values():
        secondary.start()  # its NOTIFY retries may reach it first: either way
        secondary.refresh()
    knot.wait_log(started, count=knot_started + 1, timeout=CHANGES_TIMEOUT)
    for pid in server.pids():  # frozen in the middle of the transfer to Knot
        os.kill(pid, signal.SIGSTOP)
    assert len(knot.log_lines(knot.received)) == done["knot"], (
        f"the transfer to Knot finished before controparte was stopped: raise LARGE ({LARGE})"
    )
    failed = len(knot.log_lines(knot.refresh_failed))
    server.kill()  # kill -9
    knot.wait_log(knot.refresh_failed, count=failed + 1, timeout=CHANGES_TIMEOUT)
    for kind, secondary in secondaries.items():
        # Knot for certain; NSD too, unless its transfer came in whole before the kill.
        if len(secondary.log_lines(secondary.received)) == done[kind]:
            assert secondary.serial() == kept_serial, kind
            assert secondary.axfr_wire() == kept, kind
    server.start()
    assert server.serial() == serial
    whole = axfr_wire(server.host, server.port, ZONE, deployment.reader)
    for kind, secondary in secondaries.items():
        secondary.refresh()
        secondary.wait_serial(serial, timeout=LARGE_TIMEOUT)
        assert secondary.axfr_wire() == whole, kind
