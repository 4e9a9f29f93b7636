"""Zone transfer benchmark (issue 8): controparte against Knot DNS as the primary of the
same zone, over loopback, and the delay from a change to its answer on an NSD secondary.

    make bench-xfr                                   # = .venv/bin/python bench/xfr_bench.py
    .venv/bin/python bench/xfr_bench.py --quick      # a smoke run: small zones, few runs
    .venv/bin/python bench/xfr_bench.py --only knot  # Knot's columns alone
    .venv/bin/python bench/xfr_bench.py --report bench/out/xfr-bench-....json   # the table

1. AXFR out of a zone of 100,000 and of 1,000,000 installations (the registry written
   and exported as bench/dns_bench.py does). Knot (`knotd`) serves the exported file,
   controparte serves the store (`controparte serve`, `transfer_allow` naming a key made
   by `controparte tsig-key --transfer`); both get the same TSIG key and the same
   signed AXFR request. The client is CLIENT (below): it reads far faster than either
   server sends, so the time is the server's. Per server and size: a few transfers,
   each timed from the request to the last message (and to the first); messages and
   bytes; the server's CPU seconds; its memory (Rss of its process tree) before the
   transfers and at its highest during them (sampled every SAMPLE_S).
2. DNS answers during AXFRs (largest zone): dnsperf for a few seconds against the
   primary alone, then again while transfers run back to back (read by CLIENT in a
   thread of the bench): at the highest rate one client load gets, and at a steady
   rate of half that. The issue's target (answers do not drop below 0.8x of their
   rate) is read on the steady rate: on a machine of two CPUs shared by dnsperf, the
   reader and the server, the highest rate measures mostly how the CPUs are shared
   (Knot itself loses about 40% of it).
3. Update to answer on an NSD secondary: controparte NOTIFYs an NSD secondary
   (tests/secondaries.py's configuration); changes committed through the HTTP API
   (PATCH of an installation's address, admin token) at a steady rate; for each, the
   time from the API's answer (the change is committed) to NSD answering the new
   address (polled every POLL_S); p50, p99 and the worst, and how many never came
   within MISS_S.

Phases 1 and 2 run for Knot today; controparte's columns and phase 3 need controparte
to serve transfers: until it does, they stop at a signed AXFR it refuses, say so, and
the bench exits 1 (after writing Knot's figures). Every run is bounded; other load on
the machine is waited out as bench/common.py's QuietGate does. Results: a Markdown
table on stdout and JSON in bench/out/.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import shutil
import socket
import statistics
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import dns.asyncquery
import dns.exception
import dns.message
import dns.rcode
import dns.rdatatype
import httpx

from common import (
    HOST,
    ROOT,
    ZONE,
    KnotPrimary,
    Load,
    NsdSecondary,
    PerfRun,
    QuietGate,
    ServerProcess,
    TsigKey,
    arguments,
    clean_env,
    finish,
    free_port,
    machine,
    measured,
    memory,
    run_dnsperf,
    tool,
    working_directory,
)
from controparte.store import open_store
from dns_bench import SETTINGS, export_zone, label_of, query_lines, write_lines, write_registry

CLIENT = (
    "raw reader: one signed AXFR request over TCP, then length-prefixed messages read"
    " with a 1 MiB buffer and their ANCOUNT summed up to the zone's record count; nothing"
    " parsed, the answers' TSIG not checked (Python, bench/xfr_bench.py)"
)
KEY_NAME = "bench.transfer."
ADMIN = "admin-token-for-the-xfr-bench-0123456789"
START_TIMEOUT = 300.0  # a server of 1,000,000 installations, loaded
XFR_TIMEOUT = 600.0
SAMPLE_S = 0.01
POLL_S = 0.002
MISS_S = 10.0
BIG_IO_TIMEOUT = 30.0  # per message of a transfer read back
STEADY_SHARE = 0.5  # phase 2's steady rate, of the highest rate the primary answers alone

GATE = QuietGate()


@dataclass(frozen=True)
class Profile:
    name: str
    sizes: tuple[int, ...]  # installations of the AXFR zones
    reps: int  # transfers per server and size
    qps_load: Load  # dnsperf's client shape for phase 2
    qps_seconds: int
    delay_size: int  # installations of the zone of phase 3
    changes: int  # phase 3
    rate: float  # changes a second, phase 3
    quiet_budget: float


FULL = Profile("full", (100_000, 1_000_000), 3, Load(4, 100), 5, 100_000, 1_000, 20.0, 60.0)
QUICK = Profile("quick", (10_000, 50_000), 2, Load(4, 100), 2, 10_000, 100, 20.0, 10.0)


class TransferError(RuntimeError):
    """A primary refused the AXFR, or ended it early."""


# -- the AXFR client ------------------------------------------------------------------------


@dataclass
class Transfer:
    seconds: float  # request sent -> last message read
    first_ms: float  # request sent -> first message read
    messages: int
    megabytes: float
    records: int
    server_cpu_s: float = 0.0
    foreign_cpu_s: float = 0.0  # other processes meanwhile


def _request(key: TsigKey) -> bytes:
    query = dns.message.make_query(ZONE, "AXFR")
    query.use_tsig(key.dns_key())
    wire = query.to_wire()
    return struct.pack("!H", len(wire)) + wire


def _message(stream: IO[bytes]) -> bytes:
    """The next message of a TCP stream (b"" at its end)."""
    head = stream.read(2)
    return stream.read(struct.unpack("!H", head)[0]) if len(head) == 2 else b""


def _rcode(message: bytes) -> str | None:
    """The error a message answers (None for NOERROR, or when it is too short)."""
    if len(message) < 12 or not message[3] & 0x0F:
        return None
    return dns.rcode.to_text(dns.rcode.Rcode(message[3] & 0x0F))


def read_axfr(port: int, key: TsigKey, expected: int) -> Transfer:
    """One AXFR of ZONE from HOST:`port` by CLIENT, until `expected` records came.
    TransferError when an answer is an error or the stream ends first."""
    request = _request(key)
    total = messages = size = 0
    first = 0.0
    with socket.create_connection((HOST, port), timeout=BIG_IO_TIMEOUT) as sock:
        stream = io.BufferedReader(socket.SocketIO(sock, "rb"), 1 << 20)
        started = time.perf_counter()
        sock.sendall(request)
        while total < expected:
            message = _message(stream)
            error = _rcode(message)
            if error is not None or len(message) < 12:
                raise TransferError(
                    f"the primary answered {error}"
                    if error
                    else f"the stream ended after {total} of {expected} records"
                )
            if not messages:
                first = time.perf_counter() - started
            total += struct.unpack_from("!H", message, 6)[0]
            messages += 1
            size += len(message) + 2
        seconds = time.perf_counter() - started
    return Transfer(
        round(seconds, 3), round(first * 1000, 1), messages, round(size / 1e6, 1), total
    )


def refused(port: int, key: TsigKey) -> str | None:
    """Why HOST:`port` does not serve a signed AXFR of ZONE (its first answer), or None."""
    try:
        with socket.create_connection((HOST, port), timeout=BIG_IO_TIMEOUT) as sock:
            sock.sendall(_request(key))
            message = _message(io.BufferedReader(socket.SocketIO(sock, "rb")))
    except OSError as exc:
        return f"no answer: {exc}"
    if len(message) < 12:
        return "the connection closed without an answer"
    error = _rcode(message)
    return None if error is None else f"it answers {error}"


def zone_records(zonefile: Path) -> int:
    """The records an AXFR of the exported zone holds: a line each, and the SOA again."""
    with zonefile.open(encoding="ascii") as lines:
        return 1 + sum(1 for line in lines if line.strip() and line[0] not in ";$")


@contextlib.contextmanager
def in_background(work: Callable[[threading.Event], None]) -> Iterator[None]:
    """`work(stop)` in a thread of its own while the block runs; `stop` is set when the
    block ends, and the thread is waited for (XFR_TIMEOUT at most)."""
    stop = threading.Event()
    thread = threading.Thread(target=work, args=(stop,), daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(XFR_TIMEOUT)


@contextlib.contextmanager
def peak_rss(pids: Sequence[int]) -> Iterator[list[float]]:
    """The highest Rss (MiB) of `pids` while the block runs, sampled every SAMPLE_S: the
    one item of the list yielded, filled in when the block ends."""
    peak = [memory(pids).rss_mib]

    def sample(stop: threading.Event) -> None:
        while not stop.wait(SAMPLE_S):
            peak[0] = max(peak[0], memory(pids).rss_mib)

    with in_background(sample):
        yield peak


# -- the primaries --------------------------------------------------------------------------


class Primary:
    """A primary serving ZONE: its name, port and processes."""

    name: str
    port: int

    def pids(self) -> list[int]:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError


class Knot(Primary):
    """`knotd` serving the exported file, transfers allowed to `key` (the harness's
    configuration: tests/secondaries.py)."""

    def __init__(self, work: Path, zonefile: Path, key: TsigKey, serial: int) -> None:
        self.name = "knot"
        self.server = KnotPrimary(work / f"knot-{zonefile.stem}", ZONE, zonefile, key)
        self.server.port = free_port(for_bench=True)  # the bench's range: free_port
        self.port = self.server.port
        self.server.start(timeout=START_TIMEOUT)
        try:
            self.server.wait_serial(serial, timeout=START_TIMEOUT)
        except BaseException:
            self.server.stop()
            raise

    def pids(self) -> list[int]:
        return self.server.pids()

    def stop(self) -> None:
        self.server.stop()


class Controparte(Primary):
    """`controparte serve` over the store, transfers allowed to `key`."""

    def __init__(self, data: Path, key: TsigKey, **env: str) -> None:
        self.name = "controparte"
        settings = {**SETTINGS, "CONTROPARTE_TRANSFER_ALLOW": f"key={key.name}", **env}
        self.server = ServerProcess(data, settings, for_bench=True, start_timeout=START_TIMEOUT)
        self.port = self.server.port
        self.server.start()

    def pids(self) -> list[int]:
        return self.server.pids()

    def stop(self) -> None:
        self.server.stop()


def transfer_key(data: Path, out: Path) -> TsigKey:
    """`controparte tsig-key --transfer KEY_NAME --out FILE` over the store in `data`."""
    argv = [sys.executable, "-m", "controparte", "tsig-key", "--transfer", KEY_NAME]
    done = subprocess.run(
        [*argv, "--out", str(out)],
        env=clean_env(CONTROPARTE_DATA=str(data), CONTROPARTE_ALLOW_NON_GLOBAL="1", **SETTINGS),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"controparte tsig-key --transfer failed: {done.stderr.strip()}")
    return TsigKey.from_bind_file(out)


def store_serial(data: Path) -> int:
    store = open_store(data)
    try:
        return store.serial()
    finally:
        store.close()


def serves(primary: Primary, key: TsigKey, figures: dict[str, Any]) -> bool:
    """Does `primary` serve a signed AXFR? When not, why goes into `figures["error"]`."""
    why = refused(primary.port, key)
    if why is not None:
        figures["error"] = f"{primary.name} does not serve the AXFR: {why}"
        print(f"    {figures['error']}", flush=True)
    return why is None


# -- phases 1 and 2: AXFR, and DNS answers meanwhile -------------------------------------------


def axfr_runs(primary: Primary, key: TsigKey, expected: int, reps: int) -> dict[str, Any]:
    """`reps` transfers from `primary`, each after the machine went quiet: medians of
    their times, the primary's CPU per transfer and its memory."""
    pids = primary.pids()
    idle = memory(pids).rss_mib
    runs: list[Transfer] = []
    with peak_rss(pids) as peak:
        for _ in range(reps):
            GATE.wait()
            with measured(pids) as usage:
                run = read_axfr(primary.port, key, expected)
            run.server_cpu_s = round(usage.server_cpu_s, 2)
            run.foreign_cpu_s = round(usage.foreign_cpu_s, 2)
            runs.append(run)
            print(
                f"    {primary.name:<12} AXFR {run.records:,} records in {run.seconds:.2f} s"
                f" (first message {run.first_ms:.0f} ms, {run.messages:,} messages,"
                f" {run.megabytes} MB), server {run.server_cpu_s:.2f} s CPU,"
                f" other load {run.foreign_cpu_s:.2f} s CPU",
                flush=True,
            )
    return {
        "seconds": statistics.median(r.seconds for r in runs),
        "first_ms": statistics.median(r.first_ms for r in runs),
        "server_cpu_s": statistics.median(r.server_cpu_s for r in runs),
        "messages": runs[0].messages,
        "megabytes": runs[0].megabytes,
        "rss_idle_mib": idle,
        "rss_peak_mib": peak[0],
        "runs": [asdict(r) for r in runs],
    }


