"""`make bench` part "emails": emails rendered and sent/s, against raw smtplib sending the same bytes.

On a throwaway PostgreSQL 15 (durable: fsync and synchronous_commit on; no Redis, nothing here
uses it) and an SMTP sink (aiosmtpd) on 127.0.0.1 in its own process, so that receiving costs
neither side of the ratio any of this process's CPU:

1. Setup, not timed: migrate; an organization and project; the guide's published template
   "Purchase Thank You" (MJML with Liquid in the subject and body, a button link that click
   tracking rewrites, the open pixel on); N customers with an email, identified through the CDP
   inbox and processor as the API would.
2. Timonier, timed from the first `deliver_many` call to the last message the sink received:
   `emails.deliveries.deliver_many` for the N customers in passes of PASS sends (each in its own
   transaction, with an idempotency key, as a workflow pass makes them); their send tasks run
   in this process (task_always_eager, set for this step only: `deliveries_send_task` runs when
   the pass commits, the task's own code path without a broker; during the setup the inbox's
   wake-ups go to an unconsumed filesystem broker, so no CDP drain runs beside the sends), one
   SMTP connection per chunk of SEND_CHUNK, its emails sent by the chunk's sender thread.
3. The limit: the exact messages the sink received (envelope and bytes), replayed with
   `smtplib.SMTP.sendmail` to the same sink, one connection per SEND_CHUNK as the product uses;
   timed from the first connection to the last message received; the median of three replays.

Steps 2 and 3 alternate in ROUNDS rounds of N / ROUNDS deliveries, each round's messages replayed
right after they were sent: the machine is shared and its load changes from one second to the
next, so both sides of the ratio are measured under the same load. Each side's rate is its
deliveries over the sum of its rounds' times.

No load generator: `load_cpu` is None. QUICK=1: N = 300, else 3,000 (BENCH_EMAILS overrides).
BENCH_EMAILS_PROFILE=path writes a cProfile of step 2 there (pstats format).
"""

import os
import pickle
import shutil
import signal
import smtplib
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
from live import bench_env, log  # noqa: E402
from table import QUICK, row, table, write_part  # noqa: E402

COUNT = int(os.environ.get("BENCH_EMAILS", "300" if QUICK else "3000"))
PASS = 100  # sends per deliver_many call (one workflow pass)
TARGET = 0.3
SINK_TIMEOUT = 120
REPLAYS = 3
ROUNDS = 3  # the deliveries sent in rounds, each replayed right after it is sent

# The guide's Purchase Follow-Up email ("Thank you for your purchase, {{ customer.name }}!").
MJML = """<mjml>
  <mj-body>
    <mj-section>
      <mj-column>
        <mj-text font-size="20px">Thank you for your purchase, {{ customer.name }}!</mj-text>
        <mj-text>Your {{ event.properties.item | default: "order" }} is on its way.</mj-text>
        <mj-button href="https://shop.example.com/orders">See your order</mj-button>
      </mj-column>
    </mj-section>
  </mj-body>
</mjml>"""


# --- the SMTP sink, its own process ---------------------------------------------------------------


def sink_main(port: int, dump: Path) -> None:
    """`bench/emails.py --sink PORT DUMP`: receive on 127.0.0.1:PORT; on SIGUSR1 write what was
    received since the last dump, [(received at, mail_from, rcpt_tos, bytes)], to DUMP (atomically)."""
    from aiosmtpd.controller import Controller

    lock = threading.Lock()
    received: list[tuple] = []

    class Handler:
        async def handle_DATA(self, server, session, envelope):
            content = envelope.original_content or envelope.content
            with lock:
                received.append((time.time(), envelope.mail_from, list(envelope.rcpt_tos), content))
            return "250 OK"

    def on_dump(_signum, _frame) -> None:
        with lock:
            taken = list(received)
            received.clear()
        partial = dump.with_suffix(".partial")
        partial.write_bytes(pickle.dumps(taken))
        partial.rename(dump)

    signal.signal(signal.SIGUSR1, on_dump)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    controller = Controller(Handler(), hostname="127.0.0.1", port=port, server_hostname="localhost")
    controller.start()
    print("ready", flush=True)
    try:
        while True:
            signal.pause()
    finally:
        controller.stop()


class Sink:
    def __init__(self, port: int, folder: Path) -> None:
        self.port = port
        self.dump = folder / "sink.pickle"
        self.process = subprocess.Popen(
            [sys.executable, __file__, "--sink", str(port), str(self.dump)], stdout=subprocess.PIPE, text=True
        )
        if self.process.stdout.readline().strip() != "ready":
            raise SystemExit("bench: the SMTP sink did not start")

    def take(self, expected: int) -> list[tuple]:
        """What the sink received since the last take; every message has been answered 250 by now,
        so it is all there (a short wait is only for the dump to be written)."""
        self.dump.unlink(missing_ok=True)
        self.process.send_signal(signal.SIGUSR1)
        deadline = time.monotonic() + SINK_TIMEOUT
        while not self.dump.exists():
            if time.monotonic() > deadline:
                raise SystemExit("bench: the SMTP sink did not report")
            time.sleep(0.02)
        messages = pickle.loads(self.dump.read_bytes())  # noqa: S301 (our own child's file)
        if len(messages) != expected:
            raise SystemExit(f"bench: the sink received {len(messages)} messages, {expected} expected")
        return messages

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


