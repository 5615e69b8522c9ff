"""`make bench`'s last step: the parts' rows as one table, and bench/results/latest.json.

    python bench/report.py --since EPOCH part [part ...]

Fails (exit 1) only when a row could not be measured: a part that wrote nothing in this run
(its file older than --since), or a row whose figure is not a finite number. A ratio below its
target is a result to read, not a failure.
"""

import argparse
import json
import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from table import PARTS, QUICK, RESULTS, machine, table  # noqa: E402


def measured(value) -> bool:
    if isinstance(value, list):
        return bool(value) and all(measured(v) for v in value)
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--since", type=float, default=0.0)
    parser.add_argument("parts", nargs="+")
    args = parser.parse_args()
    rows, problems, machines = [], [], {}
    for part in args.parts:
        path = PARTS / f"{part}.json"
        if not path.exists():
            problems.append(f"{part}: wrote no rows")
            continue
        payload = json.loads(path.read_text())
        if payload["at"] < args.since:
            problems.append(f"{part}: its rows are from an earlier run (it did not finish this one)")
            continue
        machines[part] = payload["machine"]
        for r in payload["rows"]:
            rows.append({**r, "part": part})
            if not measured(r["timonier"]):
                problems.append(f"{part}: {r['measure']!r} was not measured ({r['timonier']!r})")
    print()
    print(
        f"make bench{' QUICK=1' if QUICK else ''}: {len(rows)} rows; ratio = Timonier / the limit measured in "
        f"the same run (higher is better); load CPU = the load generator's share of the machine's CPUs"
    )
    print(table(rows))
    for r in rows:
        if r.get("note"):
            print(f"  {r['measure'].strip()}: {r['note']}")
    missed = [r["measure"].strip() for r in rows if r["met"] is False]
    print(f"targets met: {sum(1 for r in rows if r['met'])} of {sum(1 for r in rows if r['met'] is not None)}"
          + (f"; missed: {'; '.join(missed)}" if missed else ""))  # fmt: skip
    RESULTS.mkdir(parents=True, exist_ok=True)
    latest = RESULTS / "latest.json"
    latest.write_text(
        json.dumps({"machine": {**machine(), "parts": machines}, "rows": rows}, indent=2, default=str) + "\n"
    )
    print(f"written to {latest.relative_to(RESULTS.parent.parent)}")
    for problem in problems:
        print(f"bench: NOT MEASURED: {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
