"""`controparte migrate --to postgresql://...` on a large registry: how long the move takes.

A SQLite registry of `--count` installations (default 100,000) is built through the
registry (a bulk import: one history row and one journal entry each) with a token each
(another history row each), then moved by the real command line (`python -m controparte
migrate --json`) into a fresh database, `--runs` times, on a throw-away PostgreSQL
server of its own (`tests/pgserver.py`) with fsync and full-page writes on, as a real
server has them. The figure is the command's wall time, process start included, and
the time it reports for the move itself (reading, COPY, foreign keys, the check, the
commit).

    python bench/migrate_bench.py                  # 100,000 installations, 3 runs
    python bench/migrate_bench.py --count 10000 --runs 1

Results: a table on stdout and JSON in bench/out/.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from common import (
    Databases,
    PgServer,
    load_average,
    machine,
    own_server,
    working_directory,
    write_report,
)
from controparte.service import Registry
from controparte.service.credentials import ServerSecret
from controparte.settings import load_settings
from controparte.store import Origin, open_store

DURABLE = {"fsync": "on", "full_page_writes": "on"}


def seed(data: Path, count: int) -> float:
    """`count` installations, each with its token, in `data`; the seconds taken."""
    started = time.perf_counter()
    settings = load_settings(
        env={"CONTROPARTE_DATA": str(data), "CONTROPARTE_ALLOW_NON_GLOBAL": "1"}
    )
    store = open_store(data)
    try:
        rows: list[tuple[int, dict[str, object]]] = [
            (n + 1, {"code": f"M{n:06d}", "label": f"m{n:06d}", "ip": f"198.51.{n >> 8 & 255}.1"})
            for n in range(count)
        ]
        Registry(store, settings).import_many(rows, origin=Origin(via="bench"))
        secret = ServerSecret.load_or_create(data)
        with store.transaction(Origin(via="bench")) as tx:
            for n in range(count):
                tx.set_token_hash(f"M{n:06d}", secret.hash_token(f"cpt_bench_{n}"))
    finally:
        store.close()
    return time.perf_counter() - started


def durable(server: PgServer) -> None:
    """The server with fsync and full-page writes on (the tests run without)."""
    with (server.data / "postgresql.conf").open("a") as conf:
        conf.writelines(f"{key} = {value}\n" for key, value in DURABLE.items())
    server.restart()


def move(data: Path, url: str) -> tuple[float, dict[str, object]]:
    """The real command's wall time and its JSON report."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONTROPARTE_")}
    started = time.perf_counter()
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "controparte",
            "migrate",
            "--to",
            url,
            "--data",
            str(data),
            "--json",
        ],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    wall = time.perf_counter() - started
    if done.returncode:
        raise RuntimeError(f"migrate failed ({done.returncode}): {done.stderr}")
    report: dict[str, object] = json.loads(done.stdout)
    return wall, report


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=100_000, help="installations")
    parser.add_argument("--runs", type=int, default=3, help="moves into fresh databases")
    parser.add_argument("--workdir", type=Path, default=None, help="parent of the working dir")
    options = parser.parse_args()
    with working_directory("controparte-migrate-", options.workdir, keep=False) as work:
        data = work / "data"
        print(f"seeding {options.count:,} installations ...", flush=True)
        seeded = seed(data, options.count)
        runs: list[dict[str, object]] = []
        with own_server() as server:
            durable(server)
            databases = Databases(server)
            for number in range(1, options.runs + 1):
                wall, report = move(data, databases.take())
                runs.append({"wall_s": round(wall, 2), "reported_s": report["seconds"]})
                print(f"run {number}: {wall:.2f} s ({report['seconds']} s reported)", flush=True)
    rows = report["rows"]
    result = {
        "machine": machine({"postgres": [str(server.bin / "postgres"), "--version"]}),
        "load_average": load_average(),
        "installations": options.count,
        "rows": rows,
        "seed_s": round(seeded, 1),
        "runs": runs,
    }
    walls = [float(str(r["wall_s"])) for r in runs]
    out = write_report("migrate", result)
    total = sum(int(str(n)) for n in rows.values()) if isinstance(rows, dict) else 0
    print()
    print(f"controparte migrate: {options.count:,} installations, {total:,} rows in all")
    print(f"  wall time, median of {len(walls)}: {statistics.median(walls):.2f} s")
    print(f"  (seeding on SQLite took {seeded:.1f} s; load average {result['load_average']})")
    print(f"  JSON: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