@contextlib.contextmanager
def back_to_back(primary: Primary, key: TsigKey, expected: int) -> Iterator[list[Transfer]]:
    """Transfers from `primary`, one after the other, while the block runs (in a thread
    of this process); the list of those done, filled in as they end."""
    done: list[Transfer] = []
    failures: list[str] = []

    def transfer(stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                done.append(read_axfr(primary.port, key, expected))
            except (TransferError, OSError) as exc:
                failures.append(str(exc))
                return

    with in_background(transfer):
        yield done
    if failures:
        raise TransferError(f"a transfer during the DNS load failed: {failures[0]}")


def qps_during_axfr(
    primary: Primary, key: TsigKey, expected: int, queries: Path, profile: Profile
) -> dict[str, Any]:
    """dnsperf against `primary` alone, then while transfers run back to back: the
    highest rate (`profile.qps_load`), and a steady rate of STEADY_SHARE of the highest
    alone (the issue's "the primary's answers do not drop below 0.8x of their rate"; on
    a machine of few CPUs the highest rate measures mostly how they are shared)."""

    def dnsperf(what: str, rate: int | None = None) -> PerfRun:
        GATE.wait()
        run = run_dnsperf(
            primary.port,
            queries,
            profile.qps_load,
            primary.pids(),
            what=what,
            seconds=profile.qps_seconds,
            rate=rate,
        )
        print(
            f"    {primary.name:<12} {what:<26} {run.qps:>9,.0f} qps, {run.lost} lost,"
            f" other load {run.foreign_cpu_s:.2f} s CPU",
            flush=True,
        )
        return run

    top = dnsperf("highest, alone")
    steady = int(round(top.qps * STEADY_SHARE, -2))
    alone = dnsperf(f"{steady:,} qps, alone", steady)
    with back_to_back(primary, key, expected) as during_top:
        top_during = dnsperf("highest, during AXFRs")
    with back_to_back(primary, key, expected) as during_steady:
        steady_during = dnsperf(f"{steady:,} qps, during AXFRs", steady)
    return {
        "load": str(profile.qps_load),
        "seconds": profile.qps_seconds,
        "highest_alone_qps": top.qps,
        "highest_during_qps": top_during.qps,
        "highest_ratio": round(top_during.qps / top.qps, 3) if top.qps else None,
        "steady_rate": steady,
        "steady_alone_qps": alone.qps,
        "steady_during_qps": steady_during.qps,
        "steady_ratio": round(steady_during.qps / alone.qps, 3) if alone.qps else None,
        "steady_lost_during": steady_during.lost,
        "transfers_during": [len(during_top), len(during_steady)],
        "runs": [asdict(run) for run in (top, alone, top_during, steady_during)],
    }


def transfers(profile: Profile, names: Sequence[str], work: Path, result: dict[str, Any]) -> None:
    """Phases 1 and 2, size by size, one primary at a time."""
    biggest = max(profile.sizes)
    for size in profile.sizes:
        print(f"== AXFR of {size:,} installations", flush=True)
        GATE.phase(profile.quiet_budget)
        data = work / f"data-{size}"
        zonefile = work / f"zone-{size}.zone"
        write_registry(data, size)
        export_zone(data, zonefile)
        expected = zone_records(zonefile)
        key = transfer_key(data, work / f"key-{size}")
        queries = write_lines(
            work / f"queries-{size}.txt", query_lines(size, 50_000, size, distinct=False)
        )
        at: dict[str, Any] = {"records": expected}
        for name in names:
            figures: dict[str, Any] = {}
            at[name] = figures
            primary: Primary = (
                Knot(work, zonefile, key, store_serial(data))
                if name == "knot"
                else Controparte(data, key)
            )
            try:
                if not serves(primary, key, figures):
                    continue
                figures |= axfr_runs(primary, key, expected, profile.reps)
                if size == biggest:
                    figures["dns"] = qps_during_axfr(primary, key, expected, queries, profile)
            finally:
                primary.stop()
        result["sizes"][str(size)] = at
        shutil.rmtree(data)


# -- phase 3: a change to its answer on an NSD secondary --------------------------------------


async def answered_at(
    nsd: NsdSecondary, label: str, address: str, committed: float
) -> float | None:
    """Seconds from `committed` until `nsd` answers `address` for `label` (None: not
    within MISS_S)."""
    query = dns.message.make_query(f"{label}.{ZONE}", "A")
    while time.monotonic() - committed < MISS_S:
        with contextlib.suppress(dns.exception.Timeout):
            response = await dns.asyncquery.udp(query, HOST, port=nsd.port, timeout=0.5)
            for rrset in response.answer:
                if rrset.rdtype == dns.rdatatype.A and any(
                    rdata.address == address for rdata in rrset
                ):
                    return time.monotonic() - committed
        await asyncio.sleep(POLL_S)
    return None


async def steady_changes(url: str, nsd: NsdSecondary, profile: Profile) -> list[float | None]:
    """`profile.changes` address changes through the HTTP API at `profile.rate` a
    second (installation i gets a new address), each watched on `nsd` until served."""
    headers = {"authorization": f"Bearer {ADMIN}"}
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=30) as http:
        loop = asyncio.get_running_loop()
        start = loop.time()
        watchers = []
        for i in range(profile.changes):
            await asyncio.sleep(max(0.0, start + i / profile.rate - loop.time()))
            address = f"100.64.{i >> 8 & 255}.{i & 255}"
            answer = await http.patch(f"/v1/installations/B{i:07d}", json={"ip": address})
            answer.raise_for_status()
            committed = time.monotonic()
            watchers.append(asyncio.create_task(answered_at(nsd, label_of(i), address, committed)))
        return list(await asyncio.gather(*watchers))


