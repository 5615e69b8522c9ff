"""The executor: workers claim due runs and move each through its steps until it waits or ends.

A run is due when `wake_at <= now` (and it is in progress and not held by a pause). Workers claim
due runs with `SELECT … FOR UPDATE SKIP LOCKED`, so several workers never execute the same run,
and everything a pass does to a run (its steps, the deliveries and inbox commands its effects
create, the run's new state) commits in one transaction. A worker killed mid-pass rolls all of it
back; the run is due again and the pass is redone from the same state, with the same keys:
- Email: `emails.deliveries.deliver_many`, key "run-<run>-<seq>", writes the Delivery in this
  transaction; the SMTP send happens after the commit, claimed queued → sending, never repeated.
- Update Attribute: an identify through the CDP inbox with the message id `run-<run>-<seq>`.
- Webhook: an attempt row (webhook-id `run-<run>-<seq>`) sent by a task after the commit; the
  run waits for its outcome (see `webhook_attempt_send`).
Waits are rows too: the run's `wake_at`, never a Celery countdown. A Wait Until (event) looks
for the event already stored only after the pass has committed the run as waiting (see
`_events_arrived_resume`), so that it and the trigger processing cannot both miss one.
"""

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.conf import settings
from django.db import connection, transaction

from cdp.models import Customer, Event
from cdp.resolution import trait_change
from cdp.services import customer_identify_enqueue, customer_trait_increment_enqueue
from emails.deliveries import Send, deliver_many
from emails.models import Delivery, EmailTemplate
from organizations.models import Project
from segments.conditions.evaluation import MISSING, json_equal, lookup
from timonier import clock
from timonier.bulk import bulk_insert, bulk_update

from . import requests as webhook_requests
from .definition import Graph, duration_seconds, watches_changes
from .evaluation import cohort_of, customer_zone, delay_until, holds
from .models import Run, RunStep, WebhookAttempt, WorkflowVersion

logger = logging.getLogger(__name__)

BATCH = 200
MAX_STEPS_PER_PASS = 50  # a run going further in one pass yields (validation requires a wait per loop)
WAIT = object()  # a handler's answer: the run waits (its wake_at is set)
# How long past a webhook attempt's start its worker is presumed dead (the request times out before).
WEBHOOK_GRACE = timedelta(seconds=15)
RUN_FIELDS = (
    "status",
    "current_step",
    "seq",
    "wake_at",
    "skip_overdue_emails",
    "wait_until",
    "wait_event",
    "wait_match",
    "resume_output",
    "watches_changes",
    "ended_at",
    "exit_reason",
    "error",
    "converted_at",
    "attention",
)
STEP_FIELDS = ("left_at", "outcome", "detail", "delivery")


def effect_key(run: Run, seq: int) -> str:
    return f"run-{run.pk}-{seq}"


@dataclass
class Pass:
    """One claimed batch: what it read once and what it writes at the end."""

    now: datetime
    versions: dict[int, dict] = field(default_factory=dict)
    customers: dict[int, Customer] = field(default_factory=dict)
    projects: dict[int, Project] = field(default_factory=dict)
    open_steps: dict[int, RunStep] = field(default_factory=dict)
    new_steps: list[RunStep] = field(default_factory=list)
    changed_steps: list[RunStep] = field(default_factory=list)
    wake_webhooks: list[int] = field(default_factory=list)
    # The published version of each template, read once per pass (None: gone or unpublished).
    versions_of_templates: dict[int, object] = field(default_factory=dict)
    # Email steps of the pass, delivered together at its end (one INSERT, chunked sends).
    sends: list[tuple[RunStep, Send]] = field(default_factory=list)
    # Runs that entered a Wait Until (event) step: looked for stored events after the pass commits.
    event_waits: list[Run] = field(default_factory=list)


class _Redo(Exception):
    """A run failed in a pass taken without savepoints: the pass is rolled back and redone."""


def runs_execute(*, limit: int = BATCH, now: datetime | None = None) -> int:
    """Claim up to `limit` due runs and advance each; returns how many were claimed.

    A pass first runs without a savepoint per run (two round trips each, most of a pass's
    statements); if any run fails, the whole pass rolls back — nothing of it was sent — and is
    redone with a savepoint per run, so that the failing run fails alone, as before."""
    now = now or clock.now()
    try:
        return _execute(limit, now, savepoints=False)
    except _Redo:
        return _execute(limit, now, savepoints=True)


