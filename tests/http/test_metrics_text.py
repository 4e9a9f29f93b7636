"""The Prometheus text format, written by hand: checked line by line, and read back by
a small parser of the format's grammar."""

from __future__ import annotations

import re

from controparte.http.metrics import AUTH_FAILURES, HTTP_REQUESTS, Metrics
from controparte.service.metrics import Family, Sample, counter, exposition, gauge

LABEL = r'[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\]|\\.)*"'
SAMPLE = re.compile(
    rf"^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{{{LABEL}(?:,{LABEL})*\}})? "
    r"(?P<value>[-+]?(?:[0-9.e+-]+|Inf|NaN))$"
)


def parse(text: str) -> dict[str, str]:
    """Every line is a comment of the two known kinds or a well-formed sample."""
    kinds: dict[str, str] = {}
    assert text.endswith("\n")
    for line in text.splitlines():
        if line.startswith("# HELP "):
            continue
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ")
            assert kind in ("counter", "gauge")
            kinds[name] = kind
            continue
        match = SAMPLE.match(line)
        assert match is not None, line
        assert match["name"] in kinds, line
    return kinds


def test_counters_are_kept_by_label_set() -> None:
    metrics = Metrics()
    metrics.inc(HTTP_REQUESTS, route="/x", method="GET", status="200")
    metrics.inc(HTTP_REQUESTS, status="200", method="GET", route="/x")  # same set
    metrics.inc(AUTH_FAILURES, way="api")
    assert metrics.value(HTTP_REQUESTS, route="/x", method="GET", status="200") == 2
    assert metrics.value(AUTH_FAILURES, way="dyndns2") == 0
    text = exposition(metrics.families())
    assert 'controparte_http_requests_total{method="GET",route="/x",status="200"} 2\n' in text
    assert 'controparte_auth_failures_total{way="api"} 1\n' in text
    kinds = parse(text)
    assert kinds[HTTP_REQUESTS] == "counter"


def test_values_and_escaping() -> None:
    family = Family(
        "x_total",
        "counter",
        "help with \\ and\nnewline",
        (
            Sample((("v", 'a"b\\c\nd'),), 1.5),
            Sample((), float("inf")),
            Sample((("k", "n"),), float("nan")),
        ),
    )
    text = exposition([family, gauge("g", "a gauge", 2**40), counter("c_total", "c", 0)])
    lines = text.splitlines()
    assert lines[0] == "# HELP x_total help with \\\\ and\\nnewline"
    assert lines[2] == 'x_total{v="a\\"b\\\\c\\nd"} 1.5'
    assert lines[3] == "x_total +Inf"
    assert lines[4] == 'x_total{k="n"} NaN'
    assert "g 1099511627776" in lines
    assert "c_total 0" in lines
    parse(text)
