"""Abuse benchmark: a malformed-packet flood and TCP slot holding, against controparte,
Knot and NSD serving the same zone, over loopback (docs/HARDENING.md).

    .venv/bin/python bench/flood_bench.py                 # 20 s per run, 10,000 packets/s
    .venv/bin/python bench/flood_bench.py --quick         # 4 s per run (smoke)
    .venv/bin/python bench/flood_bench.py --servers controparte   # this service alone
    .venv/bin/python bench/flood_bench.py --report bench/out/flood-bench-....json

One zone of 1,000 installations: controparte serves its registry (`controparte serve`,
defaults), Knot (`knotd`) and NSD (`nsd -d`) the zone file `controparte zone export`
writes from it; each on its own port of 127.0.0.1, measured one after the other.

1. Cached answers: a sender process sends valid queries (a fixed set of 1,000, so
   each server answers from its cache or its fast path) at RATE a second for SECONDS;
   server CPU per packet.
2. Malformed flood: the same sender sends malformed packets of every kind of
   `tests/malformed.py` (short, response, opcode, qdcount, question, qtype, records,
   random bytes; IDs and names random, so no answer cache helps), mixed, at RATE a
   second, while this process sends valid queries at VALID_RATE a second and records
   how many are answered within 100 ms; server CPU per packet.
3. TCP slot holding: an attacker process on 127.0.0.2 opens TCP connections as fast
   as the server lets it (up to 2,000 at once) and holds them idle, opening a new one
   for each the server closes, while a client on 127.0.0.3 asks one query over TCP
   every 100 ms (1 s timeout): the answers it gets, of those it asked.

CPU is utime+stime of each server's whole process tree from /proc, over the run (it
includes the valid queries of phase 2), kept apart too (user: the server's own code;
system: the kernel's, mostly receiving and sending). Phases 1 and 2 run ROUNDS times in
turn, the order alternating; the table gives the median of each and of the ratios.
Results: a table on stdout and JSON in bench/out/. Other processes on the machine
disturb the figures: the JSON records the load average before each run.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import json
import multiprocessing
import os
import random
import select
import selectors
import socket
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import dns.message
import dns.query

sys.path.insert(1, str(Path(__file__).resolve().parents[1]))  # the repository: `tests`
from tests.malformed import KINDS, packets
from tests.processes import CLK_TCK, stat_fields
from tests.secondaries import add_installations

from common import (
    HOST,
    ZONE,
    LoggedProcess,
    free_port,
    load_average,
    machine,
    tool,
    working_directory,
    write_report,
)
from controparte.dns.zone import load_zone
from controparte.dns.zonefile import zone_text
from controparte.model import ZoneConfig
from dns_bench import ControparteServer, KnotServer, Server, serving

INSTALLATIONS = 1_000
PREFIX = "host"
POOL = 2_000  # distinct packets per kind, sent round-robin
TICK = 0.01  # the senders send in bursts of RATE * TICK packets
WITHIN = 0.1  # an answer counts when it comes within this many seconds
ATTACKER, VICTIM = "127.0.0.2", "127.0.0.3"
MAX_HELD = 2_000
TCP_QUERY_EVERY = 0.1
TCP_TIMEOUT = 1.0


# -- the servers -------------------------------------------------------------------------


class Nsd(Server):
    """NSD (`nsd -d`) over `zonefile`, defaults but its paths (as `KnotServer` for Knot)."""

    def __init__(self, workdir: Path, zonefile: Path) -> None:
        super().__init__("nsd", workdir, free_port(for_bench=True))
        home = self.home = workdir / "nsd"
        home.mkdir(parents=True, exist_ok=True)
        self.config = home / "nsd.conf"
        self.config.write_text(
            f"""server:
    ip-address: {HOST}@{self.port}
    do-ip6: no
    username: ""
    chroot: ""
    zonesdir: "{home}"
    database: ""
    zonelistfile: "{home / "zone.list"}"
    xfrdfile: "{home / "xfrd.state"}"
    xfrdir: "{home}"
    pidfile: "{home / "nsd.pid"}"
    verbosity: 1
    zonefiles-write: 0