def _execute(limit: int, now: datetime, *, savepoints: bool) -> int:
    with transaction.atomic():
        query = Run.objects.filter(status__in=Run.IN_PROGRESS, held=False, wake_at__lte=now).order_by("wake_at")
        if connection.features.has_select_for_update_skip_locked:
            query = query.select_for_update(skip_locked=True, of=("self",))
        runs = list(query[:limit])
        if not runs:
            return 0
        batch = _load(runs, now)
        for run in runs:
            customer = batch.customers.get(run.customer_id)
            if customer is None:  # erased between the claim and now: CASCADE will remove the run
                continue
            if not savepoints:
                try:
                    _advance(batch, run, customer)
                except Exception as exc:
                    raise _Redo from exc
                continue
            marks = (len(batch.new_steps), len(batch.changed_steps), len(batch.wake_webhooks), len(batch.sends))
            try:
                with transaction.atomic():  # a savepoint: one run's unexpected error fails that run alone
                    _advance(batch, run, customer)
            except Exception as exc:
                logger.exception("run %s failed in step %s", run.pk, run.current_step)
                del batch.new_steps[marks[0] :], batch.changed_steps[marks[1] :], batch.wake_webhooks[marks[2] :]
                del batch.sends[marks[3] :]
                _end(batch, run, Run.Status.FAILED, "error", error=f"{type(exc).__name__}: {exc}"[:2000])
        _deliver(batch)
        bulk_insert(RunStep, batch.new_steps)
        bulk_update(RunStep, batch.changed_steps, STEP_FIELDS)
        bulk_update(Run, runs, RUN_FIELDS)
        attempts = list(batch.wake_webhooks)
        if attempts:
            from .tasks import webhook_attempt_task

            transaction.on_commit(lambda: [webhook_attempt_task.delay(pk) for pk in attempts])
    _events_arrived_resume(batch)
    return len(runs)


def _events_arrived_resume(batch: Pass) -> int:
    """After the pass committed its runs as waiting: those whose event was stored meanwhile (or
    before they reached the wait) resume with `met` (due now, taken by the next pass).

    Looked for only now, not when the run entered the wait: an event stored while the pass was
    open would be seen neither by the pass (its query came first) nor by the trigger processing
    (`triggers._resume_waits`, which sees only runs committed as waiting). Looked for after the
    commit, an event committed later is the trigger processing's to find, since the run's state
    committed first; both finding it resume the run once (the update requires no resume yet)."""
    resumed = 0
    for run in batch.event_waits:
        if run.status != Run.Status.WAITING or not run.wait_event:  # failed in the pass, or moved on
            continue
        if _event_already_arrived(run, run.wait_event, run.wait_match):
            resumed += Run.objects.filter(
                pk=run.pk, seq=run.seq, status=Run.Status.WAITING, wait_event=run.wait_event, resume_output=""
            ).update(resume_output="met", wake_at=batch.now)
    return resumed


def _load(runs: list[Run], now: datetime) -> Pass:
    batch = Pass(now)
    version_ids = {run.version_id for run in runs}
    batch.versions = dict(WorkflowVersion.objects.filter(pk__in=version_ids).values_list("pk", "definition"))
    customers = Customer.objects.filter(pk__in={run.customer_id for run in runs})
    batch.customers = {customer.pk: customer for customer in customers}
    batch.projects = {p.pk: p for p in Project.objects.filter(pk__in={run.project_id for run in runs})}
    for step in RunStep.objects.filter(run_id__in=[run.pk for run in runs], left_at__isnull=True):
        batch.open_steps[step.run_id] = step
    return batch


