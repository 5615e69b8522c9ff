"""Writes of workflows: drafts, versions, the life of a workflow, API enrolments, runs by hand.

A definition is checked here (`definition_problems`), so no caller activates an invalid one. A
draft may be saved with graph problems (the builder saves work in progress), never with an invalid
trigger or frequency, nor over the size bounds.
"""

from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.db.models import Max

from accounts.models import User
from cdp.models import Customer
from emails.models import EmailTemplate
from organizations.models import Project
from segments.models import MembershipChange, Segment
from timonier import clock

from . import triggers
from .definition import segments_used, size_problems, structure_problems, trigger_problems, wait_event_names
from .models import Run, RunStep, WebhookAttempt, Workflow, WorkflowVersion

NAME_MAX = Workflow._meta.get_field("name").max_length
DESCRIPTION_MAX = 2000
ENROLMENT_KEY_MAX = 150


def definition_problems(*, project: Project, definition) -> list[str]:
    """Every problem that keeps `definition` from running in `project`, each `path: message`."""
    return definitions_problems(project=project, definitions=[definition])[0]


def definitions_problems(*, project: Project, definitions: list) -> list[list[str]]:
    """`definition_problems` of each definition, in order, with two queries for all of them (the
    published templates and the segments they name): a page of workflows is not two per workflow."""
    references = [_references(definition) for definition in definitions]
    template_ids = set().union(*(templates for templates, _ in references))
    segment_ids = set().union(*(segments for _, segments in references))
    published = set(
        EmailTemplate.objects.filter(
            project=project, pk__in=template_ids, published_version__isnull=False
        ).values_list("pk", flat=True)
    )
    existing = set(Segment.objects.filter(project=project, pk__in=segment_ids).values_list("pk", flat=True))
    return [_problems(definition, published, existing) for definition in definitions]


def _references(definition) -> tuple[set[int], set[int]]:
    """The template ids and segment ids a definition names that could be rows' (bigints)."""
    if size_problems(definition):
        return set(), set()
    steps = definition.get("steps") if isinstance(definition.get("steps"), list) else []
    template_ids = {
        s["template_id"]
        for s in steps
        if isinstance(s, dict) and s.get("type") == "email" and isinstance(s.get("template_id"), int)
        and 0 < s["template_id"] < 2**63  # a bigint, or no template's
    }
    storable = {pk for pk in _segments_used(definition) if isinstance(pk, int) and 0 < pk < 2**63}
    return template_ids, storable


def _segments_used(definition) -> set:
    try:
        return segments_used(definition)
    except (AttributeError, TypeError):  # a shape problem, reported by structure_problems
        return set()


def _problems(definition, published: set[int], existing: set[int]) -> list[str]:
    problems = structure_problems(definition)
    if size_problems(definition):
        return problems
    steps = definition.get("steps") if isinstance(definition.get("steps"), list) else []
    for index, step in enumerate(steps):
        if isinstance(step, dict) and step.get("type") == "email":
            template_id = step.get("template_id")
            if isinstance(template_id, int) and template_id not in published:
                problems.append(
                    f"steps[{index}].template_id: no published email template {template_id} in this project"
                )
    for segment_id in sorted(_segments_used(definition) - existing):
        problems.append(f"definition: segment {segment_id} does not exist in this project")
    return problems


def _check_fields(*, name: str, description: str, definition) -> dict[str, list[str]]:
    errors: dict[str, list[str]] = {}
    if not name:
        errors["name"] = ["Enter a name."]
    elif len(name) > NAME_MAX:
        errors["name"] = [f"Use at most {NAME_MAX} characters."]
    if len(description) > DESCRIPTION_MAX:
        errors["description"] = [f"Use at most {DESCRIPTION_MAX} characters."]
    problems = size_problems(definition) or trigger_problems(definition)
    if problems:
        errors["definition"] = problems
    return errors


def workflow_create(*, project: Project, name: str, description: str = "", definition: dict, user: User | None):
    """A draft workflow; ValidationError keyed by field (definition problems as `path: message`)."""
    name, description = (name or "").strip(), (description or "").strip()
    errors = _check_fields(name=name, description=description, definition=definition)
    if not errors and Workflow.objects.filter(project=project, name=name).exists():
        errors["name"] = ["A workflow with this name already exists in this project."]
    if errors:
        raise ValidationError(errors)
    definition.setdefault("steps", [])
    definition.setdefault("edges", [])
    try:
        with transaction.atomic():
            return Workflow.objects.create(
                project=project, name=name, description=description, definition=definition, created_by=user
            )
    except IntegrityError:
        raise ValidationError({"name": ["A workflow with this name already exists in this project."]}) from None


