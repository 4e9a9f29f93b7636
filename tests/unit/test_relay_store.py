"""The relay's rows on each engine: a request is stored unless its agent has too many
pending, a poll is recorded and claims what waits (once), a report is taken only from
the agent that claimed it and only while it is open, expired rows are purged, and
removing an installation removes its requests and polls."""

from __future__ import annotations

import secrets
import threading
from datetime import datetime, timedelta

from controparte.model import Installation
from controparte.model.installation import utcnow
from controparte.store import Origin, RelayRequest, Store

T0 = utcnow()


def seed(store: Store) -> None:
    with store.transaction(Origin()) as tx:
        for code, label in (("A-1", "alpha"), ("B-1", "beta"), ("C-1", "gamma")):
            tx.insert(Installation(code=code, label=label, created=T0, updated=T0))


def ask(requester: str = "A-1", agent: str = "B-1", at: datetime = T0) -> RelayRequest:
    return RelayRequest(
        id=secrets.token_hex(16),
        requester=requester,
        agent=agent,
        address="192.0.2.1",
        port=4443,
        nonce=secrets.token_hex(16),
        created=at,
        expires=at + timedelta(seconds=60),
    )


def test_a_request_round_trip(store: Store) -> None:
    seed(store)
    asked = ask()
    assert store.add_relay(asked, 4, T0 - timedelta(seconds=60))
    assert store.relay(asked.id) == asked
    assert store.relay_polled("B-1") is None
    assert store.relays_waiting("b-1", T0)  # codes in any case
    assert not store.relays_waiting("C-1", T0)

    at = T0 + timedelta(seconds=1)
    claimed = store.claim_relays("B-1", at)
    assert [r.id for r in claimed] == [asked.id]
    assert claimed[0].claimed == at
    assert store.relay_polled("B-1") == at
    assert not store.relays_waiting("B-1", at)
    assert store.claim_relays("B-1", at) == []  # claimed once

    assert not store.finish_relay(asked.id, "C-1", "{}", at)  # not C's to report
    assert store.finish_relay(asked.id, "B-1", '{"result": "open"}', at)
    assert not store.finish_relay(asked.id, "B-1", "{}", at)  # reported already
    done = store.relay(asked.id)
    assert done is not None
    assert (done.report, done.finished) == ('{"result": "open"}', at)


def test_no_report_for_a_request_not_claimed_or_expired(store: Store) -> None:
    seed(store)
    waiting, late = ask(), ask()
    for one in (waiting, late):
        assert store.add_relay(one, 4, T0)
    assert not store.finish_relay(waiting.id, "B-1", "{}", T0)  # not claimed
    store.claim_relays("B-1", T0)
    after = T0 + timedelta(seconds=60)
    assert not store.finish_relay(late.id, "B-1", "{}", after)  # expired
    assert store.claim_relays("B-1", after) == []
    assert not store.relays_waiting("B-1", after)
    assert store.relay("not-an-id") is None
    assert not store.finish_relay("x'; DROP TABLE relay_requests; --", "B-1", "{}", T0)


def test_at_most_so_many_pending_per_agent(store: Store) -> None:
    seed(store)
    for _ in range(2):
        assert store.add_relay(ask(), 2, T0)
    assert not store.add_relay(ask(), 2, T0)  # B has two pending
    assert store.add_relay(ask(agent="C-1"), 2, T0)  # C has none
    first = store.claim_relays("B-1", T0)[0]
    assert not store.add_relay(ask(), 2, T0)  # claimed is still pending
    assert store.finish_relay(first.id, "B-1", "{}", T0)
    assert store.add_relay(ask(), 2, T0)  # a finished one is not
    later = T0 + timedelta(seconds=61)
    assert store.add_relay(ask(at=later), 2, T0)  # expired ones are not either


def test_the_pending_cap_holds_for_writers_at_once(store: Store) -> None:
    seed(store)
    results: list[bool] = []
    lock = threading.Lock()

    def add() -> None:
        done = store.add_relay(ask(), 3, T0)
        with lock:
            results.append(done)

    threads = [threading.Thread(target=add) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert sorted(results) == [False] * 5 + [True] * 3


def test_expired_rows_are_purged_by_later_requests(store: Store) -> None:
    seed(store)
    old = ask()
    assert store.add_relay(old, 4, T0)
    later = T0 + timedelta(seconds=90)
    assert store.add_relay(ask(at=later), 4, later - timedelta(seconds=60))
    assert store.relay(old.id) is not None  # expired 30 s ago: kept ("expired")
    latest = T0 + timedelta(seconds=130)
    assert store.add_relay(ask(at=latest), 4, latest - timedelta(seconds=60))
    assert store.relay(old.id) is None


def test_removing_an_installation_removes_its_relay_rows(store: Store) -> None:
    seed(store)
    asked = ask()
    assert store.add_relay(asked, 4, T0)
    store.claim_relays("B-1", T0)
    with store.transaction(Origin()) as tx:
        gone = tx.get("B-1")
        assert gone is not None
        tx.delete(gone)
    assert store.relay(asked.id) is None
    assert store.relay_polled("B-1") is None
