"""`make bench` (after bench/ingest.py): what segments cost, on a throwaway PostgreSQL 15 and Redis.

A. Rebuild of an event-count segment (`purchase` at least 3 times within 30 days) over 1,000,000
   customers and 10,000,000 events (QUICK: 50,000 / 500,000) generated in SQL (generate_series)
   into a project created through the ORM: the first `membership_rebuild` (the code path of
   `manage.py rebuild_segments`: every entry written, with history) against the same write by
   hand in SQL, timed alike; and, printed only, the selection alone and a rebuild with no change.
B. Freshness under load: the live API (gunicorn) and one Celery worker, a background load of
   `/v1/batch` calls at a fixed rate from a load generator in its own process, and probe identify
   and track calls at a steady pace for fresh customers (`plan` = "pro", then "free"): the time
   from each 202 to the membership row appearing, then disappearing (p50/p95/max); the row is the
   worst p95 against the 2 s bound.
C. Cost of keeping segments live: events/s stored end to end under wrk `/v1/batch` load with no
   segment, then with the 20 segments of LIVE_SEGMENTS reading the ingested traits, event counts
   and event properties; with / without, and whether a full rebuild afterwards changes nothing.

Prints its rows (bench/table.py) and writes them to bench/results/parts/segments.json for
bench/report.py. Everything runs on 127.0.0.1 and stops by itself. BENCH_SEGMENTS=abc chooses the
parts (C runs before B: B's load is half of what C measured with segments); BENCH_SECONDS sets each
wrk run. QUICK=1: the small A, 2-second wrk runs and 20 probes.
"""

import collections
import http.client
import json
import math
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
sys.path.insert(0, str(ROOT))

from testenv import ensure_packages, free_ports  # noqa: E402

sys.path.insert(0, str(ROOT / "bench"))
import live  # noqa: E402
from live import CONNECTIONS, bench_env, log, sql, start_platform, wait_drained  # noqa: E402
from table import QUICK, Cpu, row, table, tree_cpu, write_part  # noqa: E402

PARTS = os.environ.get("BENCH_SEGMENTS", "abc").lower()
CUSTOMERS = int(os.environ.get("BENCH_CUSTOMERS", "50000" if QUICK else "1000000"))
EVENTS = int(os.environ.get("BENCH_EVENTS", "500000" if QUICK else "10000000"))
PROBES = int(os.environ.get("BENCH_PROBES", "20" if QUICK else "200"))
# How long after the last probe a membership may still appear (longer: counted NOT SEEN).
PROBE_GRACE = 10 if QUICK else 30
SECONDS = 2 if QUICK and "BENCH_SECONDS" not in os.environ else live.SECONDS
WARM_UP = 1 if QUICK else 5
FRESHNESS_BOUND_MS = 2000
PROBE_RATE = float(os.environ.get("BENCH_PROBE_RATE", "10"))  # probes per second

PURCHASES_30D = {
    "type": "event",
    "event_name": "purchase",
    "count": {"op": "greater_than_or_equals", "value": 3},
    "within": {"value": 30, "unit": "days"},
}
PRO = {"type": "trait", "name": "plan", "op": "equals", "value": "pro"}
FREE = {"type": "trait", "name": "plan", "op": "equals", "value": "free"}
BOUGHT = {"type": "event", "event_name": "purchase"}
BIG_SPENDER = {
    "type": "event",
    "event_name": "purchase",
    "where": [{"name": "amount", "op": "greater_than", "value": 20}],
}


def purchases(op: str, value: int, **more) -> dict:
    return {"type": "event", "event_name": "purchase", "count": {"op": op, "value": value}, **more}


