"""Helpers for engine tests: data made the way production makes it (API messages through the inbox
and the batch processor), and the engine driven step by step (trigger processing, the executor)."""

from datetime import UTC, datetime

from django.test import TestCase

from cdp.inbox import commands_enqueue
from cdp.messages import erasure_message, normalize
from cdp.models import Customer
from cdp.processing import commands_process
from emails.models import Delivery
from tests.emails.conftest import make_template
from timonier import clock
from workflows import services
from workflows.executor import runs_execute
from workflows.models import Run, WebhookAttempt, Workflow
from workflows.triggers import triggers_process
from workflows.webhook_attempts import webhook_attempt_send

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)  # a Monday


def ingest(project, *calls: dict) -> None:
    """Calls through the inbox and the processor, with what runs after the batch's commit (live
    segment membership, run re-checks) run too, as in the worker."""
    now = clock.now()
    messages = [
        erasure_message(call["customer_id"], at=now) if call["type"] == "delete" else normalize(call, received_at=now)
        for call in calls
    ]
    with TestCase.captureOnCommitCallbacks(execute=True):
        commands_enqueue(project_id=project.pk, messages=messages, received_at=now)
        while commands_process(project_id=project.pk).commands:
            pass


def identify(project, customer_id: str, **traits) -> Customer:
    ingest(project, {"type": "identify", "customer_id": customer_id, "traits": traits})
    return Customer.objects.get(project=project, external_id=customer_id)


def track(project, customer_id: str, event: str, **properties) -> None:
    ingest(project, {"type": "track", "customer_id": customer_id, "event": event, "properties": properties})


def run_engine(project, *, rounds: int = 20) -> None:
    """Process triggers and execute due runs until nothing moves."""
    for _ in range(rounds):
        enrolled = triggers_process(project_id=project.pk) or 0
        executed = runs_execute()
        if not enrolled and not executed:
            return
    raise AssertionError(f"the engine still moves after {rounds} rounds")


def published_template(project, name="Purchase Thank You", **settings):
    # From the default address (always an allowed sending domain).
    return make_template(project, name=name, publish=True, **{"from_email": "", "reply_to": "", **settings})


def definition(trigger: dict, steps: list[dict], edges: list[tuple], *, frequency=None, **extra) -> dict:
    """A definition from steps and (from, to) or (from, output, to) edges; the first step follows the trigger."""
    edge_list = [{"from": "trigger", "to": steps[0]["id"]}] if steps else []
    for edge in edges:
        if len(edge) == 2:
            edge_list.append({"from": edge[0], "to": edge[1]})
        else:
            edge_list.append({"from": edge[0], "output": edge[1], "to": edge[2]})
    return {
        "trigger": trigger,
        "frequency": frequency or {"type": "once"},
        "steps": steps,
        "edges": edge_list,
        **extra,
    }


def active_workflow(project, definition: dict, *, name: str = "Flow") -> Workflow:
    workflow = services.workflow_create(project=project, name=name, definition=definition, user=None)
    services.workflow_activate(workflow=workflow, user=None)
    workflow.refresh_from_db()
    return workflow


def runs_of(workflow) -> list[Run]:
    return list(Run.objects.filter(workflow=workflow).order_by("pk"))


def deliveries_to(email: str) -> list[Delivery]:
    return list(Delivery.objects.filter(to_email=email).order_by("pk"))


# --- Webhook steps (no worker in these tests: the executor and the webhook tasks run in turn) ---


def send_due_attempts() -> int:
    """What the webhook tasks do after the executor's commit (no worker in these tests)."""
    sent = 0
    for attempt in WebhookAttempt.objects.filter(status=WebhookAttempt.Status.QUEUED, due_at__lte=clock.now()):
        sent += webhook_attempt_send(attempt_id=attempt.pk) is not None
    return sent


def drive(project) -> None:
    for _ in range(10):
        run_engine(project)
        if not send_due_attempts():
            run_engine(project)
            return


def hook_flow(receiver, *, failure_step: bool = False, **step_extra) -> dict:
    steps = [
        {
            "id": "notify",
            "type": "webhook",
            "method": "POST",
            "url": receiver.url("/orders"),
            "headers": {"X-Shop": "{{ customer.id }}"},
            "body": '{"customer": {{ customer.id | json }}, "item": {{ event.properties.item | json }}}',
            **step_extra,
        },
        {"id": "done", "type": "update_attribute", "action": "set", "trait": "notified", "value": True},
    ]
    edges = [("notify", "done")]
    if failure_step:
        alert = {"id": "alert", "type": "update_attribute", "action": "set", "trait": "hook_failed", "value": True}
        steps.append(alert)
        edges.append(("notify", "failure", "alert"))
    return definition({"type": "event", "event_name": "purchase"}, steps, edges)