def percentile(values: Sequence[float], share: float) -> float:
    """The nearest-rank percentile (`share` of 1)."""
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, round(share * len(ordered) + 0.5) - 1))]


def propagation(profile: Profile, work: Path, result: dict[str, Any]) -> None:
    """Phase 3 (controparte only)."""
    print(
        f"== update -> answer on NSD: {profile.changes:,} changes at {profile.rate:g}/s,"
        f" zone of {profile.delay_size:,}",
        flush=True,
    )
    data = work / "data-delay"
    write_registry(data, profile.delay_size)
    key = transfer_key(data, work / "key-delay")
    nsd = NsdSecondary(work / "nsd", ZONE, (HOST, 0), key)
    nsd.port = free_port(for_bench=True)  # the bench's range: free_port
    primary = Controparte(
        data,
        key,
        CONTROPARTE_NOTIFY=f"{HOST}:{nsd.port} key={key.name}",
        CONTROPARTE_ADMIN_TOKEN=ADMIN,
    )
    figures: dict[str, Any] = {"changes": profile.changes, "rate": profile.rate}
    result["propagation"] = figures
    try:
        if not serves(primary, key, figures):
            return
        nsd.primary = (HOST, primary.port)
        nsd.start()
        nsd.wait_serial(primary.server.serial(), timeout=START_TIMEOUT)
        primary.server.wait_http()
        GATE.wait()
        delays = asyncio.run(steady_changes(primary.server.http_url, nsd, profile))
    finally:
        nsd.stop()
        primary.stop()
    served = [d * 1000 for d in delays if d is not None]
    figures |= {
        "missed": len(delays) - len(served),
        "p50_ms": round(percentile(served, 0.50), 1) if served else None,
        "p99_ms": round(percentile(served, 0.99), 1) if served else None,
        "max_ms": round(max(served), 1) if served else None,
    }
    print(
        f"    p50 {figures['p50_ms']} ms, p99 {figures['p99_ms']} ms, worst"
        f" {figures['max_ms']} ms, {figures['missed']} not served within {MISS_S:g} s",
        flush=True,
    )