def workflow_update(
    *, workflow: Workflow, user: User | None, name=None, description=None, definition=None
) -> Workflow:
    """Save the draft (the active version, if any, runs on unchanged until the next activation)."""
    new_name = workflow.name if name is None else name.strip()
    new_description = workflow.description if description is None else description.strip()
    new_definition = workflow.definition if definition is None else definition
    errors = _check_fields(name=new_name, description=new_description, definition=new_definition)
    if workflow.status == Workflow.Status.ARCHIVED:
        errors.setdefault("definition", []).append("definition: an archived workflow cannot be changed")
    if not errors and Workflow.objects.filter(project_id=workflow.project_id, name=new_name).exclude(
        pk=workflow.pk
    ).exists():
        errors["name"] = ["A workflow with this name already exists in this project."]
    if errors:
        raise ValidationError(errors)
    fields = ["name", "description", "updated_at"]
    workflow.name, workflow.description, workflow.updated_at = new_name, new_description, clock.now()
    if definition is not None and definition != workflow.definition:
        workflow.definition = definition
        workflow.has_unpublished_changes = True
        fields += ["definition", "has_unpublished_changes"]
    workflow.save(update_fields=fields)
    return workflow


def workflow_activate(*, workflow: Workflow, user: User | None) -> WorkflowVersion:
    """Publish the draft as the next version and make it the one new runs start on; runs in
    flight finish on their own version. Also "Publish changes" and the resume of a paused one
    with nothing new to publish."""
    with transaction.atomic():
        workflow = Workflow.objects.select_for_update().get(pk=workflow.pk)
        if workflow.status == Workflow.Status.ARCHIVED:
            raise ValidationError({"definition": ["definition: an archived workflow cannot be activated"]})
        problems = definition_problems(project=workflow.project, definition=workflow.definition)
        if problems:
            raise ValidationError({"definition": problems})
        now = clock.now()
        version = workflow.active_version
        if version is None or workflow.has_unpublished_changes:
            number = (workflow.versions.aggregate(n=Max("number"))["n"] or 0) + 1
            version = WorkflowVersion.objects.create(
                workflow=workflow, number=number, definition=workflow.definition, published_by=user, published_at=now
            )
        first_activation = workflow.active_version_id is None
        trigger = version.definition["trigger"]
        workflow.active_version = version
        workflow.has_unpublished_changes = False
        workflow.trigger_type = trigger["type"]
        workflow.trigger_key = str(trigger.get("event_name") or trigger.get("trait") or trigger.get("segment_id") or "")
        segment_id = trigger.get("segment_id")
        if segment_id != workflow.trigger_segment_id or first_activation:
            # Changes recorded before activation never fire: start after the segment's latest.
            workflow.segment_cursor = (
                MembershipChange.objects.filter(segment_id=segment_id).aggregate(m=Max("pk"))["m"] or 0
                if segment_id
                else 0
            )
        workflow.trigger_segment_id = segment_id
        names = set(workflow.wait_events or []) | wait_event_names(version.definition)
        workflow.wait_events = sorted(names)
        was_paused = workflow.status == Workflow.Status.PAUSED
        workflow.status = Workflow.Status.ACTIVE
        workflow.paused_at = None
        workflow.updated_at = now
        workflow.save()
        if was_paused:
            Run.objects.filter(workflow=workflow, held=True).update(held=False)
        if trigger["type"] == "segment_entered" and trigger.get("include_existing") and first_activation:
            triggers.enrol_existing_members(workflow, version, now=now)
            triggers._wake_executor_on_commit()
    return version


def workflow_pause(*, workflow: Workflow, user: User | None) -> Workflow:
    """No new enrolments; runs stay where they are (held) until resumed."""
    with transaction.atomic():
        workflow = Workflow.objects.select_for_update().get(pk=workflow.pk)
        if workflow.status != Workflow.Status.ACTIVE:
            message = f"Only an active workflow can be paused; this one is {workflow.status}."
            raise ValidationError({"status": [message]})
        workflow.status, workflow.paused_at, workflow.updated_at = Workflow.Status.PAUSED, clock.now(), clock.now()
        workflow.save(update_fields=["status", "paused_at", "updated_at"])
        Run.objects.filter(workflow=workflow, status__in=Run.IN_PROGRESS).update(held=True)
    return workflow


