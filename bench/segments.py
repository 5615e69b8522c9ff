"""`make bench` (after bench/ingest.py): what segments cost, on a throwaway PostgreSQL 15 and Redis.

A. Rebuild of an event-count segment (`purchase` at least 3 times within 30 days) over 1,000,000
   customers and 10,000,000 events generated in SQL (generate_series) into a project created
   through the ORM: the first `membership_rebuild` (every entry written, with history) and a second
   one with nothing to change, next to the same selection written by hand in SQL, timed alike.
B. Freshness under load: the live API (gunicorn) and one Celery worker, a background load of
   `/v1/batch` calls at a fixed rate, and probe identify calls at a steady pace for fresh customers
   (`plan` = "pro", then "free"): the time from each 202 to the membership row appearing, then
   disappearing, in a trait segment (p50/p95/max).
C. Cost of keeping segments live: events/s stored end to end under wrk `/v1/batch` load with no
   segment, then with 5 segments reading the ingested traits and events; the overhead in %.

Everything runs on 127.0.0.1 and stops by itself. BENCH_SEGMENTS=abc chooses the parts (C runs
before B: B's load is half of what C measured with segments); BENCH_SECONDS sets each wrk run.
"""

import collections
import http.client
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

from testenv import Postgres, Redis, ensure_packages, free_ports  # noqa: E402

sys.path.insert(0, str(ROOT / "bench"))
from live import CONNECTIONS, SECONDS, bench_env, log, sql, start_platform, wait_drained  # noqa: E402

PARTS = os.environ.get("BENCH_SEGMENTS", "abc").lower()
CUSTOMERS = int(os.environ.get("BENCH_CUSTOMERS", "1000000"))
EVENTS = int(os.environ.get("BENCH_EVENTS", "10000000"))
PROBES = int(os.environ.get("BENCH_PROBES", "200"))
PROBE_RATE = float(os.environ.get("BENCH_PROBE_RATE", "10"))  # probes per second

PURCHASES_30D = {
    "type": "event",
    "event_name": "purchase",
    "count": {"op": "greater_than_or_equals", "value": 3},
    "within": {"value": 30, "unit": "days"},
}
PRO = {"type": "trait", "name": "plan", "op": "equals", "value": "pro"}
# C: segments that read what the load ingests (purchase events of bench customers, their traits).
LIVE_SEGMENTS = {
    "bought": {"type": "event", "event_name": "purchase"},
    "bought 3 times in 30 days": PURCHASES_30D,
    "big spender": {
        "type": "event",
        "event_name": "purchase",
        "where": [{"name": "amount", "op": "greater_than", "value": 20}],
    },
    "pro": PRO,
    "pro buyers": {"type": "and", "conditions": [PRO, {"type": "event", "event_name": "purchase"}]},
}

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


def part_a(database_url: str) -> list[str]:
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

    lines = [
        f"A. event-count segment rebuild: {CUSTOMERS:,} customers, {EVENTS:,} events "
        f"(generated in {customers_s:.1f} s + {events_s:.1f} s incl. VACUUM ANALYZE)",
        "   condition: purchase >= 3 times within 30 days; members: " + f"{hand_rows:,}",
        f"   select alone      condition (compile_sql) {orm_s:7.2f} s   by hand {hand_s:7.2f} s   "
        f"ratio {orm_s / hand_s:.2f}",
        f"   first build       membership_rebuild      {first_s:7.2f} s   by hand {hand_write_s:7.2f} s   "
        f"ratio {first_s / hand_write_s:.2f}   ({entered:,} entries + history rows, committed)",
        f"   rebuild, no change membership_rebuild     {second_s:7.2f} s   (0 entries, 0 exits)",
        f"   target: < 5 s and within 2x of hand SQL: "
        f"{'met' if max(first_s, second_s) < 5 and first_s / hand_write_s <= 2 else 'MISSED'}",
    ]
    return lines


# --- the environment ------------------------------------------------------------------------------


