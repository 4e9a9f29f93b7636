"""The Live pool under concurrent allocation from 4 processes (issue 12): 1,000 Live
installations added at once, 250 by each process, on one store (the SQLite file the
processes share, or one PostgreSQL database, as several nodes share it) get 1,000
distinct (gateway, port) pairs, and fill the pool exactly: the next one is refused,
naming the gateways. What makes it hold is the store's unique (gateway, port), not a
lock of one process."""

from __future__ import annotations

import multiprocessing
from multiprocessing.synchronize import Barrier
from pathlib import Path

import pytest

from controparte.errors import PoolExhaustedError
from controparte.service.registry import Registry
from controparte.settings import Settings, settings_from
from controparte.store import Origin, open_store

PROCESSES = 4
EACH = 250
GATEWAYS = [
    {"name": "gw1", "ipv4": "192.0.2.10", "ports": "9000-9499"},
    {"name": "gw2", "ipv4": "198.51.100.20", "ipv6": "2001:db8::20", "ports": "9500-9999"},
]


def settings_for(data: Path, database: str) -> Settings:
    return settings_from(
        {"data": str(data), "database": database},
        {},
        {"allow_non_global": True, "live_gateways": GATEWAYS},
    )


def add_many(data: Path, database: str, worker: int, start: Barrier) -> None:
    """One process: its own store and registry, adding its share once all are ready."""
    store = open_store(data, database)
    try:
        registry = Registry(store, settings_for(data, database))
        start.wait(60)
        for n in range(EACH):
            registry.add(f"P{worker}-{n}", f"p{worker}-{n}", kind="live", origin=Origin())
    finally:
        store.close()


def test_four_processes_adding_1000_live_installations_get_1000_distinct_pairs(
    tmp_path: Path, database: str
) -> None:
    open_store(tmp_path, database).close()  # the schema, before the processes race
    spawn = multiprocessing.get_context("spawn")
    start = spawn.Barrier(PROCESSES)
    workers = [
        spawn.Process(target=add_many, args=(tmp_path, database, w, start))
        for w in range(PROCESSES)
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(240)
    assert [worker.exitcode for worker in workers] == [0] * PROCESSES
    store = open_store(tmp_path, database)
    try:
        found = store.installations()
        pairs = {(i.gateway, i.port) for i in found}
        assert len(found) == PROCESSES * EACH and len(pairs) == PROCESSES * EACH
        assert all(
            (i.gateway, i.ipv4) in {("gw1", "192.0.2.10"), ("gw2", "198.51.100.20")} for i in found
        )
        registry = Registry(store, settings_for(tmp_path, database))
        with pytest.raises(PoolExhaustedError, match=r"gw1 \(9000-9499.*gw2 \(9500-9999"):
            registry.add("X", "x", kind="live")
    finally:
        store.close()
