"""DNS benchmark: controparte against Knot DNS serving the same zone, over loopback.

    make bench                                      # = .venv/bin/python bench/dns_bench.py
    .venv/bin/python bench/dns_bench.py --quick     # a smoke run: small zone, short runs
    .venv/bin/python bench/dns_bench.py --report bench/out/dns-bench-....json   # the table

In one run, with `dnsperf` on 127.0.0.1 only:

1. A registry of N installations (100,000) is written to a fresh SQLite store and the
   zone is exported from it with `controparte zone export`; Knot (`knotd`, temporary
   configuration, default worker counts) serves that file, controparte serves the store
   (`python -m controparte serve`, `dns_workers` 1 and 2). A sample of queries, plain and
   EDNS, must get the same answers from every server before anything is measured.
2. Query mix (seeded): 90% A of existing names, 5% NXDOMAIN, 5% split between SRV,
   AAAA and NODATA (AAAA of a name without one). Plain queries, then EDNS (`dnsperf -e`).
3. The three servers (Knot; controparte with 1 and with 2 UDP processes) run side by
   side on their own ports, and every measurement is taken on each in turn, so that
   drift on the machine hits them alike; an idle server costs nothing measurable.
   Start-up time and memory; server CPU per answer on one pass of distinct queries at
   the capped rate (controparte's answer cache cold); the answers check; a grid of
   client loads (`-c`/`-q`), a few seconds each. The max-qps load is the grid point
   where the worst server is closest to its own best.
4. A warm-up pass; max qps at that load, plain and EDNS, median of a few runs (of the
   undisturbed ones, if any), with the lost queries; the highest capped rate (`-Q`)
   answered with 0 lost (bisection); server CPU seconds per 100,000 answers at one
   capped rate, the same for every server. Every capped run uses one client shape
   (`-c 4 -q 100`): a deeper queue (`-q 200` and more) makes Knot drop a few queries of
   the first burst at any rate (its UDP receive buffer is the system default;
   controparte asks for 4 MiB), which would hide its capacity.
5. One server at a time: start-up time and memory at 1,000,000 installations, idle and
   after a pass of distinct queries (which fills controparte's answer cache).

Every run is bounded (dnsperf `-l`/`-n`, subprocess timeouts, start-up deadlines). CPU
time is utime+stime of the server's whole process tree from /proc; memory is the sum of
Rss (and Pss) over it. Other processes on the machine disturb the figures: before each
run the bench waits (bounded) for them to go quiet, and each run records the CPU they
used meanwhile. Results: a Markdown table on stdout and JSON in bench/out/.

Bench-only shortcut: the registry is written with one `executemany` on the store's own
SQLite file (schema created by `open_store`), not through `Registry.import_many`, so a
million rows take seconds; no history rows are written. A sample of the rows is checked
with `Installation.create`, so they are values the registry itself would accept.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import random
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import dns.exception
import dns.flags
import dns.message
import dns.query
import dns.rcode

from common import (
    HOST,
    ROOT,
    ZONE,
    Load,
    LoggedProcess,
    PerfRun,
    QuietGate,
    ServerProcess,
    arguments,
    clean_env,
    finish,
    free_port,
    machine,
    memory,
    run_dnsperf,
    tool,
    udp_sockets_on,
    working_directory,
)
from controparte.model import Installation
from controparte.store import open_store
from controparte.store.sqlite import DB_FILE

NS = f"ns1.{ZONE}={HOST}"
SETTINGS = {"CONTROPARTE_ZONE": ZONE, "CONTROPARTE_NS": NS}
STAMP = "2024-01-01T00:00:00+00:00"
SEED = 20_240_601
IPV6_BASE = 0x2001_0DB8 << 96
START_TIMEOUT = 90.0
STOP_TIMEOUT = 20.0
WORDS = (
    "studio",
    "acme",
    "officina",
    "farmacia",
    "hotel",
    "clinica",
    "ufficio",
    "negozio",
    "cantina",
    "autoscuola",
    "palestra",
    "libreria",
    "agenzia",
    "ristorante",
    "fabbrica",
    "scuola",
)

# -- profiles ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Profile:
    name: str
    perf_size: int  # installations in the zone the throughput runs use
    big_sizes: tuple[int, ...]  # further sizes for start-up time and memory only
    query_lines: int  # lines of the (looped) query file
    cold_lines: int  # distinct queries of the cold-cache pass
    fill_lines: int  # distinct queries of the memory pass at big sizes
    grid: tuple[Load, ...]
    grid_seconds: int
    max_reps: int
    max_seconds: int
    bisect_seconds: int
    bisect_steps: int
    cpu_seconds: int
    cpu_rate: int  # the capped rate (-Q) of the CPU runs, the same for every server
    capped: Load  # the client shape of every capped run
    quiet_budget: float  # seconds each phase may spend waiting out other load
    sanity_queries: int


FULL = Profile(
    name="full",
    perf_size=100_000,
    big_sizes=(1_000_000,),
    query_lines=100_000,
    cold_lines=80_000,
    fill_lines=490_000,
    grid=(Load(1, 100), Load(4, 100), Load(8, 200), Load(16, 500)),
    grid_seconds=4,
    max_reps=3,
    max_seconds=5,
    bisect_seconds=5,
    bisect_steps=6,
    cpu_seconds=10,
    cpu_rate=30_000,
    capped=Load(4, 100),
    quiet_budget=60.0,
    sanity_queries=300,
)
QUICK = Profile(
    name="quick",
    perf_size=10_000,
    big_sizes=(50_000,),
    query_lines=20_000,
    cold_lines=8_000,
    fill_lines=40_000,
    grid=(Load(1, 100), Load(8, 200)),
    grid_seconds=2,
    max_reps=2,
    max_seconds=2,
    bisect_seconds=2,
    bisect_steps=3,
    cpu_seconds=3,
    cpu_rate=10_000,
    capped=Load(4, 100),
    quiet_budget=10.0,
    sanity_queries=100,
)

# -- the data ------------------------------------------------------------------------------


def label_of(i: int) -> str:
    return f"{WORDS[i % len(WORDS)]}-{i}"


def ipv4_of(i: int) -> str:
    return f"{'198.51.100' if i % 2 else '203.0.113'}.{i % 254 + 1}"


def ipv6_of(i: int) -> str | None:
    """Every other installation (the even ones) has an IPv6 address."""
    return None if i % 2 else str(ipaddress.IPv6Address(IPV6_BASE + i))


def port_of(i: int) -> int | None:
    """Three installations in four publish a port (an SRV record)."""
    return None if i % 4 == 3 else 1024 + i % 60_000


def kind_of(i: int) -> str:
    return "live" if i % 10 == 0 else "onprem"


def _row(i: int) -> tuple[object, ...]:
    return (f"B{i:07d}", label_of(i), kind_of(i), ipv4_of(i), ipv6_of(i), port_of(i), STAMP, STAMP)


def _check_sample(n: int) -> None:
    """Rows the registry itself would accept, as it would store them (normalised)."""
    for i in sorted({0, 1, 2, 3, n - 1, *range(0, n, max(1, n // 500))}):
        code, label, kind, ipv4, ipv6, port = _row(i)[:6]
        inst = Installation.create(
            str(code),
            str(label),
            kind=str(kind),
            ipv4=ipv4_of(i),
            ipv6=ipv6_of(i),
            port=port_of(i),
            allow_non_global=True,
        )
        stored = (inst.code, inst.label, inst.kind.value, inst.ipv4, inst.ipv6, inst.port)
        if stored != (code, label, kind, ipv4, ipv6, port):
            raise RuntimeError(f"generated row {i} is not what the registry stores: {stored}")


def write_registry(data: Path, n: int) -> float:
    """A store in `data` holding installations 0..n-1; returns the seconds taken."""
    started = time.monotonic()
    _check_sample(n)
    data.mkdir(parents=True)
    open_store(data).close()  # the schema, migrated to the current version
    conn = sqlite3.connect(data / DB_FILE, isolation_level=None)
    try:
        conn.execute("PRAGMA synchronous = OFF")
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany(
            "INSERT INTO installations (code, label, kind, ipv4, ipv6, port, created, updated)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (_row(i) for i in range(n)),
        )
        conn.execute("COMMIT")
    finally:
        conn.close()
    return time.monotonic() - started


def export_zone(data: Path, out: Path) -> float:
    """`controparte zone export --out` of the store in `data`; returns the seconds taken."""
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "controparte", "zone", "export", "--out", str(out)],
        env=clean_env(CONTROPARTE_DATA=str(data), CONTROPARTE_ALLOW_NON_GLOBAL="1", **SETTINGS),
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"controparte zone export failed: {done.stderr.strip()}")
    return time.monotonic() - started


def qname(label: str) -> str:
    return f"{label}.{ZONE}"


def one_query(rng: random.Random, n: int) -> str:
    """One line of the mix: 90% A, 5% NXDOMAIN, 5% SRV / AAAA / NODATA (AAAA)."""
    x = rng.random()
    i = rng.randrange(n)
    if x < 0.90:
        return f"{qname(label_of(i))} A"
    if x < 0.95:
        return f"{qname(label_of(n + i))} A"  # never registered
    kind = rng.randrange(3)
    if kind == 0:
        j = i - 1 if port_of(i) is None else i
        return f"_mxserver._tcp.{qname(label_of(j))} SRV"
    if kind == 1:
        return f"{qname(label_of(i & ~1))} AAAA"
    j = i | 1 if (i | 1) < n else i - 1
    return f"{qname(label_of(j))} AAAA"  # an odd one: no IPv6, so NODATA


def query_lines(
    n: int, count: int, seed: int, *, distinct: bool, only_a: bool = False
) -> list[str]:
    rng = random.Random(seed)
    lines: list[str] = []
    seen: set[str] = set()
    for _ in range(count * 30):  # bounded: distinct draws repeat near the end
        if len(lines) >= count:
            break
        line = f"{qname(label_of(rng.randrange(n)))} A" if only_a else one_query(rng, n)
        if distinct:
            if line in seen:
                continue
            seen.add(line)
        lines.append(line)
    return lines


def write_lines(path: Path, lines: Sequence[str]) -> Path:
    path.write_text("".join(line + "\n" for line in lines), encoding="ascii")
    return path


# -- servers -------------------------------------------------------------------------------

GATE = QuietGate()


def answered(port: int, wire: bytes) -> bool:
    """Does HOST:port answer `wire` NOERROR with at least one answer record?"""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(0.2)
        try:
            sock.sendto(wire, (HOST, port))
            response = sock.recv(4096)
        except OSError:
            return False
    return (
        len(response) >= 12
        and response[:2] == wire[:2]
        and response[3] & 0x0F == 0
        and (response[6] << 8 | response[7]) > 0
    )


@dataclass
class Startup:
    served_s: float  # spawn -> the first correct answer
    ready_s: float  # spawn -> every worker process bound (= served_s with one process)


class Server:
    """A DNS server process the bench starts, measures and stops."""

    def __init__(self, name: str, workdir: Path, port: int) -> None:
        self.name = name
        self.workdir = workdir
        self.port = port
        self.process: LoggedProcess | None = None
        self.sockets = 0  # UDP sockets bound to the port once started
        self.log_path = workdir / f"{name}-{port}.log"

    def spawn(self) -> LoggedProcess:
        """Start the server's process (in a session of its own)."""
        raise NotImplementedError

    def all_bound(self) -> bool:
        return True

    def start(self, probe_label: str) -> Startup:
        assert self.process is None
        wire = dns.message.make_query(qname(probe_label), "A", use_edns=False).to_wire()
        GATE.wait()
        if udp_sockets_on(self.port) or answered(self.port, wire):
            raise RuntimeError(
                f"{self.name}: another process serves port {self.port} already;"
                " its figures would be that process's"
            )
        started = time.monotonic()
        self.process = self.spawn()
        served: float | None = None
        while time.monotonic() - started < START_TIMEOUT:
            if not self.process.running():
                raise RuntimeError(f"{self.name} exited at start-up:\n{self.log_tail()}")
            if served is None and answered(self.port, wire):
                served = time.monotonic() - started
            if served is not None and self.all_bound():
                self.sockets = udp_sockets_on(self.port)
                return Startup(round(served, 3), round(time.monotonic() - started, 3))
            time.sleep(0.02)
        self.stop()
        raise RuntimeError(f"{self.name} did not answer within {START_TIMEOUT} s")

    def pids(self) -> list[int]:
        assert self.process is not None
        return self.process.pids()

    def stop(self) -> None:
        if self.process is None:
            return
        family = self.process.pids()
        self.process.stop(timeout=STOP_TIMEOUT)
        for pid in family[1:]:  # a worker left behind by its parent: ours, by id
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.process = None

    def log_tail(self) -> str:
        return "" if self.process is None else self.process.log_tail()


