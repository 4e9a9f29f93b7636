"""Metrics of the service in the Prometheus text exposition format (version 0.0.4),
written by hand: the metric values (`Family`, `Sample`), helpers to make them, the text
rendering, and `MetricsSource`, what a part of the service that counts things of its own
offers to whoever serves `/metrics` (the DNS server offers its counters to the HTTP
layer this way, so neither imports the other).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Protocol

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

LabelSet = tuple[tuple[str, str], ...]

ZONE_SERIAL = "controparte_zone_serial"
ZONE_SERIAL_HELP = "The SOA serial of the zone being served."


@dataclass(frozen=True, slots=True)
class Sample:
    """One value of a metric family, with its labels."""

    labels: LabelSet
    value: float


@dataclass(frozen=True, slots=True)
class Family:
    """One metric: name, `counter` or `gauge`, help text and its samples."""

    name: str
    kind: str
    help: str
    samples: tuple[Sample, ...]


class MetricsSource(Protocol):
    """Something that reports metric families of its own, read at scrape time."""

    def metric_families(self) -> list[Family]:
        """Every family this source counts, read now (thread-safe)."""
        ...


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