remote-control:
    control-enable: no
zone:
    name: "{ZONE}"
    zonefile: "{zonefile}"
""",
            encoding="ascii",
        )

    def spawn(self) -> LoggedProcess:
        argv = [tool("nsd"), "-d", "-c", str(self.config)]
        return LoggedProcess(argv, self.log_path, os.environ, new_session=True)


# -- the load ---------------------------------------------------------------------------


def valid_queries(count: int, seed: int) -> list[bytes]:
    """`count` valid A queries of existing names, random IDs."""
    rng = random.Random(seed)
    out = []
    for _ in range(count):
        message = dns.message.make_query(f"{PREFIX}-{rng.randrange(INSTALLATIONS)}.{ZONE}", "A")
        message.id = rng.randrange(65536)
        out.append(message.to_wire())
    return out


def malformed_mix() -> list[bytes]:
    """POOL packets of every kind, interleaved."""
    pools = [packets(kind, POOL, ZONE) for kind in KINDS]
    return [pool[i] for i in range(POOL) for pool in pools]


def send_at(port: int, wires: list[bytes], rate: int, seconds: float) -> None:
    """Send `wires` round-robin to HOST:`port` at `rate` a second for `seconds` (a
    process of its own); replies are read and thrown away."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.setblocking(False)
        burst = max(1, round(rate * TICK))
        started = time.monotonic()
        sent = 0
        while (now := time.monotonic()) - started < seconds:
            due = int((now - started) * rate)
            while sent < due:
                with contextlib.suppress(BlockingIOError):
                    sock.sendto(wires[sent % len(wires)], (HOST, port))
                sent += 1
                if sent % burst == 0:
                    break
            with contextlib.suppress(BlockingIOError, ConnectionError):
                while sock.recv(65535):
                    pass
            time.sleep(TICK / 4)


@dataclass
class Probe:
    asked: int
    answered_within: int
    answered_late: int

    @property
    def within_pct(self) -> float:
        return 100.0 * self.answered_within / max(1, self.asked)


def probe_udp(port: int, rate: int, seconds: float) -> Probe:
    """Valid queries at `rate` a second for `seconds` (plus a last WITHIN): how many
    were answered within WITHIN."""
    queries = valid_queries(int(rate * seconds) + 1, seed=7)
    asked: dict[int, float] = {}
    within = late = 0
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.setblocking(False)
        started = time.monotonic()
        index = 0
        while (now := time.monotonic()) - started < seconds + 1.0:
            if now - started < seconds and index < (now - started) * rate:
                wire = queries[index]
                qid = index & 0xFFFF
                asked[qid] = now
                sock.sendto(qid.to_bytes(2, "big") + wire[2:], (HOST, port))
                index += 1
            if select.select([sock], [], [], 0.001)[0]:
                with contextlib.suppress(BlockingIOError):
                    while True:
                        reply = sock.recv(65535)
                        sent_at = asked.pop(int.from_bytes(reply[:2], "big"), None)
                        if sent_at is not None:
                            if time.monotonic() - sent_at <= WITHIN:
                                within += 1
                            else:
                                late += 1
    return Probe(index, within, late)


@dataclass
class FloodRun:
    kind: str  # "cached answers" or "malformed"
    rate: int
    seconds: float
    packets: int
    server_cpu_s: float
    load_before: str
    probe: dict[str, Any] | None = None
    cpu_us_per_packet: float = 0.0
    user_us_per_packet: float = 0.0
    system_us_per_packet: float = 0.0


