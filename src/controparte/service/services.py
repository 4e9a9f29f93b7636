"""The composition of the service layer that every front end receives."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from controparte.service.access import Access
from controparte.service.credentials import ServerSecret
from controparte.service.heartbeat import HeartbeatWriter
from controparte.service.registry import Registry
from controparte.service.throttle import FailureThrottle
from controparte.settings import Settings
from controparte.store import Store, open_store


@dataclass
class Services:
    settings: Settings
    store: Store
    registry: Registry
    access: Access
    heartbeats: HeartbeatWriter
    throttle: FailureThrottle

    def close(self) -> None:
        self.heartbeats.close()
        self.store.close()


def open_services(
    settings: Settings, on_change: Callable[[], None] | None = None, store: Store | None = None
) -> Services:
    """Open the store in `settings.data` (or use `store`) and build the services;
    `on_change` is called after every committed change to what DNS serves."""
    store = store if store is not None else open_store(settings.data)
    return Services(
        settings=settings,
        store=store,
        registry=Registry(store, settings, on_change),
        access=Access(store, ServerSecret.load_or_create(settings.data), settings),
        heartbeats=HeartbeatWriter(
            store, allow_non_global=settings.allow_non_global, on_change=on_change
        ),
        throttle=FailureThrottle(),
    )
