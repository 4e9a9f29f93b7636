"""What the benchmarks share: the machine's description, the tools they drive (`dnsperf`,
`wrk`) run once and read, the CPU a run cost (the server's, the load generator's and
other processes'), the quiet gate that keeps other load out of the figures, and the
JSON report.

Ports, the server process, process trees and their CPU and memory are the tests' own
helpers (`tests/processes.py`, `tests/realserver.py`), which the benchmarks import from
here: they run as scripts (`python bench/NAME.py`), so this module puts the repository
on `sys.path` first.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(1, str(Path(__file__).resolve().parents[1]))  # the repository: `tests`

import argparse
import contextlib
import json
import os
import platform
import re
import resource
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

from tests import debtools
from tests.nodes import make_nodes, running
from tests.pgserver import Databases, PgServer, bindir, own_server
from tests.processes import (
    CLK_TCK,
    HOST,
    LoggedProcess,
    clean_env,
    controparte_command,
    cpu_seconds,
    free_port,
    memory,
    process_tree,
    stat_fields,
    udp_sockets_on,
)
from tests.realserver import ServerProcess
from tests.secondaries import KnotPrimary, NsdSecondary, TsigKey

__all__ = [  # the tests' helpers the benchmarks use, and this module's own
    "HOST",
    "OUT_DIR",
    "ROOT",
    "ZONE",
    "Databases",
    "KnotPrimary",
    "Load",
    "LoggedProcess",
    "NsdSecondary",
    "PerfRun",
    "PgServer",
    "QuietGate",
    "ServerProcess",
    "Throughput",
    "TsigKey",
    "Usage",
    "arguments",
    "bindir",
    "children_cpu",
    "clean_env",
    "controparte_command",
    "cpu_seconds",
    "finish",
    "foreign_cpu_seconds",
    "free_port",
    "load_average",
    "machine",
    "make_nodes",
    "memory",
    "own_server",
    "process_tree",
    "run_dnsperf",
    "run_wrk",
    "running",
    "tool",
    "udp_sockets_on",
    "working_directory",
    "write_report",
]

ROOT = Path(__file__).resolve().parents[1]
OUT_DIR = ROOT / "bench" / "out"
ZONE = "bp.controparte.test."
GIB_KIB = 1024 * 1024


def tool(name: str) -> str:
    """The path of a Debian tool the bench drives; exits, naming its package, when it is
    not installed."""
    try:
        return debtools.tool(name)
    except debtools.MissingToolError as exc:
        raise SystemExit(str(exc)) from None


# -- the machine --------------------------------------------------------------------------


def _version(command: Sequence[str]) -> str:
    with contextlib.suppress(OSError, subprocess.SubprocessError, IndexError):
        done = subprocess.run(command, capture_output=True, text=True, timeout=10, check=False)
        text = (done.stdout + done.stderr).strip().splitlines()
        return " ".join(line for line in text if "ersion" in line) or text[0]
    return "unknown"


def machine(tools: Mapping[str, Sequence[str]]) -> dict[str, Any]:
    """The machine and the software the figures come from: CPU model and count, memory,
    kernel, Python, controparte's git revision, and the version each command of `tools`
    (name -> command) prints."""
    model = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    mem_kib = 0
    with contextlib.suppress(OSError, ValueError, IndexError):
        mem_kib = int(Path("/proc/meminfo").read_text().split()[1])
    return {
        "cpu": model,
        "cpus": os.cpu_count(),
        "memory_gib": round(mem_kib / GIB_KIB, 1),
        "kernel": platform.release(),
        "system": platform.platform(),
        "python": platform.python_version(),
        **{name: _version(command) for name, command in tools.items()},
        "controparte": _version(["git", "-C", str(ROOT), "describe", "--always", "--dirty"]),
    }


def load_average() -> str:
    """The 1, 5 and 15 minute load averages (the machine may be shared: say so)."""
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"


# -- what a run cost -------------------------------------------------------------------------


def children_cpu() -> float:
    """CPU seconds of this process's reaped children (the load generators) so far."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def foreign_cpu_seconds() -> float:
    """CPU time (own and reaped children's) of every user process but this bench and the
    processes below it (its servers): other load on the machine, which disturbs the
    figures (kernel threads, which do part of the loopback network work, are not
    counted)."""
    ours = set(process_tree(os.getpid()))
    ticks = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) in ours:
            continue
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = stat_fields(int(entry.name))
            if int(fields[1]) == 2 or entry.name == "2":  # kthreadd and its kernel threads
                continue
            ticks += sum(int(x) for x in fields[11:15])  # utime stime cutime cstime
    return ticks / CLK_TCK