def _advance(batch: Pass, run: Run, customer: Customer) -> None:
    definition = batch.versions[run.version_id]
    graph = Graph.of(definition)
    now = batch.now
    open_step = batch.open_steps.pop(run.pk, None)
    if open_step is not None and open_step.seq != run.seq:
        open_step = None  # a stale row (a step closed by hand); the run's seq is the truth
    for _ in range(MAX_STEPS_PER_PASS):
        step = graph.steps.get(run.current_step)
        if step is None:
            _end(batch, run, Run.Status.FAILED, "error", error=f"step {run.current_step!r} is not in this version")
            return
        entering = open_step is None
        # Before each step, and when a waiting run wakes (its data changed, or its time came).
        if _checks_end_run(batch, run, customer, definition):
            if open_step is not None:
                _close(open_step, "left: the run ended", now)
                if open_step.pk is not None and open_step not in batch.changed_steps:
                    batch.changed_steps.append(open_step)
            return
        if entering:
            run.seq += 1
            open_step = RunStep(run=run, seq=run.seq, step_id=step["id"], step_type=step["type"], entered_at=now)
            batch.new_steps.append(open_step)
        elif open_step.pk is not None and open_step not in batch.changed_steps:
            batch.changed_steps.append(open_step)
        if step["type"] == "exit":
            _close(open_step, "exit", now)
            _end(batch, run, Run.Status.EXITED, "exit_step")
            return
        output = HANDLERS[step["type"]](batch, run, customer, step, open_step, entering, definition)
        if output is WAIT:
            run.skip_overdue_emails = False
            run.watches_changes = watches_changes(definition) or bool(step.get("condition"))
            return
        _leave_wait(run, definition)
        if not open_step.outcome:
            open_step.outcome = output
        open_step.left_at = now
        target = graph.after(step["id"], output)
        if target is None:
            if output == "failure":
                _end(batch, run, Run.Status.FAILED, "webhook_failed", error=open_step.outcome)
            else:
                _end(batch, run, Run.Status.COMPLETED, "")
            return
        run.current_step = target
        open_step = None
    run.status, run.wake_at = Run.Status.ACTIVE, now  # yield to other runs; due again at once


def _checks_end_run(batch: Pass, run: Run, customer: Customer, definition: dict) -> bool:
    """Before each step: the exit condition, and (after the first step) the goal."""
    now = batch.now
    if definition.get("exit_condition") is not None and holds(definition["exit_condition"], customer=customer, now=now):
        _end(batch, run, Run.Status.EXITED, "exit_condition")
        return True
    goal = definition.get("goal")
    if goal and run.seq > 0 and run.converted_at is None and run.goal_until and now <= run.goal_until:
        if holds(goal["condition"], customer=customer, now=now):
            run.converted_at = now
            if goal.get("exit_on_conversion"):
                _end(batch, run, Run.Status.EXITED, "goal")
                return True
    return False


def _clear_wait(run: Run) -> None:
    run.wait_until = None
    run.wait_event = ""
    run.wait_match = None
    run.resume_output = ""


def _leave_wait(run: Run, definition: dict) -> None:
    _clear_wait(run)
    run.watches_changes = watches_changes(definition)
    run.status = Run.Status.ACTIVE


def _wait(run: Run, until: datetime | None) -> object:
    run.status = Run.Status.WAITING
    run.wake_at = until
    return WAIT


def _close(step: RunStep, outcome: str, now: datetime) -> None:
    step.outcome, step.left_at = outcome, now


def _end(batch: Pass, run: Run, status: str, reason: str, *, error: str = "") -> None:
    run.status = status
    run.exit_reason = reason
    run.error = error
    run.ended_at = batch.now
    run.wake_at = None
    _clear_wait(run)
    run.watches_changes = False
    run.attention = "" if status != Run.Status.FAILED else run.attention


# --- Step handlers: (batch, run, customer, step, open RunStep, entering, definition) -> output | WAIT


def _email(batch, run, customer, step, record, entering, definition):
    if run.skip_overdue_emails:
        record.outcome = "skipped: overdue when the workflow was resumed"
        return "next"
    template_id = step["template_id"]
    if template_id not in batch.versions_of_templates:
        template = (
            EmailTemplate.objects.filter(pk=template_id, project_id=run.project_id)
            .select_related("published_version__template")
            .first()
        )
        batch.versions_of_templates[template_id] = template.published_version if template else None
    version = batch.versions_of_templates[template_id]
    if version is None:
        record.outcome = "failed: the email template is gone or no longer published"
        return "next"
    send = Send(
        version,
        customer,
        event=run.trigger_event,
        workflow_step=f"{run.workflow_id}:{step['id']}",
        idempotency_key=effect_key(run, record.seq),
    )
    batch.sends.append((record, send))
    record.outcome = "sent"
    return "next"