def main() -> int:
    ensure_packages()
    folder = Path(tempfile.mkdtemp(prefix="timonier-bench-segments-"))
    os.chmod(folder, 0o755)
    pg_port, redis_port, api_port = free_ports(3)
    postgres = Postgres(folder / "pg", pg_port, durable=True)
    redis = Redis(folder / "redis", redis_port)
    processes: list[subprocess.Popen] = []
    report: list[str] = []
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
            report += part_a(postgres.url)
            if os.environ.get("BENCH_HOLD"):
                log(f"holding: psql {postgres.url}; remove {folder / 'hold'} to go on")
                (folder / "hold").touch()
                while (folder / "hold").exists():
                    time.sleep(1)
            # B and C start from an empty platform.
            sql(postgres.url, "TRUNCATE cdp_event, cdp_customer, segments_segment CASCADE")
        if "b" in PARTS or "c" in PARTS:
            report += live_parts(env, api_port, folder, postgres.url, processes)
        print()
        print("\n".join(report))
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


def stored_rate(url: str, key: str, prefix: str, database_url: str, folder: Path) -> tuple[float, dict, int, float]:
    """wrk `/v1/batch` load for SECONDS; events/s stored from the first request to the drained inbox."""
    before = sql(database_url, "SELECT count(*) FROM cdp_event")[0][0]
    started = time.monotonic()
    result = wrk_batches(url, key, prefix, SECONDS, folder)
    drained = wait_drained(database_url)
    stored = sql(database_url, "SELECT count(*) FROM cdp_event")[0][0] - before
    return stored / (drained - started), result, stored, drained - started


def part_c(url: str, key: str, database_url: str, folder: Path) -> tuple[list[str], float]:
    from organizations.models import Project
    from segments.models import Segment
    from segments.services import segment_create

    log("C: warm-up, 5 s")
    wrk_batches(url, key, "warm-", 5, folder)
    wait_drained(database_url)
    log(f"C: /v1/batch load for {SECONDS} s with no segment")
    bare, bare_wrk, bare_stored, bare_s = stored_rate(url, key, "c0-", database_url, folder)
    project = Project.objects.get(slug="bench")
    for name, condition in LIVE_SEGMENTS.items():
        segment_create(project=project, name=name, condition=condition)
    deadline = time.monotonic() + 120
    while Segment.objects.filter(project=project).exclude(status=Segment.Status.READY).exists():
        if time.monotonic() > deadline:
            raise SystemExit("bench: the segments were not built within 120 s")
        time.sleep(0.2)
    log(f"C: /v1/batch load for {SECONDS} s with {len(LIVE_SEGMENTS)} segments")
    live, live_wrk, live_stored, live_s = stored_rate(url, key, "c5-", database_url, folder)
    exact = segments_exact(project)
    overhead = (bare - live) / bare * 100
    lines = [
        f"C. ingest with segments kept live: wrk /v1/batch of 100 (90 track purchase + 10 identify), "
        f"{CONNECTIONS} connections, {SECONDS} s each, 10,000 customers per run",
        f"   no segment        {bare:>9,.0f} events/s stored e2e   ({bare_stored:,} in {bare_s:.1f} s; "
        f"accepted {bare_wrk['rps'] * 100:,.0f}/s, non-2xx {bare_wrk['errors']})",
        f"   {len(LIVE_SEGMENTS)} segments        {live:>9,.0f} events/s stored e2e   ({live_stored:,} in {live_s:.1f} s; "
        f"accepted {live_wrk['rps'] * 100:,.0f}/s, non-2xx {live_wrk['errors']})",
        f"   overhead          {overhead:>9.1f} %   (target < 20 %: {'met' if overhead < 20 else 'MISSED'})",
        f"   membership after the load equal to a full rebuild: {exact}",
    ]
    return lines, live


def segments_exact(project) -> str:
    """Whether rebuilding each segment from scratch finds nothing to change."""
    from segments.membership import membership_rebuild
    from segments.models import Segment

    wrong = {segment.name: membership_rebuild(segment) for segment in Segment.objects.filter(project=project)}
    wrong = {name: changes for name, changes in wrong.items() if changes != (0, 0)}
    return "yes" if not wrong else f"NO, (entries, exits) of a rebuild: {wrong}"


