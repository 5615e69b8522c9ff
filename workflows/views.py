"""Platform pages of workflows: list, New Workflow, detail with metrics and runs, the builder and
its JSON save, the life-cycle buttons, and the runs needing attention."""

import json
from datetime import timedelta

from django.conf import settings
from django.contrib import messages
from django.core.exceptions import RequestDataTooBig, ValidationError
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_POST

from cdp.api.http import ERROR_NAMES
from cdp.models import Customer
from emails import selectors as email_selectors
from organizations.scoping import project_view
from segments import selectors as segment_selectors
from segments.conditions import grammar
from timonier import clock

from . import selectors, services
from .describe import frequency_text, trigger_text
from .forms import WorkflowForm
from .models import Run, Workflow

PERIODS = {7: "7 days", 30: "30 days", 90: "90 days"}
DEFAULT_PERIOD = 30


def _workflow(request: HttpRequest, pk: int) -> Workflow:
    try:
        return selectors.workflow_get(request.project, pk)
    except Workflow.DoesNotExist:
        raise Http404("No such workflow in this project") from None


def _url(request: HttpRequest, name: str, *args) -> str:
    return reverse(f"workflows:{name}", args=[request.organization.slug, request.project.slug, *args])


def _detail(request: HttpRequest, workflow: Workflow):
    return redirect(_url(request, "workflow", workflow.pk))


def _segment_names(request: HttpRequest) -> dict[int, str]:
    return dict(segment_selectors.segments_list(request.project).values_list("pk", "name"))


def _json_error(status: int, message: str) -> JsonResponse:
    name = ERROR_NAMES.get(status, "error")
    return JsonResponse({"error": name, "code": name, "message": message}, status=status)


def _messages_of(exc: ValidationError) -> list[str]:
    if hasattr(exc, "error_dict"):
        return [message for messages_ in exc.message_dict.values() for message in messages_]
    return exc.messages


@project_view()
@require_GET
def workflow_list(request: HttpRequest) -> HttpResponse:
    names = _segment_names(request)
    workflows = list(selectors.workflows_list(request.project))
    for workflow in workflows:
        definition = workflow.active_version.definition if workflow.active_version else workflow.definition
        workflow.trigger_text = trigger_text(definition.get("trigger"), segment_names=names)
    return render(request, "workflows/workflow_list.html", {"workflows": workflows})


@project_view()
def workflow_new(request: HttpRequest) -> HttpResponse:
    segments = segment_selectors.segments_list(request.project)
    form = WorkflowForm(request.POST or None, segments=segments)
    if request.method == "POST" and form.is_valid():
        try:
            workflow = services.workflow_create(
                project=request.project,
                name=form.cleaned_data["name"],
                description=form.cleaned_data["description"],
                definition=form.definition(),
                user=request.user,
            )
        except ValidationError as exc:
            form.add_service_errors(exc.message_dict)
        else:
            messages.success(request, f"Workflow {workflow.name} created: add its steps in the Builder.")
            return _detail(request, workflow)
    return render(request, "workflows/workflow_new.html", {"form": form})


def _period(request: HttpRequest) -> int:
    try:
        days = int(request.GET.get("days", DEFAULT_PERIOD))
    except ValueError:
        return DEFAULT_PERIOD
    return days if days in PERIODS else DEFAULT_PERIOD


def _detail_context(request: HttpRequest, workflow: Workflow, **extra) -> dict:
    now = clock.now()
    days = _period(request)
    since = now - timedelta(days=days)
    versions = selectors.workflow_versions(request.project, workflow)
    version_number = request.GET.get("version", "")
    version = next((v for v in versions if str(v.number) == version_number), None)
    status = request.GET.get("status", "")
    if status not in Run.Status.values:
        status = ""
    before = request.GET.get("before", "")
    runs, next_before = selectors.workflow_runs_page(
        request.project, workflow, status=status, before=int(before) if before.isdigit() else None
    )
    names = _segment_names(request)
    running = workflow.active_version.definition if workflow.active_version else workflow.definition
    return {
        "workflow": workflow,
        "trigger_text": trigger_text(running.get("trigger"), segment_names=names),
        "frequency_text": frequency_text(running),
        "versions": versions,
        "runs_on_older_versions": selectors.runs_on_older_versions(request.project, workflow),
        "days": days,
        "periods": PERIODS,
        "metrics_version": version,
        "per_day": selectors.runs_entered_per_day(request.project, workflow, now=now, days=days),
        "step_metrics": selectors.step_metrics(
            request.project, workflow, version=version, since=since, until=now + timedelta(seconds=1)
        ),
        "conversions": selectors.workflow_conversions(request.project, workflow, since=since, until=now),
        "runs": runs,
        "run_status": status,
        "run_statuses": Run.Status.choices,
        "next_before": next_before,
        "before": before,
        "draft_problems": services.definition_problems(project=request.project, definition=workflow.definition),
        **extra,
    }