class KnotServer(Server):
    def __init__(self, workdir: Path, zonefile: Path, tag: str) -> None:
        super().__init__(f"knot-{tag}", workdir, free_port(for_bench=True))
        self.home = workdir / f"knot-{tag}"
        for sub in ("run", "db", "zones"):
            (self.home / sub).mkdir(parents=True, exist_ok=True)
        self.config = self.home / "knot.conf"
        # Worker counts are Knot's defaults (udp-workers: one per CPU).
        self.config.write_text(
            f"""server:
    rundir: "{self.home / "run"}"
    listen: {HOST}@{self.port}
log:
  - target: stderr
    any: info
database:
    storage: "{self.home / "db"}"
template:
  - id: default
    storage: "{self.home / "zones"}"
    zonefile-load: whole
    zonefile-sync: -1
    journal-content: none
zone:
  - domain: {ZONE}
    file: "{zonefile}"
""",
            encoding="ascii",
        )

    def spawn(self) -> LoggedProcess:
        return LoggedProcess(
            [tool("knotd"), "-c", str(self.config)],
            self.log_path,
            os.environ,
            name=self.name,
            new_session=True,
        )


class ControparteServer(Server):
    """`controparte serve` with `workers` DNS processes, as the tests start it."""

    def __init__(self, workdir: Path, data: Path, workers: int, tag: str) -> None:
        env = {**SETTINGS, "CONTROPARTE_DNS_WORKERS": str(workers)}
        self.serve = ServerProcess(data, env, for_bench=True)
        super().__init__(f"controparte-w{workers}-{tag}", workdir, self.serve.port)
        self.workers = workers

    def spawn(self) -> LoggedProcess:
        return self.serve.spawn(new_session=True)

    def all_bound(self) -> bool:
        return udp_sockets_on(self.port) >= self.workers