class SteadyBatches(threading.Thread):
    """Background `/v1/batch` calls of 100 track events at a fixed rate, on one keep-alive connection."""

    def __init__(self, port: int, key: str, events_per_second: float):
        super().__init__(daemon=True)
        self.port, self.key, self.interval = port, key, 100 / events_per_second
        self.stop = threading.Event()
        self.sent = 0
        self.statuses: collections.Counter = collections.Counter()
        self.elapsed = 0.0

    def run(self) -> None:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        started = time.monotonic()
        n = 0
        while not self.stop.is_set():
            items = []
            for _ in range(100):
                n += 1
                items.append(
                    f'{{"type":"track","userId":"load-{n % 10000}","event":"purchase",'
                    f'"properties":{{"amount":{n % 40},"n":{n}}}}}'
                )
            status = post(connection, self.key, "/v1/batch", '{"batch":[' + ",".join(items) + "]}")
            self.sent += 100
            self.statuses[status] += 1
            pause = started + self.sent / 100 * self.interval - time.monotonic()
            if pause > 0:
                self.stop.wait(pause)
        self.elapsed = time.monotonic() - started


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


def part_b(url: str, key: str, port: int, database_url: str, load_rate: float) -> list[str]:
    from organizations.models import Project
    from segments.models import Segment
    from segments.services import segment_create

    project = Project.objects.get(slug="bench")
    trait = segment_create(project=project, name="probe pro", condition=PRO)
    event = segment_create(
        project=project, name="probe activated", condition={"type": "event", "event_name": "activated"}
    )
    while Segment.objects.filter(pk__in=[trait.pk, event.pk]).exclude(status=Segment.Status.READY).exists():
        time.sleep(0.2)
    load = SteadyBatches(port, key, load_rate)
    load.start()
    time.sleep(3)
    log(f"B: {PROBES} probes at {PROBE_RATE:g}/s under {load_rate:,.0f} events/s of /v1/batch load")

    def probe(payloads: list[tuple[str, str, str]], watches: list[tuple[int, str, bool]]) -> list[dict]:
        """Send the calls of each probe at PROBE_RATE while watching the segments."""
        accepted: list[dict] = [{} for _ in watches]
        results: list[dict] = [{} for _ in watches]
        deadline = time.monotonic() + PROBES / PROBE_RATE + 30
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
    load.stop.set()
    load.join()
    achieved = load.sent / load.elapsed

    def line(label: str, latencies: dict) -> str:
        values = sorted(latencies.values())
        if len(values) < 2:
            return f"   {label:<34} only {len(values)} of {PROBES} seen within the time limit"
        p95 = statistics.quantiles(values, n=20)[-1]
        missing = f", {PROBES - len(values)} NOT SEEN" if len(values) < PROBES else ""
        return (
            f"   {label:<34} p50 {statistics.median(values) * 1000:6.0f} ms   p95 {p95 * 1000:6.0f} ms   "
            f"max {values[-1] * 1000:6.0f} ms   ({len(values)} probes{missing})"
        )

    worst = max(
        (statistics.quantiles(sorted(v.values()), n=20)[-1] if len(v) >= 2 else 1e9)
        for v in (enter_pro, enter_event, exit_pro)
    )
    return [
        f"B. freshness: 202 of the API -> membership row visible (polled every 20 ms), {PROBES} probes at "
        f"{PROBE_RATE:g}/s, under a background load of {achieved:,.0f} events/s (/v1/batch of 100 track, "
        f"responses {dict(load.statuses)})",
        line('identify plan "pro" -> enters', enter_pro),
        line('track "activated" -> enters', enter_event),
        line('identify plan "free" -> leaves', exit_pro),
        f"   target: p95 < 2 s: {'met' if worst < 2 else 'MISSED'}",
    ]


def live_parts(env: dict, api_port: int, folder: Path, database_url: str, processes: list) -> list[str]:
    url, key = start_platform(env, api_port, processes)
    lines: list[str] = []
    live_rate = None
    if "c" in PARTS:
        lines, live_rate = part_c(url, key, database_url, folder)
    if "b" in PARTS:
        load_rate = float(os.environ.get("BENCH_FRESHNESS_LOAD", 0)) or (live_rate or 4000) / 2
        lines = part_b(url, key, api_port, database_url, load_rate) + lines
    return lines


if __name__ == "__main__":
    sys.exit(main())