# --- the parts ------------------------------------------------------------------------------------


def setup(count: int):
    """The bench project, its published template and `count` customers with an email."""
    from accounts.models import User
    from cdp.inbox import commands_enqueue
    from cdp.messages import normalize
    from cdp.models import Customer
    from cdp.processing import commands_process
    from emails.services import template_create, template_publish, template_save_design, template_update_settings
    from organizations.services import organization_create, project_create
    from timonier import clock

    owner = User.objects.create_user(email="owner@bench.example")
    organization = organization_create(user=owner, name="Bench", slug="bench")
    project = project_create(organization=organization, name="Bench Shop", slug="bench")
    template = template_create(project=project, name="Purchase Thank You", user=None)
    template_update_settings(
        template=template, subject="Thank you for your purchase, {{ customer.name }}!", preheader="Your order",
        from_name="Bench Shop", from_email="", reply_to="", utm_source="timonier", utm_medium="email",
        utm_campaign="thanks", utm_content="", track_opens=True, track_clicks=True,
    )  # fmt: skip
    assert template_save_design(template=template, design={"pages": []}, mjml=MJML) == []
    version = template_publish(template=template, user=None)
    now = clock.now()
    for first in range(0, count, 500):
        messages = [
            normalize(
                {"type": "identify", "customer_id": f"c{n}",
                 "traits": {"email": f"c{n}@bench.example", "name": f"Customer {n}"}},
                received_at=now,
            )  # fmt: skip
            for n in range(first, min(first + 500, count))
        ]
        commands_enqueue(project_id=project.pk, messages=messages, received_at=now)
    deadline = time.monotonic() + 300
    while (result := commands_process(project_id=project.pk)) is None or result.commands:
        if time.monotonic() > deadline:
            raise SystemExit("bench: the customers were not identified in time")
    customers = list(Customer.objects.filter(project=project).order_by("pk"))
    assert len(customers) == count, len(customers)
    return version, customers


class StatementCounter:
    """Statements this process sent to PostgreSQL while installed (connection.execute_wrapper)."""

    def __init__(self) -> None:
        self.count = 0

    def __call__(self, execute, sql, params, many, context):
        self.count += 1
        return execute(sql, params, many, context)


def timonier_phase(version, customers, sink: Sink, *, sent_before: int = 0, profiler=None) -> dict:
    from django.db import connection, transaction
    from django.db.models import Count

    from cdp.inbox import WAKE_INTERVAL
    from emails.deliveries import SEND_CHUNK, Send, deliver_many
    from emails.models import Delivery
    from timonier.celery import app

    # Eager from here on only: during the setup, the inbox's wake-ups went to the (unconsumed)
    # filesystem broker, and the last trailing one has gone by now, so nothing but the sends runs.
    time.sleep(WAKE_INTERVAL * 10)
    app.conf.task_always_eager = True
    statements = StatementCounter()
    cpu = time.process_time()
    started = time.time()
    with connection.execute_wrapper(statements):
        if profiler:
            profiler.enable()
        for first in range(0, len(customers), PASS):
            sends = [
                Send(version, customer, event={"name": "purchase", "properties": {"item": "T-Shirt"}},
                     workflow_step="thank_you", idempotency_key=f"bench-{customer.pk}")
                for customer in customers[first : first + PASS]
            ]  # fmt: skip
            with transaction.atomic():  # the send tasks run (eagerly) when this commits
                deliver_many(sends)
        if profiler:
            profiler.disable()
    finished = time.time()
    cpu = time.process_time() - cpu
    messages = sink.take(len(customers))
    last = max(m[0] for m in messages)
    statuses = dict(Delivery.objects.values_list("status").annotate(n=Count("pk")))
    if statuses.get(Delivery.Status.SENT) != sent_before + len(customers):
        raise SystemExit(f"bench: deliveries not all sent: {statuses}")
    return {
        "rate": len(customers) / (last - started),
        "seconds": last - started,
        "in_process_seconds": finished - started,
        "cpu_ms": cpu / len(customers) * 1000,
        "statements": statements.count,
        "chunk": SEND_CHUNK,
        "messages": messages,
        "bytes": sum(len(m[3]) for m in messages),
    }


def smtplib_phase(messages: list[tuple], port: int, chunk: int, sink: Sink) -> dict:
    started = time.time()
    for first in range(0, len(messages), chunk):
        with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
            for _, mail_from, rcpt_tos, content in messages[first : first + chunk]:
                client.sendmail(mail_from, rcpt_tos, content)
    replayed = sink.take(len(messages))
    last = max(m[0] for m in replayed)
    if sorted(m[3] for m in replayed) != sorted(m[3] for m in messages):
        raise SystemExit("bench: the replayed messages differ from those the product sent")
    return {"rate": len(messages) / (last - started), "seconds": last - started}


