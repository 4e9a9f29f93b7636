"""docs/live.md's gateway and pool sections stay true: their console blocks (markers
`doc-test: pool-*`, and the files before them) are run in order against a fresh
registry, with the machinery of `test_connectivity_doc`, and every command must print
what the guide shows. Blocks that show a port the pool picked (random) carry no
marker."""

from __future__ import annotations

from pathlib import Path

from tests.docs.test_connectivity_doc import (
    ROOT,
    Session,
    _clean_env,
    blocks,
    console_steps,
    normal,
)

GUIDE = ROOT / "docs" / "live.md"

__all__ = ["_clean_env"]  # the fixture that keeps the machine's CONTROPARTE_* out


def test_the_pool_sections_print_what_the_guide_shows(tmp_path: Path) -> None:
    session = Session(tmp_path)
    ran = 0
    for block in blocks(GUIDE.read_text()):
        if block.kind == "file":
            (tmp_path / block.name).write_text(block.text)
            continue
        if not block.name.startswith("pool-"):
            continue
        for step in console_steps(block.text):
            output = session.run(step.command)
            ran += 1
            assert normal(output) == normal(step.output), (
                f"docs/live.md, block {block.name}: `{step.command}` printed:\n" + "\n".join(output)
            )
    assert ran >= 5
