"""The heartbeat writer, on each engine: results carry the zone serial after the
commit; beats awaited on an event loop are settled with one call into the loop per
batch; a beat with a token is checked in the writer's own transaction (wrong token,
unknown code and a label in place of the code are refused, and nothing of them is
written); a code no installation can have (a NUL in it) fails its own beat, not the
batch."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from controparte.errors import AuthError, NotFoundError
from controparte.service.heartbeat import Beat, BeatResult
from controparte.service.services import Services, open_services
from controparte.settings import load_settings


@pytest.fixture
def services(tmp_path: Path, database: str) -> Iterator[Services]:
    settings = load_settings(
        env={
            "CONTROPARTE_DATA": str(tmp_path),
            "CONTROPARTE_DATABASE": database,
            "CONTROPARTE_ALLOW_NON_GLOBAL": "1",
        }
    )
    opened = open_services(settings)
    yield opened
    opened.close()


def test_a_result_carries_the_serial_after_its_commit(services: Services) -> None:
    services.registry.add("A-1", "alpha")
    writer = services.heartbeats
    before = services.store.serial()
    moved = writer.submit(Beat("A-1", "192.0.2.1", 4443)).result(5)
    assert moved.changed
    assert moved.serial == services.store.serial() != before
    same = writer.submit(Beat("A-1", "192.0.2.1", 4443)).result(5)
    assert not same.changed
    assert same.serial == moved.serial  # last-seen only: no new serial


def test_beats_on_a_loop_are_settled_one_call_per_batch(services: Services) -> None:
    codes = [f"C-{n}" for n in range(200)]
    for code in codes:
        services.registry.add(code, code.lower())
    writer = services.heartbeats
    calls = 0

    async def main() -> list[Any]:
        nonlocal calls
        loop = asyncio.get_running_loop()
        original = loop.call_soon_threadsafe

        def counting(*args: Any, **kwargs: Any) -> Any:
            nonlocal calls
            calls += 1
            return original(*args, **kwargs)

        loop.call_soon_threadsafe = counting  # type: ignore[method-assign,assignment]
        return await asyncio.gather(*(writer.beat(Beat(code, "192.0.2.7", 4443)) for code in codes))

    batches = writer.batches
    results = asyncio.run(main())
    assert [r.installation.code for r in results] == codes
    assert all(r.changed for r in results)
    assert calls == writer.batches - batches < len(codes)


def test_a_token_is_checked_in_the_writer(services: Services) -> None:
    services.registry.add("A-1", "alpha")
    services.registry.add("B-2", "beta")
    token = services.access.issue_token("A-1")
    other = services.access.issue_token("B-2")
    writer = services.heartbeats

    async def beat(code: str, secret: str) -> object:
        try:
            return await writer.beat(Beat(code, "192.0.2.8", 4443, token=secret))
        except (AuthError, NotFoundError) as exc:
            return type(exc)

    async def main() -> list[object]:
        return [
            await beat("A-1", other),
            await beat("A-1", "cpt_wrong"),
            await beat("NOPE", token),
            await beat("alpha", token),  # the right token, but a label for the code
        ]

    assert asyncio.run(main()) == [AuthError, AuthError, AuthError, NotFoundError]
    inst = services.registry.get("A-1")
    assert (inst.ipv4, inst.last_seen) == (None, None)  # nothing of them was written
    result = writer.submit(Beat("a-1", "192.0.2.8", 4443, token=token)).result(5)
    assert result.installation.code == "A-1"
    assert services.registry.get("A-1").ipv4 == "192.0.2.8"


def test_the_token_is_not_in_a_beats_repr() -> None:
    assert "secret-token" not in repr(Beat("A-1", "192.0.2.1", 1, token="secret-token"))


def test_a_malformed_code_fails_its_beat_only(services: Services) -> None:
    services.registry.add("A-1", "alpha")
    token = services.access.issue_token("A-1")
    writer = services.heartbeats

    async def main() -> list[object]:
        beats = [
            writer.beat(Beat("A-1\x00", "192.0.2.9", 4443, token=token)),
            writer.beat(Beat("A-1", "192.0.2.9", 4443, token=token)),
            writer.beat(Beat("\udc80", "192.0.2.9", 4443)),
        ]
        outcomes = await asyncio.gather(*beats, return_exceptions=True)
        return [type(o) for o in outcomes]

    assert asyncio.run(main()) == [AuthError, BeatResult, NotFoundError]
    assert services.registry.get("A-1").ipv4 == "192.0.2.9"