@dataclass
class Usage:
    """What a run cost: wall time, CPU of the server's processes, of the load generator
    (this process's reaped children) and of other processes (`foreign_cpu_seconds`)."""

    wall_s: float
    server_cpu_s: float
    client_cpu_s: float
    foreign_cpu_s: float


@contextlib.contextmanager
def measured(server_pids: Sequence[int]) -> Iterator[Usage]:
    """The Usage of the block, filled in when it ends (server processes `server_pids`;
    one that is gone by then counts 0)."""
    usage = Usage(0.0, 0.0, 0.0, 0.0)
    foreign = foreign_cpu_seconds()
    client = children_cpu()
    server = cpu_seconds(server_pids)
    started = time.monotonic()
    yield usage
    usage.wall_s = time.monotonic() - started
    usage.server_cpu_s = cpu_seconds(server_pids) - server
    usage.client_cpu_s = children_cpu() - client
    usage.foreign_cpu_s = foreign_cpu_seconds() - foreign


@dataclass
class QuietGate:
    """Other load on the machine, kept out of the figures as far as a bounded time allows.

    Before each run, wait until other processes use under `busy` of a CPU over `sample`
    s (at most `per_run` s); a run during which they used more than `disturbed` of a CPU
    is made again (at most `retries` times). Each phase of the bench has `budget` s for
    waits and repeated runs; once they are spent the bench measures anyway. Every run
    records the other load it saw."""

    per_run: float = 15.0
    budget: float = 60.0  # of the current phase (`phase`)
    sample: float = 0.5
    busy: float = 0.1
    disturbed: float = 0.1
    retries: int = 2
    phase_spent: float = 0.0
    spent: float = 0.0
    repeated_runs: int = 0
    measured_anyway: int = 0

    def phase(self, budget: float) -> None:
        """A new phase of the bench, with its own time for waits and repeated runs (so
        that other load early on cannot leave the later figures unprotected)."""
        self.budget = budget
        self.phase_spent = 0.0

    def _spend(self, seconds: float) -> None:
        self.phase_spent += seconds
        self.spent += seconds

    def wait(self) -> float:
        """Until other processes are quiet (or the time allowed is spent); the seconds."""
        started = time.monotonic()
        while self.phase_spent + (time.monotonic() - started) < self.budget:
            before = foreign_cpu_seconds()
            time.sleep(self.sample)
            if foreign_cpu_seconds() - before < self.busy * self.sample:
                break
            if time.monotonic() - started > self.per_run:
                break
        waited = time.monotonic() - started
        self._spend(waited)
        return waited

    def undisturbed(self, usage: Usage) -> bool:
        return usage.foreign_cpu_s <= self.disturbed * usage.wall_s

    def again(self, usage: Usage, attempt: int) -> bool:
        """Make the run again? (It was disturbed, and retries and time remain.)"""
        if self.undisturbed(usage):
            return False
        if attempt > self.retries or self.phase_spent + usage.wall_s > self.budget:
            self.measured_anyway += 1
            return False
        self._spend(usage.wall_s)
        self.repeated_runs += 1
        return True


# -- dnsperf ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Load:
    """dnsperf's client shape: `-c` sockets, `-q` queries outstanding at most."""

    clients: int
    outstanding: int

    def __str__(self) -> str:
        return f"-c {self.clients} -q {self.outstanding}"


@dataclass
class PerfRun(Usage):
    """One dnsperf run: what it was for, its options, what dnsperf counted, its Usage."""

    what: str
    load: str
    edns: bool
    rate: int | None
    sent: int
    completed: int
    lost: int
    qps: float
    latency_ms: float
    waited_quiet_s: float = 0.0
    attempts: int = 1

    @property
    def cpu_per_100k(self) -> float:
        return self.server_cpu_s / max(1, self.completed) * 100_000


_PERF_FIELDS = {
    "sent": re.compile(r"Queries sent:\s+(\d+)"),
    "completed": re.compile(r"Queries completed:\s+(\d+)"),
    "lost": re.compile(r"Queries lost:\s+(\d+)"),
    "qps": re.compile(r"Queries per second:\s+([\d.]+)"),
    "latency": re.compile(r"Average Latency \(s\):\s+([\d.]+)"),
}


