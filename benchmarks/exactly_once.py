"""Exactly-once table commits under kill -9: runs the chaos test (tests/test_lakehouse_chaos.py)
with real Celery workers on a throwaway PostgreSQL and Redis, killing the worker group right after
each phase's table commit and before its ``complete``, and prints runs, kills and the duplicate
rows found in the Iceberg and Delta tables afterwards (target: 0).

    .venv/bin/python benchmarks/exactly_once.py [--runs 30]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=30, help="runs of the two-phase job (batches of 5)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="cr-chaos-") as scratch:
        report = Path(scratch) / "report.json"
        env = {**os.environ, "CONTROLROOM_CHAOS_RUNS": str(args.runs), "CONTROLROOM_CHAOS_REPORT": str(report),
               "CONTROLROOM_DATA_DIR": str(Path(scratch) / "data")}
        started = time.monotonic()
        done = subprocess.run(
            [sys.executable, "-m", "tests.servers", "--postgres", "--redis", "--", sys.executable, "-m", "pytest",
             "-q", "-p", "no:randomly", "tests/test_lakehouse_chaos.py"], cwd=REPO, env=env, check=False)
        elapsed = time.monotonic() - started
        if not report.exists():
            raise SystemExit(f"the chaos run produced no report (exit {done.returncode})")
        figures = json.loads(report.read_text())
    print(f"runs {figures['runs']}, worker kills {figures['kills']}, "
          f"phases killed after their table commit {figures['killed_after_commit']}, "
          f"duplicate rows {figures['duplicates']} (target 0), broken invariants {len(figures['problems'])}, "
          f"{elapsed:.0f} s")
    for problem in figures["problems"][:20]:
        print("  ", problem)
    sys.exit(0 if done.returncode == 0 and not figures["problems"] and figures["duplicates"] == 0 else 1)


if __name__ == "__main__":
    main()
