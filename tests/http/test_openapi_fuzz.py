"""Schemathesis against the OpenAPI document a real `controparte serve` publishes: every
operation, with requests that follow the schema and requests that break it (a bounded
number per operation), over real sockets. No answer may be a 5xx; every answer must
have a status, content type and body that the document declares for the operation.

Each case comes from an address of its own (the server trusts loopback as a proxy and
reads `X-Forwarded-For`), so the failed-authentication throttle, which would answer
429 to everything after five wrong tokens, leaves every operation reachable.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import APIOperation, GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.result import Ok
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from controparte.service import Registry
from tests.realserver import ServerProcess, serving

pytestmark = pytest.mark.integration

ADMIN = "admin-token-for-tests-0123456789"
EXAMPLES = 20  # cases per operation and generation mode: about 800 requests
_SOURCES = (f"198.51.{n // 250}.{n % 250 + 1}" for n in itertools.count())


def seed(registry: Registry) -> None:
    registry.add("FUZZ-1", "fuzz-1", ipv4="192.0.2.1", port=4443)
    registry.add("FUZZ-2", "fuzz-2", ipv4="192.0.2.2", port=4443)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    env = {"CONTROPARTE_ADMIN_TOKEN": ADMIN, "CONTROPARTE_TRUSTED_PROXIES": "127.0.0.0/8"}
    with serving(tmp_path_factory.mktemp("fuzz") / "data", env, seed) as started:
        yield started


CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


def test_no_operation_answers_a_server_error(server: ServerProcess) -> None:
    """Every operation, positive and negative cases; every failure is reported (the
    operation, the check's message and the request that reproduces it)."""
    api = schemathesis.openapi.from_url(f"{server.http_url}/openapi.json")
    found = list(api.get_all_operations())
    operations = [each.ok() for each in found if isinstance(each, Ok)]
    assert len(operations) == len(found) >= 20, "the document has operations it cannot read"
    failures: list[str] = []
    calls = 0
    for operation in operations:
        for mode in GenerationMode:
            calls += fuzz(operation, mode, failures)
    assert calls >= len(operations) * EXAMPLES
    assert not failures, "\n\n".join(failures)


def fuzz(
    operation: APIOperation[Any, Any, Any, Any], mode: GenerationMode, failures: list[str]
) -> int:
    """Up to EXAMPLES cases of `operation` in `mode`, each checked (a failure goes to
    `failures`); how many were sent."""
    calls = 0

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        derandomize=True,
        database=None,
    )
    def run(case: schemathesis.Case[Any]) -> None:
        nonlocal calls
        calls += 1
        headers = {"Authorization": f"Bearer {ADMIN}", "X-Forwarded-For": next(_SOURCES)}
        try:
            case.call_and_validate(headers=headers, timeout=30, checks=CHECKS)
        except Exception as exc:  # schemathesis's failures, with a curl line
            failures.append(f"{operation.label} ({mode}): {exc}")
            raise

    try:
        run()
    except Unsatisfiable:  # nothing of the operation's to break (GET /healthz)
        assert mode is GenerationMode.NEGATIVE, operation.label
    except Exception:
        if not failures:
            raise
        # recorded in `failures`: the other operations go on
    return calls
