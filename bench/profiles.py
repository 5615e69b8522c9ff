"""Summaries of the py-spy samples that `BENCH_PROFILE=1 make bench` takes of the live processes.

    .venv/bin/python bench/profiles.py [part ...]

For each part and process (`api`: gunicorn and its workers; `worker`: the Celery worker and its
children), the raw stacks of bench/results/profiles/<part>-<process>.<pid>.raw are merged into
<part>-<process>.txt: the share of samples (threads running, not idle) in which each function is on
the stack (inclusive) and at the top (own). What a row's remaining bottleneck is, with the samples
that show it.
"""

import collections
import sys
from pathlib import Path

PROFILES = Path(__file__).resolve().parent / "results" / "profiles"
INCLUSIVE, OWN = 90, 30


def summarise(part: str, process: str, raws: list[Path]) -> Path:
    own: collections.Counter = collections.Counter()
    inclusive: collections.Counter = collections.Counter()
    total = 0
    for raw in raws:
        for line in raw.read_text(errors="replace").splitlines():
            stack, _, count = line.rpartition(" ")
            if not stack or not count.isdigit():
                continue
            frames = stack.split(";")
            total += int(count)
            own[frames[-1]] += int(count)
            for frame in set(frames):
                inclusive[frame] += int(count)
    lines = [
        f"{part} / {process}: {total:,} samples of running threads (py-spy, 100/s, {len(raws)} process tree(s))",
        "",
        "on the stack (inclusive):",
        *(f"{n * 100 / max(total, 1):5.1f} %  {frame[:160]}" for frame, n in inclusive.most_common(INCLUSIVE)),
        "",
        "at the top (own):",
        *(f"{n * 100 / max(total, 1):5.1f} %  {frame[:160]}" for frame, n in own.most_common(OWN)),
    ]
    summary = PROFILES / f"{part}-{process}.txt"
    summary.write_text("\n".join(lines) + "\n")
    for raw in raws:
        raw.unlink()
    return summary


def main(parts: list[str]) -> int:
    groups: dict[tuple[str, str], list[Path]] = collections.defaultdict(list)
    for raw in sorted(PROFILES.glob("*.raw")):
        part, _, process = raw.name.split(".")[0].rpartition("-")
        if not parts or part in parts:
            groups[part, process].append(raw)
    for (part, process), raws in sorted(groups.items()):
        print(f"bench: profile {summarise(part, process, raws).relative_to(PROFILES.parent.parent.parent)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
