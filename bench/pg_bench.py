"""Address-changing heartbeats on SQLite and on PostgreSQL, with one node and with two,
side by side; and the delay from a change through one node to the other node's DNS
answer.

Every configuration serves the same 100,000 installations (added on SQLite through the
registry, then moved to PostgreSQL by `controparte migrate --to`) and takes the load of
`heartbeat_bench.py`'s address-change scenario: wrk with a Lua script that beats the
installations in turn, each request from its own address (`X-Forwarded-For`, 127.0.0.1
being a trusted proxy), so every beat changes a record, writes an audit row and a
journal row and moves the zone serial. The configurations:

- SQLite, one node, 1 and 2 HTTP processes (`http_workers`);
- PostgreSQL, one node, 1 and 2 HTTP processes;
- PostgreSQL, two nodes (two `controparte serve`, each with its data directory and its
  ports, on one database), 1 HTTP process each, with one wrk per node and the
  connections split between them.

Each configuration runs with 64 connections (as `heartbeat_bench.py`) and with 256.
wrk is a closed loop: a connection sends its next beat once the last is answered, so
the beats in flight, and with them the heartbeat writer's group commits, are at most
the connections; with 64, a writer whose commit takes a few round trips to the
database waits for beats as much as it writes. Agents are many, each with a
connection of its own: 256 is closer to them.

PostgreSQL is a server the benchmark starts itself (`tests/pgserver.py`, in a temporary
directory, as the `postgres` user) with durable commits, like SQLite's
`synchronous=FULL`: `fsync = on`, `full_page_writes = on`, `synchronous_commit = on`.

Change-to-answer on the other node (two nodes): one beat at a time through node A
(httpx, keep-alive); the clock starts when A's 200 is in the client's hands and stops
at the first UDP answer of node B's DNS with the new address (polled back to back);
p50 and p99 idle, then while the address-change load runs on both nodes.

Everything shares this machine's CPUs: the nodes' processes, PostgreSQL's (postmaster,
a backend per pooled connection, WAL writer, checkpointer), wrk and this script (idle
during throughput runs, one client during delay samples). The table gives each one's
share.

    python bench/pg_bench.py            # the full run, about 5 minutes
    python bench/pg_bench.py --quick    # 5,000 installations, 3 s runs, 300 samples

Results: a table on stdout and JSON in bench/out/ (or `--json FILE`).
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from common import (
    Databases,
    PgServer,
    QuietGate,
    ServerProcess,
    Throughput,
    Usage,
    bindir,
    children_cpu,
    clean_env,
    controparte_command,
    cpu_seconds,
    foreign_cpu_seconds,
    load_average,
    machine,
    make_nodes,
    process_tree,
    run_wrk,
    running,
    tool,
    write_report,
)
from heartbeat_bench import (
    LUA,
    PORT,
    START_TIMEOUT,
    Delays,
    first_beat,
    seed,
    server_env,
    update_to_answer,
)

DURABLE = {
    "fsync": "on",
    "full_page_writes": "on",
    "synchronous_commit": "on",
    "shared_buffers": "'128MB'",
}
"""PostgreSQL's settings for the benchmark, over the tests' (which turn fsync off)."""


@dataclass(frozen=True)
class Config:
    engine: str  # "sqlite" or "postgresql"
    nodes: int
    http_workers: int

    def __str__(self) -> str:
        engine = "SQLite" if self.engine == "sqlite" else "PostgreSQL"
        nodes = "1 node" if self.nodes == 1 else f"{self.nodes} nodes"
        processes = "process" if self.http_workers == 1 else "processes"
        each = " each" if self.nodes > 1 else ""
        return f"{engine}, {nodes}, {self.http_workers} HTTP {processes}{each}"


CONFIGS = (
    Config("sqlite", 1, 1),
    Config("sqlite", 1, 2),
    Config("postgresql", 1, 1),
    Config("postgresql", 1, 2),
    Config("postgresql", 2, 1),
)


@dataclass
class Run:
    """One configuration's address-change throughput, and who used the CPUs."""

    config: str
    connections: int
    seconds: float
    per_second: float
    requests: int
    errors: int
    latency_p50_ms: float
    latency_p99_ms: float
    nodes_cpu: float  # CPUs used on average (1.0 = one whole CPU)
    postgres_cpu: float
    wrk_cpu: float
    other_cpu: float
    per_node: list[float] = field(default_factory=list)  # beats/s through each node
    attempts: int = 1  # runs made (others disturbed by other load: `GATE`)