def main() -> int:
    from testenv import ensure_packages, free_ports

    ensure_packages()
    folder = Path(tempfile.mkdtemp(prefix="timonier-bench-emails-"))
    os.chmod(folder, 0o755)
    pg_port, smtp_port = free_ports(2)
    postgres = live.postgres_server(folder / "pg", pg_port)
    sink = None
    try:
        postgres.start()
        sink = Sink(smtp_port, folder)
        os.environ.update(
            bench_env(folder, postgres.url, ""),
            EMAIL_URL=f"smtp://127.0.0.1:{smtp_port}",
            DJANGO_SETTINGS_MODULE="timonier.settings",
        )
        import django

        django.setup()
        from django.core.management import call_command

        call_command("migrate", verbosity=0)
        log(f"emails: {COUNT:,} customers and the published template")
        version, customers = setup(COUNT)
        profile_path = os.environ.get("BENCH_EMAILS_PROFILE")
        profiler = None
        if profile_path:
            import cProfile

            profiler = cProfile.Profile()
        # In rounds, each followed by the replay of its own messages: the machine is shared and its
        # load changes by the second, so each side of the ratio is measured beside the other.
        size = -(-COUNT // ROUNDS)
        rounds, replays = [], []
        for first in range(0, COUNT, size):
            part = customers[first : first + size]
            log(f"emails: {len(part):,} deliveries through deliver_many and the send task, in this process")
            rounds.append(timonier_phase(version, part, sink, sent_before=first, profiler=profiler))
            log(f"emails: the same {len(part):,} messages replayed with smtplib")
            # The replay is short: the median of three, each printed.
            tries = [smtplib_phase(rounds[-1]["messages"], smtp_port, rounds[-1]["chunk"], sink) for _ in range(REPLAYS)]
            replays.append(sorted(tries, key=lambda replay: replay["rate"])[REPLAYS // 2] | {"tries": tries})
        if profiler:
            profiler.dump_stats(profile_path)
        seconds = sum(r["seconds"] for r in rounds)
        product = {
            "rate": COUNT / seconds,
            "seconds": seconds,
            "cpu_ms": sum(r["cpu_ms"] * len(r["messages"]) for r in rounds) / COUNT,
            "statements": sum(r["statements"] for r in rounds),
            "chunk": rounds[0]["chunk"],
            "bytes": sum(r["bytes"] for r in rounds),
        }
        limit_seconds = sum(r["seconds"] for r in replays)
        limit = {"rate": COUNT / limit_seconds, "seconds": limit_seconds}
        per_delivery = product["statements"] / COUNT
        rates = "; ".join(
            f"{r['rate']:.0f} vs " + ", ".join(f"{t['rate']:.0f}" for t in replay["tries"])
            for r, replay in zip(rounds, replays, strict=True)
        )
        rows = [
            row("emails rendered and sent/s", "emails/s", product["rate"], limit["rate"], target=TARGET,
                load_cpu=None,
                note=f"{COUNT:,} deliveries of a published MJML + Liquid template (click tracking, open pixel) "
                f"made by deliver_many in passes of {PASS} and sent by deliveries_send_task run in-process "
                f"(eager, chunks of {product['chunk']} per SMTP connection) in {product['seconds']:.2f} s, "
                f"{product['statements']:,} SQL statements in all ({per_delivery:.2f} per delivery, deliver_many's "
                f"and the send chunks'), {product['cpu_ms']:.1f} ms of this process's CPU per "
                f"delivery, machine load average {os.getloadavg()[0]:.1f}; limit: smtplib replaying the same "
                f"{product['bytes'] / COUNT / 1024:.1f} KB messages in {limit['seconds']:.2f} s; in {len(rounds)} rounds, "
                f"each replayed {REPLAYS} times right after it was sent (the median replay counts; timonier vs "
                f"replays per round: {rates}/s); "
                f"durable PostgreSQL; no load generator (load_cpu none), the sink is its own process"),
        ]  # fmt: skip
        print()
        print(f"Emails ({'QUICK' if QUICK else 'full'}: {COUNT:,} deliveries)")
        print(table(rows))
        for r in rows:
            print(f"  {r['measure']}: {r['note']}")
        details = {
            "count": COUNT,
            "pass": PASS,
            "chunk": product["chunk"],
            "statements": product["statements"],
            "cpu_ms_per_delivery": product["cpu_ms"],
            "timonier_seconds": product["seconds"],
            "limit_seconds": limit["seconds"],
            "rounds": len(rounds),
            "timonier_rates": [r["rate"] for r in rounds],
            "limit_rates": [[t["rate"] for t in replay["tries"]] for replay in replays],
            "message_bytes": product["bytes"],
        }
        log(f"written to {write_part('emails', rows, details).relative_to(ROOT)}")
        return 0
    finally:
        from django.db import connections

        connections.close_all()
        if sink is not None:
            sink.stop()
        postgres.stop()
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--sink"]:
        sink_main(int(sys.argv[2]), Path(sys.argv[3]))
        sys.exit(0)
    sys.exit(main())
