"""What one active workflow costs the ingest path, stage by stage: `python bench/profile_workflows.py`.

CPU time, not wall time, so that it reads the same on a machine other processes share: this
process's own (time.process_time) and PostgreSQL's (its processes' utime + stime from /proc), per
stored event. A throwaway durable PostgreSQL and an aiosmtpd sink on 127.0.0.1; no broker: this
process runs every stage itself, in the order the workers would.

1. `events` purchases of `customers` new customers (identified with an email first), queued as the
   API would (commands of 100) and drained with no workflow: the cost of ingest alone.
2. The same for other new customers with the bench's workflow active (trigger purchase, Once per
   customer, 1 s delay, email): draining (which now records triggers), enrolling
   (`triggers_process`), the runs' first pass (the delay), the second pass after moving the clock
   past the delay (the email: deliveries made), and sending the deliveries to the sink.

Prints ms of CPU per event for each stage, and per run for the workflow's stages; `--profile STAGE`
prints the 25 costliest functions of one stage (cProfile).
"""

import argparse
import cProfile
import os
import pstats
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from table import tree_cpu  # noqa: E402
from testenv import Postgres, free_ports  # noqa: E402


def bench_workflows():
    """bench/workflows.py, for its workflow and template (its name is the app's: loaded by path)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_workflows", ROOT / "bench" / "workflows.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def postmaster_pid(folder: Path) -> int:
    return int((folder / "pg" / "data" / "postmaster.pid").read_text().split()[0])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--customers", type=int, default=2000)
    parser.add_argument("--events-per-customer", type=int, default=3)
    parser.add_argument("--profile", default="")
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="timonier-profile-wf-"))
    os.chmod(folder, 0o755)
    pg_port, smtp_port = free_ports(2)
    postgres = Postgres(folder / "pg", pg_port, durable=True)
    postgres.start()
    from aiosmtpd.controller import Controller

    class Sink:
        count = 0

        async def handle_DATA(self, server, session, envelope):
            Sink.count += 1
            return "250 OK"

    smtp = Controller(Sink(), hostname="127.0.0.1", port=smtp_port, server_hostname="localhost")
    smtp.start()
    try:
        os.environ.update(
            DATABASE_URL=postgres.url,
            SECRET_KEY="profile-only",
            TIMONIER_VAR_DIR=str(folder / "var"),
            DJANGO_SETTINGS_MODULE="timonier.settings",
            LOG_LEVEL="WARNING",
            REDIS_URL="",
            EMAIL_URL=f"smtp://127.0.0.1:{smtp_port}",
        )
        import django

        django.setup()
        from datetime import timedelta

        from django.core.management import call_command

        from cdp import inbox, processing
        from cdp.messages import normalize_batch
        from emails import sending
        from emails.models import Delivery
        from emails.tasks import deliveries_send_task
        from organizations.models import Organization, Project
        from timonier import clock
        from workflows import executor, triggers
        from workflows.services import workflow_activate
        from workflows.tasks import runs_execute_task, triggers_process_task

        call_command("migrate", verbosity=0)
        inbox.wake = lambda *a, **k: None  # no broker: this process runs every stage itself
        for task in (triggers_process_task, runs_execute_task, deliveries_send_task):
            task.delay = lambda *a, **k: None
        organization = Organization.objects.create(name="Profile", slug="profile")
        project = Project.objects.create(organization=organization, name="Profile", slug="bench")
        workflow = bench_workflows().setup_workflow(project)
        pg = postmaster_pid(folder)

        def queue(calls: list[dict]) -> None:
            for first in range(0, len(calls), 100):
                messages = normalize_batch(
                    {"batch": calls[first : first + 100]}, received_at=clock.now(), max_items=100
                )
                inbox.commands_enqueue(project_id=project.pk, messages=messages, received_at=clock.now())

        def drain() -> None:
            while True:
                done = [processing.commands_process(project_id=project.pk, partition=p) for p in range(8)]
                if not any(result and result.commands for result in done):
                    return

        def identify(prefix: str) -> None:
            queue([
                {"type": "identify", "userId": f"{prefix}{n}", "traits": {"email": f"{prefix}{n}@x.example",
                                                                          "name": f"Customer {n}"}}
                for n in range(args.customers)
            ])  # fmt: skip
            drain()

        def purchases(prefix: str) -> list[dict]:
            return [
                {"type": "track", "userId": f"{prefix}{n % args.customers}", "event": "purchase",
                 "properties": {"item": "T-Shirt", "amount": 29.99, "currency": "USD", "n": n}}
                for n in range(args.customers * args.events_per_customer)
            ]  # fmt: skip

        results: list[tuple[str, float, float, int]] = []

        def stage(name: str, function, count: int) -> None:
            profile = cProfile.Profile() if args.profile == name else None
            cpu, pg_cpu = time.process_time(), tree_cpu(pg)
            if profile:
                profile.enable()
            function()
            if profile:
                profile.disable()
            results.append((name, time.process_time() - cpu, tree_cpu(pg) - pg_cpu, count))
            if profile:
                pstats.Stats(profile).sort_stats(os.environ.get("PROFILE_SORT", "tottime")).print_stats(
                    int(os.environ.get("PROFILE_LINES", "25"))
                )

        events = args.customers * args.events_per_customer
        identify("a-")
        calls = purchases("a-")
        queue(calls)
        stage("ingest, no workflow", drain, events)

        workflow_activate(workflow=workflow, user=None)
        identify("b-")
        queue(purchases("b-"))
        stage("ingest, workflow active (records triggers)", drain, events)

        def enrol() -> None:
            while triggers.triggers_process(project_id=project.pk):
                pass

        stage("enrol (triggers_process)", enrol, events)

        def passes() -> None:
            while executor.runs_execute():
                pass

        stage("runs: delay step", passes, events)
        with clock.travel(clock.now() + timedelta(seconds=2)):
            stage("runs: email step (deliveries made)", passes, events)
        ids = list(Delivery.objects.filter(status=Delivery.Status.QUEUED).order_by("pk").values_list("pk", flat=True))

        def send() -> None:
            for first in range(0, len(ids), 50):
                sending.deliveries_send(delivery_ids=ids[first : first + 50])

        stage("emails sent (SMTP sink)", send, events)
        # The steady state of a Once-per-customer workflow: the same customers buy again.
        from workflows.services import workflow_pause, workflow_resume

        workflow_pause(workflow=workflow, user=None)
        queue(purchases("b-"))
        stage("again, workflow paused", drain, events)
        workflow_resume(workflow=workflow, user=None, overdue="run")
        queue(purchases("b-"))
        stage("again, workflow active (customers enrolled)", drain, events)
        stage("  then enrol (triggers_process)", enrol, events)
        runs = workflow.runs.count()
        print(f"{events:,} events of {args.customers:,} customers; {runs:,} runs; {Sink.count:,} emails received")
        print(f"{'stage':<45} {'python ms/event':>16} {'postgres ms/event':>18} {'total ms/run':>13}")
        for name, python, database, count in results:
            per_run = (
                (python + database) * 1000 / runs if name.startswith(("enrol", "runs", "emails")) else float("nan")
            )
            print(f"{name:<45} {python * 1000 / count:>16.3f} {database * 1000 / count:>18.3f} {per_run:>13.2f}")
        base = sum(r[1] + r[2] for r in results[:1])
        extra = sum(r[1] + r[2] for r in results[1:6]) - base
        paused = sum(r[1] + r[2] for r in results[6:7])
        steady = sum(r[1] + r[2] for r in results[7:9])
        print(
            f"steady state (customers enrolled): {steady * 1000 / events:.3f} ms/event active vs "
            f"{paused * 1000 / events:.3f} paused: ratio if CPU-bound {paused / steady:.2f}"
        )
        print(f"ingest alone {base * 1000 / events:.3f} ms/event; the workflow adds {extra * 1000 / events:.3f} "
              f"ms/event ({extra / base * 100:.0f} %): ratio if CPU-bound {base / (base + extra):.2f}")  # fmt: skip
    finally:
        from django.db import connections

        connections.close_all()
        smtp.stop()
        postgres.stop()


if __name__ == "__main__":
    main()
