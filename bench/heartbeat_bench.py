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
import json
import os
import platform
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
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

from controparte.service import Registry
from controparte.service.credentials import ServerSecret
from controparte.settings import load_settings
from controparte.store import Origin, open_store

ROOT = Path(__file__).resolve().parents[1]
OUT_DIR = ROOT / "bench" / "out"
HOST = "127.0.0.1"
ZONE = "bp.controparte.test."
PORT = 9001  # every installation's public port, seeded and beaten alike
START_TIMEOUT = 60.0


def code(i: int) -> str:
    return f"B{i:06d}"


def label(i: int) -> str:
    return f"i{i:06d}"


def token(i: int) -> str:
    return f"cpt_bench_{code(i)}"  # fixed tokens, so the Lua script can make them too


# -- the data -----------------------------------------------------------------------------


def seed(data: Path, count: int) -> float:
    """`count` installations at 127.0.0.1:PORT, each with its token; the seconds taken."""
    start = time.perf_counter()
    env = {"CONTROPARTE_DATA": str(data), "CONTROPARTE_ALLOW_NON_GLOBAL": "1"}
    settings = load_settings(env=env)
    store = open_store(data)
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


def free_port(kind: socket.SocketKind) -> int:
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    http: str
    dns_port: int
    log: Path


@contextmanager
def server(data: Path, log: Path, http_workers: int = 1) -> Iterator[Server]:
    dns_port = free_port(socket.SOCK_DGRAM)
    http_port = free_port(socket.SOCK_STREAM)
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONTROPARTE_")}
    env |= {
        "CONTROPARTE_DATA": str(data),
        "CONTROPARTE_DNS": f"{HOST}:{dns_port}",
        "CONTROPARTE_HTTP": f"{HOST}:{http_port}",
        "CONTROPARTE_ALLOW_NON_GLOBAL": "1",
        "CONTROPARTE_TRUSTED_PROXIES": HOST,
        "CONTROPARTE_HTTP_WORKERS": str(http_workers),
    }
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "controparte", "serve"],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        try:
            running = Server(process, f"http://{HOST}:{http_port}", dns_port, log)
            wait_ready(running)
            yield running
        finally:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(10)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait(10)


def wait_ready(srv: Server) -> None:
    """Until one real heartbeat is accepted (no failed authentication: the server
    would throttle this address)."""
    deadline = time.monotonic() + START_TIMEOUT
    with httpx.Client(timeout=5.0) as client:
        while time.monotonic() < deadline:
            if srv.process.poll() is not None:
                raise RuntimeError(f"the server exited:\n{srv.log.read_text(errors='replace')}")
            try:
                response = client.post(
                    f"{srv.http}/v1/installations/{code(0)}/heartbeat",
                    json={"port": PORT},
                    headers={"Authorization": f"Bearer {token(0)}"},
                )
            except httpx.TransportError:
                time.sleep(0.1)
                continue
            if response.status_code != 200:
                raise RuntimeError(f"heartbeat answered {response.status_code}: {response.text}")
            return
    raise RuntimeError(f"the server did not start in {START_TIMEOUT} s")


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


@dataclass
class Throughput:
    scenario: str
    requests: int
    seconds: float
    per_second: float
    errors: int  # non-2xx answers plus socket errors
    latency_p50_ms: float | None
    latency_p99_ms: float | None
    connections: int
    threads: int
    server_cpu_seconds: float = 0.0  # user + system, all of the server's processes
    generator_cpu_seconds: float = 0.0
    server_cpu_us_per_beat: float = 0.0


def process_cpu(pid: int) -> float:
    """CPU seconds (user + system) used so far by process `pid` (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def descendants(pid: int) -> list[int]:
    """`pid` and every process below it, now (Linux /proc)."""
    found = [pid]
    for parent in found:
        for task in Path(f"/proc/{parent}/task").glob("*"):
            try:
                found += [int(c) for c in (task / "children").read_text().split()]
            except OSError:
                continue
    return found


def tree_cpu(pids: list[int]) -> float:
    """CPU seconds used so far by `pids` (the server's processes; gone ones count 0)."""
    total = 0.0
    for one in pids:
        try:
            total += process_cpu(one)
        except OSError:
            continue
    return total


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _ms(text: str) -> float | None:
    """A wrk duration (`812.00us`, `3.21ms`, `1.02s`) in milliseconds."""
    found = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    if found is None:
        return None
    return float(found[1]) * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}[found[2]]