# C: 20 segments that read what the load ingests (purchase events of bench customers, with their
# amount, item and currency; the traits `plan` and `seen`), as a shop would define them: traits,
# event presence and counts (growing, exact, zero), property filters, windows, and/or/not.
LIVE_SEGMENTS = {
    "bought": BOUGHT,
    "bought 3 times in 30 days": PURCHASES_30D,
    "big spender": BIG_SPENDER,
    "pro": PRO,
    "pro buyers": {"type": "and", "conditions": [PRO, BOUGHT]},
    "free": FREE,
    "not pro": {"type": "not", "condition": PRO},
    "seen": {"type": "trait", "name": "seen", "op": "is_set"},
    "seen a lot": {"type": "trait", "name": "seen", "op": "greater_than", "value": 5000},
    "pro or team": {"type": "trait", "name": "plan", "op": "in", "value": ["pro", "team"]},
    "loyal": purchases("greater_than_or_equals", 10),
    "bought once": purchases("equals", 1),
    "t-shirt buyers": {
        "type": "event",
        "event_name": "purchase",
        "where": [{"name": "item", "op": "equals", "value": "T-Shirt"}],
    },
    "USD buyers this week": {
        "type": "event",
        "event_name": "purchase",
        "within": {"value": 7, "unit": "days"},
        "where": [{"name": "currency", "op": "equals", "value": "USD"}],
    },
    "small spender": {
        "type": "event",
        "event_name": "purchase",
        "where": [{"name": "amount", "op": "less_than", "value": 5}],
    },
    "free or big spender": {"type": "or", "conditions": [FREE, BIG_SPENDER]},
    "pro, never bought": {"type": "and", "conditions": [PRO, {"type": "not", "condition": BOUGHT}]},
    "never bought": purchases("equals", 0),
    "free, 5 purchases": {"type": "and", "conditions": [FREE, purchases("greater_than_or_equals", 5)]},
    "big spender 3 times in 30 days": purchases(
        "greater_than_or_equals",
        3,
        within={"value": 30, "unit": "days"},
        where=[{"name": "amount", "op": "greater_than_or_equals", "value": 30}],
    ),
}
assert len(LIVE_SEGMENTS) == 20

BATCH_LUA = """
local n = 0
request = function()
  local items = {}
  for i = 1, 100 do
    n = n + 1
    local id = 'PREFIX' .. (n % 10000)
    if n % 10 == 0 then
      items[i] = '{"type":"identify","userId":"' .. id .. '","traits":{"plan":"' .. (n % 20 == 0 and 'pro' or 'free') .. '","seen":' .. n .. '}}'
    else
      items[i] = '{"type":"track","userId":"' .. id .. '","event":"purchase","properties":{"item":"T-Shirt","amount":' .. (n % 40) .. ',"currency":"USD","n":' .. n .. '}}'
    end
  end
  local body = '{"batch":[' .. table.concat(items, ",") .. ']}'
  return wrk.format("POST", "/v1/batch", {["Content-Type"]="application/json", ["Authorization"]="Bearer KEY"}, body)
end
"""


# --- A: rebuild of an event-count segment over generated data -------------------------------------


