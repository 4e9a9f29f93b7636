"""Writers in two processes on one PostgreSQL database, as two nodes would be, while a
reader follows the journal: no update is lost, the journal's seqs are dense and in
commit order (the reader never sees a seq before every smaller one is committed), each
commit moves the zone serial exactly once, and two heartbeat writers beating the same
installations at once keep every beat they acknowledged."""

from __future__ import annotations

import ipaddress
import multiprocessing
import shutil
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import replace
from multiprocessing.synchronize import Event
from pathlib import Path
from typing import Any

from controparte.model import DnsRecord, Installation
from controparte.service.credentials import SECRET_FILE, ServerSecret
from controparte.service.heartbeat import Beat
from controparte.service.services import open_services
from controparte.settings import load_settings
from controparte.store import JournalEntry, Origin, open_store
from controparte.store.postgres import PostgresStore
from controparte.store.rows import next_serial

SPAWN = multiprocessing.get_context("spawn")  # no threads of this process copied
WAIT = 120.0
CODES = [f"N-{n}" for n in range(16)]


def increments(url: str, rounds: int, start: Event) -> None:
    """`rounds` read-modify-writes of A-1's port, one transaction each."""
    store = PostgresStore(url)
    try:
        start.wait(WAIT)
        for _ in range(rounds):
            with store.transaction(Origin(via="test")) as tx:
                old = tx.get("A-1")
                assert old is not None and old.port is not None
                tx.update(old, replace(old, port=old.port + 1))
    finally:
        store.close()


def beats(url: str, data: str, node: int, rounds: int, start: Event) -> list[tuple[str, str]]:
    """`rounds` beats per installation of CODES through a heartbeat writer of this
    process's own, each from an address of its own; (code, address) of those
    acknowledged."""
    settings = load_settings(
        env={
            "CONTROPARTE_DATA": data,
            "CONTROPARTE_DATABASE": url,
            "CONTROPARTE_ALLOW_NON_GLOBAL": "1",
        }
    )
    services = open_services(settings)
    try:
        start.wait(WAIT)
        sent = []
        for n in range(rounds):
            for code in CODES:
                address = str(ipaddress.ip_address(f"2001:db8:{node}::{n:x}:{CODES.index(code):x}"))
                sent.append((code, address, services.heartbeats.submit(Beat(code, address, 443))))
        acknowledged = []
        for code, address, future in sent:
            result = future.result(WAIT)
            assert result.changed
            acknowledged.append((code, address))
        return acknowledged
    finally:
        services.close()


def node(
    target: Callable[..., Any],
    number: int,
    args: tuple[Any, ...],
    start: Event,
    results: multiprocessing.Queue[tuple[int, bool, Any]],
) -> None:
    """A node's process: `target(*args, start)`, its result or its failure put on
    `results`."""
    try:
        results.put((number, True, target(*args, start)))
    except BaseException:
        results.put((number, False, traceback.format_exc()))


def run_nodes(target: Callable[..., Any], args: Sequence[tuple[Any, ...]]) -> list[Any]:
    """`target(*each, start)` in a process of its own per `args`, started together; the
    results in order (a failure in one fails the test)."""
    start = SPAWN.Event()
    results: multiprocessing.Queue[tuple[int, bool, Any]] = SPAWN.Queue()
    processes = [
        SPAWN.Process(target=node, args=(target, number, each, start, results))
        for number, each in enumerate(args)
    ]
    for process in processes:
        process.start()
    start.set()
    found: dict[int, Any] = {}
    try:
        for _ in processes:
            number, ok, value = results.get(timeout=WAIT)
            assert ok, f"node {number} failed:\n{value}"
            found[number] = value
    finally:
        for process in processes:
            process.join(WAIT)
            if process.is_alive():
                process.kill()
    return [found[number] for number in range(len(args))]


def follow(url: str, until: int, seen: list[int], stop: threading.Event) -> None:
    """Read the journal as a DNS follower does until seq `until`: each read must start
    right after the last seq seen (a gap would be a commit out of seq order)."""
    store = PostgresStore(url)
    try:
        last = 0
        while last < until and not stop.is_set():
            for entry in store.journal_since(last):
                assert entry.seq == last + 1, f"after {last} the reader saw {entry.seq}"
                last = entry.seq
                seen.append(last)
            time.sleep(0.001)
    finally:
        store.close()


def chained(entries: Sequence[JournalEntry]) -> list[str]:
    """Where an entry's before is not what the previous entry of its code left (a lost
    or reordered update)."""
    after: dict[str, DnsRecord | None] = {}
    broken = []
    for entry in entries:
        if entry.code in after and entry.before != after[entry.code]:
            broken.append(f"seq {entry.seq}: before {entry.before}, was {after[entry.code]}")
        after[entry.code] = entry.record
    return broken


def test_two_processes_changing_one_installation_lose_nothing(pg_database: str) -> None:
    rounds = 150
    store = PostgresStore(pg_database)
    with store.transaction(Origin()) as tx:
        tx.insert(Installation.create("A-1", "alpha", port=1000))
    seen: list[int] = []
    stop = threading.Event()
    total = 1 + 2 * rounds
    reader = threading.Thread(target=follow, args=(pg_database, total, seen, stop))
    reader.start()
    try:
        run_nodes(increments, [(pg_database, rounds)] * 2)
        reader.join(WAIT)
    finally:
        stop.set()
    inst = store.get("A-1")
    assert inst is not None and inst.port == 1000 + 2 * rounds  # no lost update
    entries = store.journal_since(0)
    assert [e.seq for e in entries] == list(range(1, total + 1)) == seen
    assert chained(entries) == []
    serials = [e.serial for e in entries]
    assert serials[1:] == [next_serial(s) for s in serials[:-1]]  # one move per commit
    assert store.serial() == serials[-1]
    store.close()


def test_two_heartbeat_writers_keep_every_acknowledged_beat(
    tmp_path: Path, pg_database: str
) -> None:
    rounds = 40
    store = open_store(tmp_path, pg_database)
    with store.transaction(Origin()) as tx:
        for code in CODES:
            tx.insert(Installation.create(code, code.lower()))
    last = store.last_seq()
    data = [tmp_path / f"node{n}" for n in (1, 2)]
    ServerSecret.load_or_create(data[0])
    data[1].mkdir()  # every node a copy of one server.key, as deployed
    shutil.copy(data[0] / SECRET_FILE, data[1] / SECRET_FILE)
    nodes = [(pg_database, str(path), n, rounds) for n, path in enumerate(data, start=1)]
    acknowledged = [beat for node in run_nodes(beats, nodes) for beat in node]
    assert len(acknowledged) == 2 * rounds * len(CODES)
    entries = store.journal_since(last)
    assert chained(entries) == []
    journaled = {(e.code, e.record.ipv6) for e in entries if e.record is not None}
    assert sorted(journaled) == sorted(acknowledged)  # each beat, once, and no other
    for code in CODES:
        final = [e.record for e in entries if e.code == code][-1]
        inst = store.get(code)
        assert inst is not None and final is not None
        assert (inst.ipv6, inst.port) == (final.ipv6, final.port)
        history = [h["new"] for h in store.history(code) if h["via"] == "heartbeat"]
        addresses = [str(new["ipv6"]) for new in history if isinstance(new, dict)]
        assert sorted(addresses) == sorted(a for c, a in acknowledged if c == code)
    store.close()
