"""Metrics in the Prometheus text exposition format (version 0.0.4), written by hand.

`Metrics` holds the counters the HTTP layer increments (thread-safe); `collect` adds
what other parts already count (the DNS engine, the heartbeat writer, the registry)
and the gauges read at scrape time; `exposition` renders families as text.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

LabelSet = tuple[tuple[str, str], ...]

UPDATE_WAYS = ("heartbeat", "dyndns2", "api", "rfc2136")
"""The ways an address reaches the registry, always reported (0 until used)."""

HTTP_REQUESTS = "controparte_http_requests_total"
HEARTBEATS = "controparte_heartbeats_total"
AUTH_FAILURES = "controparte_auth_failures_total"
AUTH_BLOCKS = "controparte_auth_blocks_total"
ERRORS = "controparte_errors_total"
DYNDNS2_RESULTS = "controparte_dyndns2_results_total"

_HELP: dict[str, str] = {
    HTTP_REQUESTS: "HTTP requests answered, by route template, method and status.",
    HEARTBEATS: "Heartbeats received, by result (changed, unchanged, rejected).",
    AUTH_FAILURES: "Failed authentications (wrong or unknown credentials), by way.",
    AUTH_BLOCKS: "Client addresses blocked by the failed-authentication throttle.",
    ERRORS: "Errors answered, by kind (the error class; internal for unexpected ones).",
    DYNDNS2_RESULTS: "DynDNS2 result codes answered, one per answer line.",
}


@dataclass(frozen=True, slots=True)
class Sample:
    labels: LabelSet
    value: float


@dataclass(frozen=True, slots=True)
class Family:
    """One metric: name, `counter` or `gauge`, help text and its samples."""

    name: str
    kind: str
    help: str
    samples: tuple[Sample, ...]


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


def counter(name: str, help_text: str, value: float) -> Family:
    return Family(name, "counter", help_text, (Sample((), value),))


def gauge(name: str, help_text: str, value: float) -> Family:
    return Family(name, "gauge", help_text, (Sample((), value),))


def labelled(
    name: str, kind: str, help_text: str, label: str, values: Mapping[str, float]
) -> Family:
    samples = tuple(Sample(((label, key),), value) for key, value in sorted(values.items()))
    return Family(name, kind, help_text, samples)


def _escape_label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _escape_help(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n")


def _number(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value == int(value) and abs(value) < 2**63:
        return str(int(value))
    return repr(value)


def exposition(families: Iterable[Family]) -> str:
    """The families in the text format: `# HELP`, `# TYPE`, then one line per sample."""
    lines: list[str] = []
    for family in families:
        lines.append(f"# HELP {family.name} {_escape_help(family.help)}")
        lines.append(f"# TYPE {family.name} {family.kind}")
        for sample in family.samples:
            if sample.labels:
                labels = ",".join(f'{k}="{_escape_label(v)}"' for k, v in sample.labels)
                lines.append(f"{family.name}{{{labels}}} {_number(sample.value)}")
            else:
                lines.append(f"{family.name} {_number(sample.value)}")
    return "\n".join(lines) + "\n"