@contextlib.contextmanager
def serving(server: Server, probe_label: str) -> Iterator[Startup]:
    try:
        yield server.start(probe_label)
    finally:
        server.stop()


# -- dnsperf -------------------------------------------------------------------------------


def dnsperf(
    server: Server,
    queries: Path,
    load: Load,
    *,
    what: str,
    seconds: int | None = None,
    passes: int | None = None,
    rate: int | None = None,
    edns: bool = False,
    repeatable: bool = True,
) -> PerfRun:
    """One dnsperf run against `server`, with the server's CPU time over it, after the
    machine went quiet (`GATE`); made again when other processes disturbed it, unless
    it cannot be (a cold-cache pass)."""
    attempt = 1
    while True:
        waited = GATE.wait()
        if udp_sockets_on(server.port) != server.sockets:
            raise RuntimeError(
                f"{server.name}: {udp_sockets_on(server.port)} UDP sockets on port"
                f" {server.port}, {server.sockets} at start-up: a process died, or another"
                " one shares the port"
            )
        try:
            run = run_dnsperf(
                server.port,
                queries,
                load,
                server.pids(),
                what=what,
                seconds=seconds,
                passes=passes,
                rate=rate,
                edns=edns,
            )
        except subprocess.TimeoutExpired as exc:
            wire = dns.message.make_query(qname(label_of(1)), "A", use_edns=False).to_wire()
            raise RuntimeError(
                f"dnsperf against {server.name} did not finish in {exc.timeout} s; the"
                f" server answers a probe: {answered(server.port, wire)};"
                f" log:\n{server.log_tail()}"
            ) from None
        run.waited_quiet_s = round(waited, 1)
        run.attempts = attempt
        disturbed = repeatable and GATE.again(run, attempt)
        rate_text = f" -Q {rate}" if rate else ""
        print(
            f"    {server.name:<22} {what:<9} {load}{rate_text}{' -e' if edns else ''}:"
            f" {run.qps:>9,.0f} qps, {run.lost} lost, server {run.server_cpu_s:.2f} s CPU"
            f" ({run.cpu_per_100k:.2f} s/100k), dnsperf {run.client_cpu_s:.2f} s,"
            f" other {run.foreign_cpu_s:.2f} s{' -> again' if disturbed else ''}",
            flush=True,
        )
        if not disturbed:
            return run
        attempt += 1


