"""Journal pruning: the journal keeps what IXFR (and DNS processes that fell behind) may
still ask for, within `journal_keep_entries` and `journal_keep_age`; older entries go.

`JournalPruner` prunes once at start and then every `interval` seconds, on a thread of
its own (a store write must not run on an event loop). A failure is logged and tried
again at the next turn: the journal only grows meanwhile. Several processes or nodes
pruning the same store do no harm: pruning is idempotent.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import UTC, datetime

from controparte.errors import ControparteError
from controparte.settings import Settings
from controparte.store import Store

log = logging.getLogger("controparte.journal")

PRUNE_INTERVAL = 60.0


class JournalPruner:
    """Prunes `store`'s journal to `settings`' limits; `start` and `stop` it."""

    def __init__(
        self,
        store: Store,
        settings: Settings,
        *,
        interval: float = PRUNE_INTERVAL,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.store = store
        self.keep_entries = settings.journal_keep_entries
        self.keep_age = settings.journal_keep_age
        self.interval = interval
        self.clock = clock
        self.pruned = 0
        """Entries removed by this pruner (for metrics)."""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="journal-pruner", daemon=True)

    def prune_once(self) -> int:
        """Prune now; the number of entries removed (0 after a logged failure)."""
        try:
            removed = self.store.prune_journal(self.keep_entries, self.keep_age, self.clock())
        except ControparteError as exc:
            log.warning("cannot prune the journal (next try in %.0f s): %s", self.interval, exc)
            return 0
        if removed:
            floor = self.store.journal_floor()
            log.info(
                "journal pruned: %d entries; it now reaches back to serial %d",
                removed,
                floor.serial,
            )
        self.pruned += removed
        return removed

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def _run(self) -> None:
        while True:
            self.prune_once()
            if self._stop.wait(self.interval):
                return
