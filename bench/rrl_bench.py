"""Response rate limiting benchmark: what RRL costs legitimate traffic, and what a flood
from one source gets from controparte and from Knot, over loopback.

    .venv/bin/python bench/rrl_bench.py              # the full run (about 10 minutes)
    .venv/bin/python bench/rrl_bench.py --quick      # a smoke run
    .venv/bin/python bench/rrl_bench.py --report bench/out/rrl-bench-....json

1. A registry of N installations; controparte serves it twice, with RRL off and with
   RRL on (`rrl = on`, the default limits: 20 answers a second per /24 and question,
   10 errors, slip 2, window 15), each from a copy of the data directory; Knot serves
   its export with its `rrl` module at the same rate and slip.
2. Legitimate traffic from many sources: one `dnsperf` per source address
   (127.0.K.1, each its own /24), all at once, each at a capped rate over a file of
   A queries for every name, so that no source asks one question more than a few
   times a second (within budget). Server CPU per answer, RRL on and off, one run of
   each per round, the order alternating so that drift hits both alike; the median
   of the rounds' ratios (other load on a shared machine moves single runs by more
   than RRL costs). And, in this process, the CPU `Limiter.check` itself takes per
   answer of the same traffic (a clock moved by hand). Target: on/off at most 1.1,
   nothing lost, nothing limited.
3. Floods from one source (127.0.0.1) at a fixed rate, by a client here that counts
   what comes back: full answers, truncated slips (TC=1), nothing (dropped): the same
   question again and again (a reflection attack), then random names (NXDOMAIN), on
   controparte with RRL on, Knot with RRL, and controparte with RRL off for reference.

Bounded: dnsperf `-l`, subprocess timeouts, start-up deadlines. Results: a Markdown
table on stdout and JSON in bench/out/.
"""

from __future__ import annotations

import json
import random
import re
import shutil
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from common import (
    HOST,
    ROOT,
    KnotPrimary,
    QuietGate,
    ServerProcess,
    arguments,
    clean_env,
    cpu_seconds,
    finish,
    foreign_cpu_seconds,
    free_port,
    machine,
    tool,
    working_directory,
)

ZONE = "bp.controparte.test."
SETTINGS = {"CONTROPARTE_ZONE": ZONE, "CONTROPARTE_NS": "ns1=127.0.0.1"}
RATE, SLIP = 20, 2  # Knot's rrl module is given controparte's defaults
GATE = QuietGate()
DNSPERF_SLACK = 30.0  # seconds a dnsperf run may take beyond its `-l`


@dataclass(frozen=True)
class Profile:
    name: str
    installations: int
    sources: int
    per_source_qps: int
    seconds: int
    rounds: int
    flood_qps: int
    flood_seconds: float
    quiet_budget: float


FULL = Profile("full", 1000, 16, 500, 8, 7, 5000, 10.0, 200.0)
QUICK = Profile("quick", 200, 4, 200, 2, 1, 1000, 2.0, 10.0)


# -- the servers ---------------------------------------------------------------------------


def build_registry(data: Path, n: int) -> list[str]:
    """A registry of `n` installations in `data`; their labels."""
    labels = [f"host-{i}" for i in range(n)]
    serve = ServerProcess(data, SETTINGS)
    with serve.registry() as registry:
        for i, label in enumerate(labels):
            registry.add(f"BENCH-{i}", label, ipv4=f"192.0.2.{i % 250 + 1}")
    return labels


def export_zone(data: Path, out: Path) -> None:
    """`controparte zone export` of the registry in `data` to `out`."""
    env = clean_env(CONTROPARTE_DATA=str(data), CONTROPARTE_ALLOW_NON_GLOBAL="1", **SETTINGS)
    command = [sys.executable, "-m", "controparte", "zone", "export", "--out", str(out)]
    subprocess.run(command, env=env, check=True, capture_output=True, timeout=300)


class KnotWithRrl(KnotPrimary):
    """Knot serving the exported zone, with its `rrl` module at RATE and SLIP."""

    def configure(self) -> None:
        super().configure()
        module = f"mod-rrl:\n  - id: bench\n    rate-limit: {RATE}\n    slip: {SLIP}\n"
        text = self.config.read_text(encoding="ascii").replace("\nzone:\n", f"\n{module}zone:\n")
        acl = "    acl: [transfer]\n"
        self._write(text.replace(acl, f"{acl}    module: mod-rrl/bench\n"))