# -- answers check -------------------------------------------------------------------------


def describe(response: dns.message.Message) -> str:
    flags = dns.flags.to_text(response.flags & (dns.flags.AA | dns.flags.TC))
    parts = [dns.rcode.to_text(response.rcode()), flags, f"edns={response.edns}"]
    for section in (response.answer, response.authority, response.additional):
        lines = (line for rrset in section for line in rrset.to_text().splitlines())
        parts.append(" ; ".join(sorted(lines)))
    return " | ".join(parts)


def answers(port: int, lines: Sequence[str], *, edns: bool) -> list[str]:
    out: list[str] = []
    for line in lines:
        name, qtype = line.split()
        query = dns.message.make_query(name, qtype, use_edns=0 if edns else False)
        try:
            out.append(describe(dns.query.udp(query, HOST, port=port, timeout=2.0)))
        except (dns.exception.DNSException, OSError) as exc:
            out.append(f"no answer: {type(exc).__name__}")
    return out


# -- the run -------------------------------------------------------------------------------


def ratio(value: float | None, reference: float | None) -> float | None:
    if value is None or not reference:
        return None
    return round(value / reference, 3)


def choose_load(grid: dict[str, list[dict[str, Any]]], loads: Sequence[Load]) -> Load:
    """The grid point where the worst server is closest to its own best qps; points
    where some server lost queries only if every point lost some."""
    best = {name: max(float(point["qps"]) for point in points) for name, points in grid.items()}

    def score(index: int) -> float:
        return min(float(points[index]["qps"]) / best[name] for name, points in grid.items())

    indexes = range(len(loads))
    clean = [i for i in indexes if all(points[i]["lost"] == 0 for points in grid.values())]
    return loads[max(clean or indexes, key=score)]


def _mode(edns: bool) -> str:
    return "edns" if edns else "plain"


