"""The bench's "store" part: events stored end to end against PostgreSQL COPY, and the worker curve.

Rows (bench/table.py):
- `events/s stored end to end`: wrk drives `/v1/batch` of 100 track calls for SECONDS; events/s
  from the first request to the inbox found drained, against `PostgreSQL COPY of the same rows`
  (as many cdp_event rows COPYed into the same table, in one transaction). Target ≥ 0.4.
- `stored events/s, one project, N worker(s)` for N = 1, 2, 4: an inbox of one project filled
  beforehand (CURVE_EVENTS calls, requests of 100, the wake-ups suppressed), then drained by a
  Celery worker of N processes (the project's partitions shared between them); the limit is the
  1-worker figure, printed only. On 2 cores the curve flattens once the CPUs are full, so the
  machine's CPU use and the workers' own cores are in the note. No load generator runs while a
  curve row is measured (its load CPU is 0).

bench/ingest.py calls `store_rows` on its live platform after its request rows; run standalone
(`QUICK=1 .venv/bin/python bench/store.py`) this part starts its own throwaway PostgreSQL
(durable) + Redis, the API and one worker, and writes bench/results/parts/store.json.
"""

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
sys.path.insert(0, str(ROOT / "bench"))

import live  # noqa: E402
from live import CONNECTIONS, bench_env, log, purchases_lua, sql, start_platform, stop_processes, wait_drained  # noqa: E402
from table import QUICK, Cpu, row, table, tree_cpu, write_part  # noqa: E402

SECONDS = 2 if QUICK else live.SECONDS
TARGET_STORED = 0.4
CURVE_WORKERS = (1, 2, 4)
CURVE_EVENTS = 5_000 if QUICK else 100_000
WORKER_READY = re.compile(r"@\S+ ready\.")

# Run in a Django process of the bench's environment: fill the bench project's inbox as the API
# would (requests of 100 track calls of the customers the wrk load made, bench-0…9999), without
# waking anyone; or wake the project. Known customers, as in the end-to-end row: the curve measures
# a steady stream, the same at every step, not the first sight of new people.
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
    # Wake-ups left in the broker (for partitions drained meanwhile) would set the worker going
    # before the clock starts: the inbox is in the database.
    from timonier.celery import app
    app.control.purge()
    if len(sys.argv) > 4 and int(sys.argv[4]):  # the curve's next step: more processes in the worker's pool
        app.control.pool_grow(int(sys.argv[4]), destination=[sys.argv[5]], reply=True, timeout=10)
else:
    print(time.time(), flush=True)
    process_commands_task.delay(project.pk)  # the whole project: one task per partition
"""


def wrk(url: str, key: str, folder: Path, seconds: int) -> dict:
    """`/v1/batch` load from wrk (a separate process) for `seconds`."""
    path = folder / "store.lua"
    path.write_text(purchases_lua(key))
    command = ["wrk", "-t2", f"-c{CONNECTIONS}", f"-d{seconds}s", "-s", str(path), url + "/v1/batch"]
    output = subprocess.run(command, capture_output=True, text=True, check=True, timeout=seconds + 60).stdout
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    return {
        "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1)),
        "errors": int(non_2xx.group(1)) if non_2xx else 0,
        "requests": int(re.search(r"(\d+) requests in", output).group(1)),
    }


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


def end_to_end(url: str, key: str, database_url: str, folder: Path) -> dict:
    """Events/s from wrk's first request to the inbox found drained, and COPY of as many rows."""
    wait_drained(database_url)
    before = sql(database_url, "SELECT count(*) FROM cdp_event")[0][0]
    log(f"store: /v1/batch of 100 events for {SECONDS} s, {CONNECTIONS} connections, until drained")
    cpu = Cpu()
    started = time.monotonic()
    load = wrk(url, key, folder, SECONDS)
    load_cpu, _ = cpu.shares()  # over wrk's run: it is idle while the inbox drains
    drained = wait_drained(database_url)
    _, machine_cpu = cpu.shares()
    stored = sql(database_url, "SELECT count(*) FROM cdp_event")[0][0] - before
    seconds = drained - started
    log(f"store: COPY of {stored:,} rows")
    copy_rate = copy_baseline(database_url, stored)
    return {
        "rate": stored / seconds,
        "copy_rate": copy_rate,
        "stored": stored,
        "seconds": seconds,
        "accepted": load["requests"] * 100,
        "load_seconds": SECONDS,
        "errors": load["errors"],
        "load_cpu": load_cpu,
        "machine_cpu": machine_cpu,
    }