@dataclass
class Report:
    machine: dict[str, object]
    installations: int
    duration: float
    connections: list[int]
    postgres_settings: dict[str, str]
    load_before: str = ""
    load_after: str = ""
    seed_seconds: dict[str, float] = field(default_factory=dict)
    quiet_gate: dict[str, object] = field(default_factory=dict)
    runs: list[Run] = field(default_factory=list)
    delays: list[Delays] = field(default_factory=list)


# -- the load ---------------------------------------------------------------------------------

GATE = QuietGate()
GATE_BUDGET = 60.0  # seconds of waiting and repeating per configuration
"""Each throughput run starts once other processes are quiet, and is made again when
they disturbed it (within the time allowed; see `QuietGate`)."""


def processes(nodes: Sequence[ServerProcess]) -> list[int]:
    return [pid for node in nodes for pid in node.pids()]


def cpu_share(before: float, pids: Sequence[int], seconds: float) -> float:
    return (cpu_seconds(pids) - before) / seconds


def measured_load(
    config: Config,
    nodes: Sequence[ServerProcess],
    pg: PgServer,
    script: Path,
    duration: float,
    connections: int,
) -> Run:
    """`load`, once the machine is quiet, made again when other load disturbed it."""
    attempt = 1
    while True:
        GATE.wait()
        run = load(config, nodes, pg, script, duration, connections)
        run.attempts = attempt
        if not GATE.again(Usage(run.seconds, 0, 0, run.other_cpu * run.seconds), attempt):
            return run
        attempt += 1


def load(
    config: Config,
    nodes: Sequence[ServerProcess],
    pg: PgServer | None,
    script: Path,
    duration: float,
    connections: int,
) -> Run:
    """wrk with `script` on every node at once for `duration` s, `connections` split
    between them; the beats per second, summed, and the CPU each part used (of
    PostgreSQL's, when `pg` is given)."""
    pg_pids = process_tree(pg.proc.pid) if pg is not None and pg.proc is not None else []
    node_pids = processes(nodes)
    before = (cpu_seconds(node_pids), cpu_seconds(pg_pids), children_cpu(), foreign_cpu_seconds())
    results: list[Throughput] = []
    started = time.monotonic()

    def one(node: ServerProcess) -> None:
        results.append(
            run_wrk(
                str(config),
                f"{node.http_url}/",
                script,
                duration=duration,
                connections=connections // len(nodes),
                threads=1,
            )
        )

    threads = [threading.Thread(target=one, args=(node,)) for node in nodes]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.monotonic() - started
    if len(results) != len(nodes):
        raise RuntimeError("a wrk run failed")
    return Run(
        str(config),
        connections,
        wall,
        sum(r.per_second for r in results),
        sum(r.requests for r in results),
        sum(r.errors for r in results),
        max(r.latency_p50_ms or 0 for r in results),
        max(r.latency_p99_ms or 0 for r in results),
        cpu_share(before[0], node_pids, wall),
        cpu_share(before[1], pg_pids, wall),
        (children_cpu() - before[2]) / wall,
        (foreign_cpu_seconds() - before[3]) / wall,
        [r.per_second for r in results],
    )


# -- the servers ------------------------------------------------------------------------------


@contextlib.contextmanager
def postgres() -> Iterator[PgServer]:
    """A PostgreSQL server of the benchmark's own, durable (`DURABLE`), removed after."""
    server = PgServer()
    try:
        with (server.data / "postgresql.conf").open("a") as conf:
            conf.writelines(f"{key} = {value}\n" for key, value in DURABLE.items())
        server.start()
        yield server
    finally:
        server.destroy()


