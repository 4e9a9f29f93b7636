"""Every parser of outside input survives a small mutation-fuzzing run (`tests/fuzzing.py`):
each input is either parsed or refused with the project's error, never a crash. The full
run (at least 1,000,000 inputs) is `bench/fuzz_bench.py`."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.fuzzing import Target, run, targets

INPUTS = 4_000
"""Per target and seed: small enough for `make test` (well under a second each)."""


@pytest.fixture(scope="module")
def every_target() -> Iterator[dict[str, Target]]:
    with targets() as found:
        yield {t.name: t for t in found}


NAMES = [
    "dns-query-udp",
    "dns-query-tcp",
    "dns-update",
    "dyndns2-query",
    "import-csv",
    "import-json",
    "heartbeat-json",
    "dns-screen",  # the compiled screen against the Python walk (built by `make test`)
]


def test_every_parser_is_a_target(every_target: dict[str, Target]) -> None:
    assert sorted(every_target) == sorted(NAMES)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("seed", [1, 2])
def test_no_input_crashes_a_parser(every_target: dict[str, Target], name: str, seed: int) -> None:
    found = run(every_target[name], INPUTS, seed)
    assert found.inputs == INPUTS
    assert found.crashes == 0, "\n\n".join(f"{data!r}\n{tb}" for data, tb in found.kept)


def test_the_mutations_reach_past_the_first_check(every_target: dict[str, Target]) -> None:
    """Not every input is refused: the fuzzer also hands over inputs the parsers accept,
    so the run goes deeper than the first check (a fuzzer of pure noise would not)."""
    for name in ("dns-update", "import-csv", "import-json", "heartbeat-json", "dyndns2-query"):
        found = run(every_target[name], 2_000, 3)
        assert 0 < found.refused < found.inputs, (name, found.refused)