def flood(server: Server, wires: list[bytes], kind: str, args: argparse.Namespace) -> FloodRun:
    load = load_average()
    pids = server.pids()
    context = multiprocessing.get_context("spawn")
    sender = context.Process(
        target=send_at, args=(server.port, wires, args.rate, args.seconds), daemon=True
    )
    user, system = user_system_seconds(pids)
    sender.start()
    probe = probe_udp(server.port, args.valid_rate, args.seconds) if kind == "malformed" else None
    sender.join(args.seconds + 30)
    user_after, system_after = user_system_seconds(pids)
    user, system = user_after - user, system_after - system
    sent = int(args.rate * args.seconds) + (probe.asked if probe else 0)
    return FloodRun(
        kind,
        args.rate,
        args.seconds,
        sent,
        round(user + system, 3),
        load,
        None if probe is None else {**asdict(probe), "within_pct": round(probe.within_pct, 2)},
        round((user + system) / sent * 1e6, 2),
        round(user / sent * 1e6, 2),
        round(system / sent * 1e6, 2),
    )


def user_system_seconds(pids: Sequence[int]) -> tuple[float, float]:
    """CPU seconds in user and in system mode used so far by `pids` (every thread)."""
    user = system = 0
    for pid in pids:
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = stat_fields(pid)
            user += int(fields[11])
            system += int(fields[12])
    return user / CLK_TCK, system / CLK_TCK


def hold_slots(port: int, seconds: float) -> None:
    """The attacker (a process of its own): as many idle TCP connections from ATTACKER
    as the server keeps, each one it closes replaced, for `seconds`."""
    held = selectors.DefaultSelector()
    started = time.monotonic()
    while time.monotonic() - started < seconds:
        for _ in range(min(100, MAX_HELD - len(held.get_map()))):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setblocking(False)
            sock.bind((ATTACKER, 0))
            if sock.connect_ex((HOST, port)) not in (0, errno.EINPROGRESS):
                sock.close()
                break
            held.register(sock, selectors.EVENT_READ)
        for key, _ in held.select(0.05):
            conn = key.fileobj
            assert isinstance(conn, socket.socket)
            with contextlib.suppress(OSError):
                if conn.recv(1):
                    continue
            held.unregister(conn)
            conn.close()
    for key in list(held.get_map().values()):
        assert isinstance(key.fileobj, socket.socket)
        key.fileobj.close()


@dataclass
class SlotRun:
    asked: int
    answered: int
    load_before: str


def slots(server: Server, args: argparse.Namespace) -> SlotRun:
    load = load_average()
    context = multiprocessing.get_context("spawn")
    attacker = context.Process(target=hold_slots, args=(server.port, args.seconds), daemon=True)
    attacker.start()
    time.sleep(min(2.0, args.seconds / 4))  # the attacker takes what it can first
    query = dns.message.make_query(f"{PREFIX}-1.{ZONE}", "A")
    asked = answered = 0
    deadline = time.monotonic() + args.seconds - min(2.0, args.seconds / 4) - 0.5
    while time.monotonic() < deadline:
        began = time.monotonic()
        asked += 1
        with contextlib.suppress(dns.exception.DNSException, OSError, EOFError):
            reply = dns.query.tcp(query, HOST, timeout=TCP_TIMEOUT, port=server.port, source=VICTIM)
            answered += bool(reply.answer)
        time.sleep(max(0.0, TCP_QUERY_EVERY - (time.monotonic() - began)))
    attacker.join(args.seconds + 30)
    return SlotRun(asked, answered, load)


# -- the run ----------------------------------------------------------------------------

SERVERS = ("controparte", "knot", "nsd")


