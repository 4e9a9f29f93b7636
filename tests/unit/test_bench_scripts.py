"""Every benchmark script starts the way `make bench` starts it (this venv's Python, the
script's path, from another directory): its imports resolve and its options parse.
A broken import here once went unnoticed until a full `make bench`."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.processes import clean_env

BENCH = Path(__file__).resolve().parents[2] / "bench"
SCRIPTS = sorted(p for p in BENCH.glob("*.py") if p.name != "common.py")


def test_the_benchmarks_are_found() -> None:
    assert {p.name for p in SCRIPTS} >= {"dns_bench.py", "heartbeat_bench.py", "xfr_bench.py"}


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_a_benchmark_script_imports_and_parses_its_options(script: Path, tmp_path: Path) -> None:
    env = clean_env()
    env.pop("PYTHONPATH", None)
    done = subprocess.run(
        [sys.executable, str(script), "--help"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage:"), done.stdout
