"""`make bench` (after segments): what the workflow engine does under ingest, on a throwaway
PostgreSQL 15 (durable) and Redis, with the API under gunicorn, a Celery worker of 2 processes
and `celery beat`, as the Procfile runs them, and an SMTP sink (aiosmtpd) on 127.0.0.1.

The workflow is the guide's Purchase Follow-Up with a delay: trigger `event` "purchase", Once per
customer, a 1-second Time Delay, then an Email of a published template (Liquid in its body, so
each email is compiled for its customer).

1. Runs/s entering the workflow: N customers identified with an email, then one `track purchase`
   each in `/v1/batch` calls of 100, as fast as the load generator (its own process) gets 202s;
   runs/s = runs made / (last run's started_at - first purchase accepted); emails/s likewise with
   the last delivery's sent_at. Target >= 1,000 runs/s.
2. Lateness of the delay of those runs: email step entered - (delay step entered + 1 s),
   p50 / p95 / max. Target p95 < 2 s.
3. Ingest cost of the active workflow: events/s stored end to end under wrk `/v1/batch` load
   (as bench/ingest.py measures it) of part 1's customers, who are already enrolled (the steady
   state of a Once-per-customer workflow: every purchase records a trigger that is decided on, no
   new run), with the workflow active against the same load with it paused; target >= 0.9. Printed
   beside it: the load of 10,000 new customers, each entering the workflow (its run, delay and
   email executing on the same cores during the load), against new customers before activation.
4. 100,000 runs waiting (inserted with SQL, wake_at a day ahead), the platform stopped: one
   `runs_execute()` that finds nothing due, in this process, median of 20 (target < 50 ms), and
   whether its plan uses the partial index `workflows_run_due`.

Prints its rows (bench/table.py: measure / unit / timonier / limit / ratio / target, the load
generator's CPU as a share of the machine's beside each) and writes them to
bench/results/parts/workflows.json for bench/report.py.
QUICK=1: 500 customers, 2-second wrk runs (1 s for the new customers of the printed row). BENCH_WF_CUSTOMERS and BENCH_SECONDS override.
"""

import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import live  # noqa: E402
from live import (  # noqa: E402
    CONNECTIONS,
    bench_env,
    log,
    purchases_lua,
    sql,
    start_beat,
    start_platform,
    stop_processes,
    wait_drained,
)
from table import Cpu, row, table, write_part  # noqa: E402

QUICK = os.environ.get("QUICK", "") not in ("", "0")
CUSTOMERS = int(os.environ.get("BENCH_WF_CUSTOMERS", "500" if QUICK else "10000"))
# How long part 1 waits for its runs to end and their emails to be sent before measuring what was done.
RUN_WAIT = int(os.environ.get("BENCH_WF_WAIT", "60" if QUICK else "600"))
SECONDS = 2 if QUICK and "BENCH_SECONDS" not in os.environ else live.SECONDS
# The printed row of new customers entering the workflow (and its no-workflow twin): QUICK loads
# them for 1 s, as the runs the load starts are what take the part's time.
NEW_SECONDS = 1 if QUICK and "BENCH_SECONDS" not in os.environ else SECONDS
WARM_UP = 1 if QUICK else 3
WAITING = 100_000
SWEEPS = 20
LOAD_THREADS = 8
DELAY_SECONDS = 1

TARGET_RUNS_PER_SECOND = 1000
TARGET_LATENESS_P95 = 2.0
TARGET_INGEST_RATIO = 0.9
TARGET_SWEEP_MS = 50

MJML = """<mjml>
  <mj-body>
    <mj-section>
      <mj-column>
        <mj-text>Thank you for your purchase, {{ customer.name | default: "friend" }}!</mj-text>
        <mj-button href="https://shop.example.com/orders">See your order</mj-button>
      </mj-column>
    </mj-section>
  </mj-body>
</mjml>"""

# --- the load generator: its own process, so its CPU is its own ------------------------------------


