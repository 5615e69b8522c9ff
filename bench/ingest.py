"""`make bench`: ingest throughput and latency of a live API, and PostgreSQL COPY as the limit.

Starts a throwaway PostgreSQL 15 (durable settings: fsync and synchronous_commit on) and Redis,
the API under gunicorn and one Celery worker, exactly as in production, then drives the API
from wrk (a separate process) and prints:

- single `/v1/track` calls: requests/s, p50/p99 latency;
- `/v1/batch` of 100 events: requests/s, events/s accepted, p50/p99 latency, and events/s stored
  end to end (from the first request to the last row committed);
- the same number of event rows loaded with COPY into the same table, and the ratio;
- the worker curve: events/s stored for one project by 1, 2 and 4 worker processes draining an
  inbox filled beforehand (the project's partitions shared between them), with the machine's CPU
  use and the workers' own beside each (on 2 cores the curve flattens once the CPUs are full).

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


CURVE_WORKERS = (1, 2, 4)
CURVE_EVENTS = 20_000 if os.environ.get("QUICK") else 100_000
WORKER_READY = re.compile(r"@\S+ ready\.")

# Run in a Django process of the bench's environment: fill the bench project's inbox as the API
# would (requests of 100 track calls), without waking anyone; or wake the project.
CURVE_HELPER = """
import sys, time, django
django.setup()
from cdp import inbox
from cdp.messages import normalize_batch
from cdp.tasks import process_commands_task
from organizations.models import Project
from timonier import clock

project = Project.objects.get(slug="bench")
if sys.argv[1] == "fill":
    events, prefix = int(sys.argv[2]), sys.argv[3]
    inbox.wake = lambda *args, **kwargs: None
    for first in range(0, events, 100):
        batch = {"batch": [
            {"type": "track", "userId": f"{prefix}-{n % 10000}", "event": "purchase",
             "properties": {"item": "T-Shirt", "amount": 29.99, "currency": "USD", "n": n}}
            for n in range(first, min(first + 100, events))
        ]}
        messages = normalize_batch(batch, received_at=clock.now(), max_items=100)
        inbox.commands_enqueue(project_id=project.pk, messages=messages, received_at=clock.now())
else:
    print(time.time(), flush=True)
    process_commands_task.delay(project.pk)  # the whole project: one task per partition
"""


def _cpu_busy() -> tuple[float, float]:
    """(busy, total) jiffies of the machine, from /proc/stat."""
    fields = [float(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return sum(fields) - idle, sum(fields)


def _tree_cpu(pid: int) -> float:
    """CPU seconds used by a process and its live descendants (utime + stime), from /proc."""
    total, pending = 0.0, [pid]
    while pending:
        current = pending.pop()
        try:
            stat = Path(f"/proc/{current}/stat").read_text().rsplit(")", 1)[1].split()
            total += (float(stat[11]) + float(stat[12])) / os.sysconf("SC_CLK_TCK")
            for task in Path(f"/proc/{current}/task").iterdir():
                pending.extend(int(child) for child in (task / "children").read_text().split())
        except (OSError, IndexError):
            continue
    return total


def _stop(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:  # the inbox is drained: nothing of the bench's is lost
        process.kill()
        process.wait()


def worker_curve(env: dict, database_url: str, folder: Path, processes: list) -> list[dict]:
    """Stored events/s for one project with 1, 2 and 4 worker processes, and the CPU they used."""
    for process in [p for p in processes if "worker" in p.args]:  # the platform's own worker
        _stop(process)
        processes.remove(process)
    helper = [sys.executable, "-c", CURVE_HELPER]
    env = {**env, "DJANGO_SETTINGS_MODULE": "timonier.settings"}
    rows = []
    for count in CURVE_WORKERS:
        log(f"worker curve: {CURVE_EVENTS:,} events queued, then drained by {count} worker process(es)")
        subprocess.run([*helper, "fill", str(CURVE_EVENTS), f"curve{count}"], cwd=ROOT, env=env, check=True)
        before = sql(database_url, "SELECT count(*) FROM cdp_event")[0][0]
        worker_log = folder / f"curve-{count}.log"
        with open(worker_log, "wb") as output:
            worker = subprocess.Popen(
                [sys.executable, "-m", "celery", "-A", "timonier", "worker", "-l", "info",
                 "--concurrency", str(count), "-n", f"curve{count}@%h"],
                cwd=ROOT, env={**env, "LOG_LEVEL": "WARNING"}, stdout=output, stderr=subprocess.STDOUT,
            )  # fmt: skip
        try:
            deadline = time.monotonic() + 60
            while not WORKER_READY.search(worker_log.read_text(errors="replace")):
                if time.monotonic() > deadline or worker.poll() is not None:
                    raise SystemExit(f"bench: the curve's worker did not start; see {worker_log}")
                time.sleep(0.1)
            cpu_before, worker_before = _cpu_busy(), _tree_cpu(worker.pid)
            woke = subprocess.run([*helper, "wake"], cwd=ROOT, env=env, check=True, capture_output=True, text=True)
            started = float(woke.stdout.split()[0])
            wait_drained(database_url)
            elapsed = time.time() - started
            (busy, total), worker_cpu = _cpu_busy(), _tree_cpu(worker.pid) - worker_before
        finally:
            _stop(worker)
        stored = sql(database_url, "SELECT count(*) FROM cdp_event")[0][0] - before
        rows.append(
            {
                "workers": count,
                "events_per_s": stored / elapsed,
                "machine_cpu": (busy - cpu_before[0]) / max(total - cpu_before[1], 1) * 100,
                "worker_cores": worker_cpu / elapsed,
                "stored": stored,
                "seconds": elapsed,
            }
        )
    return rows


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
        curve = worker_curve(env, postgres.url, folder, processes)

        print()
        print(f"single /v1/track   {single['rps']:>9,.0f} req/s   p50 {single['p50']:.1f} ms   "
              f"p99 {single['p99']:.1f} ms   non-2xx {single['errors']}")  # fmt: skip
        print(f"/v1/batch (100)    {batch['rps']:>9,.0f} req/s   p50 {batch['p50']:.1f} ms   "
              f"p99 {batch['p99']:.1f} ms   non-2xx {batch['errors']}")  # fmt: skip
        print(f"  accepted         {batch['rps'] * 100:>9,.0f} events/s")
        print(f"  stored e2e       {end_to_end:>9,.0f} events/s   ({stored:,} events in {drained - started:.1f} s)")
        print(f"COPY baseline      {copy_rate:>9,.0f} rows/s")
        print(f"e2e / COPY         {end_to_end / copy_rate:>9.2f}")
        cores = os.cpu_count()
        for row in curve:
            print(f"stored, {row['workers']} worker(s) {row['events_per_s']:>9,.0f} events/s   "
                  f"x{row['events_per_s'] / curve[0]['events_per_s']:.2f}   CPU {row['machine_cpu']:.0f} % of "
                  f"{cores} cores, workers {row['worker_cores']:.2f} cores   "
                  f"({row['stored']:,} events in {row['seconds']:.1f} s)")  # fmt: skip
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
