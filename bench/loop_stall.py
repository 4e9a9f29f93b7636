"""How long the DNS server's event loop stalls while the journal follower catches up.

    .venv/bin/python bench/loop_stall.py                       # 1,000,000 + 100,000
    .venv/bin/python bench/loop_stall.py --installations 100000 --journal 10000

1. A store of N installations (1,000,000) is written the fast way (`write_registry`
   of bench/dns_bench.py: one executemany into the store's SQLite file).
2. `DnsServer` starts in this process, on a uvloop event loop as in `controparte serve`
   (the start-up load is not measured).
3. Meanwhile: a task on the loop sleeps 10 ms again and again and records how late it
   wakes (the loop's lag); a client process sends TCP queries one after another, each
   on a new connection, and records their latency.
4. After a quiet second (measured), another process appends M journal entries
   (100,000: new IPv4 addresses for installations 0..M-1) in one transaction on its own
   SQLite connection, as another writer would (the server is not poked: it finds them
   by polling).
5. Once the served snapshot has the last entry, half a second more, then everything
   stops. Printed: the worst lag and TCP latency before the append and from the commit
   until the snapshot had it (the catch-up), and how long the catch-up took.

Every step is bounded (deadlines below); the figures depend on the machine and on what
else runs on it.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import multiprocessing.synchronize
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import dns.message
import dns.query

from common import HOST, ZONE
from controparte.dns.server import DnsServer
from controparte.serve import run_loop
from controparte.settings import load_settings
from controparte.store.rows import next_serial
from controparte.store.sqlite import DB_FILE
from dns_bench import NS, label_of, write_registry

LAG_TICK = 0.010  # seconds the lag probe sleeps each time
QUERY_PAUSE = 0.005  # seconds between two TCP queries
QUIET = 1.0  # seconds for the client to start, then measured before the append
AFTER = 0.5  # seconds measured after the catch-up
CATCH_UP_DEADLINE = 300.0
CLIENT_TIMEOUT = 30.0

Sample = tuple[float, float, float]
"""(start, end, seconds late or taken); times are CLOCK_MONOTONIC, the same clock in
every process."""


def append_journal(db: Path, count: int, committed: multiprocessing.SimpleQueue[float]) -> None:
    """Another writer: `count` journal entries (new IPv4 addresses for installations
    0..count-1) and the matching rows, in one transaction; puts the commit time."""
    conn = sqlite3.connect(db, isolation_level=None, timeout=60)
    try:
        conn.execute("BEGIN IMMEDIATE")
        serial = next_serial(int(conn.execute("SELECT serial FROM zone_state").fetchone()[0]))
        conn.execute("UPDATE zone_state SET serial = ?", (serial,))
        rows = [(f"B{i:07d}", label_of(i), f"192.0.2.{i % 254 + 1}") for i in range(count)]
        conn.executemany(
            "UPDATE installations SET ipv4 = ? WHERE code = ?", [(r[2], r[0]) for r in rows]
        )
        conn.executemany(
            "INSERT INTO journal (serial, at, code, old_label, new_label, ipv4, ipv6, port)"
            " SELECT ?, '2024-01-01T00:00:00+00:00', code, NULL, label, ipv4, ipv6, port"
            " FROM installations WHERE code = ?",
            [(serial, code) for code, _, _ in rows],
        )
        conn.execute("COMMIT")
        committed.put(time.monotonic())
    finally:
        conn.close()


def query_tcp(
    port: int,
    labels: Sequence[str],
    stop: multiprocessing.synchronize.Event,
    out: multiprocessing.SimpleQueue[list[Sample]],
) -> None:
    """The client: TCP queries one after another (a new connection each) until `stop`."""
    samples: list[Sample] = []
    n = 0
    while not stop.is_set():
        query = dns.message.make_query(f"{labels[n % len(labels)]}.{ZONE}", "A")
        n += 1
        started = time.monotonic()
        dns.query.tcp(query, HOST, port=port, timeout=CLIENT_TIMEOUT)
        ended = time.monotonic()
        samples.append((started, ended, ended - started))
        time.sleep(QUERY_PAUSE)
    out.put(samples)


@dataclass(frozen=True)
class Window:
    """The worst and the median of what was measured in one span of time."""

    lag_max: float
    lag_median: float
    tcp_max: float
    tcp_median: float
    tcp_queries: int


def window(
    lags: Sequence[Sample], queries: Sequence[Sample], start: float, end: float, *, within: bool
) -> Window:
    """The samples that lie `within` [start, end], or else that overlap it."""

    def values(samples: Sequence[Sample]) -> list[float]:
        if within:
            chosen = [v for s, e, v in samples if start <= s and e <= end]
        else:
            chosen = [v for s, e, v in samples if s <= end and e >= start]
        return chosen or [0.0]

    lag, tcp = values(lags), values(queries)
    return Window(max(lag), statistics.median(lag), max(tcp), statistics.median(tcp), len(tcp))


async def measure(data: Path, installations: int, journal: int) -> None:
    settings = load_settings(
        env={
            "CONTROPARTE_DATA": str(data),
            "CONTROPARTE_DNS": f"{HOST}:0",
            "CONTROPARTE_ZONE": ZONE,
            "CONTROPARTE_NS": NS,
            "CONTROPARTE_ALLOW_NON_GLOBAL": "1",
        }
    )
    started = time.monotonic()
    server = DnsServer(settings)
    await server.start()
    print(f"start-up (load {installations:,} rows): {time.monotonic() - started:.1f} s")
    lags: list[Sample] = []

    async def probe() -> None:
        while True:
            at = time.monotonic()
            await asyncio.sleep(LAG_TICK)
            woke = time.monotonic()
            lags.append((at, woke, woke - at - LAG_TICK))

    context = multiprocessing.get_context("spawn")
    stop = context.Event()
    results: multiprocessing.SimpleQueue[list[Sample]] = context.SimpleQueue()
    committed: multiprocessing.SimpleQueue[float] = context.SimpleQueue()
    labels = [label_of(i) for i in range(installations - 1, max(-1, installations - 2001), -1)]
    client = context.Process(target=query_tcp, args=(server.port, labels, stop, results))
    writer = context.Process(target=append_journal, args=(data / DB_FILE, journal, committed))
    probing = asyncio.create_task(probe())
    try:
        client.start()
        await asyncio.sleep(QUIET)  # the client starts
        quiet_from = time.monotonic()
        await asyncio.sleep(QUIET)
        target = server.engine.zone.seq + journal
        writer.start()
        commit = await asyncio.to_thread(committed.get)
        deadline = time.monotonic() + CATCH_UP_DEADLINE
        while server.engine.zone.seq < target:
            if time.monotonic() > deadline:
                raise RuntimeError("the server did not catch up in time")
            await asyncio.sleep(0.001)
        caught_up = time.monotonic()
        await asyncio.sleep(AFTER)
        stop.set()
        queries = await asyncio.to_thread(results.get)
    finally:
        stop.set()
        probing.cancel()
        await asyncio.to_thread(client.join, CLIENT_TIMEOUT)
        await asyncio.to_thread(writer.join, CLIENT_TIMEOUT)
        await server.stop()
    before = window(lags, queries, quiet_from, commit, within=True)
    during = window(lags, queries, commit, caught_up, within=False)
    print(f"journal of {journal:,} entries over {installations:,} installations")
    print(f"catch-up: {caught_up - commit:.2f} s from the commit to the swap")
    print("                    loop lag max / median      TCP latency max / median  (queries)")
    for name, w in (("before the append", before), ("during catch-up", during)):
        print(
            f"{name:<18}  {w.lag_max * 1000:8.1f} / {w.lag_median * 1000:5.1f} ms"
            f"      {w.tcp_max * 1000:8.1f} / {w.tcp_median * 1000:5.1f} ms  ({w.tcp_queries})"
        )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--installations", type=int, default=1_000_000)
    parser.add_argument("--journal", type=int, default=100_000)
    args = parser.parse_args(argv)
    if not 0 < args.journal <= args.installations:
        parser.error("need 0 < --journal <= --installations")
    with tempfile.TemporaryDirectory(prefix="loop-stall-") as work:
        data = Path(work) / "data"
        took = write_registry(data, args.installations)
        print(f"registry of {args.installations:,} written in {took:.1f} s")
        run_loop(lambda: measure(data, args.installations, args.journal))
    return 0


if __name__ == "__main__":
    sys.exit(main())
