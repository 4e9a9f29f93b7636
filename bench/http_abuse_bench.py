"""The HTTP server under abuse: a real `controparte serve`, on loopback only, bounded in
time and count.

1. **Silent connections.** N connections that never send a byte (opened as fast as the
   server takes them), and beside them `/healthz` asked again and again, each time on
   a new connection: how many answered 200, their latency (median, p99, max); then,
   `http_header_timeout` later, how many silent connections the server still holds
   open. `--server-nofile` starts the server with that file descriptor limit (1024 is
   systemd's default soft limit), where the connections compete for descriptors.
2. **A big body.** One client sends a body of `--body-mib` MiB to the heartbeat route
   (by Content-Length, then chunked) while others ask `/healthz`: how long until the
   big client had its answer and how much it had sent by then, the server's peak
   memory (Rss, sampled), and the other clients' latency meanwhile.

    python bench/http_abuse_bench.py                   # 2,000 silent, 100 MiB body
    python bench/http_abuse_bench.py --server-nofile 1024
    python bench/http_abuse_bench.py --quick           # 300 silent, 20 MiB

Run it against another checkout's server with PYTHONPATH=that/src (the figures of
docs/HARDENING.md "before" came so). Results: a table on stdout, JSON in bench/out/.
"""

from __future__ import annotations

import argparse
import resource
import socket
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from common import write_report  # puts the repository on sys.path: `tests` after it

# isort: split
from tests.processes import memory
from tests.rawhttp import closed_by_peer, connect, exchange, head, request, send_until_answered
from tests.realserver import ServerProcess

ADMIN = "admin-token-for-http-abuse-bench-0123"


@dataclass
class Latency:
    asked: int = 0
    answered: int = 0
    samples_ms: list[float] = field(default_factory=list)

    def add(self, ms: float | None) -> None:
        self.asked += 1
        if ms is not None:
            self.answered += 1
            self.samples_ms.append(ms)

    def summary(self) -> dict[str, float | int | None]:
        found = sorted(self.samples_ms)

        def at(q: float) -> float | None:
            return round(found[min(len(found) - 1, int(q * len(found)))], 2) if found else None

        return {
            "asked": self.asked,
            "answered_200": self.answered,
            "median_ms": round(statistics.median(found), 2) if found else None,
            "p99_ms": at(0.99),
            "max_ms": round(found[-1], 2) if found else None,
        }


def healthz_ms(where: tuple[str, int], timeout: float = 5.0) -> float | None:
    """One GET /healthz on a new connection: its latency, None unless it answered 200."""
    started = time.perf_counter()
    try:
        answer = exchange(where, request("GET", "/healthz"), timeout)
    except (OSError, AssertionError):
        return None
    return (time.perf_counter() - started) * 1000 if answer.status == 200 else None


class Asker(threading.Thread):
    """Asks /healthz every `pause` seconds until stopped."""

    def __init__(self, where: tuple[str, int], pause: float = 0.02) -> None:
        super().__init__(daemon=True)
        self.where = where
        self.pause = pause
        self.latency = Latency()
        self.stopping = threading.Event()

    def run(self) -> None:
        while not self.stopping.is_set():
            self.latency.add(healthz_ms(self.where))
            time.sleep(self.pause)

    def stop(self) -> Latency:
        self.stopping.set()
        self.join(30)
        return self.latency


class PeakMemory(threading.Thread):
    """Samples the Rss of `pids` every 20 ms until stopped."""

    def __init__(self, pids: list[int]) -> None:
        super().__init__(daemon=True)
        self.pids = pids
        self.peak_mib = 0.0
        self.stopping = threading.Event()

    def run(self) -> None:
        while not self.stopping.is_set():
            self.peak_mib = max(self.peak_mib, memory(self.pids).rss_mib)
            time.sleep(0.02)

    def stop(self) -> float:
        self.stopping.set()
        self.join(30)
        return self.peak_mib


def silent_phase(server: ServerProcess, count: int, wait: float) -> dict[str, object]:
    where = (server.host, server.settings.http.port)
    before = Latency()
    for _ in range(50):
        before.add(healthz_ms(where))
    socks: list[socket.socket] = []
    refused = 0
    opened = time.monotonic()
    for _ in range(count):
        try:
            socks.append(connect(where, 5))
        except OSError:
            refused += 1
    open_s = time.monotonic() - opened
    beside = Latency()
    for _ in range(100):
        beside.add(healthz_ms(where))
    time.sleep(wait)
    still_open = sum(1 for sock in socks if not closed_by_peer(sock, 0.001)[0])
    for sock in socks:
        sock.close()
    return {
        "silent_connections": count,
        "connects_refused": refused,
        "seconds_to_open": round(open_s, 2),
        "healthz_alone": before.summary(),
        "healthz_beside": beside.summary(),
        "still_open_after_s": wait,
        "still_open": still_open,
    }


