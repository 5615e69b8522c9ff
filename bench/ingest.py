"""`make bench`: ingest throughput and latency of a live API, and PostgreSQL COPY as the limit.

Starts a throwaway PostgreSQL 15 (durable settings: fsync and synchronous_commit on) and Redis,
the API under gunicorn and one Celery worker, exactly as in production, then drives the API
from wrk (a separate process) and prints:

- single `/v1/track` calls: requests/s, p50/p99 latency;
- `/v1/batch` of 100 events: requests/s, events/s accepted, p50/p99 latency, and events/s stored
  end to end (from the first request to the last row committed);
- the same number of event rows loaded with COPY into the same table, and the ratio.

Everything runs on 127.0.0.1 and stops by itself: each load lasts BENCH_SECONDS (default 15).
"""

import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))

from testenv import Postgres, Redis, ensure_packages, free_ports  # noqa: E402

sys.path.insert(0, str(ROOT / "bench"))
from live import CONNECTIONS, SECONDS, bench_env, log, sql, start_platform, wait_drained  # noqa: E402

TRACK_LUA = """
local n = 0
request = function()
  n = n + 1
  local body = '{"customer_id":"bench-' .. (n % 10000) .. '","event":"purchase","properties":{"item":"T-Shirt","amount":29.99,"currency":"USD","n":' .. n .. '}}'
  return wrk.format("POST", "/v1/track", {["Content-Type"]="application/json", ["Authorization"]="Bearer KEY"}, body)
end
"""

BATCH_LUA = """
local n = 0
request = function()
  local items = {}
  for i = 1, 100 do
    n = n + 1
    items[i] = '{"type":"track","userId":"bench-' .. (n % 10000) .. '","event":"purchase","properties":{"item":"T-Shirt","amount":29.99,"currency":"USD","n":' .. n .. '}}'
  end
  local body = '{"batch":[' .. table.concat(items, ",") .. ']}'
  return wrk.format("POST", "/v1/batch", {["Content-Type"]="application/json", ["Authorization"]="Bearer KEY"}, body)
end
"""


def wrk(url: str, script: str, key: str, folder: Path) -> dict:
    path = folder / "load.lua"
    path.write_text(script.replace("KEY", key))
    command = ["wrk", "-t2", f"-c{CONNECTIONS}", f"-d{SECONDS}s", "--latency", "-s", str(path), url]
    output = subprocess.run(command, capture_output=True, text=True, check=True, timeout=SECONDS + 60).stdout
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    return {
        "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1)),
        "p50": _ms(re.search(r"50%\s+([\d.]+\w+)", output).group(1)),
        "p99": _ms(re.search(r"99%\s+([\d.]+\w+)", output).group(1)),
        "errors": int(non_2xx.group(1)) if non_2xx else 0,
        "requests": int(re.search(r"(\d+) requests in", output).group(1)),
    }


def _ms(value: str) -> float:
    number, unit = re.fullmatch(r"([\d.]+)(\w+)", value).groups()
    return float(number) * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}[unit]


def copy_baseline(database_url: str, rows: int) -> float:
    """Rows/s of COPY of `rows` event rows like the processor writes, into the same table."""
    import orjson
    import psycopg

    with psycopg.connect(database_url, autocommit=True) as conn:
        project_id, customer_id = conn.execute("SELECT project_id, id FROM cdp_customer ORDER BY id LIMIT 1").fetchone()
        properties = orjson.dumps({"item": "T-Shirt", "amount": 29.99, "currency": "USD", "n": 1}).decode()
        started = time.monotonic()
        with conn.transaction(), conn.cursor() as cursor:
            with cursor.copy(
                "COPY cdp_event (project_id, customer_id, type, name, properties, context, timestamp, "
                "received_at, message_id) FROM STDIN"
            ) as copy:
                now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
                for n in range(rows):
                    copy.write_row(
                        (project_id, customer_id, "track", "purchase", properties, "{}", now, now, f"copy-{n}")
                    )
        elapsed = time.monotonic() - started
        conn.execute("DELETE FROM cdp_event WHERE message_id LIKE 'copy-%%'")
    return rows / elapsed


def main() -> int:
    ensure_packages()
    if not shutil.which("wrk"):
        if os.geteuid() == 0:
            subprocess.run(["apt-get", "install", "-y", "-qq", "wrk"], check=True)
        else:
            raise SystemExit("bench: wrk is missing; install it with: sudo apt-get install -y wrk")
    folder = Path(tempfile.mkdtemp(prefix="timonier-bench-"))
    os.chmod(folder, 0o755)
    pg_port, redis_port, api_port = free_ports(3)
    postgres = Postgres(folder / "pg", pg_port, durable=True)
    redis = Redis(folder / "redis", redis_port)
    processes: list[subprocess.Popen] = []
    try:
        postgres.start()
        redis.start()
        env = bench_env(folder, postgres.url, redis.url)
        subprocess.run([sys.executable, "manage.py", "migrate", "-v0"], cwd=ROOT, env=env, check=True)
        url, key = start_platform(env, api_port, processes)

        log(f"single /v1/track for {SECONDS} s, {CONNECTIONS} connections")
        single = wrk(url + "/v1/track", TRACK_LUA, key, folder)
        wait_drained(postgres.url)
        before = sql(postgres.url, "SELECT count(*) FROM cdp_event")[0][0]

        log(f"/v1/batch of 100 events for {SECONDS} s, {CONNECTIONS} connections")
        started = time.monotonic()
        batch = wrk(url + "/v1/batch", BATCH_LUA, key, folder)
        drained = wait_drained(postgres.url)
        stored = sql(postgres.url, "SELECT count(*) FROM cdp_event")[0][0] - before
        end_to_end = stored / (drained - started)

        log(f"COPY of {stored} rows")
        copy_rate = copy_baseline(postgres.url, stored)

        print()
        print(f"single /v1/track   {single['rps']:>9,.0f} req/s   p50 {single['p50']:.1f} ms   "
              f"p99 {single['p99']:.1f} ms   non-2xx {single['errors']}")  # fmt: skip
        print(f"/v1/batch (100)    {batch['rps']:>9,.0f} req/s   p50 {batch['p50']:.1f} ms   "
              f"p99 {batch['p99']:.1f} ms   non-2xx {batch['errors']}")  # fmt: skip
        print(f"  accepted         {batch['rps'] * 100:>9,.0f} events/s")
        print(f"  stored e2e       {end_to_end:>9,.0f} events/s   ({stored:,} events in {drained - started:.1f} s)")
        print(f"COPY baseline      {copy_rate:>9,.0f} rows/s")
        print(f"e2e / COPY         {end_to_end / copy_rate:>9.2f}")
        return 0
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
        redis.stop()
        postgres.stop()
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
