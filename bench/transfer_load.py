"""AXFR out of `controparte serve`: how long it takes, what it costs the server in memory,
and what it does to the UDP answers meanwhile.

    .venv/bin/python bench/transfer_load.py                          # 100,000 and 1,000,000
    .venv/bin/python bench/transfer_load.py --installations 100000 --seconds 5

For each size N:
1. A store of N installations is written the fast way (`write_registry` of
   bench/dns_bench.py), a transfer key is made (`Access.create_transfer_key`), and
   `python -m controparte serve` starts over it with `transfer_allow = key=<it>`.
2. AXFR alone, `--runs` times: a raw reader in another process sends a signed AXFR and
   reads the messages without parsing them (length, ANCOUNT; it stops at the message
   that ends with the SOA again), so the figure is the server's, not a client's
   (kdig and dig verify every TSIG and parse every record: several times slower).
   Meanwhile the server's memory (Rss of its processes) is sampled every 20 ms; the
   table gives it before the transfer and its peak during.
3. UDP answers: dnsperf (`-c 4 -q 100`, the dns_bench mix) for `--seconds`, first
   alone, then while the reader transfers the zone again and again: at the highest
   rate, and at a steady rate of half that (`-Q`); the ratio of the rates answered
   during and without transfers is what the issue bounds (>= 0.8).

Every run is bounded (timeouts below). The machine's other load and its core count
shape the figures (dnsperf, the reader and the server share the CPUs): the table
prints the load average and the cores.
"""

from __future__ import annotations

import argparse
import multiprocessing
import multiprocessing.synchronize
import os
import socket
import statistics
import struct
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import dns.message
import dns.tsig

from common import HOST, ZONE, Load, ServerProcess, load_average, memory, run_dnsperf
from controparte.service.services import open_services
from dns_bench import SETTINGS, query_lines, write_lines, write_registry

KEY_NAME = "bench-transfer."
LOAD = Load(4, 100)
STEADY_SHARE = 0.5  # the steady rate, of the highest rate the server answers alone
READ_TIMEOUT = float(os.environ.get("READ_TIMEOUT", "300"))
SAMPLE = 0.02


@dataclass
class Transfer:
    seconds: float
    messages: int
    records: int
    megabytes: float


def read_axfr(port: int, key: dns.tsig.Key) -> Transfer:
    """One signed AXFR from HOST:port, read raw: the messages' lengths and ANCOUNTs;
    it ends with the message that holds the SOA again (the first record's bytes)."""
    query = dns.message.make_query(ZONE, "AXFR")
    query.use_tsig(key)
    wire = query.to_wire()
    started = time.perf_counter()
    with socket.create_connection((HOST, port), timeout=READ_TIMEOUT) as sock:
        sock.sendall(struct.pack("!H", len(wire)) + wire)
        stream = sock.makefile("rb", buffering=1 << 20)
        messages = records = size = 0
        soa = b""
        while True:
            length = struct.unpack("!H", stream.read(2))[0]
            message = stream.read(length)
            if len(message) != length:
                raise RuntimeError("the server closed the connection mid-transfer")
            messages += 1
            records += struct.unpack("!H", message[6:8])[0]
            size += length
            if not soa:  # header, question (the zone's name, type, class), then the SOA
                start = 12 + len(ZONE) + 1 + 4
                rdlength = struct.unpack("!H", message[start + 10 : start + 12])[0]
                soa = message[start : start + 12 + rdlength]
                if message.count(soa) > 1:
                    break
            elif soa in message:
                break
    return Transfer(time.perf_counter() - started, messages, records, size / 1e6)


def reader(
    port: int,
    key_text: tuple[str, str],
    stop: multiprocessing.synchronize.Event,
    out: multiprocessing.Queue[list[Transfer]],
    once: bool,
) -> None:
    """In a process of its own: AXFR once, or again and again until `stop`."""
    key = dns.tsig.Key(key_text[0], key_text[1], "hmac-sha256")
    done = [read_axfr(port, key)]
    while not once and not stop.is_set():
        done.append(read_axfr(port, key))
    out.put(done)


