"""Heartbeats against a real `controparte serve` on SQLite with 100,000 installations.

Measures, on loopback only, bounded in time and count:

1. Sustained heartbeats per second when nothing DNS serves changes (each beat still
   writes last-seen: a durable UPDATE, group-committed).
2. The same when every beat moves its installation to a new address: the server
   trusts 127.0.0.1 as a proxy and each request carries its own `X-Forwarded-For`, so
   every beat changes a record, bumps the zone serial and reaches the DNS follower.
3. The delay from an acknowledged update (the HTTP 200 is in the client's hands) to
   the first DNS answer with the new address: one beat at a time, DNS polled over UDP
   at once and until it answers; median and p99. Measured idle and, when wrk is
   there, while (2) runs.

The load generator is `wrk` (Debian package wrk: C, one event loop per thread, a Lua
script makes each request; not the bottleneck). Without wrk the throughput phases are
skipped (exit status 2) unless `--allow-missing-wrk`.

    python bench/heartbeat_bench.py            # the full run, about 2 minutes
    python bench/heartbeat_bench.py --quick    # 5,000 installations, 3 s per phase
    python bench/heartbeat_bench.py --http-workers 2   # the server with 2 HTTP processes

Server CPU is that of every process of the server (main, HTTP and DNS workers).

Results: a table on stdout and JSON in bench/out/ (or `--json FILE`).
"""

from __future__ import annotations

import argparse
import shutil
import socket
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

import dns.message
import dns.rdatatype
import httpx

from common import (
    HOST,
    ZONE,
    ServerProcess,
    Throughput,
    load_average,
    machine,
    run_wrk,
    write_report,
)
from controparte.service import Registry
from controparte.service.credentials import ServerSecret
from controparte.settings import load_settings
from controparte.store import Origin, open_store

PORT = 9001  # every installation's public port, seeded and beaten alike
START_TIMEOUT = 60.0


def code(i: int) -> str:
    return f"B{i:06d}"


def label(i: int) -> str:
    return f"i{i:06d}"


def token(i: int) -> str:
    return f"cpt_bench_{code(i)}"  # fixed tokens, so the Lua script can make them too


# -- the data -----------------------------------------------------------------------------


def seed(data: Path, count: int, database: str = "") -> float:
    """`count` installations at 127.0.0.1:PORT, each with its token (hashed with the
    secret of the data directory `data`), in the store of `data` and `database` (the
    setting); the seconds taken."""
    start = time.perf_counter()
    env = {"CONTROPARTE_DATA": str(data), "CONTROPARTE_ALLOW_NON_GLOBAL": "1"}
    settings = load_settings(env=env)
    store = open_store(data, database)
    try:
        registry = Registry(store, settings)
        rows = [
            (i + 1, {"code": code(i), "label": label(i), "ip": HOST, "port": PORT})
            for i in range(count)
        ]
        registry.import_many(rows, origin=Origin(via="bench"))
        secret = ServerSecret.load_or_create(data)
        with store.transaction(Origin(via="bench")) as tx:
            for i in range(count):
                tx.set_token_hash(code(i), secret.hash_token(token(i)))
    finally:
        store.close()
    return time.perf_counter() - start


# -- the server ---------------------------------------------------------------------------


@contextmanager
def server(data: Path, http_workers: int = 1) -> Iterator[ServerProcess]:
    """`controparte serve` on the seeded store (the tests' ServerProcess, on ports below
    the ephemeral range), trusting 127.0.0.1 as a proxy so that each beat can carry its
    own X-Forwarded-For; yielded once one real heartbeat is accepted (no failed
    authentication: the server would throttle this address)."""
    with ServerProcess(
        data, server_env(http_workers), for_bench=True, start_timeout=START_TIMEOUT
    ) as srv:
        first_beat(srv)
        yield srv


def server_env(http_workers: int) -> dict[str, str]:
    """The settings of a server under this benchmark: 127.0.0.1 a trusted proxy, so that
    each beat can carry its own X-Forwarded-For; `http_workers` HTTP processes."""
    return {"CONTROPARTE_TRUSTED_PROXIES": HOST, "CONTROPARTE_HTTP_WORKERS": str(http_workers)}


def first_beat(srv: ServerProcess) -> None:
    """Once `srv` answers HTTP, one real heartbeat, which must be accepted (a failed
    authentication would make the server throttle this address)."""
    srv.wait_http(START_TIMEOUT)
    with httpx.Client(timeout=5.0) as client:
        response = client.post(
            f"{srv.http_url}/v1/installations/{code(0)}/heartbeat",
            json={"port": PORT},
            headers={"Authorization": f"Bearer {token(0)}"},
        )
    if response.status_code != 200:
        raise RuntimeError(f"heartbeat answered {response.status_code}: {response.text}")


