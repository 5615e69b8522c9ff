"""make bench: the parts one after the other on one PostgreSQL (durable) and one Redis, then the table.

    .venv/bin/python bench/run.py ingest segments workflows emails     (make bench [BENCH_ONLY=…] [QUICK=1])

Starting and migrating a server costs ~15 s; the parts share one: the database is migrated once,
as a template, and each part works in its own copy (bench/live.py SharedPostgres, dropped when the
part ends) with Redis emptied before it. Each part still runs alone as `python bench/<part>.py`,
then with its own servers. A part that fails does not stop the others; the report (bench/report.py)
says which rows were not measured and its exit status is this script's. BENCH_PROFILE=1: py-spy
samples each part's API and worker, summarised in bench/results/profiles/ (bench/profiles.py).
"""

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(ROOT / "scripts"))
sys.path.insert(0, str(BENCH))

import live  # noqa: E402
from live import bench_env, log  # noqa: E402
from testenv import Postgres, Redis, ensure_packages, free_ports  # noqa: E402


def main(parts: list[str]) -> int:
    ensure_packages()
    started = int(time.time())
    folder = Path(tempfile.mkdtemp(prefix="timonier-bench-"))
    os.chmod(folder, 0o755)
    pg_port, redis_port = free_ports(2)
    postgres = Postgres(folder / "pg", pg_port, durable=True)
    redis = Redis(folder / "redis", redis_port)
    try:
        postgres.start()
        redis.start()
        env = bench_env(folder, postgres.url, redis.url)
        subprocess.run([sys.executable, "manage.py", "migrate", "-v0"], cwd=ROOT, env=env, check=True)
        log(f"servers up and the template migrated in {time.time() - started:.0f} s")
        shared = {**os.environ, "BENCH_POSTGRES": postgres.url, "BENCH_REDIS": redis.url}
        for part in parts:
            at = time.monotonic()
            if subprocess.run([sys.executable, str(BENCH / f"{part}.py")], cwd=ROOT, env=shared).returncode:
                log(f"{part} failed")
            log(f"{part} took {time.monotonic() - at:.0f} s")
    finally:
        redis.stop()
        postgres.stop()
        shutil.rmtree(folder, ignore_errors=True)
    log(f"all parts took {time.time() - started:.0f} s")
    if live.PROFILE:
        time.sleep(1)  # py-spy writes its samples when the processes it records have exited
        subprocess.run([sys.executable, str(BENCH / "profiles.py"), *parts])
    return subprocess.run([sys.executable, str(BENCH / "report.py"), "--since", str(started), *parts]).returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
