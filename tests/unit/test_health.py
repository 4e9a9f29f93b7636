"""What a process tells of its database (`service/health.py`, `http/app.health_reply`):
the reachability rule (its `since` moves only when it changes), the health watch over
a real SQLite store that can be held or made to fail (a report never waits longer than
its deadline, and a check that has not answered by then counts as unreachable), and
the /healthz answer for each state."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from controparte.errors import StorageUnavailableError
from controparte.http.app import health_reply
from controparte.model import Installation
from controparte.model.installation import utcnow
from controparte.service.health import (
    HealthReport,
    HealthWatch,
    Reachability,
    ServedZone,
    observe,
)
from controparte.store import Origin
from controparte.store.sqlite import DB_FILE, SqliteStore

WAIT = 10.0
T0 = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
T1 = T0 + timedelta(seconds=30)


@pytest.mark.parametrize(
    ("reachable", "now_reachable", "detail", "expected"),
    [
        (True, True, None, Reachability(True, T0)),
        (True, False, "refused", Reachability(False, T1, "refused")),
        (False, False, "timed out", Reachability(False, T0, "timed out")),  # detail moves
        (False, True, None, Reachability(True, T1)),
    ],
)
def test_since_moves_only_when_reachability_changes(
    reachable: bool, now_reachable: bool, detail: str | None, expected: Reachability
) -> None:
    before = Reachability(reachable, T0, None if reachable else "refused")
    assert observe(before, now_reachable, T1, detail) == expected


class HeldStore(SqliteStore):
    """A real store whose `serial` can be held until released, or made to fail."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.hold = threading.Event()
        self.release = threading.Event()
        self.failing = False

    def serial(self) -> int:
        if self.failing:
            raise StorageUnavailableError("cannot read the store: failing on purpose")
        if self.hold.is_set():
            assert self.release.wait(WAIT)
        return super().serial()


@pytest.fixture
def store(tmp_path: Path) -> Iterator[HeldStore]:
    opened = HeldStore(tmp_path / DB_FILE)
    with opened.transaction(Origin()) as tx:
        now = utcnow()
        tx.insert(Installation(code="A-1", label="alpha", created=now, updated=now))
    yield opened
    opened.release.set()
    opened.close()


def test_a_report_reads_the_store_in_a_check_of_its_own(store: HeldStore) -> None:
    report = HealthWatch(store, deadline=WAIT).report()
    assert report.database.reachable and report.database.detail is None
    assert (report.serial, report.installations) == (store.serial(), 1)


def test_a_check_that_does_not_answer_in_time_is_unreachable(store: HeldStore) -> None:
    watch = HealthWatch(store, deadline=0.2)
    first = watch.report()
    was = first.database
    store.hold.set()
    started = time.monotonic()
    held = watch.report()
    assert time.monotonic() - started < WAIT
    assert not held.database.reachable
    assert held.database.detail == "the database has not answered for 0 s"
    assert held.database.since >= was.since
    assert (held.serial, held.installations) == (first.serial, 1)  # as last read
    again = watch.report()  # joins the check still held: no second one
    assert again.database.since == held.database.since
    store.hold.clear()
    store.release.set()
    deadline = time.monotonic() + WAIT
    while not (back := watch.report()).database.reachable:
        assert time.monotonic() < deadline
    assert back.database.since > held.database.since


def test_a_failing_store_is_unreachable_since_the_first_failure(store: HeldStore) -> None:
    watch = HealthWatch(store, deadline=WAIT)
    store.failing = True
    first = watch.report().database
    assert not first.reachable
    assert first.detail == "cannot read the store: failing on purpose"
    assert watch.report().database.since == first.since
    store.failing = False
    assert watch.report().database.reachable


SINCE = datetime(2026, 1, 2, 3, 4, 5, 600_000, tzinfo=UTC)


@pytest.mark.parametrize(
    ("report", "zone", "status", "expected"),
    [
        (
            HealthReport(Reachability(True, SINCE), 7, 3),
            ServedZone(7, 0.25),
            200,
            {
                "status": "ok",
                "serial": 7,
                "installations": 3,
                "database": {"state": "reachable", "since": "2026-01-02T03:04:05.600000Z"},
                "zone": {"serial": 7, "age": 0.25},
            },
        ),
        (
            HealthReport(Reachability(True, SINCE), 7, 3),
            None,
            200,
            {
                "status": "ok",
                "serial": 7,
                "installations": 3,
                "database": {"state": "reachable", "since": "2026-01-02T03:04:05.600000Z"},
                "zone": None,
            },
        ),
        (
            HealthReport(Reachability(False, SINCE, "refused"), 7, 3),
            ServedZone(6, 41.5),
            503,
            {
                "status": "unavailable",
                "serial": 7,
                "installations": 3,
                "database": {
                    "state": "unreachable",
                    "since": "2026-01-02T03:04:05.600000Z",
                    "detail": "refused",
                },
                "zone": {"serial": 6, "age": 41.5},
                "error": "StorageUnavailableError",
                "detail": "the database cannot be reached since 2026-01-02T03:04:05.600000Z"
                " (refused); DNS serves serial 6 from its snapshot",
            },
        ),
        (
            HealthReport(Reachability(False, SINCE, "refused"), None, None),
            None,
            503,
            {
                "status": "unavailable",
                "serial": None,
                "installations": None,
                "database": {
                    "state": "unreachable",
                    "since": "2026-01-02T03:04:05.600000Z",
                    "detail": "refused",
                },
                "zone": None,
                "error": "StorageUnavailableError",
                "detail": "the database cannot be reached since 2026-01-02T03:04:05.600000Z"
                " (refused)",
            },
        ),
    ],
)
def test_the_health_answer(
    report: HealthReport, zone: ServedZone | None, status: int, expected: dict[str, object]
) -> None:
    reply = health_reply(report, zone)
    assert reply.status == status
    body = json.loads(reply.body)
    if status == 200:
        assert body["database"].pop("detail") is None
    assert body == expected
