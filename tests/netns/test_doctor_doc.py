"""The doctor runs shown in docs/connectivity.md are real: each block marked
`<!-- netns-doctor: NAME -->` is set up here (scenario NAME), its command is run in the
caller's namespace (the token file and the catalog replaced by the test's own) and its
output must be what the guide shows, milliseconds aside.

After a deliberate change of output, rewrite the blocks with
`CONTROPARTE_WRITE_DOCS=1 .venv/bin/pytest tests/netns/test_doctor_doc.py` (as root) and
review the diff.
"""

from __future__ import annotations

import os
import re
import shlex
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.netns.conftest import Site, World
from tests.netns.test_doctor_netns import EGRESS_LIVE_RANGE_DROPPED
from tests.netns.test_doctor_truth import CASES, Case
from tests.processes import controparte_command

pytestmark = pytest.mark.integration

GUIDE = Path(__file__).resolve().parents[2] / "docs" / "connectivity.md"
BLOCK = re.compile(
    r"^<!-- netns-doctor: (?P<name>[\w-]+) -->\n```console\n(?P<text>.*?)^```$",
    re.MULTILINE | re.DOTALL,
)
VARYING = (
    (re.compile(r"\bin \d+ ms\b"), "in N ms"),
    (re.compile(r"\bin \d+\.\d s\b"), "in N s"),
    (re.compile(r"\b\d+ (s|min|h|d) ago\b"), "N ago"),
    (re.compile(r"\b(wait|within|for) \d+ s\b"), r"\1 N s"),
    (re.compile(r"\bserial \d+"), "serial N"),
)


def _missing_forward(site: Site) -> str:
    code = site.caller(
        "doc1", code="SHOP-1", label="shop", port=8443, private_port=8000, listen_on=8000
    )
    site.world.link(code, "B1", "einvoice")
    return code


def _live_egress(site: Site) -> str:
    code = site.caller(
        "doc2",
        code="OFFICE-1",
        label="office",
        port=9443,
        private_port=8000,
        forward=True,
        listen_on=8000,
    )
    site.world.link(code, "L1", "einvoice")
    site.nft("a", EGRESS_LIVE_RANGE_DROPPED)
    return code


SCENARIOS: dict[str, Callable[[Site], str]] = {
    "missing-forward": _missing_forward,
    "live-egress": _live_egress,
}


def _code_of(case: Case) -> Callable[[Site], str]:
    """The case's situation, set up; the caller's code."""
    return lambda site: case.setup(site)[0]


SCENARIOS |= {re.sub(r"[^a-z0-9]+", "-", c.name.lower()).strip("-"): _code_of(c) for c in CASES}


def normalise(text: str) -> list[str]:
    for pattern, replacement in VARYING:
        text = pattern.sub(replacement, text)
    return [line.rstrip() for line in text.strip("\n").splitlines()]


def _split(block: str) -> tuple[str, str]:
    """The command (its continuation lines joined) and the output shown after it."""
    lines = block.splitlines()
    assert lines and lines[0].startswith("$ "), "a doctor block starts with its command"
    command = [lines[0][2:]]
    index = 1
    while command[-1].endswith("\\"):
        command.append(lines[index])
        index += 1
    return "\n".join(command), "\n".join(lines[index:])


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_doctor_run_in_the_guide(name: str, site: Site, world: World) -> None:
    guide = GUIDE.read_text()
    blocks = {m["name"]: m for m in BLOCK.finditer(guide)}
    assert set(blocks) == set(SCENARIOS), "every doctor block of the guide has a scenario"
    code = SCENARIOS[name](site)
    shown_command, shown = _split(blocks[name]["text"])
    argv = shlex.split(shown_command.replace("\\\n", " "))
    assert argv[:2] == ["controparte", "doctor"] and argv[argv.index("--from") + 1] == code
    argv[argv.index("--token-file") + 1] = str(world.tokens[code])
    if "--features" in argv:
        argv[argv.index("--features") + 1] = str(world.catalog)
    done = world.lab.run("a", *controparte_command(), *argv[1:], check=False)
    assert done.returncode in (0, 1, 3), done.stderr
    if os.environ.get("CONTROPARTE_WRITE_DOCS") == "1":
        text = f"$ {shown_command}\n{done.stdout}"
        match = blocks[name]
        GUIDE.write_text(guide[: match.start("text")] + text + guide[match.end("text") :])
        return
    assert normalise(done.stdout) == normalise(shown), done.stdout
