"""The dashboard's installations list at 100,000 installations: how long one page takes
(`GET /ui/installations...`, the whole request through the app: session, the store's
search and count, the template), for the searches people make. The target (issue 13):
under 200 ms a page on this machine. SQLite, in process (the same code the server
runs); the median and the slowest of `--rounds` requests per search.

    python bench/ui_bench.py [--installations N] [--rounds R]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(1, str(Path(__file__).resolve().parents[1]))  # the repository: `tests`

SEARCHES = {
    "first page": "/ui/installations",
    "last page": "/ui/installations?page={last}",
    "code, exact": "/ui/installations?q=INST-0054321",
    "label, part": "/ui/installations?q=milano-77",
    "address, part": "/ui/installations?q=203.0.113.7",
    "no match": "/ui/installations?q=nothing-like-this",
    "kind live": "/ui/installations?kind=live",
    "kind live, page 100": "/ui/installations?kind=live&page=100",
    "stale only": "/ui/installations?stale=1",
    "stale live, text": "/ui/installations?stale=1&kind=live&q=torino",
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--installations", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args()

    from dataclasses import replace  # noqa: PLC0415 (after --help: the repository's code)
    from datetime import timedelta  # noqa: PLC0415

    from starlette.testclient import TestClient  # noqa: PLC0415

    from controparte.http.app import create_app  # noqa: PLC0415
    from controparte.model import Installation  # noqa: PLC0415
    from controparte.model.installation import utcnow  # noqa: PLC0415
    from controparte.service.services import open_services  # noqa: PLC0415
    from controparte.settings import settings_from  # noqa: PLC0415
    from controparte.store import Origin  # noqa: PLC0415
    from controparte.store.base import Role  # noqa: PLC0415

    data = Path(tempfile.mkdtemp(prefix="ui-bench-"))
    settings = settings_from({"data": str(data), "allow_non_global": True}, {})
    services = open_services(settings)
    now = utcnow()
    towns = ("milano", "torino", "roma", "napoli", "bari", "genova", "bologna")
    began = time.monotonic()
    with services.store.transaction(Origin()) as tx:
        for n in range(args.installations):
            live = n % 10 == 0
            tx.insert(
                replace(
                    Installation.create(
                        f"INST-{n:07d}",
                        f"{towns[n % len(towns)]}-{n}",
                        kind="live" if live else "onprem",
                        ipv4=f"203.0.{113 if n % 2 else 112}.{n % 250 + 1}",
                        port=9000 + n % 1000 if live else 4443,
                        allow_non_global=True,
                        now=now,
                    ),
                    last_seen=now - timedelta(seconds=(n % 100) * 60),
                )
            )
    print(f"{args.installations} installations stored in {time.monotonic() - began:.1f} s")
    services.accounts.add("bench", Role.SUPPORT, "bench-password")
    client = TestClient(create_app(services), base_url="http://127.0.0.1")
    page = client.get("/ui/signin")
    token = page.text.split('name="csrf" value="', 1)[1].split('"', 1)[0]
    signed = client.post(
        "/ui/signin", data={"csrf": token, "name": "bench", "password": "bench-password"}
    )
    assert signed.status_code == 200, signed.status_code
    last = -(-args.installations // 50)
    print(f"{'search':24} {'found':>8} {'median ms':>10} {'max ms':>8}")
    for name, path in SEARCHES.items():
        url = path.format(last=last)
        times = []
        answer = client.get(url)
        for _ in range(args.rounds):
            start = time.perf_counter()
            answer = client.get(url)
            times.append((time.perf_counter() - start) * 1000)
        assert answer.status_code == 200, (url, answer.status_code)
        found = answer.text.split('id="count">', 1)[1].split(" ", 1)[0]
        print(f"{name:24} {found:>8} {statistics.median(times):10.1f} {max(times):8.1f}")
    services.close()


if __name__ == "__main__":
    main()
