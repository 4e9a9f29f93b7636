"""The HTTP layer's own counters (`Metrics`, thread-safe), by name and label set.

`app.collect` adds what other parts count (the DNS server through its
`MetricsSource`, the heartbeat writer, the registry) and the gauges read at scrape
time; `service/metrics.py` renders the families as text.
"""

from __future__ import annotations

import threading

from controparte.service.metrics import Family, LabelSet, Sample

UPDATE_WAYS = ("heartbeat", "dyndns2", "api", "rfc2136")
"""The ways an address reaches the registry, always reported (0 until used)."""

HTTP_REQUESTS = "controparte_http_requests_total"
HEARTBEATS = "controparte_heartbeats_total"
AUTH_FAILURES = "controparte_auth_failures_total"
AUTH_BLOCKS = "controparte_auth_blocks_total"
ERRORS = "controparte_errors_total"
DYNDNS2_RESULTS = "controparte_dyndns2_results_total"
CONNECTIONS_CLOSED = "controparte_http_connections_closed_total"

_HELP: dict[str, str] = {
    HTTP_REQUESTS: "HTTP requests answered, by route template, method and status.",
    HEARTBEATS: "Heartbeats received, by result (changed, unchanged, rejected).",
    AUTH_FAILURES: "Failed authentications (wrong or unknown credentials), by way.",
    AUTH_BLOCKS: "Client addresses blocked by the failed-authentication throttle.",
    ERRORS: "Errors answered, by kind (the error class; internal for unexpected ones).",
    DYNDNS2_RESULTS: "DynDNS2 result codes answered, one per answer line.",
    CONNECTIONS_CLOSED: "HTTP connections closed by the server before the client was done,"
    " by reason (evicted, full, header-timeout, body-timeout, refused).",
}


class Metrics:
    """Counters of the HTTP layer, by name and label set; safe to use from threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counters: dict[str, dict[LabelSet, float]] = {name: {} for name in _HELP}

    def inc(self, name: str, amount: float = 1.0, **labels: str) -> None:
        """Add `amount` to the counter `name` with `labels` (a known counter)."""
        key = tuple(sorted(labels.items()))
        with self._lock:
            series = self._counters[name]
            series[key] = series.get(key, 0.0) + amount

    def value(self, name: str, **labels: str) -> float:
        """The current value of one series (0 when never incremented)."""
        key = tuple(sorted(labels.items()))
        with self._lock:
            return self._counters[name].get(key, 0.0)

    def families(self) -> list[Family]:
        with self._lock:
            copies = {name: dict(series) for name, series in self._counters.items()}
        return [
            Family(
                name,
                "counter",
                _HELP[name],
                tuple(Sample(labels, value) for labels, value in sorted(series.items())),
            )
            for name, series in copies.items()
        ]