# -- load with wrk --------------------------------------------------------------------------

LUA = """
local n = {count}
local change = {change}
local i = math.random(0, n - 1)
local c = math.random(0, 65535) * 256
local body = '{{"port":{port}}}'
request = function()
  i = (i + 1) % n
  local code = string.format("B%06d", i)
  local headers = {{
    ["Content-Type"] = "application/json",
    ["Authorization"] = "Bearer cpt_bench_" .. code,
  }}
  if change then
    c = (c + 1) % 16777216
    headers["X-Forwarded-For"] = string.format(
      "10.%d.%d.%d", math.floor(c / 65536), math.floor(c / 256) % 256, c % 256)
  end
  return wrk.format("POST", "/v1/installations/" .. code .. "/heartbeat", headers, body)
end
"""


# -- update-to-answer delay -------------------------------------------------------------------


@dataclass
class Delays:
    scenario: str
    samples: int
    timeouts: int
    median_ms: float
    p99_ms: float
    max_ms: float
    http_median_ms: float  # the heartbeat's own round trip, for scale
    polls_median: float  # DNS queries until the new answer


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def update_to_answer(
    scenario: str,
    srv: ServerProcess,
    count: int,
    samples: int,
    *,
    deadline: float,
    poll_timeout: float = 2.0,
    answering: ServerProcess | None = None,
) -> Delays:
    """Beat one installation to a new address through `srv`; time from its 200 to the
    DNS of `answering` (by default `srv`'s) answering it."""
    delays: list[float] = []
    http_times: list[float] = []
    polls: list[int] = []
    timeouts = 0
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.connect((HOST, (answering or srv).port))
    udp.settimeout(0.5)
    step = max(1, count // max(1, samples))
    with httpx.Client(base_url=srv.http_url, timeout=10.0) as client:
        for n in range(samples):
            if time.monotonic() > deadline:
                break
            i = (n * step + 7) % count
            address = f"172.{16 + n // 65536 % 16}.{n // 256 % 256}.{n % 256}"
            query = dns.message.make_query(f"{label(i)}.{ZONE}", "A")
            started = time.perf_counter()
            response = client.post(
                f"/v1/installations/{code(i)}/heartbeat",
                json={"port": PORT},
                headers={"Authorization": f"Bearer {token(i)}", "X-Forwarded-For": address},
            )
            acknowledged = time.perf_counter()
            if response.status_code != 200:
                raise RuntimeError(f"heartbeat answered {response.status_code}: {response.text}")
            http_times.append(acknowledged - started)
            tries = 0
            while True:
                tries += 1
                query.id = (query.id + 1) % 65536
                udp.send(query.to_wire())
                try:
                    answer = dns.message.from_wire(udp.recv(4096))
                except TimeoutError:
                    answer = None
                now = time.perf_counter()
                if answer is not None and any(
                    rrset.rdtype == dns.rdatatype.A and rdata.to_text() == address
                    for rrset in answer.answer
                    for rdata in rrset
                ):
                    delays.append(now - acknowledged)
                    polls.append(tries)
                    break
                if now - acknowledged > poll_timeout:
                    timeouts += 1
                    break
    udp.close()
    if not delays:
        raise RuntimeError("no update reached DNS")
    return Delays(
        scenario,
        len(delays),
        timeouts,
        statistics.median(delays) * 1000,
        percentile(delays, 0.99) * 1000,
        max(delays) * 1000,
        statistics.median(http_times) * 1000,
        statistics.median(polls),
    )


# -- the run ----------------------------------------------------------------------------------


@dataclass
class Report:
    machine: dict[str, object]
    installations: int
    http_workers: int
    seed_seconds: float
    generator: str
    load_before: str = ""  # /proc/loadavg's first three figures when the run began
    load_after: str = ""
    throughput: list[Throughput] = field(default_factory=list)
    delays: list[Delays] = field(default_factory=list)


def run(args: argparse.Namespace) -> Report:
    have_wrk = shutil.which("wrk") is not None
    if not have_wrk and not args.allow_missing_wrk:
        raise SystemExit("error: wrk is not installed (apt-get install wrk)")
    with tempfile.TemporaryDirectory(prefix="heartbeat-bench-") as tmp:
        root = Path(tmp)
        data = root / "data"
        print(f"seeding {args.installations} installations ...", file=sys.stderr)
        load_before = load_average()
        seconds = seed(data, args.installations)
        report = Report(
            machine({"wrk": ["wrk", "-v"]}),
            args.installations,
            args.http_workers,
            seconds,
            f"wrk -t{args.threads} -c{args.connections} (Lua request script)"
            if have_wrk
            else "none (wrk missing)",
            load_before,
        )
        with server(data, args.http_workers) as srv:
            url = f"{srv.http_url}/"
            scripts = {}
            for name, change in (("no-change", False), ("address-change", True)):
                scripts[name] = root / f"{name}.lua"
                scripts[name].write_text(
                    LUA.format(count=args.installations, change=str(change).lower(), port=PORT)
                )
            if have_wrk:
                warm = run_wrk(
                    "warm-up", url, scripts["no-change"], duration=2, connections=8, threads=1
                )
                print(f"warm-up: {warm.per_second:.0f}/s", file=sys.stderr)
                for name in ("no-change", "address-change"):
                    print(f"{name}: {args.duration:g} s of wrk ...", file=sys.stderr)
                    report.throughput.append(
                        run_wrk(
                            name,
                            url,
                            scripts[name],
                            duration=args.duration,
                            connections=args.connections,
                            threads=args.threads,
                            server_pids=srv.pids(),
                        )
                    )
            print(f"update-to-answer, idle: {args.samples} samples ...", file=sys.stderr)
            report.delays.append(
                update_to_answer(
                    "idle",
                    srv,
                    args.installations,
                    args.samples,
                    deadline=time.monotonic() + args.duration * 3,
                )
            )
            if have_wrk:
                print("update-to-answer under address-change load ...", file=sys.stderr)
                loaded: list[Throughput] = []
                background = threading.Thread(
                    target=lambda: loaded.append(
                        run_wrk(
                            "address-change (background)",
                            url,
                            scripts["address-change"],
                            duration=args.duration,
                            connections=args.connections,
                            threads=args.threads,
                            server_pids=srv.pids(),
                        )
                    )
                )
                background.start()
                time.sleep(1.0)
                report.delays.append(
                    update_to_answer(
                        "under address-change load",
                        srv,
                        args.installations,
                        args.samples,
                        deadline=time.monotonic() + max(1.0, args.duration - 2.0),
                    )
                )
                background.join()
                report.throughput.extend(loaded)
            if srv.died():
                raise RuntimeError(f"the server died:\n{srv.log_text()}")
    report.load_after = load_average()
    return report


def render(report: Report) -> str:
    m = report.machine
    lines = [
        f"machine: {m['cpus']} CPUs, {m['cpu']}, Python {m['python']}",
        f"installations: {report.installations} (seeded in {report.seed_seconds:.1f} s)",
        f"server: controparte serve, http_workers={report.http_workers}",
        f"load average before the run: {report.load_before}",
        f"load generator: {report.generator}",
        "",
        f"{'scenario':<30} {'beats/s':>9} {'requests':>9} {'errors':>7}"
        f" {'p50 ms':>7} {'p99 ms':>7} {'server CPU':>10} {'us/beat':>8} {'wrk CPU':>8}",
    ]
    for t in report.throughput:
        lines.append(
            f"{t.scenario:<30} {t.per_second:>9.0f} {t.requests:>9} {t.errors:>7}"
            f" {t.latency_p50_ms or 0:>7.1f} {t.latency_p99_ms or 0:>7.1f}"
            f" {t.server_cpu_seconds / t.seconds:>9.0%} {t.server_cpu_us_per_beat:>8.0f}"
            f" {t.generator_cpu_seconds / t.seconds:>8.0%}"
        )
    lines += [
        "",
        f"load average after the run: {report.load_after}",
        "",
        f"{'update-to-answer':<30} {'samples':>8} {'median ms':>10} {'p99 ms':>8}"
        f" {'max ms':>8} {'timeouts':>9} {'http ms':>8}",
    ]
    for d in report.delays:
        lines.append(
            f"{d.scenario:<30} {d.samples:>8} {d.median_ms:>10.2f} {d.p99_ms:>8.2f}"
            f" {d.max_ms:>8.2f} {d.timeouts:>9} {d.http_median_ms:>8.2f}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--installations", type=int, default=100_000)
    parser.add_argument("--duration", type=float, default=15.0, help="seconds per wrk run")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1, help="wrk threads")
    parser.add_argument("--samples", type=int, default=2000, help="update-to-answer samples")
    parser.add_argument(
        "--http-workers", type=int, default=1, help="the server's HTTP processes (setting)"
    )
    parser.add_argument(
        "--quick", action="store_true", help="5,000 installations, 3 s phases, 300 samples"
    )
    parser.add_argument("--json", type=Path, help="write the figures here, not in bench/out/")
    parser.add_argument("--allow-missing-wrk", action="store_true")
    args = parser.parse_args(argv)
    if args.quick:
        args.installations, args.duration, args.samples = 5_000, 3.0, 300
    report = run(args)
    print(render(report))
    stem = f"heartbeat-bench{'-quick' if args.quick else ''}"
    out = write_report(stem, asdict(report), args.json)
    print(f"figures written to {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
