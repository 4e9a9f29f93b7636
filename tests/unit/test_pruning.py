"""The journal pruner, on each engine: it keeps the settings' limits, runs on its own
thread, and a store that fails is logged, not fatal."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

import pytest

from controparte.model import Installation, InstallationChange
from controparte.service.pruning import JournalPruner
from controparte.settings import settings_from
from controparte.store import Origin, Store


def churn(store: Store, changes: int) -> None:
    """One insert, then `changes` - 1 port changes: one entry and one serial each."""
    inst = Installation.create("A-1", "alpha", port=9000)
    with store.transaction(Origin()) as tx:
        tx.insert(inst)
    for n in range(1, changes):
        new = inst.with_changes(InstallationChange(port=9000 + n))
        with store.transaction(Origin()) as tx:
            tx.update(inst, new)
        inst = new


def test_it_keeps_the_newest_entries(store: Store) -> None:
    churn(store, 10)
    settings = settings_from({"journal_keep_entries": 4}, {})
    pruner = JournalPruner(store, settings)
    assert pruner.prune_once() == 6
    assert [e.seq for e in store.journal_since(0)] == [7, 8, 9, 10]
    assert pruner.prune_once() == 0
    assert pruner.pruned == 6


def test_it_keeps_entries_younger_than_the_age(store: Store) -> None:
    churn(store, 3)
    settings = settings_from({"journal_keep_age": 60}, {})
    now = datetime.now(UTC)
    assert JournalPruner(store, settings, clock=lambda: now).prune_once() == 0
    later = now + timedelta(minutes=5)
    assert JournalPruner(store, settings, clock=lambda: later).prune_once() == 3
    assert store.journal_floor().serial == store.serial()


def test_it_prunes_at_start_on_its_thread_and_stops(store: Store) -> None:
    churn(store, 5)
    pruner = JournalPruner(store, settings_from({"journal_keep_entries": 1}, {}), interval=3600)
    pruner.start()
    pruner.stop()  # the first turn runs before the thread waits for the next one
    assert pruner.pruned == 4
    assert [e.seq for e in store.journal_since(0)] == [5]


def test_a_failure_is_logged_and_not_fatal(store: Store, caplog: pytest.LogCaptureFixture) -> None:
    churn(store, 2)
    pruner = JournalPruner(store, settings_from({"journal_keep_entries": 0}, {}))
    store.close()
    with caplog.at_level(logging.WARNING, "controparte.journal"):
        assert pruner.prune_once() == 0
    assert "cannot prune the journal" in caplog.text
