"""A worker SIGKILLed in the middle of runs, and a batch delivered twice: no second email, webhook
or enrolment. Real PostgreSQL (or SQLite), real Celery workers, a real SMTP server and receiver."""

import os
import signal
import time
from collections import Counter

import pytest

from cdp.models import Command
from cdp.storage import dumps
from emails.models import Delivery
from tests.factories import ProjectFactory
from tests.live import CeleryWorker, wait_for
from timonier import clock
from workflows.models import Run, WebhookAttempt

from .engine import definition, published_template
from .receiver import Receiver

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

CUSTOMERS = 120
BODY = '{"id": {{ customer.id | json }}}'


def _commands(project, *, copies: int) -> None:
    """Each customer identified with an email, then a purchase: straight into the inbox, as the API
    stores it. `copies` > 1 stores the same calls (same message ids) again: a batch delivered twice."""
    now = clock.now().isoformat()
    messages = []
    for index in range(CUSTOMERS):
        base = {"customer_id": f"c{index}", "anonymous_id": None, "context": {}, "timestamp": now}
        base.update(previous=None, group_id=None)
        traits = {"email": f"c{index}@example.com"}
        messages.append(
            {**base, "type": "identify", "event": "", "traits": traits, "properties": {}, "message_id": f"i-{index}"}
        )
        messages.append(
            {**base, "type": "track", "event": "purchase", "traits": None, "properties": {}, "message_id": f"p-{index}"}
        )
    for _ in range(copies):
        for start in range(0, len(messages), 40):
            chunk = messages[start : start + 40]
            Command.objects.create(project=project, payload=dumps(chunk), message_count=len(chunk))


def _env(live_db_env, tmp_path, smtp_server, receiver) -> dict:
    env = dict(live_db_env)
    url = env["CELERY_BROKER_URL"]
    if url.startswith(("redis://", "rediss://")):
        env["CELERY_BROKER_URL"] = url.rsplit("/", 1)[0] + "/12"  # a broker of its own
    else:
        env["TIMONIER_VAR_DIR"] = str(tmp_path / "var")
    env.update(
        EMAIL_URL=f"smtp://{smtp_server.host}:{smtp_server.port}",
        WEBHOOK_ALLOWED_HOSTS=receiver.netloc,
        WEBHOOK_TIMEOUT_SECONDS="2",
        PLATFORM_URL="http://platform.test",
    )
    return env


def _sweep(worker: CeleryWorker, project) -> None:
    """What celery beat's sweeps do (no beat runs in tests): process the inbox and triggers, run due
    runs, send deliveries and webhook attempts whose task was lost."""
    app = worker.publisher()
    with app.connection_for_write(worker.broker_url) as connection:
        def send(name, *args):
            app.send_task(name, args=list(args), queue="celery", retry=False, connection=connection)

        send("cdp.tasks.process_commands_task", project.pk)
        send("workflows.tasks.triggers_sweep_task")
        send("workflows.tasks.runs_execute_task")
        for pk in Delivery.objects.filter(project=project, status=Delivery.Status.QUEUED).values_list("pk", flat=True):
            send("emails.tasks.deliver_task", pk)
        for pk in WebhookAttempt.objects.filter(
            run__project=project, status=WebhookAttempt.Status.QUEUED, due_at__lte=clock.now()
        ).values_list("pk", flat=True):
            send("workflows.tasks.webhook_attempt_task", pk)


def _settled(project) -> bool:
    return (
        not Command.objects.filter(project=project).exists()
        and Run.objects.filter(project=project).count() == CUSTOMERS
        and not Run.objects.filter(project=project, status__in=Run.IN_PROGRESS, attention="").exists()
        and not Delivery.objects.filter(project=project, status=Delivery.Status.QUEUED).exists()
    )


def test_a_worker_killed_mid_run_and_a_batch_delivered_twice_do_nothing_twice(live_db_env, tmp_path, smtp_server):
    project = ProjectFactory()
    template = published_template(project)
    with Receiver(max_requests=1000) as receiver:
        flow = definition(
            {"type": "event", "event_name": "purchase"},
            [
                {"id": "mail", "type": "email", "template_id": template.pk},
                {"id": "hook", "type": "webhook", "url": receiver.url("/orders"), "body": BODY},
                {"id": "tag", "type": "update_attribute", "action": "set", "trait": "thanked", "value": True},
            ],
            [("mail", "hook"), ("hook", "tag")],
        )
        from .engine import active_workflow

        workflow = active_workflow(project, flow)
        _commands(project, copies=2)
        env = _env(live_db_env, tmp_path, smtp_server, receiver)

        first = CeleryWorker(env, tmp_path / "worker-1.log")
        try:
            first.wait_until(first.ready, 60, 'did not log "ready"')
            _sweep(first, project)
            wait_for(
                lambda: len(smtp_server.messages) >= 5 or len(receiver.requests) >= 5,
                timeout=90,
                what=f"the first worker to send something\n{first.log_tail()}",
            )
            os.killpg(first.proc.pid, signal.SIGKILL)
            first.proc.wait(timeout=10)
        finally:
            first.stop()
        at_crash = (len(smtp_server.messages), len(receiver.requests))

        second = CeleryWorker(env, tmp_path / "worker-2.log")
        try:
            second.wait_until(second.ready, 60, 'did not log "ready"')
            deadline = time.monotonic() + 120
            while not _settled(project):
                assert time.monotonic() < deadline, f"not settled; at crash {at_crash}\n{second.log_tail()}"
                _sweep(second, project)
                time.sleep(1)
        finally:
            second.stop()

        runs = list(Run.objects.filter(workflow=workflow))
        assert len(runs) == CUSTOMERS
        assert len({run.customer_id for run in runs}) == CUSTOMERS  # one enrolment each, despite the copies
        emails = Counter(rcpt for mail in smtp_server.messages for rcpt in mail.rcpt_tos)
        assert max(emails.values()) == 1  # never a second email
        deliveries = Delivery.objects.filter(project=project)
        sent = set(deliveries.filter(status=Delivery.Status.SENT).values_list("to_email", flat=True))
        assert sent <= set(emails)  # every delivery recorded as sent reached the server
        # A send the kill interrupted stays `sending` for a person (it may or may not have gone out),
        # never resent: every customer has one email, or one interrupted send.
        stuck = deliveries.filter(status=Delivery.Status.SENDING).count()
        assert len(sent) + stuck == CUSTOMERS and len(emails) <= CUSTOMERS
        hooks = Counter(request.headers["webhook-id"] for request in receiver.requests)
        assert max(hooks.values()) == 1  # never a second webhook
        interrupted = WebhookAttempt.objects.filter(run__workflow=workflow, status=WebhookAttempt.Status.INTERRUPTED)
        assert set(hooks) | set(interrupted.values_list("webhook_id", flat=True)) == {
            f"run-{run.pk}-2" for run in runs
        }
        completed = [run for run in runs if run.status == Run.Status.COMPLETED]
        assert len(completed) + interrupted.count() == CUSTOMERS