def run_dnsperf(
    port: int,
    queries: Path,
    load: Load,
    server_pids: Sequence[int],
    *,
    what: str,
    seconds: int | None = None,
    passes: int | None = None,
    rate: int | None = None,
    edns: bool = False,
) -> PerfRun:
    """One run of dnsperf against HOST:`port` with the query file `queries`: for
    `seconds`, or `passes` over the file, at most `rate` queries a second; bounded in
    time (subprocess.TimeoutExpired)."""
    command = [tool("dnsperf"), "-s", HOST, "-p", str(port), "-d", str(queries)]
    command += ["-c", str(load.clients), "-q", str(load.outstanding)]
    if seconds is not None:
        command += ["-l", str(seconds)]
    if passes is not None:
        command += ["-n", str(passes)]
    if rate is not None:
        command += ["-Q", str(rate)]
    if edns:
        command.append("-e")
    limit = 30 + (seconds or 60)
    if seconds is None and rate:  # one pass over the file: as long as it takes at the rate
        with queries.open(encoding="ascii") as f:
            limit = 30 + max(60, int(sum(1 for _ in f) / rate * 1.5) * (passes or 1))
    with measured(server_pids) as usage:
        done = subprocess.run(command, capture_output=True, text=True, timeout=limit, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"dnsperf failed ({done.returncode}): {done.stderr.strip()}")
    found: dict[str, float] = {}
    for key, pattern in _PERF_FIELDS.items():
        match = pattern.search(done.stdout)
        if match is None:
            raise RuntimeError(f"dnsperf output without {key!r}:\n{done.stdout}")
        found[key] = float(match.group(1))
    return PerfRun(
        wall_s=round(usage.wall_s, 2),
        server_cpu_s=round(usage.server_cpu_s, 2),
        client_cpu_s=round(usage.client_cpu_s, 2),
        foreign_cpu_s=round(usage.foreign_cpu_s, 2),
        what=what,
        load=str(load),
        edns=edns,
        rate=rate,
        sent=int(found["sent"]),
        completed=int(found["completed"]),
        lost=int(found["lost"]),
        qps=round(found["qps"], 1),
        latency_ms=round(found["latency"] * 1000, 3),
    )


# -- wrk -------------------------------------------------------------------------------------


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
    other_cpu_seconds: float = 0.0  # other processes on the machine meanwhile
    server_cpu_us_per_beat: float = 0.0


def _ms(text: str) -> float | None:
    """A wrk duration (`812.00us`, `3.21ms`, `1.02s`) in milliseconds."""
    found = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    if found is None:
        return None
    return float(found[1]) * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}[found[2]]


def run_wrk(
    scenario: str,
    url: str,
    script: Path,
    *,
    duration: float,
    connections: int,
    threads: int,
    server_pids: Sequence[int] = (),
) -> Throughput:
    """One run of wrk against `url` with the Lua request `script` for `duration` s
    (whole seconds, at least one), with the CPU of the processes `server_pids`."""
    command = [tool("wrk"), f"-t{threads}", f"-c{connections}", f"-d{max(1, round(duration))}s"]
    command += ["--latency", "--timeout", "5s", "-s", str(script), url]
    with measured(server_pids) as usage:
        done = subprocess.run(
            command, check=True, capture_output=True, text=True, timeout=duration + 60
        )
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
        usage.server_cpu_s,
        usage.client_cpu_s,
        usage.foreign_cpu_s,
        usage.server_cpu_s / max(1, requests) * 1e6,
    )


# -- the report ------------------------------------------------------------------------------


def write_report(stem: str, result: object, out: Path | None = None) -> Path:
    """`result` as JSON in `out`, or in bench/out/ as STEM-<UTC time>.json; the path."""
    if out is None:
        out = OUT_DIR / f"{stem}-{datetime.now(UTC).strftime('%Y%m%dT%H%M%SZ')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return out


# -- a bench's run ---------------------------------------------------------------------------


def arguments(description: str | None, quick: str) -> argparse.ArgumentParser:
    """The options every table-making bench takes (`quick` says what --quick runs); the
    parser, for more."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--quick", action="store_true", help=quick)
    parser.add_argument("--keep", action="store_true", help="keep the working directory")
    parser.add_argument("--workdir", type=Path, default=None, help="parent of the working dir")
    parser.add_argument(
        "--report", type=Path, metavar="JSON", help="print the table of an earlier run's JSON"
    )
    return parser


@contextlib.contextmanager
def working_directory(prefix: str, parent: Path | None, keep: bool) -> Iterator[Path]:
    """A new directory (in `parent`, else the system's temporary one), removed when the
    block ends unless `keep`."""
    work = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
    try:
        yield work
    finally:
        if keep:
            print(f"working directory kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


Verdict = TypeVar("Verdict")


def finish(
    stem: str,
    result: dict[str, Any],
    started: float,
    gate: QuietGate,
    table: Callable[[dict[str, Any]], tuple[str, Verdict]],
) -> tuple[Verdict, Path]:
    """The end of a run started at `started` (monotonic): its duration, the quiet gate's
    account and the verdict go into `result`, which is written as JSON (`write_report`)
    and printed as its table; the verdict and the JSON's path."""
    result["duration_s"] = round(time.monotonic() - started, 1)
    result["quiet_gate"] = asdict(gate)
    text, verdict = table(result)
    result["targets"] = verdict
    out = write_report(stem, result)
    print()
    print(text)
    print()
    return verdict, out