def _cpu_busy() -> tuple[float, float]:
    """(busy, total) jiffies of the machine, from /proc/stat."""
    fields = [float(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return sum(fields) - idle, sum(fields)


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
    curve = []
    # One worker, its pool grown between the steps (Celery's pool_grow: the new processes forked
    # from the worker, as its first ones were), so the curve does not boot a worker per step. It
    # boots after the first fill (whose purge empties the broker of the wake-ups the load before
    # left: consumed, they would start the drain before the clock); later fills find it idle.
    name = f"curve-{os.getpid()}@{socket.gethostname()}"
    worker_log = folder / "curve.log"
    worker = None
    try:
        processes_now = CURVE_WORKERS[0]
        for count in CURVE_WORKERS:
            log(f"store: worker curve: {CURVE_EVENTS:,} events queued, then drained by {count} worker process(es)")
            fill = [*helper, "fill", str(CURVE_EVENTS), "bench", str(count - processes_now), name]
            subprocess.run(fill, cwd=ROOT, env=env, check=True)
            if worker is None:
                with open(worker_log, "wb") as output:
                    worker = subprocess.Popen(
                        [sys.executable, "-m", "celery", "-A", "timonier", "worker", "-l", "info",
                         "--concurrency", str(count), "-n", name],
                        cwd=ROOT, env={**env, "LOG_LEVEL": "WARNING"}, stdout=output, stderr=subprocess.STDOUT,
                    )  # fmt: skip
                _wait_for(_log_says_ready(worker_log), worker, worker_log, "start")
            _wait_for(_pool_of(worker.pid, count), worker, worker_log, f"run {count} processes")
            processes_now = count
            before = sql(database_url, "SELECT count(*) FROM cdp_event")[0][0]
            cpu_before, worker_before = _cpu_busy(), tree_cpu(worker.pid)
            woke = subprocess.run([*helper, "wake"], cwd=ROOT, env=env, check=True, capture_output=True, text=True)
            started = float(woke.stdout.split()[0])
            wait_drained(database_url)
            elapsed = time.time() - started
            (busy, total), worker_cpu = _cpu_busy(), tree_cpu(worker.pid) - worker_before
            stored = sql(database_url, "SELECT count(*) FROM cdp_event")[0][0] - before
            curve.append(
                {
                    "workers": count,
                    "events_per_s": stored / elapsed,
                    "machine_cpu": (busy - cpu_before[0]) / max(total - cpu_before[1], 1) * 100,
                    "worker_cores": worker_cpu / elapsed,
                    "stored": stored,
                    "seconds": elapsed,
                }
            )
    finally:
        if worker is not None:
            log("store: worker curve: stopping the worker")
            _stop(worker)
            log("store: worker curve: stopped")
    return curve


def _log_says_ready(worker_log: Path):
    return lambda: WORKER_READY.search(worker_log.read_text(errors="replace"))


def _pool_of(pid: int, count: int):
    return lambda: len(_children(pid)) == count


def _children(pid: int) -> list[int]:
    """The worker's pool processes (the children of its main process)."""
    try:
        return [int(child) for task in Path(f"/proc/{pid}/task").iterdir() for child in (task / "children").read_text().split()]
    except OSError:
        return []


def _wait_for(condition, worker: subprocess.Popen, worker_log: Path, what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline or worker.poll() is not None:
            raise SystemExit(f"bench: the curve's worker did not {what}; see {worker_log}")
        time.sleep(0.1)


def rows_of(e2e: dict, curve: list[dict]) -> list[dict]:
    rows = [
        row("events/s stored end to end", "events/s", e2e["rate"], e2e["copy_rate"], target=TARGET_STORED,
            load_cpu=e2e["load_cpu"],
            note=f"limit: PostgreSQL COPY of the same rows ({e2e['stored']:,} cdp_event rows, one transaction); "
                 f"{e2e['stored']:,} events stored in {e2e['seconds']:.1f} s from the first request of a "
                 f"{e2e['load_seconds']} s wrk /v1/batch (100) run ({e2e['accepted']:,} accepted, non-2xx "
                 f"{e2e['errors']}); machine CPU {e2e['machine_cpu'] * 100:.0f} %"),
    ]  # fmt: skip
    cores = os.cpu_count()
    for point in curve:
        rows.append(
            row(f"stored events/s, one project, {point['workers']} worker(s)", "events/s", point["events_per_s"],
                curve[0]["events_per_s"], target=None, load_cpu=0.0,
                note=f"CPU {point['machine_cpu']:.0f} % of {cores} cores, workers {point['worker_cores']:.2f} cores; "
                     f"{point['stored']:,} events in {point['seconds']:.1f} s from an inbox filled beforehand "
                     f"(known customers; no load generator runs while measured)")
        )  # fmt: skip
    return rows


details: dict = {}  # the raw figures of the last store_rows, for write_part's details


def store_rows(*, env: dict, url: str, key: str, database_url: str, folder: Path, processes: list) -> list[dict]:
    """This part's rows on a live platform (gunicorn and one Celery worker in `processes`; the
    curve stops that worker and starts its own)."""
    e2e = end_to_end(url, key, database_url, folder)
    curve = worker_curve(env, database_url, folder, processes)
    details.update(end_to_end=e2e, curve=curve)
    return rows_of(e2e, curve)


def main() -> int:
    from testenv import ensure_packages, free_ports

    def interrupted(signum, _frame):  # unwind so that the finally below stops everything
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, interrupted)
    ensure_packages()
    if not shutil.which("wrk"):  # as bench/ingest.py does
        if os.geteuid() == 0:
            subprocess.run(["apt-get", "install", "-y", "-qq", "wrk"], check=True)
        else:
            raise SystemExit("bench: wrk is missing; install it with: sudo apt-get install -y wrk")
    folder = Path(tempfile.mkdtemp(prefix="timonier-bench-store-"))
    os.chmod(folder, 0o755)
    pg_port, redis_port, api_port = free_ports(3)
    postgres = live.postgres_server(folder / "pg", pg_port)
    redis = live.redis_server(folder / "redis", redis_port)
    processes: list[subprocess.Popen] = []
    try:
        postgres.start()
        redis.start()
        env = bench_env(folder, postgres.url, redis.url)
        subprocess.run([sys.executable, "manage.py", "migrate", "-v0"], cwd=ROOT, env=env, check=True)
        url, key = start_platform(env, api_port, processes)
        # As in bench/ingest.py, whose request rows run first: the bench's customers exist before
        # the measured run, so it measures a steady stream, not the first sight of 10,000 people.
        log("store: warm-up, /v1/batch for 2 s")
        wrk(url, key, folder, 2)
        wait_drained(postgres.url)
        rows = store_rows(env=env, url=url, key=key, database_url=postgres.url, folder=folder, processes=processes)
        print()
        print(f"Store ({'QUICK' if QUICK else 'full'}; load CPU = the load generator's share of the machine's "
              f"{os.cpu_count()} CPUs)")  # fmt: skip
        print(table(rows))
        for r in rows:
            print(f"  {r['measure']}: {r['note']}")
        path = write_part("store", rows, details)
        log(f"written to {path.relative_to(ROOT)}")
        return 0
    finally:
        stop_processes(processes)
        redis.stop()
        postgres.stop()
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