def wrk(
    scenario: str,
    url: str,
    script: Path,
    *,
    duration: float,
    connections: int,
    threads: int,
    server_pid: int | None = None,
) -> Throughput:
    pids = descendants(server_pid) if server_pid else []
    server_before = tree_cpu(pids) if server_pid else 0.0
    generator_before = children_cpu()
    done = subprocess.run(
        [
            "wrk",
            f"-t{threads}",
            f"-c{connections}",
            f"-d{max(1, round(duration))}s",
            "--latency",
            "--timeout",
            "5s",
            "-s",
            str(script),
            url,
        ],
        check=True,
        capture_output=True,
        text=True,
        timeout=duration + 60,
    )
    server_cpu = tree_cpu(pids) - server_before if server_pid else 0.0
    generator_cpu = children_cpu() - generator_before
    out = done.stdout
    total = re.search(r"(\d+) requests in ([\d.]+)(s|m)", out)
    if total is None:
        raise RuntimeError(f"cannot read wrk's output:\n{out}\n{done.stderr}")
    requests = int(total[1])
    seconds = float(total[2]) * (60 if total[3] == "m" else 1)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    errors = (int(non2xx[1]) if non2xx else 0) + (sum(map(int, sock.groups())) if sock else 0)
    p50 = re.search(r"^\s+50%\s+(\S+)", out, re.MULTILINE)
    p99 = re.search(r"^\s+99%\s+(\S+)", out, re.MULTILINE)
    return Throughput(
        scenario,
        requests,
        seconds,
        requests / seconds,
        errors,
        _ms(p50[1]) if p50 else None,
        _ms(p99[1]) if p99 else None,
        connections,
        threads,
        server_cpu,
        generator_cpu,
        server_cpu / max(1, requests) * 1e6,
    )


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
    srv: Server,
    count: int,
    samples: int,
    *,
    deadline: float,
    poll_timeout: float = 2.0,
) -> Delays:
    """Beat one installation to a new address; time from its 200 to DNS answering it."""
    delays: list[float] = []
    http_times: list[float] = []
    polls: list[int] = []
    timeouts = 0
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.connect((HOST, srv.dns_port))
    udp.settimeout(0.5)
    step = max(1, count // max(1, samples))
    with httpx.Client(base_url=srv.http, timeout=10.0) as client:
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


def machine() -> dict[str, object]:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpus": os.cpu_count(),
        "cpu": model,
        "python": platform.python_version(),
        "system": platform.platform(),
    }


def load_average() -> str:
    """The 1, 5 and 15 minute load averages (the machine may be shared: say so)."""
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"


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
            machine(),
            args.installations,
            args.http_workers,
            seconds,
            f"wrk -t{args.threads} -c{args.connections} (Lua request script)"
            if have_wrk
            else "none (wrk missing)",
            load_before,
        )
        with server(data, root / "server.log", args.http_workers) as srv:
            url = f"{srv.http}/"
            scripts = {}
            for name, change in (("no-change", False), ("address-change", True)):
                scripts[name] = root / f"{name}.lua"
                scripts[name].write_text(
                    LUA.format(count=args.installations, change=str(change).lower(), port=PORT)
                )
            if have_wrk:
                warm = wrk(
                    "warm-up", url, scripts["no-change"], duration=2, connections=8, threads=1
                )
                print(f"warm-up: {warm.per_second:.0f}/s", file=sys.stderr)
                for name in ("no-change", "address-change"):
                    print(f"{name}: {args.duration:g} s of wrk ...", file=sys.stderr)
                    report.throughput.append(
                        wrk(
                            name,
                            url,
                            scripts[name],
                            duration=args.duration,
                            connections=args.connections,
                            threads=args.threads,
                            server_pid=srv.process.pid,
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
                        wrk(
                            "address-change (background)",
                            url,
                            scripts["address-change"],
                            duration=args.duration,
                            connections=args.connections,
                            threads=args.threads,
                            server_pid=srv.process.pid,
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
            if srv.process.poll() is not None:
                raise RuntimeError(f"the server died:\n{srv.log.read_text(errors='replace')}")
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
    out = args.json
    if out is None:
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        out = OUT_DIR / f"heartbeat-bench{'-quick' if args.quick else ''}-{stamp}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(asdict(report), indent=2) + "\n")
    print(f"figures written to {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
