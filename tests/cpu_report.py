# ruff: noqa: T201  (a report tool prints its figures)
"""Sum the per-test figures of a `DRIFTLOOP_TEST_CPU_REPORT=DIR make test` run per file:
`python tests/cpu_report.py DIR [--tests N]`.

A child process's CPU counts when it is reaped, so a module- or package-scoped fixture's
daemons (the fault tests' `driftloop up`) land on the test after which they stopped, and a
process the test process did not start (the shadow's forkserver worker) is not counted."""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("dir", type=Path)
    parser.add_argument("--tests", type=int, default=15, help="also list the N costliest tests")
    args = parser.parse_args()
    rows = [
        json.loads(line)
        for path in sorted(args.dir.glob("*.jsonl"))
        for line in path.read_text().splitlines()
        if line.strip()
    ]
    per_file: dict[str, list[float]] = defaultdict(lambda: [0, 0.0, 0.0])
    for row in rows:
        figures = per_file[row["test"].split("::")[0]]
        figures[0] += 1
        figures[1] += row["cpu_s"]
        figures[2] += row["wall_s"]
    total_cpu = sum(f[1] for f in per_file.values())
    total_wall = sum(f[2] for f in per_file.values())
    print(f"{len(rows)} tests: {total_cpu:.0f} s of CPU, {total_wall:.0f} s of test time\n")
    print(f"{'file':<60} {'tests':>5} {'cpu s':>8} {'share':>6} {'wall s':>8}")
    for name, (count, cpu, wall) in sorted(per_file.items(), key=lambda kv: -kv[1][1])[:30]:
        print(f"{name:<60} {count:>5} {cpu:>8.1f} {cpu / total_cpu:>6.1%} {wall:>8.1f}")
    print(f"\nthe {args.tests} costliest tests (CPU s, wall s):")
    for row in sorted(rows, key=lambda r: -r["cpu_s"])[: args.tests]:
        print(f"{row['cpu_s']:>8.1f} {row['wall_s']:>8.1f}  {row['test']}")


if __name__ == "__main__":
    main()
