"""The composition of the service layer that every front end receives."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from controparte.plan.catalog import Catalog, load_catalog
from controparte.service.access import Access
from controparte.service.accounts import Accounts
from controparte.service.credentials import ServerSecret, adopt_secret
from controparte.service.heartbeat import HeartbeatWriter
from controparte.service.links import Links
from controparte.service.plans import Plans
from controparte.service.probe import (
    REQUESTER_LIMIT,
    REQUESTER_WINDOW,
    ProbeLimiter,
)
from controparte.service.registry import Registry
from controparte.service.relay import Relay
from controparte.service.results import FlowResults
from controparte.service.throttle import FailureThrottle
from controparte.settings import Settings
from controparte.store import Store, open_store


@dataclass
class Services:
    """`catalog` is the feature catalog of the setting `features`, loaded once, here;
    the registry checks Live ports against its Live settings, for every path (the
    heartbeat writer writes through the registry)."""

    settings: Settings
    store: Store
    registry: Registry
    access: Access
    heartbeats: HeartbeatWriter
    throttle: FailureThrottle
    probes: ProbeLimiter
    """One probe of an installation's own port per few seconds."""
    counterpart_probes: ProbeLimiter
    """One probe of a counterpart per few seconds, whoever asks."""
    probe_requesters: ProbeLimiter
    """A few counterpart probes per requester per minute."""
    catalog: Catalog
    links: Links
    plans: Plans
    relay: Relay
    results: FlowResults
    """What was last seen of each flow (probes, relayed dials, doctor reports)."""
    accounts: Accounts
    """The dashboard's accounts and sessions."""

    def close(self) -> None:
        self.heartbeats.close()
        self.throttle.close()
        self.store.close()


def open_services(
    settings: Settings, on_change: Callable[[], None] | None = None, store: Store | None = None
) -> Services:
    """Load the feature catalog (`settings.features`; a ConfigError names the setting),
    open the store the settings name (`database`, else SQLite in `data`; or use
    `store`) and build the services; `on_change` is called after every committed
    change to what DNS serves. The server secret (`<data>/server.key`) must be the one
    the store's credentials were made with (`adopt_secret`: else a ConfigError, and a
    store opened here is closed)."""
    catalog = load_catalog(settings.features)
    secret = ServerSecret.load_or_create(settings.data)
    own = store is None
    store = store if store is not None else open_store(settings.data, settings.database)
    try:
        adopt_secret(store, secret, settings.data)
    except BaseException:
        if own:
            store.close()
        raise
    registry = Registry(store, settings, on_change, live=catalog.live)
    access = Access(store, secret, settings)
    plans = Plans(registry, catalog)
    return Services(
        settings=settings,
        store=store,
        registry=registry,
        access=access,
        heartbeats=HeartbeatWriter(
            registry, on_change=on_change, authenticate=access.authenticate_code
        ),
        throttle=FailureThrottle(store),
        probes=ProbeLimiter(),
        counterpart_probes=ProbeLimiter(
            refusal="installation {key!r} was probed as a counterpart less than {interval:g} s ago"
        ),
        probe_requesters=ProbeLimiter(
            REQUESTER_WINDOW,
            limit=REQUESTER_LIMIT,
            refusal="installation {key!r} asked for {limit} counterpart probes in the"
            " last {interval:g} s",
        ),
        catalog=catalog,
        links=Links(registry, catalog),
        plans=plans,
        relay=Relay(registry),
        results=FlowResults(registry, plans),
        accounts=Accounts(store, settings.ui_session_lifetime),
    )