def _deliver(batch: Pass) -> None:
    """The pass's emails, made together: each RunStep gets its Delivery, and says when it was skipped."""
    deliveries = deliver_many([send for _, send in batch.sends])
    for (record, _), delivery in zip(batch.sends, deliveries, strict=True):
        record.delivery = delivery
        if delivery.status == Delivery.Status.FAILED and delivery.error.startswith("skipped"):
            record.outcome = delivery.error  # unsubscribed, or no address: recorded, and the run went on


def _delay(batch, run, customer, step, record, entering, definition):
    if entering:
        zone = customer_zone(customer, batch.projects[run.project_id].timezone)
        run.wait_until = delay_until(step, now=batch.now, zone=zone)
        record.detail = {"until": run.wait_until.isoformat()}
    if batch.now >= run.wait_until:
        return "next"
    return _wait(run, run.wait_until)


def _wait_until(batch, run, customer, step, record, entering, definition):
    now = batch.now
    if entering:
        run.wait_until = now + timedelta(seconds=duration_seconds(step["timeout"]))
        record.detail = {"timeout_at": run.wait_until.isoformat()}
        if "event" in step:
            run.wait_event = step["event"]["event_name"]
            run.wait_match = _expected_properties(step["event"], run.trigger_event)
        elif holds(step["condition"], customer=customer, now=now):
            return "met"
    elif run.resume_output:
        return run.resume_output
    elif "condition" in step and holds(step["condition"], customer=customer, now=now):
        return "met"
    if now >= run.wait_until:
        # The look after the entering pass's commit is lost if its worker died in between: the
        # event is looked for once more before the run times out.
        if "event" in step and _event_already_arrived(run, run.wait_event, run.wait_match):
            return "met"
        return "timeout"
    if entering and "event" in step:
        batch.event_waits.append(run)  # whether it already arrived: after the commit (_events_arrived_resume)
    return _wait(run, run.wait_until)


def _expected_properties(wait: dict, trigger_event: dict | None) -> dict:
    properties = (trigger_event or {}).get("properties") or {}
    expected = {}
    for pair in wait.get("match", []):
        value = lookup(properties, pair["trigger_property"])
        expected[pair["property"]] = None if value is MISSING else value
    return expected


def event_matches(properties: dict, expected: dict | None) -> bool:
    """Whether a later event's properties equal what the wait expects (a missing value never matches)."""
    for name, value in (expected or {}).items():
        actual = lookup(properties or {}, name)
        if value is None or actual is MISSING or not json_equal(actual, value):
            return False
    return True


def _event_already_arrived(run: Run, name: str, expected: dict) -> bool:
    """An event of `name` stored since the run started (it can come before the run reaches the wait)."""
    trigger_id = (run.trigger_event or {}).get("message_id")
    recent = (
        Event.objects.filter(project_id=run.project_id, customer_id=run.customer_id, type="track", name=name)
        .filter(received_at__gte=run.started_at)
        .exclude(message_id=trigger_id or "")
        .order_by("-timestamp")
        .values_list("properties", flat=True)[:200]
    )
    return any(event_matches(properties, expected) for properties in recent)


def _branch(batch, run, customer, step, record, entering, definition):
    return "yes" if holds(step["condition"], customer=customer, now=batch.now) else "no"


def _split(batch, run, customer, step, record, entering, definition):
    for branch in step["branches"]:
        if holds(branch["condition"], customer=customer, now=batch.now):
            return branch["key"]
    return "else"


def _random_cohort(batch, run, customer, step, record, entering, definition):
    return cohort_of(step, workflow_id=run.workflow_id, customer_id=customer.pk)