def perf_zone(profile: Profile, work: Path, result: dict[str, Any]) -> tuple[Path, Path]:
    """The registry and its exported zone file for the throughput runs."""
    n = profile.perf_size
    print(f"== zone of {n:,} installations", flush=True)
    data = work / f"data-{n}"
    zonefile = work / f"zone-{n}.zone"
    built = write_registry(data, n)
    exported = export_zone(data, zonefile)
    with zonefile.open(encoding="ascii") as f:
        zone_lines = sum(1 for _ in f)
    print(f"   registry {built:.1f} s, zone export {exported:.1f} s ({zone_lines:,} lines)")
    result["perf_zone"] = {
        "installations": n,
        "registry_s": round(built, 1),
        "export_s": round(exported, 1),
        "zone_file_lines": zone_lines,
    }
    return data, zonefile


def servers_of(work: Path, data: Path, zonefile: Path, tag: str) -> dict[str, Server]:
    """Knot over `zonefile`, and controparte with one and with two UDP processes over
    the store in `data`: the three servers every measurement compares."""
    return {
        "knot": KnotServer(work, zonefile, tag),
        "controparte-w1": ControparteServer(work, data, 1, tag),
        "controparte-w2": ControparteServer(work, data, 2, tag),
    }


def throughput(profile: Profile, work: Path, result: dict[str, Any]) -> None:
    """Every server of the perf zone running at once (the idle ones cost nothing), each
    measurement taken on each server in turn, so that drift hits them all alike."""
    n = profile.perf_size
    data, zonefile = perf_zone(profile, work, result)
    queries = work / "queries.txt"
    write_lines(queries, query_lines(n, profile.query_lines, SEED, distinct=False))
    cold = write_lines(
        work / "cold.txt", query_lines(n, profile.cold_lines, SEED + 1, distinct=True)
    )
    sample = query_lines(n, profile.sanity_queries, SEED + 2, distinct=True)
    bench = ThroughputRuns(profile, servers_of(work, data, zonefile, "perf"), queries)
    with contextlib.ExitStack() as stack:
        print("== start-up, cold-cache CPU, answers check", flush=True)
        GATE.phase(profile.quiet_budget)
        bench.start(stack, label_of(1))
        bench.cold_cpu(cold)
        bench.check_answers(sample)
        load = bench.load_grid(result)
        bench.max_qps(load)
        bench.zero_loss()
        bench.cpu_per_answer()
        bench.measure_memory("memory_loaded")
    bench.summarise(result, n)