# -- the report ----------------------------------------------------------------------------


def _cell(value: Any, digits: int = 2) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def _ratio(value: Any, reference: Any) -> float | None:
    if not isinstance(value, int | float) or not isinstance(reference, int | float):
        return None
    return round(value / reference, 2) if reference else None


def table(result: dict[str, Any]) -> tuple[str, dict[str, bool]]:
    """The figures as a Markdown table (Knot, controparte, their ratio) and the
    verdict on each of the issue's targets."""
    rows: list[tuple[str, Any, Any, int]] = []
    for size, at in result["sizes"].items():
        knot, ours = at.get("knot", {}), at.get("controparte", {})
        count = f"{int(size):,}"
        for label, key, digits in (
            (f"AXFR of {count} installations, s (median)", "seconds", 2),
            (f"  first message, ms ({count})", "first_ms", 0),
            (f"  messages ({count})", "messages", 0),
            (f"  MB sent ({count})", "megabytes", 1),
            (f"  primary CPU s per AXFR ({count})", "server_cpu_s", 2),
            (f"  primary Rss before, MiB ({count})", "rss_idle_mib", 0),
            (f"  primary Rss peak during the AXFRs, MiB ({count})", "rss_peak_mib", 0),
        ):
            rows.append((label, knot.get(key), ours.get(key), digits))
        if "dns" in knot or "dns" in ours:
            kd, od = knot.get("dns", {}), ours.get("dns", {})
            load = kd.get("load") or od.get("load")
            for label, key, digits in (
                (f"DNS qps, highest, alone (`dnsperf {load}`, {count})", "highest_alone_qps", 0),
                ("  highest, during back-to-back AXFRs", "highest_during_qps", 0),
                ("  during / alone", "highest_ratio", 2),
                ("DNS qps at a steady rate (half the highest alone), alone", "steady_alone_qps", 0),
                ("  steady rate, during back-to-back AXFRs", "steady_during_qps", 0),
                ("  during / alone", "steady_ratio", 2),
                ("  queries lost during", "steady_lost_during", 0),
            ):
                rows.append((label, kd.get(key), od.get(key), digits))
    delay = result.get("propagation", {})
    for label, key in (("p50", "p50_ms"), ("p99", "p99_ms"), ("worst", "max_ms")):
        rows.append((f"update -> NSD answer, {label}, ms", None, delay.get(key), 0))
    lines = [
        f"AXFR client: {result['client']}",
        "",
        "| figure | Knot | controparte | controparte/Knot |",
        "|---|---:|---:|---:|",
    ]
    for label, knot_value, ours_value, digits in rows:
        cells = [_cell(knot_value, digits), _cell(ours_value, digits)]
        cells.append(_cell(_ratio(ours_value, knot_value)))
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    biggest = max(result["sizes"], key=int)
    big = result["sizes"][biggest]
    ours_big = big.get("controparte", {})
    time_ratio = _ratio(ours_big.get("seconds"), big.get("knot", {}).get("seconds"))
    dns_ratio = ours_big.get("dns", {}).get("steady_ratio")
    p99 = delay.get("p99_ms")
    verdict = {
        f"AXFR of {int(biggest):,} within 3x Knot's time": time_ratio is not None
        and time_ratio <= 3,
        "DNS answers at a steady rate during AXFRs >= 0.8x": dns_ratio is not None
        and dns_ratio >= 0.8,
        "update -> NSD answer p99 < 1 s, none missed": p99 is not None
        and p99 < 1000
        and delay.get("missed") == 0,
    }
    return "\n".join(lines), verdict