def big_body_phase(server: ServerProcess, mib: int, chunked: bool) -> dict[str, object]:
    where = (server.host, server.settings.http.port)
    chunk = b" " * 65_536
    chunks = mib * 16
    if chunked:
        framing = b"%x\r\n" % len(chunk) + chunk + b"\r\n"
        extra = "Transfer-Encoding: chunked"
    else:
        framing = chunk
        extra = f"Content-Length: {chunks * len(chunk)}"
    raw_head = head(
        "POST",
        "/v1/installations/BENCH-1/heartbeat",
        f"Authorization: Bearer {ADMIN}",
        "Content-Type: application/json",
        extra,
    )
    others = Asker(where)
    peak = PeakMemory(server.pids())
    peak.start()
    others.start()
    started = time.perf_counter()
    with connect(where, 120) as sock:
        got = send_until_answered(sock, raw_head, chunks, framing, timeout=120)
    seconds = time.perf_counter() - started
    time.sleep(0.5)
    return {
        "body_mib": mib,
        "chunked": chunked,
        "answer": None if got.answer is None else got.answer.status,
        "seconds_to_answer": round(seconds, 3),
        "mib_sent_before_answer": round(got.sent / 2**20, 2),
        "server_peak_rss_mib": peak.stop(),
        "healthz_meanwhile": others.stop().summary(),
    }


def run(args: argparse.Namespace) -> dict[str, object]:
    env = {"CONTROPARTE_ADMIN_TOKEN": ADMIN}
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    with tempfile.TemporaryDirectory(prefix="http-abuse-bench-") as tmp:
        server = ServerProcess(Path(tmp) / "data", env, for_bench=True)
        server.data.mkdir()
        with server.registry() as registry:
            registry.add("BENCH-1", "bench-1")
        if args.server_nofile:  # the server inherits it; this process takes its own back
            resource.setrlimit(resource.RLIMIT_NOFILE, (args.server_nofile, hard))
        try:
            server.start()
        finally:
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
        try:
            server.wait_http()
            result: dict[str, object] = {
                "command": " ".join(["python", "bench/http_abuse_bench.py", *sys.argv[1:]]),
                "server_nofile": args.server_nofile or soft,
                "silent": silent_phase(server, args.silent, args.wait),
                "big_body": [big_body_phase(server, args.body_mib, c) for c in (False, True)],
            }
            result["server_log_lines"] = len(server.log_text().splitlines())
        finally:
            server.stop()
    return result


def render(result: dict[str, object]) -> str:
    silent = result["silent"]
    assert isinstance(silent, dict)
    alone, beside = silent["healthz_alone"], silent["healthz_beside"]
    lines = [
        f"$ {result['command']}   (server file descriptor limit {result['server_nofile']})",
        "",
        f"{silent['silent_connections']} silent connections ({silent['connects_refused']}"
        f" connects refused, opened in {silent['seconds_to_open']} s)",
        "  /healthz            answered  median ms  p99 ms  max ms",
        f"  alone              {alone['answered_200']:>4}/{alone['asked']:<4}"
        f" {alone['median_ms']!s:>9} {alone['p99_ms']!s:>7} {alone['max_ms']!s:>7}",
        f"  beside the silent  {beside['answered_200']:>4}/{beside['asked']:<4}"
        f" {beside['median_ms']!s:>9} {beside['p99_ms']!s:>7} {beside['max_ms']!s:>7}",
        f"  silent connections still open {silent['still_open_after_s']} s later:"
        f" {silent['still_open']}",
        "",
        "big body to the heartbeat route   answer  s to answer  MiB sent  server peak Rss MiB"
        "  /healthz meanwhile (answered, median, max ms)",
    ]
    bodies = result["big_body"]
    assert isinstance(bodies, list)
    for body in bodies:
        h = body["healthz_meanwhile"]
        kind = "chunked" if body["chunked"] else "Content-Length"
        lines.append(
            f"  {body['body_mib']} MiB, {kind:<15}        {body['answer']!s:>6}"
            f" {body['seconds_to_answer']:>12} {body['mib_sent_before_answer']:>9}"
            f" {body['server_peak_rss_mib']:>20}  {h['answered_200']}/{h['asked']},"
            f" {h['median_ms']}, {h['max_ms']}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--silent", type=int, default=2000, help="silent connections")
    parser.add_argument(
        "--wait", type=float, default=12.0, help="seconds before counting the still open"
    )
    parser.add_argument("--body-mib", type=int, default=100, help="the big body, MiB")
    parser.add_argument(
        "--server-nofile", type=int, default=0, help="the server's file descriptor limit"
    )
    parser.add_argument("--quick", action="store_true", help="300 silent, a 20 MiB body")
    parser.add_argument("--json", type=Path, help="write the figures here, not in bench/out/")
    args = parser.parse_args(argv)
    if args.quick:
        args.silent, args.body_mib = 300, 20
    result = run(args)
    print(render(result))
    out = write_report(f"http-abuse-bench{'-quick' if args.quick else ''}", result, args.json)
    print(f"figures written to {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