def load_main(url: str, key: str, kind: str, prefix: str, count: int) -> None:
    """`bench/workflows.py --load …`: `count` calls (identify or track purchase) for customers
    prefix0…, in `/v1/batch` calls of 100 over LOAD_THREADS keep-alive connections; prints JSON."""
    import http.client
    from urllib.parse import urlsplit

    bodies = []
    for first in range(0, count, 100):
        items = []
        for n in range(first, min(first + 100, count)):
            if kind == "identify":
                items.append(
                    {"type": "identify", "userId": f"{prefix}{n}",
                     "traits": {"email": f"{prefix}{n}@bench.example", "name": f"Customer {n}"}}
                )  # fmt: skip
            else:
                items.append(
                    {"type": "track", "userId": f"{prefix}{n}", "event": "purchase",
                     "properties": {"item": "T-Shirt", "amount": 29.99, "currency": "USD"}}
                )  # fmt: skip
        bodies.append(json.dumps({"batch": items}))
    parts = urlsplit(url)
    lock = threading.Lock()
    state = {"first": None, "last": None, "errors": 0, "requests": 0}
    queue = list(reversed(bodies))

    def worker() -> None:
        connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)
        headers = {"Content-Type": "application/json", "Authorization": f"Bearer {key}"}
        while True:
            with lock:
                if not queue:
                    break
                body = queue.pop()
            connection.request("POST", "/v1/batch", body=body, headers=headers)
            response = connection.getresponse()
            response.read()
            now = time.time()
            with lock:
                state["requests"] += 1
                if not 200 <= response.status < 300:
                    state["errors"] += 1
                elif state["first"] is None:
                    state["first"] = now
                state["last"] = now
        connection.close()

    started = time.time()
    threads = [threading.Thread(target=worker) for _ in range(LOAD_THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    state["started"], state["finished"] = started, time.time()
    print(json.dumps(state))


def send(url: str, key: str, kind: str, prefix: str, count: int) -> dict:
    output = subprocess.run(
        [sys.executable, __file__, "--load", url, key, kind, prefix, str(count)],
        capture_output=True, text=True, check=True, timeout=DRAIN_SECONDS,
    ).stdout  # fmt: skip
    result = json.loads(output)
    if result["errors"]:
        raise SystemExit(f"bench: {result['errors']} of {result['requests']} {kind} calls were refused")
    return result


DRAIN_SECONDS = 900


def wrk_batches(url: str, key: str, prefix: str, seconds: int, folder: Path, space: int = 10_000) -> dict:
    """wrk `/v1/batch` of 100 purchases for customers prefix0 … prefix<space - 1>."""
    path = folder / "load.lua"
    path.write_text(purchases_lua(key, prefix=prefix, space=space))
    command = ["wrk", "-t2", f"-c{CONNECTIONS}", f"-d{seconds}s", "-s", str(path), url + "/v1/batch"]
    output = subprocess.run(command, capture_output=True, text=True, check=True, timeout=seconds + 60).stdout
    non_2xx = [line for line in output.splitlines() if "Non-2xx" in line]
    return {"errors": int(non_2xx[0].split(":")[1]) if non_2xx else 0}


def stored_rate(
    url: str, key: str, prefix: str, database_url: str, folder: Path, space: int = 10_000, seconds: int = SECONDS
) -> dict:
    """wrk `/v1/batch` load for `seconds`; events/s stored from the first request to the drained inbox."""
    before = sql(database_url, "SELECT count(*) FROM cdp_event")[0][0]
    cpu = Cpu()
    started = time.monotonic()
    result = wrk_batches(url, key, prefix, seconds, folder, space)
    load_share, _ = cpu.shares()  # over wrk's run only: it is idle while the inbox drains
    drained = wait_drained(database_url)
    _, machine = cpu.shares()
    stored = sql(database_url, "SELECT count(*) FROM cdp_event")[0][0] - before
    seconds = drained - started
    return {"rate": stored / seconds, "stored": stored, "seconds": seconds, "errors": result["errors"],
            "load_cpu": load_share, "machine_cpu": machine}  # fmt: skip


# --- the SMTP sink --------------------------------------------------------------------------------


class Sink:
    """Counts what it receives, with the time of the last message."""

    def __init__(self) -> None:
        self.count = 0
        self.last = None

    async def handle_DATA(self, server, session, envelope):
        self.count += 1
        self.last = time.time()
        return "250 OK"


# --- the parts ------------------------------------------------------------------------------------


def setup_workflow(project):
    """A published template and the draft workflow (activated later, after the ingest baseline)."""
    from emails.services import template_create, template_publish, template_save_design, template_update_settings
    from workflows.services import workflow_create

    template = template_create(project=project, name="Purchase Thank You", user=None)
    template_update_settings(
        template=template, subject="Thanks {{ customer.name }}", preheader="Your order", from_name="Bench Shop",
        from_email="", reply_to="", utm_source="timonier", utm_medium="email",
        utm_campaign="thanks", utm_content="", track_opens=True, track_clicks=True,
    )  # fmt: skip
    assert template_save_design(template=template, design={"pages": []}, mjml=MJML) == []
    template_publish(template=template, user=None)
    definition = {
        "trigger": {"type": "event", "event_name": "purchase", "where": []},
        "frequency": {"type": "once"},
        "steps": [
            {"id": "wait", "type": "delay", "duration": {"value": DELAY_SECONDS, "unit": "seconds"}},
            {"id": "thank_you", "type": "email", "template_id": template.pk},
        ],
        "edges": [{"from": "trigger", "to": "wait"}, {"from": "wait", "to": "thank_you"}],
    }
    return workflow_create(project=project, name="Purchase Follow-Up", definition=definition, user=None)


def wait_for(check, deadline: float) -> bool:
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)
    return True


def wait_until(what: str, check, timeout: float = DRAIN_SECONDS) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise SystemExit(f"bench: {what} did not happen within {timeout:.0f} s")
        time.sleep(0.1)


def runs_phase(url: str, key: str, database_url: str, workflow_id: int) -> dict:
    """Part 1 and 2: N identified customers, one purchase each; runs/s, emails/s, delay lateness."""
    log(f"1: identifying {CUSTOMERS:,} customers with an email")
    send(url, key, "identify", "wf-", CUSTOMERS)
    wait_drained(database_url)
    first_run = sql(database_url, "SELECT coalesce(max(id), 0) FROM workflows_run")[0][0]
    log(f"1: {CUSTOMERS:,} purchases in /v1/batch calls of 100, {LOAD_THREADS} connections")
    cpu = Cpu()
    load = send(url, key, "track", "wf-", CUSTOMERS)
    load_share, _ = cpu.shares()
    runs_query = (
        "SELECT count(*), extract(epoch FROM max(started_at)) FROM workflows_run WHERE id > %s AND workflow_id = %s"
    )

    def entered() -> bool:
        return sql(database_url, runs_query, [first_run, workflow_id])[0][0] >= CUSTOMERS

    wait_until(f"{CUSTOMERS:,} runs entering", entered)
    count, last_started = sql(database_url, runs_query, [first_run, workflow_id])[0]
    log(f"1: {count:,} runs entered; waiting for them to end and their emails to be sent")
    _, machine_entering = cpu.shares()

    def ended() -> bool:
        return not sql(
            database_url,
            "SELECT 1 FROM workflows_run WHERE id > %s AND status IN ('active', 'waiting') LIMIT 1",
            [first_run],
        )

    def sent() -> bool:  # a run ends when its Delivery is written; the SMTP send follows
        return not sql(
            database_url,
            "SELECT 1 FROM emails_delivery d JOIN workflows_runstep s ON s.delivery_id = d.id "
            "WHERE s.run_id > %s AND d.status IN ('queued', 'sending') LIMIT 1",
            [first_run],
        )

    # Bounded: a slow engine is a result to print, not a reason to wait for ever.
    deadline = time.monotonic() + RUN_WAIT
    finished = wait_for(ended, deadline) and wait_for(sent, deadline)
    if not finished:
        log(f"1: the runs or their emails were not done within {RUN_WAIT} s; what was done is measured")
    deliveries = sql(
        database_url,
        "SELECT count(*) FILTER (WHERE d.status IN ('sent', 'opened', 'clicked')), count(*), "
        "extract(epoch FROM max(d.sent_at)) FROM emails_delivery d JOIN workflows_runstep s ON s.delivery_id = d.id "
        "WHERE s.run_id > %s",
        [first_run],
    )[0]
    _, machine_all = cpu.shares()
    # A delay whose email step has not been entered yet is at least (now - due) late: counted as
    # that lower bound, so an unfinished run makes the figures "at least", never better.
    lateness = sql(
        database_url,
        "SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY late), percentile_cont(0.95) WITHIN GROUP (ORDER BY late), "
        "max(late), count(*), count(*) FILTER (WHERE open) FROM ("
        "  SELECT extract(epoch FROM coalesce(e.entered_at, now()) - d.entered_at) - %s AS late, e.id IS NULL AS open "
        "  FROM workflows_runstep d LEFT JOIN workflows_runstep e ON e.run_id = d.run_id AND e.step_type = 'email' "
        "  WHERE d.step_type = 'delay' AND d.run_id > %s) lateness",
        [DELAY_SECONDS, first_run],
    )[0]
    statuses = dict(
        sql(database_url, "SELECT status, count(*) FROM workflows_run WHERE id > %s GROUP BY 1", [first_run])
    )
    sent, made, last_sent = deliveries
    first = load["first"]
    return {
        "runs": count,
        "runs_rate": count / (float(last_started) - first),
        "runs_span": float(last_started) - first,
        "sent": sent,
        "deliveries": made,
        "emails_rate": sent / (float(last_sent) - first) if sent else 0.0,
        "emails_span": float(last_sent) - first if sent else 0.0,
        "accepted_rate": CUSTOMERS / (load["last"] - first),
        "load_errors": load["errors"],
        "load_cpu": load_share,
        "machine_cpu_entering": machine_entering,
        "machine_cpu": machine_all,
        "lateness": [float(v) for v in lateness[:3]] if lateness[3] else [float("nan")] * 3,
        "lateness_count": lateness[3],
        "lateness_open": lateness[4],
        "finished": finished,
        "statuses": statuses,
    }


def engine_idle(database_url: str, timeout: float) -> int:
    """Wait up to `timeout` for every run to end; returns how many were still in progress."""
    deadline = time.monotonic() + timeout
    while True:
        left = sql(database_url, "SELECT count(*) FROM workflows_run WHERE status IN ('active', 'waiting')")[0][0]
        pending = sql(database_url, "SELECT count(*) FROM workflows_trigger")[0][0]
        if (left == 0 and pending == 0) or time.monotonic() > deadline:
            return left + pending
        time.sleep(0.5)


def sweep_phase(database_url: str, workflow) -> dict:
    """Part 4, with the platform stopped: WAITING runs waiting a day, then sweeps that find nothing."""
    from django.db import connection, transaction
    from django.test.utils import CaptureQueriesContext

    from workflows.executor import runs_execute

    version_id = workflow.active_version_id
    log(f"4: inserting {WAITING:,} waiting runs")
    sql(
        database_url,
        "INSERT INTO workflows_run (project_id, workflow_id, version_id, customer_id, occurrence, status, "
        "current_step, seq, wake_at, held, skip_overdue_emails, wait_until, wait_event, resume_output, "
        "watches_changes, data, started_at, exit_reason, error, attention) "
        "SELECT %s, %s, %s, ids[1 + g %% array_length(ids, 1)], 'bench-waiting:' || g, 'waiting', 'wait', 1, "
        "now() + interval '1 day' + g * interval '1 second', false, false, "
        "now() + interval '1 day' + g * interval '1 second', '', '', false, '{}', now(), '', '', '' "
        "FROM generate_series(0, %s - 1) g, "
        "(SELECT array_agg(id ORDER BY id) AS ids FROM cdp_customer WHERE project_id = %s) customers",
        [workflow.project_id, workflow.pk, version_id, WAITING, workflow.project_id],
    )
    # As autovacuum would after such an insert; the planner's choice is what is measured.
    sql(database_url, "ANALYZE workflows_run")
    assert runs_execute() == 0, "a run was due: the sweep would not be an empty one"
    timings = []
    for _ in range(SWEEPS):
        started = time.perf_counter()
        claimed = runs_execute()
        timings.append((time.perf_counter() - started) * 1000)
        assert claimed == 0
    with CaptureQueriesContext(connection) as queries:
        runs_execute()
    claim = next(
        q["sql"] for q in queries.captured_queries if '"workflows_run"' in q["sql"] and "FOR UPDATE" in q["sql"]
    )
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("EXPLAIN (ANALYZE, BUFFERS) " + claim)
        plan = "\n".join(row[0] for row in cursor.fetchall())
        transaction.set_rollback(True)
    return {"median_ms": statistics.median(timings), "max_ms": max(timings), "plan": plan, "claim": claim,
            "uses_index": "workflows_run_due" in plan}  # fmt: skip


def _stop(signum, frame):
    raise SystemExit(f"bench: stopped by signal {signum}")  # so that `finally` stops the servers


def main() -> int:
    signal.signal(signal.SIGTERM, _stop)
    from testenv import ensure_packages, free_ports

    ensure_packages()
    if not shutil.which("wrk"):  # as bench/ingest.py does
        if os.geteuid() == 0:
            subprocess.run(["apt-get", "install", "-y", "-qq", "wrk"], check=True)
        else:
            raise SystemExit("bench: wrk is missing; install it with: sudo apt-get install -y wrk")
    from aiosmtpd.controller import Controller

    folder = Path(tempfile.mkdtemp(prefix="timonier-bench-workflows-"))
    os.chmod(folder, 0o755)
    pg_port, redis_port, api_port, smtp_port = free_ports(4)
    postgres = live.postgres_server(folder / "pg", pg_port)
    redis = live.redis_server(folder / "redis", redis_port)
    sink = Sink()
    smtp = Controller(sink, hostname="127.0.0.1", port=smtp_port, server_hostname="localhost")
    processes: list[subprocess.Popen] = []
    try:
        postgres.start()
        redis.start()
        smtp.start()
        os.environ.update(
            bench_env(folder, postgres.url, redis.url),
            EMAIL_URL=f"smtp://127.0.0.1:{smtp_port}",
            DJANGO_SETTINGS_MODULE="timonier.settings",
        )
        env = {**os.environ}
        import django

        django.setup()
        from django.core.management import call_command

        call_command("migrate", verbosity=0)
        url, key = start_platform(env, api_port, processes, concurrency=2)
        start_beat(env, folder, processes)
        from organizations.models import Project

        workflow = setup_workflow(Project.objects.get(slug="bench"))

        log(f"3: warm-up, {WARM_UP} s")
        wrk_batches(url, key, "warm-", WARM_UP, folder)
        wait_drained(postgres.url)
        log(f"3: /v1/batch load for {NEW_SECONDS} s with no workflow")
        bare = stored_rate(url, key, "c0-", postgres.url, folder, seconds=NEW_SECONDS)

        from workflows.services import workflow_activate

        workflow_activate(workflow=workflow, user=None)
        workflow.refresh_from_db()
        # Part 1 before the ingest runs with the workflow: the runs that they make would still be executing.
        runs = runs_phase(url, key, postgres.url, workflow.pk)
        engine_idle(postgres.url, 60)
        # 3a, the steady state of a "Once per customer" workflow: the load's customers (part 1's)
        # are already enrolled, so every purchase still records a trigger and is decided on, but
        # no run starts. The same load with the workflow paused (no trigger recorded) is the limit.
        from workflows.services import workflow_pause, workflow_resume

        workflow_pause(workflow=workflow, user=None)
        log(f"3: /v1/batch load for {SECONDS} s, part 1's customers, the workflow paused")
        paused = stored_rate(url, key, "wf-", postgres.url, folder, CUSTOMERS)
        workflow_resume(workflow=workflow, user=None, overdue="run")
        log(f"3: /v1/batch load for {SECONDS} s, part 1's customers, the workflow active")
        steady = stored_rate(url, key, "wf-", postgres.url, folder, CUSTOMERS)
        # 3b: new customers, every one entering the workflow (a run, its delay and its email on the
        # same cores during the load), against the load of new customers before the activation.
        log(f"3: /v1/batch load for {NEW_SECONDS} s with the workflow active, every customer new")
        with_workflow = stored_rate(url, key, "c1-", postgres.url, folder, seconds=NEW_SECONDS)
        # Nothing measured after this needs the platform (part 4 runs with it stopped): QUICK does not
        # wait out the thousands of runs just started; what is left is ended by SQL below.
        left = engine_idle(postgres.url, 5 if QUICK else 60)
        # Killed, not stopped: a warm shutdown waits for the emails of the 10,000 runs still being
        # sent (15 s), and what is left is ended by SQL below.
        stop_processes(processes, kill=True)
        if left:
            ended = sql(
                postgres.url,
                "UPDATE workflows_run SET status = 'completed', wake_at = NULL, ended_at = now() "
                "WHERE status IN ('active', 'waiting') RETURNING id",
            )
            log(f"4: {len(ended):,} runs of part 3 still in progress were ended by SQL before the sweep")
        sweep = sweep_phase(postgres.url, workflow)

        p50, p95, worst = runs["lateness"]
        late = " (at least)" if runs["lateness_open"] else ""
        rows = [
            row("ingest with one active workflow", "events/s", steady["rate"], paused["rate"],
                target=TARGET_INGEST_RATIO, load_cpu=max(steady["load_cpu"], paused["load_cpu"]),
                note=f"stored e2e, purchases of {CUSTOMERS:,} customers already enrolled (Once per customer: a "
                f"trigger recorded and decided on per event, no new run): {steady['stored']:,} events in "
                f"{steady['seconds']:.1f} s active vs {paused['stored']:,} in {paused['seconds']:.1f} s paused; "
                f"machine CPU {steady['machine_cpu'] * 100:.0f} % vs {paused['machine_cpu'] * 100:.0f} %"),
            row("  ingest while every customer enters it (delay → email)", "events/s", with_workflow["rate"],
                bare["rate"], target=None, load_cpu=max(with_workflow["load_cpu"], bare["load_cpu"]),
                note=f"stored e2e, 10,000 new customers, each purchase of a new one starting a run whose email is "
                f"rendered and sent on the same cores during the load: {with_workflow['stored']:,} events in "
                f"{with_workflow['seconds']:.1f} s vs {bare['stored']:,} in {bare['seconds']:.1f} s with no "
                f"workflow; machine CPU {with_workflow['machine_cpu'] * 100:.0f} % vs "
                f"{bare['machine_cpu'] * 100:.0f} %"),
            row("workflow runs/s entering (delay → email)", "runs/s", runs["runs_rate"], TARGET_RUNS_PER_SECOND,
                target=1.0, target_text=f"≥ {TARGET_RUNS_PER_SECOND:,}/s", load_cpu=runs["load_cpu"],
                note=f"{runs['runs']:,} runs in {runs['runs_span']:.1f} s from the first purchase accepted; "
                f"limit = the absolute target"),
            row("  emails sent/s by those runs", "emails/s", runs["emails_rate"], None, target=None,
                load_cpu=runs["load_cpu"],
                note=f"{runs['sent']:,} of {runs['deliveries']:,} deliveries sent in {runs['emails_span']:.1f} s "
                f"(SMTP sink received {sink.count:,})"),
            row("delayed step lateness p95" + late, "s", p95, TARGET_LATENESS_P95, lower_is_better=True,
                target=1.0, target_text=f"p95 < {TARGET_LATENESS_P95:g} s", load_cpu=runs["load_cpu"],
                note=f"p50 {p50:.2f} s, max {worst:.2f} s over {runs['lateness_count']:,} delays of "
                f"{DELAY_SECONDS} s ({runs['lateness_open']:,} not over when measured, counted as now - due)"),
            row(f"empty executor sweep, {WAITING:,} runs waiting", "ms", sweep["median_ms"], TARGET_SWEEP_MS,
                lower_is_better=True, target=1.0, target_text=f"< {TARGET_SWEEP_MS} ms",
                note=f"median of {SWEEPS}, max {sweep['max_ms']:.1f} ms; index workflows_run_due used: "
                f"{'yes' if sweep['uses_index'] else 'NO'}; no load generator"),
        ]  # fmt: skip
        print()
        print(f"Workflows ({'QUICK' if QUICK else 'full'}: {CUSTOMERS:,} customers, wrk {SECONDS} s per ingest run, "
              f"{CONNECTIONS} connections)")  # fmt: skip
        print(table(rows))
        for r in rows:
            print(f"  {r['measure'].strip()}: {r['note']}")
        print(f"  part 1: purchases accepted at {runs['accepted_rate']:,.0f} events/s (non-2xx: {runs['load_errors']}); "
              f"machine CPU busy {runs['machine_cpu_entering'] * 100:.0f} % while runs entered, "
              f"{runs['machine_cpu'] * 100:.0f} % until they ended; run statuses {runs['statuses']}")  # fmt: skip
        print(
            f"  part 3: non-2xx {bare['errors']} / {paused['errors']} / {steady['errors']} / {with_workflow['errors']}"
        )
        print("  part 4: the executor's claim, EXPLAIN ANALYZE:")
        print("\n".join("    " + line for line in sweep["plan"].splitlines()))
        details = {"customers": CUSTOMERS, "seconds": SECONDS, "statuses": runs["statuses"], "plan": sweep["plan"]}
        log(f"written to {write_part('workflows', rows, details).relative_to(ROOT)}")
        return 0
    finally:
        from django.db import connections

        connections.close_all()
        stop_processes(processes)
        if smtp.loop.is_running():
            smtp.stop()
        redis.stop()
        postgres.stop()
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--load"]:
        url_, key_, kind_, prefix_, count_ = sys.argv[2:7]
        load_main(url_, key_, kind_, prefix_, int(count_))
        sys.exit(0)
    sys.exit(main())