@contextlib.contextmanager
def started(nodes: list[ServerProcess]) -> Iterator[None]:
    """`nodes` running for the block, each having accepted one heartbeat."""
    with running(nodes):
        for node in nodes:
            first_beat(node)
        yield


def migrated(data: Path, url: str) -> float:
    """The SQLite registry of the data directory `data` moved to the empty database at
    `url` by `controparte migrate --to` (COPY: seconds, where adding 100,000 installations
    through the registry takes minutes on PostgreSQL); the seconds taken."""
    started = time.perf_counter()
    command = [*controparte_command(), "migrate", "--data", str(data), "--to", url]
    subprocess.run(command, env=clean_env(), check=True, capture_output=True, timeout=600)
    return time.perf_counter() - started


def run(args: argparse.Namespace) -> Report:
    tool("wrk")
    report = Report(
        machine({"wrk": ["wrk", "-v"], "postgres": [str(bindir() / "postgres"), "-V"]}),
        args.installations,
        args.duration,
        args.connections,
        DURABLE,
        load_average(),
    )
    with tempfile.TemporaryDirectory(prefix="pg-bench-") as tmp, postgres() as pg:
        root = Path(tmp)
        script = root / "address-change.lua"
        script.write_text(LUA.format(count=args.installations, change="true", port=PORT))
        warm = root / "warm-up.lua"
        warm.write_text(LUA.format(count=args.installations, change="false", port=PORT))
        data = root / "seed"
        print(f"seeding {args.installations} installations ...", file=sys.stderr)
        report.seed_seconds["sqlite"] = round(seed(data, args.installations), 1)
        database = Databases(pg).take()
        print("moving them to PostgreSQL (controparte migrate --to) ...", file=sys.stderr)
        report.seed_seconds["postgresql"] = round(migrated(data, database), 1)
        for engine, url in (("sqlite", ""), ("postgresql", database)):
            for config in (c for c in CONFIGS if c.engine == engine):
                env = server_env(config.http_workers)
                if engine == "sqlite":
                    nodes = [ServerProcess(data, env, for_bench=True, start_timeout=START_TIMEOUT)]
                else:
                    where = root / f"{config.nodes}x{config.http_workers}"
                    nodes = make_nodes(
                        where,
                        url,
                        config.nodes,
                        env,
                        secret=data,
                        for_bench=True,
                        start_timeout=START_TIMEOUT,
                    )
                GATE.phase(GATE_BUDGET)
                with started(nodes):
                    print(f"{config}: {args.duration:g} s of wrk ...", file=sys.stderr)
                    load(config, nodes, None, warm, 2, max(args.connections))
                    for connections in args.connections:
                        report.runs.append(
                            measured_load(config, nodes, pg, script, args.duration, connections)
                        )
                    if config.nodes > 1:
                        report.delays += other_node(config, nodes, script, args)
    report.load_after = load_average()
    report.quiet_gate = asdict(GATE)
    return report


def other_node(
    config: Config, nodes: list[ServerProcess], script: Path, args: argparse.Namespace
) -> list[Delays]:
    """Change-to-answer from node A's 200 to node B's DNS: idle, then under the
    address-change load on every node."""
    a, b = nodes[0], nodes[1]
    print(f"change-to-answer on the other node, idle: {args.samples} samples ...", file=sys.stderr)
    idle = update_to_answer(
        "other node, idle",
        a,
        args.installations,
        args.samples,
        deadline=time.monotonic() + args.samples * 0.2,
        answering=b,
    )
    print("change-to-answer on the other node under load ...", file=sys.stderr)
    stop_after = args.samples * 0.06 + 5  # seconds of background load: enough samples
    background = threading.Thread(
        target=load, args=(config, nodes, None, script, stop_after, min(args.connections))
    )
    background.start()
    time.sleep(1.0)
    loaded = update_to_answer(
        "other node, under load",
        a,
        args.installations,
        args.samples,
        deadline=time.monotonic() + stop_after - 2.0,
        answering=b,
    )
    background.join()
    return [idle, loaded]