@project_view()
@require_GET
def workflow_detail(request: HttpRequest, pk: int) -> HttpResponse:
    workflow = _workflow(request, pk)
    return render(request, "workflows/workflow_detail.html", _detail_context(request, workflow))


def _condition_config(request: HttpRequest) -> dict:
    """What the segments' condition builder needs (as segments.views gives the segment form)."""
    segments = segment_selectors.segments_list(request.project)
    return {
        "operators": list(grammar.OPERATORS),
        "presence_operators": list(grammar.PRESENCE_OPERATORS),
        "list_operators": list(grammar.LIST_OPERATORS),
        "count_operators": list(grammar.COUNT_OPERATORS),
        "units": list(grammar.WINDOW_UNITS),
        "segments": [{"id": pk, "name": name} for pk, name in segments.values_list("pk", "name")],
    }


@project_view()
@require_GET
def workflow_builder(request: HttpRequest, pk: int) -> HttpResponse:
    workflow = _workflow(request, pk)
    published = [t for t in email_selectors.templates_list(request.project) if t.published_version_id]
    config = {
        "name": workflow.name,
        "status": workflow.status,
        "definition": workflow.definition,
        "problems": services.definition_problems(project=request.project, definition=workflow.definition),
        "hasUnpublishedChanges": workflow.has_unpublished_changes,
        "activeVersion": workflow.active_version.number if workflow.active_version else None,
        "runsOnOlderVersions": selectors.runs_on_older_versions(request.project, workflow),
        "triggerText": trigger_text(workflow.definition.get("trigger"), segment_names=_segment_names(request)),
        "frequencyText": frequency_text(workflow.definition),
        "templates": [
            {
                "id": t.pk,
                "name": t.name,
                "previewUrl": reverse(
                    "emails:template_preview", args=[request.organization.slug, request.project.slug, t.pk]
                ),
            }
            for t in published
        ],
        "conditions": _condition_config(request),
        "saveUrl": _url(request, "definition_save", workflow.pk),
        "activateUrl": _url(request, "activate", workflow.pk),
        "detailUrl": _url(request, "workflow", workflow.pk),
        "webhookTestUrl": _url(request, "webhook_test"),
    }
    return render(request, "workflows/builder.html", {"workflow": workflow, "config": config})


def _json_body(request: HttpRequest):
    """The request's JSON object, or a JsonResponse saying why not."""
    try:
        body = request.body  # at most DATA_UPLOAD_MAX_MEMORY_SIZE
    except RequestDataTooBig:
        return _json_error(
            413, f"body: over the limit of {settings.DATA_UPLOAD_MAX_MEMORY_SIZE} bytes; nothing was saved"
        )
    try:
        payload = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return _json_error(400, "body: not JSON")
    if not isinstance(payload, dict):
        return _json_error(400, "body: must be a JSON object")
    return payload


@project_view()
@require_POST
def definition_save(request: HttpRequest, pk: int) -> HttpResponse:
    """What the builder posts: `{"definition": {...}}`. Saves the draft (problems allowed) and
    answers `{"saved": true, "problems": [...], "has_unpublished_changes": …}`."""
    workflow = _workflow(request, pk)
    payload = _json_body(request)
    if isinstance(payload, HttpResponse):
        return payload
    definition = payload.get("definition")
    if not isinstance(definition, dict):
        return _json_error(400, "definition: must be an object")
    try:
        workflow = services.workflow_update(workflow=workflow, user=request.user, definition=definition)
    except ValidationError as exc:
        return _json_error(400, "; ".join(_messages_of(exc)))
    problems = services.definition_problems(project=request.project, definition=workflow.definition)
    return JsonResponse(
        {"saved": True, "problems": problems, "has_unpublished_changes": workflow.has_unpublished_changes}
    )


@project_view()
@require_POST
def webhook_test(request: HttpRequest) -> HttpResponse:
    """The builder's Send test: `{"step": {...}, "customer": <id, optional>}` → the response."""
    payload = _json_body(request)
    if isinstance(payload, HttpResponse):
        return payload
    step = payload.get("step")
    if not isinstance(step, dict):
        return _json_error(400, "step: must be an object")
    customer = None
    if payload.get("customer") is not None:
        customer = Customer.objects.filter(project=request.project, pk=payload["customer"]).first()
        if customer is None:
            return _json_error(400, "customer: no such customer in this project")
    return JsonResponse(services.webhook_test_send(project=request.project, step=step, customer=customer))