@dataclass
class ThroughputRuns:
    """The phases of `throughput` over `servers`, all serving the perf zone: `per`
    holds each server's figures, `runs` every dnsperf run made on it."""

    profile: Profile
    servers: dict[str, Server]
    queries: Path  # the looped query file
    per: dict[str, dict[str, Any]] = field(init=False)
    runs: dict[str, list[PerfRun]] = field(init=False)

    def __post_init__(self) -> None:
        self.per = {name: {} for name in self.servers}
        self.runs = {name: [] for name in self.servers}

    def record(self, name: str, run: PerfRun) -> PerfRun:
        """`run`, made on the server `name`, kept with its runs."""
        self.runs[name].append(run)
        return run

    def capped_run(self, name: str, *, what: str, seconds: int, rate: int, edns: bool) -> PerfRun:
        """A run of the looped queries on the server `name` at `rate` (-Q), with the
        client shape of every capped run, kept with its runs."""
        run = dnsperf(
            self.servers[name],
            self.queries,
            self.profile.capped,
            what=what,
            seconds=seconds,
            rate=rate,
            edns=edns,
        )
        return self.record(name, run)

    def measure_memory(self, key: str) -> None:
        """Every server's memory now, as its figure `key`."""
        for name, server in self.servers.items():
            self.per[name][key] = asdict(memory(server.pids()))

    def start(self, stack: contextlib.ExitStack, probe: str) -> None:
        """Start every server (stopped when `stack` closes): start-up time and memory."""
        for name, server in self.servers.items():
            startup = stack.enter_context(serving(server, probe))
            self.per[name]["startup"] = asdict(startup)
            self.per[name]["memory_idle"] = asdict(memory(server.pids()))
            print(f"   {name}: served after {startup.served_s:.2f} s", flush=True)

    def cold_cpu(self, cold: Path) -> None:
        """CPU per answer on one pass of distinct queries (the answer cache cold)."""
        profile = self.profile
        for name, server in self.servers.items():
            cold_run = dnsperf(
                server,
                cold,
                profile.capped,
                what="cold",
                passes=1,
                rate=profile.cpu_rate,
                repeatable=False,
            )
            self.record(name, cold_run)
            self.per[name]["cpu_cold"] = round(cold_run.cpu_per_100k, 3)

    def check_answers(self, sample: Sequence[str]) -> None:
        """Every server answers `sample` as Knot does, plain and with EDNS."""
        for edns in (False, True):
            reference = answers(self.servers["knot"].port, sample, edns=edns)
            for name, server in self.servers.items():
                got = answers(server.port, sample, edns=edns)
                diffs = [
                    {"query": q, "knot": r, name: g}
                    for q, r, g in zip(sample, reference, got, strict=True)
                    if r != g
                ]
                self.per[name].setdefault("answers_check", {})[_mode(edns)] = {
                    "queries": len(sample),
                    "different": len(diffs),
                    "examples": diffs[:3],
                }
                if diffs:
                    print(f"   !! {name}: {len(diffs)} answers differ from Knot's: {diffs[0]}")

    def load_grid(self, result: dict[str, Any]) -> Load:
        """The grid of client loads; the load the max-qps runs use (`choose_load`)."""
        profile = self.profile
        print("== load grid", flush=True)
        GATE.phase(profile.quiet_budget)
        grid: dict[str, list[dict[str, Any]]] = {name: [] for name in self.servers}
        for load in profile.grid:
            for name, server in self.servers.items():
                point = self.record(
                    name,
                    dnsperf(server, self.queries, load, what="grid", seconds=profile.grid_seconds),
                )
                grid[name].append({"load": str(load), "qps": point.qps, "lost": point.lost})
        load = choose_load(grid, profile.grid)
        result["grid"] = grid
        result["max_load"] = str(load)
        return load

    def max_qps(self, load: Load) -> None:
        """A warm-up pass, then max qps at `load`, plain and EDNS, over a few runs."""
        profile = self.profile
        print(f"== max qps at {load}: {profile.max_reps} x {profile.max_seconds} s", flush=True)
        GATE.phase(profile.quiet_budget)
        for name, server in self.servers.items():
            self.record(
                name,
                dnsperf(server, self.queries, load, what="warm-up", passes=1, repeatable=False),
            )
        for edns in (False, True):
            tops: dict[str, list[PerfRun]] = {name: [] for name in self.servers}
            for _ in range(profile.max_reps):
                for name, server in self.servers.items():
                    top = dnsperf(
                        server,
                        self.queries,
                        load,
                        what="max",
                        seconds=profile.max_seconds,
                        edns=edns,
                    )
                    tops[name].append(self.record(name, top))
            for name, reps in tops.items():
                self.per[name].update(_max_qps_figures(reps, _mode(edns)))

    def zero_loss(self) -> None:
        """The highest capped rate answered with 0 lost, by bisection from the max qps."""
        profile = self.profile
        print("== highest rate with 0 lost (bisection)", flush=True)
        GATE.phase(profile.quiet_budget)
        for edns in (False, True):
            mode = _mode(edns)
            bounds = {
                name: [0.4 * figures[f"max_qps_{mode}"], 1.1 * figures[f"max_qps_{mode}"]]
                for name, figures in self.per.items()
            }
            best: dict[str, int | None] = dict.fromkeys(self.servers)
            for _ in range(profile.bisect_steps):
                for name in self.servers:
                    low, high = bounds[name]
                    rate = int(round((low + high) / 2, -2))
                    step = self.capped_run(
                        name, what="zero-loss", seconds=profile.bisect_seconds, rate=rate, edns=edns
                    )
                    if step.lost == 0 and step.qps >= 0.98 * rate:
                        best[name] = rate
                        bounds[name][0] = rate
                    else:
                        bounds[name][1] = rate
            for name in self.servers:
                self.per[name][f"zero_loss_rate_{mode}"] = best[name]

    def cpu_per_answer(self) -> None:
        """Server CPU per answer at one capped rate, the same for every server."""
        profile = self.profile
        print(f"== CPU per answer at {profile.cpu_rate:,} qps", flush=True)
        GATE.phase(profile.quiet_budget)
        for edns in (False, True):
            for name in self.servers:
                capped = self.capped_run(
                    name, what="cpu", seconds=profile.cpu_seconds, rate=profile.cpu_rate, edns=edns
                )
                self.per[name][f"cpu_{_mode(edns)}"] = round(capped.cpu_per_100k, 3)
                self.per[name][f"cpu_lost_{_mode(edns)}"] = capped.lost

    def summarise(self, result: dict[str, Any], n: int) -> None:
        """Into `result`: each server's figures, its runs and the other load they saw,
        and the start-up and memory figures at the perf zone's size `n`."""
        per = self.per
        for name, runs in self.runs.items():
            measured = [r for r in runs if r.what != "warm-up"]
            per[name]["other_cpu_share"] = round(
                sum(r.foreign_cpu_s for r in measured) / sum(r.wall_s for r in measured), 3
            )
            per[name]["runs"] = [asdict(r) for r in runs]
        result["servers"] = per
        result["sizes"] = {
            str(n): {
                name: {key: per[name][key] for key in ("startup", "memory_idle", "memory_loaded")}
                for name in self.servers
            }
        }