# -- the table --------------------------------------------------------------------------------


def render(report: Report) -> str:
    m = report.machine
    lines = [
        f"machine: {m['cpus']} CPUs, {m['cpu']}, Python {m['python']}, {m['postgres']}",
        f"installations: {report.installations} (seeded on SQLite in"
        f" {report.seed_seconds['sqlite']:.0f} s, moved to PostgreSQL by controparte migrate"
        f" in {report.seed_seconds['postgresql']:.0f} s)",
        f"load: wrk -t1 with {' and '.join(map(str, report.connections))} connections for"
        f" {report.duration:g} s per configuration (two nodes: one wrk per node, the"
        " connections split), every beat a new address",
        "sharing the CPUs: the node(s), PostgreSQL (postmaster, backends, WAL writer,"
        " checkpointer), wrk, and other processes of the machine (in `other`)",
        "PostgreSQL: " + ", ".join(f"{k}={v}" for k, v in report.postgres_settings.items()),
        f"load average before the run: {report.load_before}",
        "",
        f"{'configuration':<46} {'conns':>5} {'beats/s':>8} {'errors':>6} {'p50 ms':>7}"
        f" {'p99 ms':>7}"
        f" {'nodes':>6} {'postgres':>8} {'wrk':>5} {'other':>6}   (CPUs used)",
    ]
    for r in report.runs:
        lines.append(
            f"{r.config:<46} {r.connections:>5} {r.per_second:>8.0f} {r.errors:>6}"
            f" {r.latency_p50_ms:>7.1f}"
            f" {r.latency_p99_ms:>7.1f} {r.nodes_cpu:>6.2f} {r.postgres_cpu:>8.2f}"
            f" {r.wrk_cpu:>5.2f} {r.other_cpu:>6.2f}"
        )
    lines += [
        "",
        f"load average after the run: {report.load_after}",
        "",
        f"{'change-to-answer (A -> B)':<30} {'samples':>8} {'p50 ms':>8} {'p99 ms':>8}"
        f" {'max ms':>8} {'timeouts':>9} {'http ms':>8}",
    ]
    for d in report.delays:
        lines.append(
            f"{d.scenario:<30} {d.samples:>8} {d.median_ms:>8.2f} {d.p99_ms:>8.2f}"
            f" {d.max_ms:>8.2f} {d.timeouts:>9} {d.http_median_ms:>8.2f}"
        )
    best = max(report.runs, key=lambda r: r.per_second)
    worst_p99 = max((d.p99_ms for d in report.delays), default=float("nan"))
    lines += [
        "",
        f"targets: >= 5,000 address-changing beats/s in the best configuration:"
        f" {best.per_second:.0f}/s ({best.config})"
        f" {'met' if best.per_second >= 5000 else 'MISSED'};"
        f" p99 change-to-answer on the other node < 1 s: {worst_p99:.1f} ms"
        f" {'met' if worst_p99 < 1000 else 'MISSED'}",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--installations", type=int, default=100_000)
    parser.add_argument("--duration", type=float, default=15.0, help="seconds per wrk run")
    parser.add_argument(
        "--connections",
        type=lambda text: [int(n) for n in text.split(",")],
        default=[64, 256],
        help="wrk's connections, each count a run (comma-separated; the fewest also"
        " load the change-to-answer samples)",
    )
    parser.add_argument("--samples", type=int, default=1000, help="change-to-answer samples")
    parser.add_argument(
        "--quick", action="store_true", help="5,000 installations, 3 s runs, 300 samples"
    )
    parser.add_argument("--json", type=Path, help="write the figures here, not in bench/out/")
    args = parser.parse_args(argv)
    # SIGTERM ends the run as Ctrl-C does: the servers and PostgreSQL are stopped and
    # their directories removed on the way out.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    if args.quick:
        args.installations, args.duration, args.samples = 5_000, 3.0, 300
    report = run(args)
    print(render(report))
    out = write_report(f"pg-bench{'-quick' if args.quick else ''}", asdict(report), args.json)
    print(f"figures written to {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