@dataclass
class Served:
    """A server under test: its name, port and processes (for CPU), and its metrics."""

    name: str
    port: int
    pids: Sequence[int]
    metrics_url: str | None = None

    def limited(self) -> tuple[int, int]:
        """(dropped, slipped) so far, from controparte's metrics ((0, 0) without)."""
        if self.metrics_url is None:
            return 0, 0
        text = httpx.get(self.metrics_url, timeout=10).text
        found = dict(re.findall(r"^(controparte_dns_rrl_\w+_total) (\d+)", text, re.MULTILINE))
        return (
            int(found.get("controparte_dns_rrl_dropped_total", 0)),
            int(found.get("controparte_dns_rrl_slipped_total", 0)),
        )


def controparte(data: Path, rrl: str) -> tuple[ServerProcess, Served]:
    serve = ServerProcess(data, {**SETTINGS, "CONTROPARTE_RRL": rrl}, for_bench=True)
    serve.start()
    serve.wait_http()
    served = Served(f"controparte rrl {rrl}", serve.port, serve.pids(), serve.http_url + "/metrics")
    return serve, served


# -- legitimate traffic from many sources ---------------------------------------------------


_COMPLETED = re.compile(r"Queries completed:\s+(\d+)")
_LOST = re.compile(r"Queries lost:\s+(\d+)")