def _update_attribute(batch, run, customer, step, record, entering, definition):
    key = effect_key(run, record.seq)
    if step["action"] == "increment":
        # Counted by the batch processor from the value it holds when it applies the call: a value
        # read here would be stale for two runs incrementing at once, or an identify meanwhile.
        record.detail = {"increment": {"trait": step["trait"], "by": step["value"]}}
        queued = customer_trait_increment_enqueue(
            customer=customer, trait=step["trait"], by=step["value"], message_id=key, at=batch.now, source="workflows"
        )
    else:
        traits = attribute_update(customer.traits or {}, step)
        record.detail = {"traits": traits}
        queued = customer_identify_enqueue(
            customer=customer, traits=traits, message_id=key, at=batch.now, source="workflows"
        )
    record.outcome = "next" if queued else "skipped: the customer has no id to address"
    return "next"


def attribute_update(current: dict, step: dict) -> dict:
    """The identify traits that apply a set / unset of a (dotted) trait (increments are counted
    where they are applied: `cdp.services.customer_trait_increment_enqueue`)."""
    return trait_change(current, step["trait"], step.get("value"), unset=step["action"] != "set")


def _webhook(batch, run, customer, step, record, entering, definition):
    now = batch.now
    attempt = None if entering else WebhookAttempt.objects.filter(run=run, seq=record.seq).order_by("-number").first()
    if attempt is None:
        try:
            request = webhook_requests.render(step, customer=customer, event=run.trigger_event, data=run.data)
        except webhook_requests.RequestError as exc:
            record.outcome = f"failed: {exc}"
            return "failure"
        attempt = WebhookAttempt.objects.create(
            run=run, seq=record.seq, number=1, webhook_id=effect_key(run, record.seq), due_at=now, request=request
        )
        batch.wake_webhooks.append(attempt.pk)
        return _wait(run, now + _attempt_timeout())
    status = attempt.status
    if status == WebhookAttempt.Status.SUCCEEDED:
        record.outcome = f"{attempt.response_status} in {attempt.latency_ms} ms"
        _map_response(batch, run, customer, step, record, attempt)
        return "next"
    if status == WebhookAttempt.Status.FAILED:  # the last attempt (the task queues retries itself)
        record.outcome = f"failed after {attempt.number} attempts: {attempt.error}"[:255]
        return "failure"
    if status == WebhookAttempt.Status.QUEUED:
        if attempt.due_at <= now:
            batch.wake_webhooks.append(attempt.pk)  # its task was lost, or it is a retry falling due
            return _wait(run, now + _attempt_timeout())
        return _wait(run, attempt.due_at)
    if status == WebhookAttempt.Status.SENDING and attempt.started_at + _attempt_timeout() > now:
        return _wait(run, attempt.started_at + _attempt_timeout())
    if status == WebhookAttempt.Status.SENDING:
        # Its worker died mid-request: the receiver may have it. Not sent again without a person.
        WebhookAttempt.objects.filter(pk=attempt.pk, status=WebhookAttempt.Status.SENDING).update(
            status=WebhookAttempt.Status.INTERRUPTED, finished_at=now, error="the worker stopped during the request"
        )
    run.attention = "webhook interrupted: retry it, skip the step or end the run"
    return _wait(run, None)


def _attempt_timeout() -> timedelta:
    return timedelta(seconds=settings.WEBHOOK_TIMEOUT_SECONDS) + WEBHOOK_GRACE


def _map_response(batch, run, customer, step, record, attempt) -> None:
    mapping = step.get("response_traits") or {}
    if not mapping:
        return
    traits = webhook_requests.response_traits(attempt.response_body, mapping)
    if traits:
        customer_identify_enqueue(
            customer=customer,
            traits=traits,
            message_id=f"{effect_key(run, record.seq)}-response",
            at=batch.now,
            source="workflows.webhook",
        )
        record.detail = {**(record.detail or {}), "traits": traits}


HANDLERS = {
    "email": _email,
    "delay": _delay,
    "wait_until": _wait_until,
    "branch": _branch,
    "split": _split,
    "random_cohort": _random_cohort,
    "update_attribute": _update_attribute,
    "webhook": _webhook,
}


def due_count(now: datetime | None = None) -> int:
    now = now or clock.now()
    return Run.objects.filter(status__in=Run.IN_PROGRESS, held=False, wake_at__lte=now).count()