RESUME_CHOICES = ("run", "skip_emails")


def workflow_resume(*, workflow: Workflow, user: User | None, overdue: str) -> Workflow:
    """Release the held runs. Steps that fell due during the pause run now (`run`), or their
    runs skip the email steps they reach before their next wait (`skip_emails`): never a silent
    backlog blast."""
    if overdue not in RESUME_CHOICES:
        raise ValidationError({"overdue": ['Choose "run" (run them now) or "skip_emails" (skip overdue emails).']})
    with transaction.atomic():
        workflow = Workflow.objects.select_for_update().get(pk=workflow.pk)
        if workflow.status != Workflow.Status.PAUSED:
            message = f"Only a paused workflow can be resumed; this one is {workflow.status}."
            raise ValidationError({"status": [message]})
        now = clock.now()
        held = Run.objects.filter(workflow=workflow, held=True)
        if overdue == "skip_emails":
            held.filter(wake_at__lte=now).update(skip_overdue_emails=True)
        held.update(held=False)
        workflow.status, workflow.paused_at, workflow.updated_at = Workflow.Status.ACTIVE, None, now
        workflow.save(update_fields=["status", "paused_at", "updated_at"])
        triggers._wake_executor_on_commit()
    return workflow


def workflow_archive(*, workflow: Workflow, user: User | None) -> Workflow:
    """Stop for good: no enrolments, and every run in progress ends (exited, reason archived)."""
    with transaction.atomic():
        workflow = Workflow.objects.select_for_update().get(pk=workflow.pk)
        now = clock.now()
        Run.objects.filter(workflow=workflow, status__in=Run.IN_PROGRESS).update(
            status=Run.Status.EXITED, exit_reason="archived", ended_at=now, wake_at=None, held=False
        )
        RunStep.objects.filter(run__workflow=workflow, left_at__isnull=True).update(left_at=now, outcome="archived")
        workflow.status, workflow.updated_at = Workflow.Status.ARCHIVED, now
        workflow.save(update_fields=["status", "updated_at"])
    return workflow


def workflow_delete(*, workflow: Workflow) -> None:
    """Delete a workflow with its versions and runs (the deliveries it sent stay)."""
    workflow.delete()


# --- Enrolment by API ------------------------------------------------------------------------


def workflow_enrol(*, workflow: Workflow, customer: Customer, key: str, data: dict | None) -> tuple[Run, bool]:
    """Enrol `customer` in an API-triggered workflow; (run, created). The same `key` returns the
    same run (idempotent); triggers.EnrolmentRefused when the frequency keeps them out."""
    if customer.project_id != workflow.project_id:
        raise ValueError("the customer and the workflow belong to different projects")
    occurrence = triggers.occurrence_key("api", key)
    with transaction.atomic():
        # The row alone is locked (PostgreSQL refuses FOR UPDATE on the nullable side of a join).
        workflow = Workflow.objects.select_for_update().get(pk=workflow.pk)
        existing = Run.objects.filter(workflow=workflow, customer=customer, occurrence=occurrence).first()
        if existing is not None:
            return existing, False
        if workflow.status != Workflow.Status.ACTIVE:
            raise triggers.EnrolmentRefused(f"the workflow is {workflow.status}, not active")
        if workflow.trigger_type != "api":
            raise triggers.EnrolmentRefused("the workflow's trigger is not API")
        now = clock.now()
        event = {"type": "api", "data": data or {}}
        candidate = triggers.Candidate(customer.pk, occurrence, trigger_event=event, data=data)
        if not triggers.enrol(workflow, workflow.active_version, [candidate], now=now):
            raise triggers.EnrolmentRefused("the workflow's frequency does not let this customer in again now")
        run = Run.objects.get(workflow=workflow, customer=customer, occurrence=occurrence)
        triggers._wake_executor_on_commit()
    return run, True


# --- Runs by hand (Runs needing attention) ----------------------------------------------------


def _hand_step(run: Run, user: User | None, outcome: str) -> RunStep | None:
    step = RunStep.objects.filter(run=run, seq=run.seq).first()
    if step is not None:
        step.outcome, step.actor, step.detail = outcome, user, {**(step.detail or {}), "by_hand": outcome}
        step.save(update_fields=["outcome", "actor", "detail"])
    return step