def transfers(
    port: int, key: tuple[str, str], *, once: bool, stop: multiprocessing.synchronize.Event
) -> tuple[multiprocessing.process.BaseProcess, multiprocessing.Queue[list[Transfer]]]:
    context = multiprocessing.get_context("spawn")
    out: multiprocessing.Queue[list[Transfer]] = context.Queue()
    process = context.Process(target=reader, args=(port, key, stop, out, once), daemon=True)
    process.start()
    return process, out


def peak_memory(pids: Sequence[int], stop: threading.Event, peak: list[float]) -> None:
    while not stop.is_set():
        peak[0] = max(peak[0], memory(pids).rss_mib)
        time.sleep(SAMPLE)


def measure(n: int, runs: int, seconds: int, work: Path) -> dict[str, object]:
    data = work / f"data-{n}"
    print(f"{n:,} installations: writing the store ...", flush=True)
    write_registry(data, n)
    env = {**SETTINGS, "CONTROPARTE_TRANSFER_ALLOW": f"key={KEY_NAME}"}
    server = ServerProcess(data, env, below_ephemeral=True, start_timeout=300)
    services = open_services(server.settings)
    try:
        made = services.access.create_transfer_key(KEY_NAME)
    finally:
        services.close()
    key = (made.name, made.secret)
    queries = write_lines(work / f"queries-{n}.txt", query_lines(n, 100_000, 1, distinct=False))
    context = multiprocessing.get_context("spawn")
    with server:
        pids = server.pids()
        idle = memory(pids).rss_mib
        alone: list[Transfer] = []
        peaks: list[float] = []
        for _ in range(runs):
            stop_sampling = threading.Event()
            peak = [0.0]
            sampler = threading.Thread(target=peak_memory, args=(pids, stop_sampling, peak))
            sampler.start()
            unused = context.Event()  # kept until the child has it
            process, out = transfers(server.port, key, once=True, stop=unused)
            alone += out.get(timeout=READ_TIMEOUT)
            process.join(10)
            stop_sampling.set()
            sampler.join()
            peaks.append(peak[0])
        print(f"  AXFR alone: {[round(t.seconds, 2) for t in alone]} s", flush=True)
        base = run_dnsperf(server.port, queries, LOAD, pids, what="alone", seconds=seconds)
        steady = int(base.qps * STEADY_SHARE)
        calm = run_dnsperf(
            server.port, queries, LOAD, pids, what="steady", seconds=seconds, rate=steady
        )
        stop = context.Event()
        process, out = transfers(server.port, key, once=False, stop=stop)
        time.sleep(0.2)  # the first request is on its way
        during = run_dnsperf(server.port, queries, LOAD, pids, what="during", seconds=seconds)
        held = run_dnsperf(
            server.port, queries, LOAD, pids, what="steady during", seconds=seconds, rate=steady
        )
        stop.set()
        busy = out.get(timeout=READ_TIMEOUT)
        process.join(10)
    first = alone[0]
    return {
        "installations": n,
        "records": first.records,
        "messages": first.messages,
        "megabytes": round(first.megabytes, 1),
        "axfr_seconds": [round(t.seconds, 2) for t in alone],
        "axfr_seconds_median": round(statistics.median(t.seconds for t in alone), 2),
        "rss_idle_mib": idle,
        "rss_peak_mib": max(peaks),
        "qps_alone": base.qps,
        "qps_during": during.qps,
        "lost_during": during.lost,
        "ratio": round(during.qps / base.qps, 2) if base.qps else None,
        "steady_qps": steady,
        "steady_alone": calm.qps,
        "steady_during": held.qps,
        "steady_lost_during": held.lost,
        "steady_ratio": round(held.qps / calm.qps, 2) if calm.qps else None,
        "transfers_during": len(busy),
        "axfr_seconds_during": round(statistics.median(t.seconds for t in busy), 2),
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--installations", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=10)
    args = parser.parse_args(argv)
    print(f"cores {os.cpu_count()}, load average {load_average()}", flush=True)
    rows = []
    with tempfile.TemporaryDirectory(prefix="transfer-load-") as tmp:
        for n in args.installations:
            rows.append(measure(n, args.runs, args.seconds, Path(tmp)))
    keys = list(rows[0])
    print("| " + " | ".join(keys) + " |")
    print("|" + "---|" * len(keys))
    for row in rows:
        print("| " + " | ".join(str(row[k]) for k in keys) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
