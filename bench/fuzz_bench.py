"""Fuzz every parser of outside input at full size: by default 1,200,000 mutated inputs
(150,000 per target), through the real parsers in this process (`tests/fuzzing.py`):
DNS queries over UDP and TCP (the answer engine, which must never raise), RFC 2136
UPDATE messages, DynDNS2 query strings, import files (CSV, JSON) and heartbeat bodies,
and the compiled screen against the Python walk (when built).
Prints, per target, the inputs, how many were refused with the project's error, the
crashes (with the first inputs that crashed, to reproduce) and the rate; exits 1 on
any crash.

    python bench/fuzz_bench.py [--per-target N] [--seed S] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(1, str(Path(__file__).resolve().parents[1]))  # the repository: `tests`

from tests.fuzzing import run, targets


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--per-target", type=int, default=150_000, metavar="N")
    parser.add_argument("--seed", type=int, default=2026, metavar="S")
    parser.add_argument("--json", type=Path, metavar="FILE", help="Also write the report here.")
    args = parser.parse_args(argv)
    report = []
    total = crashes = 0
    with targets() as found:
        for target in found:
            outcome = run(target, args.per_target, args.seed)
            total += outcome.inputs
            crashes += outcome.crashes
            rate = outcome.inputs / outcome.seconds if outcome.seconds else 0.0
            print(
                f"{outcome.name:<15} {outcome.inputs:>9,} inputs {outcome.refused:>9,} refused"
                f" {outcome.crashes:>5} crashes {rate:>10,.0f}/s"
            )
            for data, trace in outcome.kept:
                print(f"  crash on {data!r}\n{trace}")
            report.append(
                {
                    "target": outcome.name,
                    "inputs": outcome.inputs,
                    "refused": outcome.refused,
                    "crashes": outcome.crashes,
                    "seconds": round(outcome.seconds, 2),
                    "kept": [repr(d) for d, _ in outcome.kept],
                }
            )
    print(f"total {total:,} inputs, {crashes} crashes (seed {args.seed})")
    if args.json is not None:
        args.json.write_text(json.dumps({"seed": args.seed, "targets": report}, indent=2))
    return 1 if crashes else 0


if __name__ == "__main__":
    sys.exit(main())
