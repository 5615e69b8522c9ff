"""The rows every bench part reports, one table of them, and bench/results/latest.json.

A row compares what Timonier does with a limit measured in the same run on the same machine
(the bare endpoint, COPY, hand-written SQL, raw smtplib): `ratio` is oriented so that higher is
better, `target` is the least ratio asked (None: printed only). A row whose target is absolute
(runs/s, a latency bound) keeps its figure in `timonier`, the bound in `limit`, and its ratio
against the bound, so every row is read the same way. `load_cpu` is the load generator's share
of the machine's CPUs while the row was measured (so a row can be trusted not to measure the
load generator), `note` what else a reader needs (counts, spans, the profile behind a miss).

Each part (bench/<part>.py) writes its rows to bench/results/parts/<part>.json; `bench/report.py`
merges them into bench/results/latest.json, prints the table, and fails when a row could not be
measured (a missing part, a figure that is not a number), never on a ratio.
"""

import json
import math
import os
import platform
import resource
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
PARTS = RESULTS / "parts"
QUICK = os.environ.get("QUICK", "") not in ("", "0")


def row(
    measure: str,
    unit: str,
    timonier: float,
    limit: float | None,
    *,
    target: float | None,
    lower_is_better: bool = False,
    ratio: float | None = None,
    met: bool | None = None,
    target_text: str | None = None,
    load_cpu: float | None = None,
    note: str = "",
) -> dict:
    """One row; the ratio is timonier / limit (limit / timonier when lower is better) unless given."""
    if ratio is None and limit:
        ratio = (limit / timonier if timonier else math.inf) if lower_is_better else timonier / limit
    if met is None and target is not None and ratio is not None:
        met = ratio >= target
    if target_text is None:
        target_text = "printed" if target is None else f"≥ {target:g}"
    return {
        "measure": measure,
        "unit": unit,
        "timonier": timonier,
        "limit": limit,
        "ratio": ratio,
        "target": target,
        "target_text": target_text,
        "met": met,
        "load_cpu": load_cpu,
        "note": note,
    }


def machine() -> dict:
    return {
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "quick": QUICK,
        "load_average": os.getloadavg()[0],
    }


def write_part(part: str, rows: list[dict], details: dict | None = None) -> Path:
    """The part's rows (and anything it wants kept beside them) for report.py to merge."""
    PARTS.mkdir(parents=True, exist_ok=True)
    path = PARTS / f"{part}.json"
    payload = {"part": part, "machine": machine(), "rows": rows, "details": details or {}, "at": time.time()}
    path.write_text(json.dumps(payload, indent=2, default=str) + "\n")
    return path


def _cell(value, digits: int = 2) -> str:
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if math.isinf(value) or math.isnan(value):
            return str(value)
        return f"{value:,.0f}" if abs(value) >= 100 else f"{value:,.{digits}f}"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, list):
        return " / ".join(_cell(v) for v in value)
    return str(value)


def table(rows: list[dict]) -> str:
    header = ["measure", "unit", "timonier", "limit", "ratio", "target", "", "load CPU"]
    lines = [
        [
            r["measure"],
            r["unit"],
            _cell(r["timonier"]),
            _cell(r["limit"]),
            _cell(r["ratio"]),
            r["target_text"],
            "met" if r["met"] else ("MISSED" if r["met"] is not None else ""),
            f"{r['load_cpu'] * 100:.0f} %" if r.get("load_cpu") is not None else "—",
        ]
        for r in rows
    ]
    widths = [max(len(str(x)) for x in column) for column in zip(header, *lines, strict=True)]
    out = [" | ".join(str(x).ljust(w) for x, w in zip(header, widths, strict=True)).rstrip()]
    out.append("-+-".join("-" * w for w in widths))
    out += [" | ".join(str(x).ljust(w) for x, w in zip(line, widths, strict=True)).rstrip() for line in lines]
    return "\n".join(out)


class Cpu:
    """CPU seconds of this process's waited-for children (the load generator) and of the whole
    machine over a span: `shares()` gives (load generator / machine capacity, machine busy)."""

    def __init__(self) -> None:
        self.child = self._children()
        self.machine = self._machine()
        self.wall = time.monotonic()

    @staticmethod
    def _children() -> float:
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)
        return usage.ru_utime + usage.ru_stime

    @staticmethod
    def _machine() -> tuple[int, int]:
        fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
        idle = fields[3] + fields[4]
        return sum(fields) - idle, sum(fields)

    def shares(self) -> tuple[float, float]:
        wall = max(time.monotonic() - self.wall, 1e-6)
        busy, total = self._machine()
        machine_busy = (busy - self.machine[0]) / max(1, total - self.machine[1])
        load = (self._children() - self.child) / (wall * (os.cpu_count() or 1))
        return load, machine_busy


def tree(pid: int) -> list[int]:
    """`pid` and its live descendants, parents first (from /proc)."""
    pids, pending = [], [pid]
    while pending:
        current = pending.pop(0)
        pids.append(current)
        try:
            for task in Path(f"/proc/{current}/task").iterdir():
                pending.extend(int(child) for child in (task / "children").read_text().split())
        except OSError:
            continue
    return pids


def tree_cpu(pid: int) -> float:
    """CPU seconds used by a live process and its live descendants (utime + stime), from /proc:
    the load generator's share when it is not a waited-for child (wrk while it runs)."""
    total = 0.0
    for current in tree(pid):
        try:
            stat = Path(f"/proc/{current}/stat").read_text().rsplit(")", 1)[1].split()
            total += (float(stat[11]) + float(stat[12])) / os.sysconf("SC_CLK_TCK")
        except (OSError, IndexError):
            continue
    return total