def _max_qps_figures(reps: Sequence[PerfRun], mode: str) -> dict[str, Any]:
    """One server's max-qps figures in `mode` (plain or EDNS) from its runs `reps`."""
    # The median of the runs other processes did not disturb, if any.
    clean = [r for r in reps if GATE.undisturbed(r)]
    wall = sum(r.wall_s for r in reps)
    return {
        f"max_qps_{mode}": statistics.median(r.qps for r in clean or reps),
        f"max_qps_{mode}_runs": [r.qps for r in reps],
        f"max_qps_{mode}_clean_runs": len(clean),
        f"max_lost_{mode}": sum(r.lost for r in reps),
        f"max_server_cpu_share_{mode}": round(sum(r.server_cpu_s for r in reps) / wall, 2),
        f"max_client_cpu_share_{mode}": round(sum(r.client_cpu_s for r in reps) / wall, 2),
    }


def footprint(profile: Profile, work: Path, result: dict[str, Any]) -> None:
    """Start-up time and memory at the big sizes, one server at a time."""
    probe = label_of(1)
    for big in profile.big_sizes:
        print(f"== zone of {big:,} installations: start-up and memory", flush=True)
        GATE.phase(profile.quiet_budget)
        data = work / f"data-{big}"
        zonefile = work / f"zone-{big}.zone"
        built = write_registry(data, big)
        exported = export_zone(data, zonefile)
        print(f"   registry {built:.1f} s, zone export {exported:.1f} s", flush=True)
        count = min(profile.fill_lines, big)
        fill = write_lines(
            work / f"fill-{big}.txt", query_lines(big, count, SEED + 3, distinct=True, only_a=True)
        )
        at: dict[str, Any] = {"registry_s": round(built, 1), "export_s": round(exported, 1)}
        servers = servers_of(work, data, zonefile, str(big))
        for name, server in servers.items():
            with serving(server, probe) as startup:
                idle = memory(server.pids())
                pass_run = dnsperf(
                    server, fill, Load(8, 200), what="fill", passes=1, repeatable=False
                )
                loaded = memory(server.pids())
            print(
                f"   {name}: served after {startup.served_s:.2f} s (all workers"
                f" {startup.ready_s:.2f} s), RSS {idle.rss_mib:,.0f} MiB idle,"
                f" {loaded.rss_mib:,.0f} MiB after {count:,} distinct queries",
                flush=True,
            )
            at[name] = {
                "startup": asdict(startup),
                "memory_idle": asdict(idle),
                "memory_loaded": asdict(loaded),
                "fill": asdict(pass_run),
            }
        result["sizes"][str(big)] = at
        shutil.rmtree(data)
        zonefile.unlink()


def run(profile: Profile, work: Path, result: dict[str, Any]) -> None:
    throughput(profile, work, result)
    footprint(profile, work, result)


# -- the report ----------------------------------------------------------------------------


def _num(value: float | None, digits: int = 0) -> str:
    if value is None:
        return "-"
    return f"{value:,.{digits}f}"


def _at_least(value: float | None, reference: float | None, factor: float) -> bool:
    r = ratio(value, reference)
    return r is not None and r >= factor


def _at_most(value: float | None, reference: float | None, factor: float) -> bool:
    r = ratio(value, reference)
    return r is not None and r <= factor