def run_retry_step(*, run: Run, user: User | None) -> Run:
    """Try the current step again: a webhook gets a new attempt with the same webhook-id."""
    with transaction.atomic():
        run = Run.objects.select_for_update().get(pk=run.pk)
        if not run.in_progress:
            raise ValidationError({"run": ["This run has ended."]})
        last = WebhookAttempt.objects.filter(run=run, seq=run.seq).order_by("-number").first()
        now = clock.now()
        if last is not None and last.status in (WebhookAttempt.Status.FAILED, WebhookAttempt.Status.INTERRUPTED):
            WebhookAttempt.objects.create(
                run=run,
                seq=run.seq,
                number=last.number + 1,
                webhook_id=last.webhook_id,
                due_at=now,
                request=last.request,
            )
        _hand_step(run, user, f"retried by {user}" if user else "retried")
        run.attention, run.wake_at, run.status = "", now, Run.Status.WAITING
        run.save(update_fields=["attention", "wake_at", "status"])
        triggers._wake_executor_on_commit()
    return run


def run_skip_step(*, run: Run, user: User | None) -> Run:
    """Leave the current step by its main output (`next`, or the first output) as if it had run."""
    from .definition import Graph, outputs_of

    with transaction.atomic():
        run = Run.objects.select_for_update().get(pk=run.pk)
        if not run.in_progress:
            raise ValidationError({"run": ["This run has ended."]})
        graph = Graph.of(run.version.definition)
        step = graph.steps.get(run.current_step)
        now = clock.now()
        record = _hand_step(run, user, f"skipped by {user}" if user else "skipped")
        if record is not None:
            RunStep.objects.filter(pk=record.pk).update(left_at=now)
        outputs = outputs_of(step) if step else ()
        target = graph.after(run.current_step, outputs[0]) if outputs else None
        run.attention = ""
        run.wait_until, run.wait_event, run.wait_match, run.resume_output = None, "", None, ""
        if target is None:
            run.status, run.ended_at, run.wake_at = Run.Status.COMPLETED, now, None
        else:
            run.current_step, run.status, run.wake_at = target, Run.Status.ACTIVE, now
        run.save()
        triggers._wake_executor_on_commit()
    return run


def run_end(*, run: Run, user: User | None) -> Run:
    with transaction.atomic():
        run = Run.objects.select_for_update().get(pk=run.pk)
        if not run.in_progress:
            raise ValidationError({"run": ["This run has ended."]})
        now = clock.now()
        record = _hand_step(run, user, f"run ended by {user}" if user else "run ended")
        if record is not None:
            RunStep.objects.filter(pk=record.pk).update(left_at=now)
        run.status, run.exit_reason, run.ended_at, run.wake_at, run.attention = (
            Run.Status.EXITED,
            "ended_by_hand",
            now,
            None,
            "",
        )
        run.save(update_fields=["status", "exit_reason", "ended_at", "wake_at", "attention"])
    return run


def webhook_test_send(*, project: Project, step: dict, customer: Customer | None = None) -> dict:
    """The builder's Send test: the step's request for `customer` (or sample data), sent now."""
    from . import requests as webhook_requests
    from .webhook_secrets import webhook_signing_secrets
    from .webhooks import webhook_send

    probe = {
        "trigger": {"type": "api"},
        "frequency": {"type": "once"},
        "steps": [{**step, "id": "test"}],
        "edges": [{"from": "trigger", "to": "test"}],
    }
    problems = structure_problems(probe)
    if problems:
        return {"status": None, "latency_ms": 0, "body": "", "error": "; ".join(problems)}
    try:
        request = webhook_requests.render(step, customer=customer, event=None, data={})
    except webhook_requests.RequestError as exc:
        return {"status": None, "latency_ms": 0, "body": "", "error": str(exc)}
    result = webhook_send(
        method=request["method"],
        url=request["url"],
        headers=request["headers"],
        body=request["body"].encode(),
        webhook_id=f"test-{project.pk}-{int(clock.now().timestamp() * 1000)}",
        secrets=webhook_signing_secrets(project=project),
    )
    return {"status": result.status, "latency_ms": result.latency_ms, "body": result.body, "error": result.error}