@project_view()
@require_POST
def workflow_activate(request: HttpRequest, pk: int) -> HttpResponse:
    """Activate, or Publish changes of an active workflow; refused with every problem listed."""
    workflow = _workflow(request, pk)
    was_active = workflow.active_version_id is not None
    try:
        version = services.workflow_activate(workflow=workflow, user=request.user)
    except ValidationError as exc:
        context = _detail_context(request, workflow, activation_problems=_messages_of(exc))
        return render(request, "workflows/workflow_detail.html", context, status=400)
    if was_active:
        messages.success(request, f"Version {version.number} published: new runs start on it.")
    else:
        messages.success(request, f"{workflow.name} is active: version {version.number} is live.")
    return _detail(request, workflow)


def _life_cycle(request: HttpRequest, pk: int, action, done: str) -> HttpResponse:
    workflow = _workflow(request, pk)
    try:
        action(workflow)
    except ValidationError as exc:
        for message in _messages_of(exc):
            messages.error(request, message)
    else:
        messages.success(request, done.format(name=workflow.name))
    return _detail(request, workflow)


@project_view()
@require_POST
def workflow_pause(request: HttpRequest, pk: int) -> HttpResponse:
    return _life_cycle(
        request,
        pk,
        lambda workflow: services.workflow_pause(workflow=workflow, user=request.user),
        "{name} is paused: no new enrolments, and runs wait where they are.",
    )


@project_view()
@require_POST
def workflow_resume(request: HttpRequest, pk: int) -> HttpResponse:
    overdue = request.POST.get("overdue", "")
    return _life_cycle(
        request,
        pk,
        lambda workflow: services.workflow_resume(workflow=workflow, user=request.user, overdue=overdue),
        "{name} is running again.",
    )


@project_view()
def workflow_archive(request: HttpRequest, pk: int) -> HttpResponse:
    """GET asks for confirmation (it ends every run in progress), POST archives."""
    if request.method != "POST":
        return render(request, "workflows/workflow_archive.html", {"workflow": _workflow(request, pk)})
    return _life_cycle(
        request,
        pk,
        lambda workflow: services.workflow_archive(workflow=workflow, user=request.user),
        "{name} is archived: its runs in progress have ended.",
    )


@project_view()
def workflow_delete(request: HttpRequest, pk: int) -> HttpResponse:
    """GET asks for confirmation, POST deletes the workflow with its versions and runs."""
    workflow = _workflow(request, pk)
    if request.method != "POST":
        return render(request, "workflows/workflow_delete.html", {"workflow": workflow})
    try:
        services.workflow_delete(workflow=workflow)
    except ValidationError as exc:
        for message in _messages_of(exc):
            messages.error(request, message)
        return _detail(request, workflow)
    messages.success(request, f"Workflow {workflow.name} deleted.")
    return redirect(_url(request, "workflows"))


@project_view()
@require_GET
def runs_attention(request: HttpRequest) -> HttpResponse:
    now = clock.now()
    context = {
        "runs": selectors.runs_needing_attention(request.project, now=now),
        "failed_runs": selectors.runs_failed_recently(request.project, now=now),
    }
    return render(request, "workflows/runs_attention.html", context)


RUN_ACTIONS = {
    "retry": (services.run_retry_step, "The step of run {run} is tried again."),
    "skip": (services.run_skip_step, "Run {run} skipped its step and goes on."),
    "end": (services.run_end, "Run {run} ended."),
}


@project_view()
@require_POST
def run_action(request: HttpRequest, pk: int) -> HttpResponse:
    """Retry step, Skip step or End run, from the Runs needing attention view (recorded with who did it)."""
    try:
        run = selectors.attention_run_get(request.project, pk)
    except Run.DoesNotExist:
        raise Http404("No such run in this project") from None
    action = RUN_ACTIONS.get(request.POST.get("action", ""))
    if action is None:
        messages.error(request, "Choose retry, skip or end.")
    else:
        service, done = action
        try:
            service(run=run, user=request.user)
        except ValidationError as exc:
            for message in _messages_of(exc):
                messages.error(request, message)
        else:
            messages.success(request, done.format(run=run.pk))
    return redirect(_url(request, "runs_attention"))