def errors(result: dict[str, Any]) -> list[str]:
    found = [
        figures["error"]
        for at in result["sizes"].values()
        for figures in at.values()
        if isinstance(figures, dict) and "error" in figures
    ]
    if "error" in result.get("propagation", {}):
        found.append(result["propagation"]["error"])
    return found


def main(argv: Sequence[str] | None = None) -> int:
    description = __doc__.split("\n\n")[0] if __doc__ else None
    parser = arguments(description, "small zones, few runs (smoke)")
    parser.add_argument(
        "--only", choices=("knot", "controparte"), help="one primary only (knot: no phase 3)"
    )
    args = parser.parse_args(argv)
    if args.report is not None:
        report = json.loads(args.report.read_text(encoding="utf-8"))
        text, verdict = table(report)
        print(text)
        print_verdict(verdict, errors(report))
        return 0
    profile = QUICK if args.quick else FULL
    names = [args.only] if args.only else ["knot", "controparte"]
    for name in ("dnsperf", "knotd", "nsd"):
        tool(name)
    started = time.monotonic()
    result: dict[str, Any] = {
        "command": " ".join(["bench/xfr_bench.py", *(argv or sys.argv[1:])]),
        "profile": asdict(profile) | {"qps_load": str(profile.qps_load)},
        "client": CLIENT,
        "started": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(
            {
                "knotd": [tool("knotd"), "--version"],
                "nsd": [tool("nsd"), "-v"],
                "dnsperf": [tool("dnsperf"), "-h"],
            }
        ),
        "sizes": {},
    }
    print(f"controparte transfer bench ({profile.name}) on {result['machine']}", flush=True)
    with working_directory("controparte-xfr-", args.workdir, args.keep) as work:
        transfers(profile, names, work, result)
        if "controparte" in names:
            GATE.phase(profile.quiet_budget)
            propagation(profile, work, result)
    verdict, out = finish(f"xfr-bench-{profile.name}", result, started, GATE, table)
    failed = errors(result)
    print_verdict(verdict, failed)
    print(f"duration {result['duration_s']:.0f} s; JSON: {out.relative_to(ROOT)}")
    return 1 if failed else 0


def print_verdict(verdict: dict[str, bool], failed: Sequence[str]) -> None:
    for check, ok in verdict.items():
        print(f"{'met    ' if ok else 'NOT met'}  {check}")
    for error in failed:
        print(f"FAILED   {error}")


if __name__ == "__main__":
    sys.exit(main())
