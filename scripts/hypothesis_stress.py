"""Run every property test of the suite many times, each time with new random examples, and list the failures.

CI derandomises hypothesis (tests/conftest.py, profile ``ci``), so a rare failing example would never show there;
this script is how such examples are found before they are pinned with ``@example``. Each run is one pytest
process over the tests hypothesis marks (``-m hypothesis``) under the ``fresh`` profile: no example database, a
new random seed per run.

    python scripts/hypothesis_stress.py --runs 50                 # every property test, 50 fresh runs
    python scripts/hypothesis_stress.py --runs 20 -k targets      # only tests whose name matches

Prints one line per run and, at the end, each failing test with the number of runs it failed and its first
falsifying example (or, for an error that is not one, the error line); exits 1 when any run failed.
``--json-out F`` writes the same summary as JSON; ``--log-dir D`` keeps the whole pytest output of each failed run.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FAILED_LINE = re.compile(r"^FAILED (\S+)", re.MULTILINE)
EXAMPLE_BLOCK = re.compile(r"Falsifying example: (.*?)(?:\n\n|\nYou can reproduce)", re.DOTALL)
ERROR_LINE = re.compile(r"^E\s+(\S.*)$", re.MULTILINE)


def run_once(keyword: str | None) -> tuple[int, str]:
    command = [sys.executable, "-m", "pytest", "-q", "-m", "hypothesis", "-p", "no:randomly", "-rf"]
    if keyword:
        command += ["-k", keyword]
    env = dict(os.environ, HYPOTHESIS_PROFILE="fresh")
    env.pop("CI", None)
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True)
    return result.returncode, result.stdout + result.stderr


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=50, help="fresh runs of the property tests (default 50)")
    parser.add_argument("-k", dest="keyword", default=None, help="pytest -k expression to select tests")
    parser.add_argument("--json-out", type=Path, default=None, help="write the summary as JSON here")
    parser.add_argument("--log-dir", type=Path, default=None, help="keep each failed run's pytest output here")
    args = parser.parse_args(argv)
    if args.runs < 1:
        parser.error(f"--runs must be at least 1, got {args.runs}")

    failures: dict[str, dict] = {}
    start = time.perf_counter()
    for run in range(1, args.runs + 1):
        code, output = run_once(args.keyword)
        if code not in (0, 1):
            print(output[-3000:], file=sys.stderr)
            print(f"run {run}: pytest exited {code} (not a test failure); stopping", file=sys.stderr)
            return 2
        failed = FAILED_LINE.findall(output)
        examples = EXAMPLE_BLOCK.findall(output) or [f"(no falsifying example) {line}"
                                                     for line in ERROR_LINE.findall(output)[:1]]
        if failed and args.log_dir is not None:
            args.log_dir.mkdir(parents=True, exist_ok=True)
            (args.log_dir / f"run{run:03d}.log").write_text(output)
        for i, test in enumerate(failed):
            entry = failures.setdefault(test, {"runs_failed": 0, "first_example": None})
            entry["runs_failed"] += 1
            if entry["first_example"] is None and examples:
                entry["first_example"] = " ".join(examples[min(i, len(examples) - 1)].split())
        print(f"run {run}/{args.runs}: {'ok' if not failed else 'FAILED ' + ', '.join(failed)}", flush=True)

    elapsed = time.perf_counter() - start
    print(f"\n{args.runs} runs in {elapsed:.0f} s; {len(failures)} test(s) failed at least once")
    for test, entry in sorted(failures.items()):
        print(f"  {test}: {entry['runs_failed']}/{args.runs} runs; first example: {entry['first_example']}")
    if args.json_out is not None:
        args.json_out.write_text(json.dumps({"runs": args.runs, "seconds": round(elapsed, 1),
                                             "failures": failures}, indent=1) + "\n")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