def many_sources(served: Served, queries: Path, profile: Profile) -> dict[str, Any]:
    """One dnsperf per source address, all at once; what the server spent per answer."""
    commands = [
        [
            *(tool("dnsperf"), "-s", HOST, "-p", str(served.port), "-d", str(queries)),
            *("-a", f"127.0.{k}.1", "-c", "1", "-q", "50"),
            *("-Q", str(profile.per_source_qps), "-l", str(profile.seconds)),
        ]
        for k in range(1, profile.sources + 1)
    ]
    waited = GATE.wait()
    limited = served.limited()
    foreign, cpu, started = foreign_cpu_seconds(), cpu_seconds(served.pids), time.monotonic()
    runs = [
        subprocess.Popen(c, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for c in commands
    ]
    outputs = [run.communicate(timeout=profile.seconds + DNSPERF_SLACK)[0] for run in runs]
    server_cpu = cpu_seconds(served.pids) - cpu
    wall = time.monotonic() - started
    foreign = foreign_cpu_seconds() - foreign
    completed = sum(int(_found(_COMPLETED, out)) for out in outputs)
    lost = sum(int(_found(_LOST, out)) for out in outputs)
    dropped, slipped = (a - b for a, b in zip(served.limited(), limited, strict=True))
    return {
        "answers": completed,
        "lost": lost,
        "rrl_dropped": dropped,
        "rrl_slipped": slipped,
        "server_cpu_s": round(server_cpu, 3),
        "cpu_us_per_answer": round(server_cpu / max(1, completed) * 1e6, 2),
        "wall_s": round(wall, 2),
        "foreign_cpu_s": round(foreign, 2),
        "waited_quiet_s": round(waited, 1),
    }


def _found(pattern: re.Pattern[str], text: str) -> str:
    match = pattern.search(text)
    if match is None:
        raise RuntimeError(f"dnsperf output without {pattern.pattern!r}:\n{text}")
    return match.group(1)


def cost(
    profile: Profile, servers: Sequence[Served], labels: Sequence[str], work: Path
) -> dict[str, Any]:
    """Rounds of `many_sources` on RRL off and on in turn (the order alternating); the
    ratio on/off of each round, and the limiter's own cost per answer."""
    queries = work / "queries.txt"
    queries.write_text("".join(f"{label}.{ZONE} A\n" for label in labels), encoding="ascii")
    runs: dict[str, list[dict[str, Any]]] = {s.name: [] for s in servers}
    for number in range(profile.rounds):
        for served in servers if number % 2 == 0 else reversed(servers):
            run = many_sources(served, queries, profile)
            runs[served.name].append(run)
            print(f"   {served.name}: {run}", flush=True)
    off, on = (runs[s.name] for s in servers)
    ratios = [b["cpu_us_per_answer"] / a["cpu_us_per_answer"] for a, b in zip(off, on, strict=True)]
    medians = {
        name: statistics.median(r["cpu_us_per_answer"] for r in got) for name, got in runs.items()
    }
    return {
        "runs": runs,
        "median_cpu_us_per_answer": medians,
        "ratios": [round(r, 3) for r in ratios],
        "median_ratio": round(statistics.median(ratios), 3),
        "check_us": check_cost(labels, profile),
    }


def check_cost(labels: Sequence[str], profile: Profile, answers: int = 200_000) -> float:
    """CPU microseconds `Limiter.check` (the default limits) takes per answer of the
    legitimate traffic: the sources and names of `many_sources`, at its rate (a clock
    moved by hand), in this process; each answer as from the answer cache (with its
    cached tail, one object per question, as the server passes it)."""
    import dns.message  # noqa: PLC0415 (only when the bench runs)
    import dns.rrset  # noqa: PLC0415

    from controparte.dns.rrl import Limiter, RrlConfig  # noqa: PLC0415

    wires = []
    for label in labels:
        response = dns.message.make_response(dns.message.make_query(f"{label}.{ZONE}", "A"))
        response.answer.append(dns.rrset.from_text(f"{label}.{ZONE}", 60, "IN", "A", "192.0.2.1"))
        wires.append(response.to_wire())
    peers = [(f"127.0.{k}.1", 40000 + k) for k in range(1, profile.sources + 1)]
    now = [0.0]
    step = 1.0 / (profile.sources * profile.per_source_qps)
    limiter = Limiter(RrlConfig(), lambda: now[0])
    check = limiter.check
    tails = [wire[2:] for wire in wires]
    pairs = [(i % len(wires), peers[i % len(peers)]) for i in range(answers)]
    started = time.thread_time()
    for index, peer in pairs:
        now[0] += step
        check(wires[index], peer, tails[index])
    spent = time.thread_time() - started
    assert limiter.counters.dropped == limiter.counters.slipped == 0
    return round(spent / answers * 1e6, 3)


# -- floods from one source --------------------------------------------------------------


@dataclass
class Flood:
    """What one source sent and what came back."""

    sent: int = 0
    answered: int = 0
    slipped: int = 0
    server_cpu_s: float = 0.0

    @property
    def dropped(self) -> int:
        return self.sent - self.answered - self.slipped


def flood(served: Served, wires: Sequence[bytes], qps: int, seconds: float) -> Flood:
    """Send `wires` in turn from 127.0.0.1 at `qps` for `seconds`, counting the answers
    (TC clear) and slips (TC set) that come back within a second of the last one."""
    out = Flood()
    total = int(qps * seconds)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((HOST, 0))
        sock.settimeout(1.0)
        done = threading.Event()

        def receive() -> None:
            while True:
                try:
                    data = sock.recv(65535)
                except TimeoutError:
                    if done.is_set():
                        return
                    continue
                if len(data) >= 12 and data[2] & 0x02:
                    out.slipped += 1
                else:
                    out.answered += 1

        receiver = threading.Thread(target=receive, name="flood-receive")
        receiver.start()
        cpu = cpu_seconds(served.pids)
        started = time.monotonic()
        for i in range(total):
            wire = wires[i % len(wires)]
            sock.sendto(bytes((i >> 8 & 0xFF, i & 0xFF)) + wire[2:], (HOST, served.port))
            if i % 50 == 49 and (ahead := started + (i + 1) / qps - time.monotonic()) > 0:
                time.sleep(ahead)
        out.sent = total
        done.set()
        receiver.join()
        out.server_cpu_s = round(cpu_seconds(served.pids) - cpu, 2)
    return out


def query_wire(name: str, rdtype: str) -> bytes:
    import dns.message  # noqa: PLC0415 (dnspython: only when the bench runs)

    return dns.message.make_query(name, rdtype, use_edns=False).to_wire()


def floods(profile: Profile, servers: Sequence[Served], labels: Sequence[str]) -> dict[str, Any]:
    rng = random.Random(20261202)
    kinds = {
        "same question": [query_wire(f"{labels[0]}.{ZONE}", "A")],
        "random names (NXDOMAIN)": [
            query_wire(f"nx-{rng.getrandbits(40):x}.{ZONE}", "A") for _ in range(10_000)
        ],
    }
    result: dict[str, Any] = {}
    for kind, wires in kinds.items():
        for served in servers:
            GATE.wait()
            got = flood(served, wires, profile.flood_qps, profile.flood_seconds)
            row = asdict(got) | {"dropped": got.dropped}
            print(f"   {kind}, {served.name}: {row}", flush=True)
            result.setdefault(kind, {})[served.name] = row
            time.sleep(1.0)  # the flood's debt is not the next server's concern; spacing
    return result


# -- the run --------------------------------------------------------------------------------


def run(profile: Profile, work: Path, result: dict[str, Any]) -> None:
    print(f"== registry of {profile.installations} installations", flush=True)
    data = work / "data"
    labels = build_registry(data, profile.installations)
    zonefile = work / "zone.db"
    export_zone(data, zonefile)
    shutil.copytree(data, work / "data-on")
    knot = KnotWithRrl(work / "knot", ZONE, zonefile, None)
    knot.port = free_port(for_bench=True)
    off, served_off = controparte(data, "off")
    try:
        on, served_on = controparte(work / "data-on", "on")
        try:
            knot.start()
            try:
                served_knot = Served("knot rrl", knot.port, knot.pids())
                print("== legitimate traffic from many sources: CPU per answer", flush=True)
                GATE.phase(profile.quiet_budget)
                result["many_sources"] = cost(profile, [served_off, served_on], labels, work)
                print("== floods from one source", flush=True)
                GATE.phase(profile.quiet_budget)
                result["floods"] = floods(profile, [served_on, served_knot, served_off], labels)
            finally:
                knot.stop()
        finally:
            on.stop()
    finally:
        off.stop()


def table(result: dict[str, Any]) -> tuple[str, dict[str, bool]]:
    """The figures as Markdown, and the verdict on the target."""
    many = result["many_sources"]
    medians = many["median_cpu_us_per_answer"]
    off = medians["controparte rrl off"]
    profile = result["profile"]
    lines = [
        f"Legitimate traffic: {profile['sources']} sources (127.0.K.1), each"
        f" {profile['per_source_qps']} qps for {profile['seconds']} s, {profile['rounds']} rounds",
        "",
        "| server | CPU per answer, µs (median) | answers | lost | RRL dropped | RRL slipped |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for name, runs in many["runs"].items():
        lines.append(
            f"| {name} | {medians[name]:.2f} | {sum(r['answers'] for r in runs):,}"
            f" | {sum(r['lost'] for r in runs)} | {sum(r['rrl_dropped'] for r in runs)}"
            f" | {sum(r['rrl_slipped'] for r in runs)} |"
        )
    ratio = many["median_ratio"]
    lines += [
        "",
        f"RRL on / off, median of the rounds' ratios: {ratio:.3f} ({many['ratios']});"
        f" `Limiter.check` alone: {many['check_us']} µs per answer,"
        f" {many['check_us'] / off:.1%} of an answer's {off:.2f} µs",
        "",
    ]
    lines += [
        f"Floods from one source at {profile['flood_qps']} qps for {profile['flood_seconds']} s",
        "",
        "| flood | server | sent | answered | slipped (TC) | dropped | server CPU s |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for kind, per in result["floods"].items():
        for name, row in per.items():
            lines.append(
                f"| {kind} | {name} | {row['sent']:,} | {row['answered']:,} | {row['slipped']:,}"
                f" | {row['dropped']:,} | {row['server_cpu_s']} |"
            )
    runs = [r for got in many["runs"].values() for r in got]
    verdict = {
        "CPU per answer with RRL on <= 1.1x off": ratio <= 1.1,
        "legitimate traffic: nothing lost, nothing limited": all(
            r["lost"] == 0 and r["rrl_dropped"] == 0 and r["rrl_slipped"] == 0 for r in runs
        ),
    }
    return "\n".join(lines), verdict


def main(argv: Sequence[str] | None = None) -> int:
    description = __doc__.split("\n\n")[0] if __doc__ else None
    args = arguments(description, "a small registry, short runs, one round (smoke)").parse_args(
        argv
    )
    if args.report is not None:
        text, verdict = table(json.loads(args.report.read_text(encoding="utf-8")))
        print(text)
        print(verdict)
        return 0
    profile = QUICK if args.quick else FULL
    started = time.monotonic()
    result: dict[str, Any] = {
        "command": " ".join(["bench/rrl_bench.py", *(argv or sys.argv[1:])]),
        "profile": asdict(profile),
        "started": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(
            {"knotd": [tool("knotd"), "--version"], "dnsperf": [tool("dnsperf"), "-h"]}
        ),
    }
    print(f"controparte RRL bench ({profile.name}) on {result['machine']}", flush=True)
    with working_directory("controparte-rrl-", args.workdir, args.keep) as work:
        run(profile, work, result)
    verdict, out = finish(f"rrl-bench-{profile.name}", result, started, GATE, table)
    print(verdict)
    print(f"duration {result['duration_s']:.0f} s; JSON: {out.relative_to(ROOT)}")
    return 0 if all(verdict.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