def table(result: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """The figures as a Markdown table, and the verdict on each target."""
    profile = result["profile"]
    per = result["servers"]
    names = ["knot", "controparte-w1", "controparte-w2"]
    rows: list[tuple[str, list[str]]] = []

    def add(
        label: str, values: Sequence[float | None], digits: int = 0, ratios: bool = True
    ) -> None:
        cells = [_num(values[0], digits)]
        for value in values[1:]:
            cells += [_num(value, digits), _num(ratio(value, values[0]), 2) if ratios else "-"]
        rows.append((label, cells))

    def row(label: str, key: str, digits: int = 0, ratios: bool = True) -> None:
        add(label, [per[name].get(key) for name in names], digits, ratios)

    def spread(label: str, key: str) -> None:
        cells: list[str] = []
        for name in names:
            runs = per[name][key]
            cells += [f"{min(runs):,.0f}-{max(runs):,.0f}"] + ([] if name == "knot" else ["-"])
        rows.append((label, cells))

    load = result["max_load"]
    reps = f"median of {profile['max_reps']} x {profile['max_seconds']} s runs, undisturbed ones"
    row(f"max qps, plain (`{load}`, {reps})", "max_qps_plain")
    spread("  those runs, min-max", "max_qps_plain_runs")
    row("  undisturbed runs", "max_qps_plain_clean_runs", ratios=False)
    row("  lost in those runs", "max_lost_plain", ratios=False)
    row(f"max qps, EDNS (`{load} -e`, {reps})", "max_qps_edns")
    spread("  those runs, min-max", "max_qps_edns_runs")
    row("  undisturbed runs", "max_qps_edns_clean_runs", ratios=False)
    row("  lost in those runs", "max_lost_edns", ratios=False)
    row("  server CPU during the max runs (cores), plain", "max_server_cpu_share_plain", 2)
    row("  dnsperf CPU during the max runs (cores), plain", "max_client_cpu_share_plain", 2)
    row("highest rate with 0 lost, plain (`-Q`, bisection)", "zero_loss_rate_plain")
    row("highest rate with 0 lost, EDNS", "zero_loss_rate_edns")
    rate = f"{profile['cpu_rate']:,} qps"
    row(f"CPU s per 100k answers, plain, at {rate}", "cpu_plain", 2)
    row(f"CPU s per 100k answers, EDNS, at {rate}", "cpu_edns", 2)
    row(f"CPU s per 100k answers, cold cache (distinct queries), at {rate}", "cpu_cold", 2)
    row("other processes' CPU during these runs (cores)", "other_cpu_share", 2, ratios=False)
    for size, at in result["sizes"].items():
        count = int(size)
        for label, section, key, digits in (
            (f"start-up to first answer, {count:,} (s)", "startup", "served_s", 2),
            (f"start-up, all workers bound, {count:,} (s)", "startup", "ready_s", 2),
            (f"RSS idle, {count:,} (MiB)", "memory_idle", "rss_mib", 0),
            (f"RSS after queries, {count:,} (MiB)", "memory_loaded", "rss_mib", 0),
            (f"PSS after queries, {count:,} (MiB)", "memory_loaded", "pss_mib", 0),
        ):
            add(label, [at[name][section][key] for name in names], digits)

    lines = [
        "| figure | Knot | controparte w1 | w1/Knot | controparte w2 | w2/Knot |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    lines += [f"| {label} | " + " | ".join(cells) + " |" for label, cells in rows]

    knot = per["knot"]
    biggest = max(result["sizes"], key=int)
    verdict: dict[str, Any] = {}
    for name in names[1:]:
        f = per[name]
        big = result["sizes"][biggest][name]
        verdict[name] = {
            "max qps plain >= 0.9x Knot, 0 lost": _at_least(
                f["max_qps_plain"], knot["max_qps_plain"], 0.9
            )
            and f["max_lost_plain"] == 0,
            "max qps EDNS >= 0.9x Knot, 0 lost": _at_least(
                f["max_qps_edns"], knot["max_qps_edns"], 0.9
            )
            and f["max_lost_edns"] == 0,
            "0-loss rate plain >= 0.9x Knot": _at_least(
                f["zero_loss_rate_plain"], knot["zero_loss_rate_plain"], 0.9
            ),
            "0-loss rate EDNS >= 0.9x Knot": _at_least(
                f["zero_loss_rate_edns"], knot["zero_loss_rate_edns"], 0.9
            ),
            "CPU per answer plain <= 1.5x Knot": _at_most(f["cpu_plain"], knot["cpu_plain"], 1.5),
            "CPU per answer EDNS <= 1.5x Knot": _at_most(f["cpu_edns"], knot["cpu_edns"], 1.5),
            f"RSS at {int(biggest):,} <= 1 GiB": big["memory_loaded"]["rss_mib"] <= 1024,
            f"start-up at {int(biggest):,} < 15 s": big["startup"]["ready_s"] < 15,
        }
    return "\n".join(lines), verdict


def print_verdict(verdict: dict[str, Any]) -> None:
    for name, checks in verdict.items():
        for check, ok in checks.items():
            print(f"{name}: {'met    ' if ok else 'NOT met'}  {check}")


def main(argv: Sequence[str] | None = None) -> int:
    description = __doc__.split("\n\n")[0] if __doc__ else None
    args = arguments(description, "small zone, short runs (smoke)").parse_args(argv)
    if args.report is not None:
        text, verdict = table(json.loads(args.report.read_text(encoding="utf-8")))
        print(text)
        print_verdict(verdict)
        return 0
    profile = QUICK if args.quick else FULL
    for name in ("dnsperf", "knotd"):
        tool(name)
    started = time.monotonic()
    result: dict[str, Any] = {
        "command": " ".join(["bench/dns_bench.py", *(argv or sys.argv[1:])]),
        "profile": asdict(profile),
        "started": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(
            {"knotd": [tool("knotd"), "--version"], "dnsperf": [tool("dnsperf"), "-h"]}
        ),
    }
    print(f"controparte DNS bench ({profile.name}) on {result['machine']}", flush=True)
    with working_directory("controparte-bench-", args.workdir, args.keep) as work:
        run(profile, work, result)
    verdict, out = finish(f"dns-bench-{profile.name}", result, started, GATE, table)
    print_verdict(verdict)
    print(
        f"\nother load: {GATE.repeated_runs} disturbed runs made again,"
        f" {GATE.measured_anyway} kept disturbed, {GATE.spent:.0f} s spent on it"
    )
    print(f"duration {result['duration_s']:.0f} s; JSON: {out.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