def generate(database_url: str, project_id: int) -> tuple[float, float]:
    """CUSTOMERS customers and EVENTS events (a fifth of them `purchase`, over 90 days, skewed
    towards some customers) in the project; returns the seconds the two INSERT … SELECT took."""
    import psycopg

    with psycopg.connect(database_url, autocommit=True) as conn:
        started = time.monotonic()
        conn.execute(
            "INSERT INTO cdp_customer (project_id, external_id, traits, trait_times, email, name, first_seen_at, "
            "last_seen_at, created_at, updated_at) "
            "SELECT %s, 'a-' || g, jsonb_build_object('plan', CASE WHEN g %% 4 = 0 THEN 'pro' ELSE 'free' END), "
            "'{}', '', '', now() - interval '90 days', now(), now(), now() FROM generate_series(1, %s) g",
            [project_id, CUSTOMERS],
        )
        customers = time.monotonic() - started
        log(f"A: customers in {customers:.1f} s")
        low, high = conn.execute(
            "SELECT min(id), max(id) FROM cdp_customer WHERE project_id = %s", [project_id]
        ).fetchone()
        assert high - low + 1 == CUSTOMERS, "customer ids are not consecutive"
        started = time.monotonic()
        # Loading 10M rows then building each index once is several times faster than keeping the
        # indexes up to date row by row; the same definitions come back (pg_indexes), and a larger
        # WAL allowance spares checkpoints during the load only.
        conn.execute("ALTER SYSTEM SET max_wal_size = '16GB'")
        conn.execute("SELECT pg_reload_conf()")
        indexes = conn.execute(
            "SELECT i.indexname, i.indexdef, c.conname FROM pg_indexes i LEFT JOIN pg_constraint c "
            "ON c.conname = i.indexname AND c.conrelid = 'cdp_event'::regclass "
            "WHERE i.tablename = 'cdp_event' AND i.indexname <> 'cdp_event_pkey'"
        ).fetchall()
        for name, _definition, constraint in indexes:
            if constraint:
                conn.execute(f'ALTER TABLE cdp_event DROP CONSTRAINT "{constraint}"')
            else:
                conn.execute(f'DROP INDEX "{name}"')
        # random()^2 gives a few customers many events and most customers few, as real traffic does.
        # Two sessions insert half each: generating the rows is what costs, and there are 2 cores.
        halves = [(1, EVENTS // 2), (EVENTS // 2 + 1, EVENTS)]
        with ThreadPoolExecutor(2) as pool:
            loads = [
                pool.submit(insert_events, database_url, project_id, low, first, last, seed)
                for (first, last), seed in zip(halves, (0.5, 0.25), strict=True)
            ]
            for load in loads:
                load.result()
        log(f"A: events inserted in {time.monotonic() - started:.1f} s")
        conn.execute("SET maintenance_work_mem = '1GB'")
        for name, definition, constraint in indexes:
            conn.execute(definition)
            if constraint:
                conn.execute(f'ALTER TABLE cdp_event ADD CONSTRAINT "{constraint}" UNIQUE USING INDEX "{name}"')
        log(f"A: indexes rebuilt, {time.monotonic() - started:.1f} s so far")
        conn.execute("ALTER SYSTEM RESET max_wal_size")
        conn.execute("SELECT pg_reload_conf()")
        conn.execute("VACUUM ANALYZE cdp_customer")
        conn.execute("VACUUM ANALYZE cdp_event")
        events = time.monotonic() - started
    return customers, events


def insert_events(database_url: str, project_id: int, low: int, first: int, last: int, seed: float) -> None:
    import psycopg

    with psycopg.connect(database_url, autocommit=True) as conn:
        # Nor are the foreign keys checked row by row: every generated customer id exists.
        conn.execute("SET session_replication_role = replica")
        conn.execute("SELECT setseed(%s)", [seed])
        conn.execute(
            "INSERT INTO cdp_event (project_id, customer_id, type, name, properties, context, timestamp, "
            "received_at, message_id) "
            "SELECT %s, %s + floor(random() ^ 2 * %s)::bigint, CASE WHEN g %% 10 = 9 THEN 'page' ELSE 'track' END, "
            "CASE WHEN g %% 10 < 2 THEN 'purchase' WHEN g %% 10 = 9 THEN '' ELSE 'viewed_' || (g %% 10) END, "
            "jsonb_build_object('amount', g %% 50), '{}', t, t, lpad(g::text, 10, '0') "
            "FROM (SELECT g, now() - random() * interval '90 days' AS t FROM generate_series(%s, %s) g) generated",
            [project_id, low, CUSTOMERS, first, last],
        )


HAND_SELECT = (
    "SELECT customer_id FROM cdp_event WHERE project_id = %(project)s AND type = 'track' AND name = 'purchase' "
    "AND timestamp >= %(since)s GROUP BY customer_id HAVING count(*) >= 3"
)


def part_a(database_url: str) -> list[dict]:
    from datetime import timedelta

    from django.db import connection

    from cdp.models import Customer
    from organizations.models import Organization, Project
    from segments.conditions import compile_sql
    from segments.membership import membership_rebuild
    from segments.models import Membership, MembershipChange, Segment
    from timonier import clock

    organization = Organization.objects.create(name="Segments bench", slug="segments-bench")
    project = Project.objects.create(organization=organization, name="Rebuild", slug="rebuild")
    log(f"A: generating {CUSTOMERS:,} customers and {EVENTS:,} events")
    customers_s, events_s = generate(database_url, project.pk)
    segment = Segment.objects.create(project=project, name="3 purchases in 30 days", condition=PURCHASES_30D)
    now = clock.now()
    params = {"project": project.pk, "since": now - timedelta(days=30)}

    def timed(function):
        started = time.monotonic()
        result = function()
        return time.monotonic() - started, result

    def hand_select():
        with connection.cursor() as cursor:
            cursor.execute(HAND_SELECT, params)
            return len(cursor.fetchall())

    def orm_select():
        matched = Customer.objects.filter(project=project).filter(compile_sql(PURCHASES_30D, now=now))
        return len(list(matched.values_list("pk", flat=True)))

    log("A: the selection alone, generated then by hand (each run twice, the second counted)")
    timed(orm_select)
    orm_s, orm_rows = timed(orm_select)
    timed(hand_select)
    hand_s, hand_rows = timed(hand_select)
    log(f"A: select: condition {orm_s:.2f} s ({orm_rows} rows), by hand {hand_s:.2f} s ({hand_rows} rows)")
    assert orm_rows == hand_rows, f"the condition selects {orm_rows} customers, the hand query {hand_rows}"

    log("A: membership_rebuild, first build then with no change")
    first_s, (entered, exited) = timed(lambda: membership_rebuild(segment, now=now))
    log(f"A: first build {first_s:.2f} s")
    assert (entered, exited) == (hand_rows, 0), (entered, exited, hand_rows)
    second_s, second = timed(lambda: membership_rebuild(segment, now=now))
    log(f"A: rebuild with no change {second_s:.2f} s")
    assert second == (0, 0), second

    # The same write by hand: a second segment's entries and their history, in one transaction.
    hand_segment = Segment.objects.create(project=project, name="by hand", condition=PURCHASES_30D)
    membership = connection.ops.quote_name(Membership._meta.db_table)
    history = connection.ops.quote_name(MembershipChange._meta.db_table)

    def hand_write():
        from django.db import transaction

        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(
                f"WITH entered AS (INSERT INTO {membership} (customer_id, segment_id, entered_at) "  # noqa: S608
                f"SELECT customer_id, %(segment)s, %(now)s FROM ({HAND_SELECT}) matched RETURNING customer_id) "
                f"INSERT INTO {history} (segment_id, customer_id, kind, at) "
                f"SELECT %(segment)s, customer_id, 'entered', %(now)s FROM entered",
                {**params, "segment": hand_segment.pk, "now": now},
            )
            return cursor.rowcount

    hand_write_s, written = timed(hand_write)
    assert written == hand_rows, (written, hand_rows)

    data = (
        f"{CUSTOMERS:,} customers / {EVENTS:,} events{' (QUICK: a twentieth)' if QUICK else ''}; purchase >= 3 times within 30 days, {hand_rows:,} members; data generated in {customers_s:.1f} s + "
        f"{events_s:.1f} s incl. VACUUM ANALYZE; no load generator (SQL from this process)"
    )
    return [
        row(
            "segment build, 1M customers / 10M events",
            "s",
            first_s,
            hand_write_s,
            target=0.5,
            lower_is_better=True,
            note=f"first membership_rebuild ({entered:,} entries + history, committed) vs the same write by hand "
            f"in SQL; {data}",
        ),
        row(
            "  segment select alone",
            "s",
            orm_s,
            hand_s,
            target=None,
            lower_is_better=True,
            note="the condition's compile_sql SELECT vs the hand-written GROUP BY (second of two runs each)",
        ),
        row(
            "  segment rebuild, no change",
            "s",
            second_s,
            hand_s,
            target=None,
            lower_is_better=True,
            note="membership_rebuild finding nothing to change vs the hand-written select alone",
        ),
    ]


# --- the environment ------------------------------------------------------------------------------


def main() -> int:
    ensure_packages()
    folder = Path(tempfile.mkdtemp(prefix="timonier-bench-segments-"))
    os.chmod(folder, 0o755)
    pg_port, redis_port, api_port = free_ports(3)
    postgres = live.postgres_server(folder / "pg", pg_port)
    redis = live.redis_server(folder / "redis", redis_port)
    processes: list[subprocess.Popen] = []
    rows: list[dict] = []
    try:
        postgres.start()
        redis.start()
        # This process sets Django up on the same servers as the processes it starts.
        os.environ.update(bench_env(folder, postgres.url, redis.url), DJANGO_SETTINGS_MODULE="timonier.settings")
        env = {**os.environ}
        import django

        django.setup()
        from django.core.management import call_command

        call_command("migrate", verbosity=0)
        if "a" in PARTS:
            rows += part_a(postgres.url)
            if os.environ.get("BENCH_HOLD"):
                log(f"holding: psql {postgres.url}; remove {folder / 'hold'} to go on")
                (folder / "hold").touch()
                while (folder / "hold").exists():
                    time.sleep(1)
            # B and C start from an empty platform.
            sql(postgres.url, "TRUNCATE cdp_event, cdp_customer, segments_segment CASCADE")
            # Statistics of the empty tables, as autovacuum would soon have them: otherwise B's and
            # C's first builds are planned from A's statistics (seen once: a build's SELECT still
            # running after 2 minutes, where it takes milliseconds).
            sql(postgres.url, "ANALYZE cdp_event, cdp_customer, segments_membership, segments_membershipchange")
        if "b" in PARTS or "c" in PARTS:
            rows += live_parts(env, api_port, folder, postgres.url, processes)
        print()
        print(table(rows))
        for r in rows:
            print(f"  {r['measure'].strip()}: {r['note']}")
        write_part("segments", rows)
        return 0
    finally:
        from django.db import connections

        connections.close_all()
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


# --- B and C: the live API and worker --------------------------------------------------------------


def wrk_batches(url: str, key: str, prefix: str, seconds: int, folder: Path) -> dict:
    path = folder / "load.lua"
    path.write_text(BATCH_LUA.replace("KEY", key).replace("PREFIX", prefix))
    command = ["wrk", "-t2", f"-c{CONNECTIONS}", f"-d{seconds}s", "-s", str(path), url + "/v1/batch"]
    output = subprocess.run(command, capture_output=True, text=True, check=True, timeout=seconds + 60).stdout
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    return {
        "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1)),
        "errors": int(non_2xx.group(1)) if non_2xx else 0,
    }


def stored_rate(url: str, key: str, prefix: str, database_url: str, folder: Path, worker_pid: int) -> dict:
    """wrk `/v1/batch` load for SECONDS; events/s stored from the first request to the drained
    inbox, wrk's share of the machine's CPUs while it ran, and the worker's CPU seconds (which
    the other benches sharing the machine move less than the wall time)."""
    before = sql(database_url, "SELECT count(*) FROM cdp_event")[0][0]
    worker_before = tree_cpu(worker_pid)
    cpu = Cpu()
    started = time.monotonic()
    result = wrk_batches(url, key, prefix, SECONDS, folder)
    load_cpu, _ = cpu.shares()
    drained = wait_drained(database_url)
    stored = sql(database_url, "SELECT count(*) FROM cdp_event")[0][0] - before
    return {
        "worker_ms_per_1000": (tree_cpu(worker_pid) - worker_before) * 1e6 / max(stored, 1),
        "rate": stored / (drained - started),
        "stored": stored,
        "seconds": drained - started,
        "accepted": result["rps"] * 100,
        "errors": result["errors"],
        "load_cpu": load_cpu,
    }


def part_c(url: str, key: str, database_url: str, folder: Path, worker_pid: int) -> tuple[list[dict], float]:
    from organizations.models import Project
    from segments.models import Segment
    from segments.services import segment_create

    log(f"C: warm-up, {WARM_UP} s")
    wrk_batches(url, key, "warm-", WARM_UP, folder)
    wait_drained(database_url)
    wait_idle()
    log(f"C: /v1/batch load for {SECONDS} s with no segment")
    bare = stored_rate(url, key, "c0-", database_url, folder, worker_pid)
    wait_idle()
    log(f"C: {bare['stored']:,} events stored in {bare['seconds']:.1f} s; building the {len(LIVE_SEGMENTS)} segments")
    # As autovacuum would after such an insert: the builds below are planned on the loaded tables,
    # not on the statistics of the emptied ones (a build then ran past 120 s once, a plan for empty tables).
    sql(database_url, "ANALYZE cdp_event, cdp_customer")
    project = Project.objects.get(slug="bench")
    for name, condition in LIVE_SEGMENTS.items():
        segment_create(project=project, name=name, condition=condition)
    wait_built(Segment.objects.filter(project=project))
    log("C: the segments built")
    wait_idle()
    log(f"C: /v1/batch load for {SECONDS} s with {len(LIVE_SEGMENTS)} segments")
    live_run = stored_rate(url, key, "c20-", database_url, folder, worker_pid)
    wait_idle()
    exact = segments_exact(project)

    def run_text(run: dict) -> str:
        return (
            f"{run['stored']:,} in {run['seconds']:.1f} s, accepted {run['accepted']:,.0f}/s, non-2xx {run['errors']}, "
            f"worker CPU {run['worker_ms_per_1000']:.0f} ms per 1,000 events"
        )

    rows = [
        row(
            f"ingest with {len(LIVE_SEGMENTS)} live segments",
            "events/s",
            live_run["rate"],
            bare["rate"],
            target=0.8,
            load_cpu=max(bare["load_cpu"], live_run["load_cpu"]),
            note=f"stored e2e under wrk /v1/batch of 100 (90 track purchase + 10 identify), {CONNECTIONS} "
            f"connections, {SECONDS} s, 10,000 customers: with segments {run_text(live_run)}; none "
            f"{run_text(bare)}; membership after the load equal to a full rebuild: {exact}",
        )
    ]
    return rows, live_run["rate"]


def wait_idle(timeout: float = 300) -> None:
    """Until the broker's queues are empty: the wake-ups a load leaves queued are worked off before
    the next step, so a build or a probe is not measured behind them."""
    import redis

    client = redis.Redis.from_url(os.environ["REDIS_URL"])
    deadline = time.monotonic() + timeout
    while client.llen("celery") + client.llen("workflows") > 0:
        if time.monotonic() > deadline:
            raise SystemExit("bench: the worker's queue did not empty within the timeout")
        time.sleep(0.1)


def wait_built(segments, timeout: float = 120) -> None:
    """Until every segment of the queryset is built; a failed build or a timeout ends the bench."""
    from segments.models import Segment

    deadline = time.monotonic() + timeout
    while True:
        statuses = dict(segments.values_list("name", "status"))
        if failed := {name for name, status in statuses.items() if status == Segment.Status.FAILED}:
            raise SystemExit(f"bench: segments failed to build: {failed}")
        if all(status == Segment.Status.READY for status in statuses.values()):
            return
        if time.monotonic() > deadline:
            from django.db import connection

            with connection.cursor() as cursor:
                cursor.execute(
                    "SELECT now() - query_start, left(query, 3000) FROM pg_stat_activity "
                    "WHERE state = 'active' AND pid <> pg_backend_pid()"
                )
                running = cursor.fetchall()
            raise SystemExit(f"bench: the segments were not built within {timeout:g} s: {statuses}; running {running}")
        time.sleep(0.2)


def segments_exact(project) -> str:
    """Whether rebuilding each segment from scratch finds nothing to change."""
    from segments.membership import membership_rebuild
    from segments.models import Segment

    wrong = {segment.name: membership_rebuild(segment) for segment in Segment.objects.filter(project=project)}
    wrong = {name: changes for name, changes in wrong.items() if changes != (0, 0)}
    return "yes" if not wrong else f"NO, (entries, exits) of a rebuild: {wrong}"


def steady_batches(port: int, key: str, events_per_second: float) -> int:
    """The load generator of B, in its own process (`segments.py steady PORT KEY RATE`):
    `/v1/batch` calls of 100 track events at a fixed rate on one keep-alive connection, until its
    stdin closes; then prints what it sent as JSON."""
    stop = threading.Event()
    threading.Thread(target=lambda: (sys.stdin.read(), stop.set()), daemon=True).start()
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    interval = 100 / events_per_second
    statuses: collections.Counter = collections.Counter()
    started = time.monotonic()
    n = sent = 0
    while not stop.is_set():
        items = []
        for _ in range(100):
            n += 1
            items.append(
                f'{{"type":"track","userId":"load-{n % 10000}","event":"purchase",'
                f'"properties":{{"amount":{n % 40},"n":{n}}}}}'
            )
        statuses[post(connection, key, "/v1/batch", '{"batch":[' + ",".join(items) + "]}")] += 1
        sent += 100
        pause = started + sent / 100 * interval - time.monotonic()
        if pause > 0:
            stop.wait(pause)
    print(json.dumps({"sent": sent, "elapsed": time.monotonic() - started, "statuses": statuses}))
    return 0


class SteadyLoad:
    """B's background load: the `steady` subprocess, and its share of the machine's CPUs."""

    def __init__(self, port: int, key: str, events_per_second: float):
        command = [sys.executable, __file__, "steady", str(port), key, str(events_per_second)]
        self.process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.started = time.monotonic()

    def stop(self) -> dict:
        cpu = tree_cpu(self.process.pid)
        wall = time.monotonic() - self.started
        output, _ = self.process.communicate("", timeout=60)
        return {**json.loads(output), "load_cpu": cpu / (wall * (os.cpu_count() or 1))}


def post(connection: http.client.HTTPConnection, key: str, path: str, body: str) -> int:
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {key}"}
    connection.request("POST", path, body=body, headers=headers)
    response = connection.getresponse()
    response.read()
    return response.status


def watch(database_url: str, segment_id: int, prefix: str, count: int, present: bool, deadline: float) -> dict:
    """Poll the segment's memberships of customers `prefix`0..count-1; the moment (time.time())
    each was first seen present (or absent)."""
    import psycopg

    seen: dict[str, float] = {}
    query = (
        "SELECT c.external_id FROM segments_membership m JOIN cdp_customer c ON c.id = m.customer_id "
        "WHERE m.segment_id = %s AND c.external_id LIKE %s"
    )
    with psycopg.connect(database_url, autocommit=True) as conn:
        while len(seen) < count and time.monotonic() < deadline:
            members = {row[0] for row in conn.execute(query, [segment_id, prefix + "%"])}
            moment = time.time()
            for n in range(count):
                name = f"{prefix}{n}"
                if name not in seen and (name in members) == present:
                    seen[name] = moment
            time.sleep(0.02)
    return seen


def backlog(database_url: str, stop: threading.Event) -> list[int]:
    """The inbox's waiting commands every 0.25 s until `stop`: whether probes queue behind the load
    (a backlog that grows: the worker saturated) or wait on the segment work itself."""
    import psycopg

    counts: list[int] = []
    with psycopg.connect(database_url, autocommit=True) as conn:
        while not stop.wait(0.25):
            counts.append(conn.execute("SELECT count(*) FROM cdp_command").fetchone()[0])
    return counts


def part_b(url: str, key: str, port: int, database_url: str, load_rate: float) -> list[dict]:
    from organizations.models import Project
    from segments.models import Segment
    from segments.services import segment_create

    project = Project.objects.get(slug="bench")
    trait = segment_create(project=project, name="probe pro", condition=PRO)
    event = segment_create(
        project=project, name="probe activated", condition={"type": "event", "event_name": "activated"}
    )
    wait_built(Segment.objects.filter(pk__in=[trait.pk, event.pk]))
    wait_idle()
    load = SteadyLoad(port, key, load_rate)
    sampled, stop_sampling = [], threading.Event()
    sampler = threading.Thread(target=lambda: sampled.extend(backlog(database_url, stop_sampling)), daemon=True)
    sampler.start()
    time.sleep(1 if QUICK else 3)
    log(f"B: {PROBES} probes at {PROBE_RATE:g}/s under {load_rate:,.0f} events/s of /v1/batch load")

    def probe(payloads: list[tuple[str, str, str]], watches: list[tuple[int, str, bool]]) -> list[dict]:
        """Send the calls of each probe at PROBE_RATE while watching the segments."""
        accepted: list[dict] = [{} for _ in watches]
        results: list[dict] = [{} for _ in watches]
        deadline = time.monotonic() + PROBES / PROBE_RATE + PROBE_GRACE
        threads = [
            threading.Thread(
                target=lambda i=i, w=w: results.__setitem__(i, watch(database_url, w[0], w[1], PROBES, w[2], deadline))
            )
            for i, w in enumerate(watches)
        ]
        for thread in threads:
            thread.start()
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        started = time.monotonic()
        for n in range(PROBES):
            for i, (path, prefix, body) in enumerate(payloads):
                status = post(connection, key, path, body.replace("ID", f"{prefix}{n}"))
                assert status == 202, status
                accepted[i][f"{prefix}{n}"] = time.time()
            pause = started + (n + 1) / PROBE_RATE - time.monotonic()
            if pause > 0:
                time.sleep(pause)
        for thread in threads:
            thread.join()
        return [
            {name: result[name] - at for name, at in sent.items() if name in result}
            for sent, result in zip(accepted, results, strict=True)
        ]

    enter_pro, enter_event = probe(
        [
            ("/v1/identify", "probe-", '{"customer_id":"ID","traits":{"plan":"pro"}}'),
            ("/v1/track", "probe-e-", '{"customer_id":"ID","event":"activated"}'),
        ],
        [(trait.pk, "probe-", True), (event.pk, "probe-e-", True)],
    )
    (exit_pro,) = probe(
        [("/v1/identify", "probe-", '{"customer_id":"ID","traits":{"plan":"free"}}')],
        [(trait.pk, "probe-", False)],
    )
    sent = load.stop()
    stop_sampling.set()
    sampler.join(timeout=10)
    achieved = sent["sent"] / sent["elapsed"]
    waiting = "inbox backlog not sampled"
    if len(sampled) >= 8:
        # A backlog that ends much larger than it began: the worker did not keep up with the load
        # (a saturated queue, the probes measured behind it), whatever the segment work costs.
        quarter = len(sampled) // 4
        first, last = statistics.median(sampled[:quarter]), statistics.median(sampled[-quarter:])
        trend = "GROWING: the worker is saturated" if last > 2 * first + 50 else "steady"
        waiting = (
            f"inbox backlog while probing: median {statistics.median(sampled):,.0f}, max {max(sampled):,} commands, "
            f"first quarter {first:,.0f} -> last quarter {last:,.0f} ({trend})"
        )

    def p95(latencies: dict) -> float:
        # A probe never seen counts as seen at the deadline (a lower bound): the figure is then
        # "at least", and always a number.
        unseen = [PROBE_GRACE] * (PROBES - len(latencies))
        values = sorted([*latencies.values(), *unseen])
        return statistics.quantiles(values, n=20)[-1] * 1000 if len(values) >= 2 else math.inf

    def line(label: str, latencies: dict) -> str:
        values = sorted(latencies.values())
        if len(values) < 2:
            return f"{label}: only {len(values)} of {PROBES} seen"
        missing = f", {PROBES - len(values)} NOT SEEN" if len(values) < PROBES else ""
        return (
            f"{label}: p50 {statistics.median(values) * 1000:.0f} / p95 {p95(latencies):.0f} / "
            f"max {values[-1] * 1000:.0f} ms{missing}"
        )

    worst = max(p95(v) for v in (enter_pro, enter_event, exit_pro))
    return [
        row(
            "segment freshness p95 under load",
            "ms",
            worst,
            FRESHNESS_BOUND_MS,
            target=1.0,
            lower_is_better=True,
            target_text="p95 < 2 s",
            load_cpu=sent["load_cpu"],
            note=f"202 of the API -> membership row visible (polled every 20 ms), {PROBES} probes at "
            f"{PROBE_RATE:g}/s under {achieved:,.0f} events/s of /v1/batch load (responses {sent['statuses']}; "
            f"{waiting}); "
            + "; ".join(
                [
                    line('identify plan "pro" -> enters', enter_pro),
                    line('track "activated" -> enters', enter_event),
                    line('identify plan "free" -> leaves', exit_pro),
                ]
            ),
        )
    ]


def live_parts(env: dict, api_port: int, folder: Path, database_url: str, processes: list) -> list[dict]:
    url, key = start_platform(env, api_port, processes)
    rows: list[dict] = []
    live_rate = None
    if "c" in PARTS:
        rows, live_rate = part_c(url, key, database_url, folder, worker_pid=processes[-1].pid)
    if "b" in PARTS:
        load_rate = float(os.environ.get("BENCH_FRESHNESS_LOAD", 0)) or (live_rate or 4000) / 2
        rows += part_b(url, key, api_port, database_url, load_rate)
    return rows


if __name__ == "__main__":
    if sys.argv[1:2] == ["steady"]:
        sys.exit(steady_batches(int(sys.argv[2]), sys.argv[3], float(sys.argv[4])))
    sys.exit(main())