def run(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    data = work / "data"
    data.mkdir()
    controparte = ControparteServer(work, data, 1, "flood")
    with controparte.serve.registry() as registry:
        add_installations(registry, PREFIX, INSTALLATIONS)
        settings = controparte.serve.settings
        zone = load_zone(registry.store, ZoneConfig.from_settings(settings))
    zonefile = work / "zone.db"
    zonefile.write_text(zone_text(zone), encoding="ascii")
    servers = [controparte, KnotServer(work, zonefile, "flood"), Nsd(work, zonefile)]
    servers = [
        server for server, kind in zip(servers, SERVERS, strict=True) if kind in args.servers
    ]
    cached = valid_queries(1_000, seed=3)
    malformed = malformed_mix()
    result: dict[str, Any] = {
        "machine": machine({"knot": [tool("knotd"), "-V"], "nsd": [tool("nsd"), "-v"]}),
        "options": {k: str(v) for k, v in vars(args).items()},
        "servers": {},
    }
    for server in servers:
        with serving(server, f"{PREFIX}-1"):
            print(f"== {server.name}", flush=True)
            figures: dict[str, Any] = {"cached": [], "malformed": []}
            for number in range(args.rounds):
                order = [("cached", cached), ("malformed", malformed)]
                for kind, wires in order if number % 2 == 0 else reversed(order):
                    run = asdict(flood(server, wires, kind, args))
                    figures[kind].append(run)
                    print(f"   {kind}: {run}", flush=True)
            figures["slots"] = asdict(slots(server, args))
            result["servers"][server.name] = figures
            print(json.dumps(figures), flush=True)
    return result


def table(result: dict[str, Any]) -> str:
    lines = [
        "| server | valid answered within 100 ms under the flood | CPU us per malformed packet"
        " (user + system) | CPU us per cached answer (user + system) | reject/answer"
        " (median; each round) | TCP answers to the other client |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for name, f in result["servers"].items():
        bad, good = f["malformed"], f["cached"]
        if isinstance(bad, dict):  # a report of one round, before rounds
            bad, good = [bad], [good]
        asked = sum(run["probe"]["asked"] for run in bad)
        within = sum(run["probe"]["answered_within"] for run in bad)
        ratios = [
            b["cpu_us_per_packet"] / max(g["cpu_us_per_packet"], 1e-9)
            for b, g in zip(bad, good, strict=True)
        ]
        lines.append(
            f"| {name} | {100.0 * within / max(1, asked):.1f}% ({within}/{asked})"
            f" | {_cpu(bad)} | {_cpu(good)} | {statistics.median(ratios):.2f};"
            f" {', '.join(f'{r:.2f}' for r in ratios)}"
            f" | {f['slots']['answered']}/{f['slots']['asked']} |"
        )
    return "\n".join(lines)


def _cpu(runs: list[dict[str, Any]]) -> str:
    """The median CPU per packet of `runs`, and its user and system parts (medians)."""
    total, user, system = (
        statistics.median(run.get(field, 0.0) for run in runs)
        for field in ("cpu_us_per_packet", "user_us_per_packet", "system_us_per_packet")
    )
    return f"{total:.1f} ({user:.1f} + {system:.1f})"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=20.0, help="seconds per run")
    parser.add_argument("--rate", type=int, default=10_000, help="flood packets a second")
    parser.add_argument("--valid-rate", type=int, default=100, help="valid queries a second")
    parser.add_argument("--rounds", type=int, default=3, help="runs of phases 1 and 2 each")
    parser.add_argument("--quick", action="store_true", help="4 s per run (smoke)")
    parser.add_argument(
        "--servers",
        nargs="+",
        choices=SERVERS,
        default=list(SERVERS),
        help="the servers to measure (default: all three)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the working directory")
    parser.add_argument("--workdir", type=Path, default=None, help="parent of the working dir")
    parser.add_argument("--report", type=Path, metavar="JSON", help="the table of a JSON")
    args = parser.parse_args(argv)
    if args.report is not None:
        print(table(json.loads(args.report.read_text())))
        return 0
    if args.quick:
        args.seconds = 4.0
        args.rounds = 1
    with working_directory("flood-bench-", args.workdir, args.keep) as work:
        result = run(args, work)
    out = write_report("flood-bench", result)
    print()
    print(table(result))
    print(f"\n{out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
