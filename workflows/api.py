"""The Workflows API of the CDP API service (:3030): workflows and their drafts, activation and
the life of a workflow, its runs and a customer's, enrolments of API-triggered workflows, and
per-step counts.

Plain Django views on the shared API plumbing (`timonier.api`), as `segments/api.py`: the key's project
(a secret key), the rate limit, the 405 answer and the error shape come from `read_view`. Every
write goes through `workflows.services`, which holds the rules (definition problems, which
status may follow which, frequency); these views only read requests and shape answers.
"""

from datetime import UTC, datetime

import orjson
from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse
from django.utils.dateparse import parse_datetime

from cdp.api.customers import customer_or_404
from cdp.api.http import ApiError, json_response, read_json_body
from cdp.api.ingest import SINGLE_BODY_LIMIT
from cdp.messages import CUSTOMER_ID_RE, ID_MAX, MessageError, _object
from timonier.api.cursors import MAX_ID, BadCursor, decode_cursor, decode_name_cursor, encode_cursor, is_id
from timonier.api.views import iso, named_fields_problems, no_content, page_limit, read_view, validation_error_response

from . import api_selectors, selectors, services, triggers
from .definition import MAX_BYTES, size_problems
from .models import Run, Workflow, WorkflowVersion

FIELDS = ("name", "description", "definition")
ENROLMENT_FIELDS = ("customer_id", "data", "key")
# The largest definition (256 KB) with a name and a description of their most.
BODY_LIMIT = MAX_BYTES + 64 * 1024
RUN_STATUSES = tuple(Run.Status.values)
# The metrics window when `since` / `until` are not sent: every step ever entered.
EVER_SINCE = datetime(1970, 1, 1, tzinfo=UTC)
EVER_UNTIL = datetime(9999, 12, 31, tzinfo=UTC)
HUGE = 2**63  # the magnitude from which a number is refused in a definition (see `_has_huge_number`)


# --- Answers ------------------------------------------------------------------------------------


def workflow_json(workflow: Workflow, versions: list[WorkflowVersion], problems: list[str]) -> dict:
    active = workflow.active_version
    return {
        "id": workflow.pk,
        "name": workflow.name,
        "description": workflow.description,
        "status": workflow.status,
        "definition": workflow.definition,
        "has_unpublished_changes": workflow.has_unpublished_changes,
        "active_version": (
            {"number": active.number, "published_at": iso(active.published_at)} if active is not None else None
        ),
        "versions": [
            {
                "number": version.number,
                "published_at": iso(version.published_at),
                "runs_in_progress": version.runs_in_progress,
            }
            for version in versions
        ],
        "problems": problems,
        "created_at": iso(workflow.created_at),
        "updated_at": iso(workflow.updated_at),
    }


def _workflows_json(project, workflows: list[Workflow]) -> list[dict]:
    versions = api_selectors.versions_of(project, workflows)
    problems = services.definitions_problems(project=project, definitions=[w.definition for w in workflows])
    return [
        workflow_json(workflow, versions[workflow.pk], workflow_problems)
        for workflow, workflow_problems in zip(workflows, problems, strict=True)
    ]


def _workflow_answer(project, workflow: Workflow, *, status: int = 200, headers: dict | None = None) -> HttpResponse:
    workflow = selectors.workflow_get(project, workflow.pk)  # as saved, with its active version
    return json_response(_workflows_json(project, [workflow])[0], status=status, headers=headers)


def run_json(run: Run) -> dict:
    return {
        "id": run.pk,
        "workflow_id": run.workflow_id,
        "version": run.version.number,
        "customer_id": run.customer.external_id,
        "status": run.status,
        "current_step": run.current_step or None,
        "started_at": iso(run.started_at),
        "ended_at": iso(run.ended_at),
        "exit_reason": run.exit_reason or None,
        "wake_at": iso(run.wake_at),
        "converted_at": iso(run.converted_at),
        "attention": run.attention or None,
        "steps": [
            {
                "seq": step.seq,
                "step_id": step.step_id,
                "step_type": step.step_type,
                "entered_at": iso(step.entered_at),
                "left_at": iso(step.left_at),
                "outcome": step.outcome or None,
                "delivery_id": step.delivery_id,
                "webhook_attempts": [
                    {
                        "number": attempt.number,
                        "status": attempt.status,
                        "response_status": attempt.response_status,
                        "latency_ms": attempt.latency_ms,
                        "error": attempt.error or None,
                        "started_at": iso(attempt.started_at),
                    }
                    for attempt in step.attempts
                ],
            }
            for step in run.steps.all()
        ],
    }


def _runs_answer(rows: list[Run], more: bool) -> HttpResponse:
    next_cursor = encode_cursor(rows[-1].pk) if more else None
    return json_response({"runs": [run_json(run) for run in rows], "next_cursor": next_cursor})


# --- Workflows ----------------------------------------------------------------------------------


@read_view(("GET", "POST"))
def workflows(request: HttpRequest, project) -> HttpResponse:
    if request.method == "POST":
        return _workflow_create(request, project)
    _only_params(request, "limit", "cursor")
    after = None
    if request.GET.get("cursor"):
        after = decode_name_cursor(request.GET["cursor"])
    rows, more = api_selectors.workflows_page(project, limit=page_limit(request), after=after)
    next_cursor = encode_cursor(rows[-1].name, rows[-1].pk) if more else None
    return json_response({"workflows": _workflows_json(project, rows), "next_cursor": next_cursor})


def _workflow_create(request: HttpRequest, project) -> HttpResponse:
    fields, problems = _read_fields(request, partial=False)
    if problems:
        return validation_error_response(problems)
    try:
        workflow = services.workflow_create(project=project, user=None, **fields)
    except ValidationError as exc:
        return _refused(exc)
    return _workflow_answer(project, workflow, status=201, headers={"Location": f"/v1/workflows/{workflow.pk}"})


@read_view(("GET", "PATCH", "DELETE"))
def workflow_detail(request: HttpRequest, project, workflow_id: str) -> HttpResponse:
    workflow = _workflow_or_404(project, workflow_id)
    if request.method == "GET":
        return _workflow_answer(project, workflow)
    if request.method == "DELETE":
        services.workflow_delete(workflow=workflow)
        return no_content()
    fields, problems = _read_fields(request, partial=True)
    if problems:
        return validation_error_response(problems)
    try:
        workflow = services.workflow_update(workflow=workflow, user=None, **fields)
    except ValidationError as exc:
        return _refused(exc)
    return _workflow_answer(project, workflow)


@read_view(("POST",))
def workflow_activate(request: HttpRequest, project, workflow_id: str) -> HttpResponse:
    """Publish the draft as the next version (or resume a paused workflow with nothing new)."""
    workflow = _workflow_or_404(project, workflow_id)
    return _change(project, workflow_id, lambda: services.workflow_activate(workflow=workflow, user=None))


@read_view(("POST",))
def workflow_pause(request: HttpRequest, project, workflow_id: str) -> HttpResponse:
    workflow = _workflow_or_404(project, workflow_id)
    return _change(project, workflow_id, lambda: services.workflow_pause(workflow=workflow, user=None))


@read_view(("POST",))
def workflow_resume(request: HttpRequest, project, workflow_id: str) -> HttpResponse:
    workflow = _workflow_or_404(project, workflow_id)
    body = read_json_body(request, limit=SINGLE_BODY_LIMIT)
    if not isinstance(body, dict):
        raise ApiError(400, 'body: must be a JSON object: {"overdue": "run"} or {"overdue": "skip_emails"}')
    problems = [f"{key}: unknown field; expected overdue" for key in sorted(body) if key != "overdue"]
    if "overdue" not in body:
        problems.append('overdue: is required: "run" (run overdue steps now) or "skip_emails" (skip overdue emails)')
    elif not isinstance(body["overdue"], str):
        problems.append('overdue: must be "run" or "skip_emails"')
    if problems:
        return validation_error_response(problems)
    overdue = body["overdue"]
    return _change(
        project, workflow_id, lambda: services.workflow_resume(workflow=workflow, user=None, overdue=overdue)
    )


@read_view(("POST",))
def workflow_archive(request: HttpRequest, project, workflow_id: str) -> HttpResponse:
    workflow = _workflow_or_404(project, workflow_id)
    return _change(project, workflow_id, lambda: services.workflow_archive(workflow=workflow, user=None))


def _change(project, workflow_id: str, change) -> HttpResponse:
    """Apply a change of status through its service and answer the workflow as it is now."""
    try:
        change()
    except ValidationError as exc:
        return _refused(exc)
    except Workflow.DoesNotExist:  # deleted by another request meanwhile
        raise ApiError(404, f"workflow_id: no workflow {workflow_id} in this project") from None
    return _workflow_answer(project, _workflow_or_404(project, workflow_id))


# --- Runs ---------------------------------------------------------------------------------------


@read_view(("GET",))
def workflow_runs(request: HttpRequest, project, workflow_id: str) -> HttpResponse:
    workflow = _workflow_or_404(project, workflow_id)
    _only_params(request, "limit", "cursor", "status", "customer_id")
    customer = None
    if "customer_id" in request.GET:
        customer = customer_or_404(project, request.GET["customer_id"])
    rows, more = api_selectors.runs_page(
        project,
        workflow=workflow,
        customer=customer,
        status=_run_status(request),
        before=_run_cursor(request),
        limit=page_limit(request),
    )
    return _runs_answer(rows, more)


@read_view(("GET",))
def customer_runs(request: HttpRequest, project, customer_id: str) -> HttpResponse:
    customer = customer_or_404(project, customer_id)
    _only_params(request, "limit", "cursor", "status")
    rows, more = api_selectors.runs_page(
        project, customer=customer, status=_run_status(request), before=_run_cursor(request), limit=page_limit(request)
    )
    return _runs_answer(rows, more)


@read_view(("POST",))
def workflow_enrollments(request: HttpRequest, project, workflow_id: str) -> HttpResponse:
    """Enrol a customer in an API-triggered workflow: 201 with the new run, 200 with the run the
    same key made before (whatever was sent with it then)."""
    workflow = _workflow_or_404(project, workflow_id)
    body = read_json_body(request, limit=SINGLE_BODY_LIMIT)
    if not isinstance(body, dict):
        raise ApiError(400, "body: must be a JSON object with customer_id, data and key")
    problems = [
        f"{key}: unknown field; expected one of: {', '.join(ENROLMENT_FIELDS)}"
        for key in sorted(body)
        if key not in ENROLMENT_FIELDS
    ]
    customer_id = body.get("customer_id")
    if not isinstance(customer_id, str) or not customer_id:
        problems.append("customer_id: is required (the customer_id your application gave the customer)")
    elif len(customer_id) > ID_MAX or not CUSTOMER_ID_RE.fullmatch(customer_id):
        problems.append(f"customer_id: not a customer_id (at most {ID_MAX} characters of a-zA-Z0-9 - _ . @ + :)")
    data = body.get("data")
    try:
        data = _object(data, "data")
    except MessageError as exc:
        problems.append(str(exc))
    key = _enrolment_key(request, body, problems)
    if problems:
        return validation_error_response(problems)
    customer = customer_or_404(project, customer_id)
    try:
        run, created = services.workflow_enrol(workflow=workflow, customer=customer, key=key, data=data)
    except triggers.EnrolmentRefused as exc:
        # Name what keeps the customer out: the workflow (not active, not an API trigger) or the
        # customer (the frequency).
        workflow.refresh_from_db(fields=["status", "trigger_type"])
        workflow_ready = workflow.status == Workflow.Status.ACTIVE and workflow.trigger_type == "api"
        raise ApiError(409, f"{'customer_id' if workflow_ready else 'workflow_id'}: {exc}") from None
    except Workflow.DoesNotExist:
        raise ApiError(404, f"workflow_id: no workflow {workflow_id} in this project") from None
    return json_response(run_json(api_selectors.run_get(project, run.pk)), status=201 if created else 200)


def _enrolment_key(request: HttpRequest, body: dict, problems: list[str]) -> str:
    """The client's idempotency key, from the body or the Idempotency-Key header (the same if both).

    None is derived: without a key a retried request would enrol the customer twice."""
    header = request.headers.get("Idempotency-Key")
    key = body.get("key", header)
    if "key" in body and header is not None and body["key"] != header:
        problems.append("key: differs from the Idempotency-Key header; send one of them")
    elif key is None:
        problems.append("key: required (or Idempotency-Key): a key of yours that makes a retry return the same run")
    elif not isinstance(key, str) or not 1 <= len(key) <= services.ENROLMENT_KEY_MAX:
        problems.append(f"key: must be a string of 1 to {services.ENROLMENT_KEY_MAX} characters")
    elif any(ord(char) < 0x20 or ord(char) == 0x7F for char in key):
        problems.append("key: contains a control character")
    return key if isinstance(key, str) else ""


# --- Metrics ------------------------------------------------------------------------------------


@read_view(("GET",))
def workflow_metrics(request: HttpRequest, project, workflow_id: str) -> HttpResponse:
    """Per step, of one version or of all: runs that entered it, left it, emails sent / opened /
    clicked, webhook failures and conversions, for steps entered in [since, until)."""
    workflow = _workflow_or_404(project, workflow_id)
    _only_params(request, "version", "since", "until")
    version = None
    if "version" in request.GET:
        raw = request.GET["version"]
        if not (raw.isascii() and raw.isdigit()) or not 1 <= int(raw) <= MAX_ID:
            raise ApiError(400, "version: must be a version number (a positive integer)")
        try:
            version = api_selectors.version_get(project, workflow, int(raw))
        except WorkflowVersion.DoesNotExist:
            raise ApiError(404, f"version: workflow {workflow.pk} has no version {int(raw)}") from None
    since, until = _moment(request, "since"), _moment(request, "until")
    if since is not None and until is not None and since >= until:
        raise ApiError(400, "until: must be after since")
    steps = selectors.step_metrics(
        project, workflow, version=version, since=since or EVER_SINCE, until=until or EVER_UNTIL
    )
    return json_response(
        {
            "workflow_id": workflow.pk,
            "version": version.number if version is not None else None,
            "since": iso(since),
            "until": iso(until),
            "steps": [
                {
                    "step_id": step.step_id,
                    # A draft's steps may be any JSON (it is saved with its problems).
                    "name": step.name if isinstance(step.name, str) else "",
                    "type": step.type if isinstance(step.type, str) else "",
                    "entered": step.entered,
                    "completed": step.completed,
                    "emails_sent": step.emails_sent,
                    "emails_opened": step.emails_opened,
                    "emails_clicked": step.emails_clicked,
                    "webhook_failures": step.webhook_failures,
                    "conversions": step.conversions,
                }
                for step in steps
            ],
        }
    )


def _moment(request: HttpRequest, name: str) -> datetime | None:
    """A date-time query parameter (ISO 8601; without an offset, UTC), in UTC."""
    raw = request.GET.get(name)
    if raw is None:
        return None
    try:
        moment = parse_datetime(raw)
        if moment is not None:
            moment = moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
    except (ValueError, OverflowError):
        moment = None
    if moment is None:
        raise ApiError(400, f"{name}: must be an ISO 8601 date-time, e.g. 2026-03-01T00:00:00Z")
    return moment


# --- Reading requests ---------------------------------------------------------------------------


def _workflow_or_404(project, workflow_id: str) -> Workflow:
    if workflow_id.isascii() and workflow_id.isdigit() and 1 <= int(workflow_id) <= MAX_ID:
        try:
            return selectors.workflow_get(project, int(workflow_id))
        except Workflow.DoesNotExist:
            pass
    raise ApiError(404, f"workflow_id: no workflow {workflow_id} in this project")


def _only_params(request: HttpRequest, *allowed: str) -> None:
    unknown = sorted(set(request.GET) - set(allowed))
    if unknown:
        raise ApiError(400, f"{unknown[0]}: unknown parameter; expected {', '.join(allowed)}")


def _run_status(request: HttpRequest) -> str:
    status = request.GET.get("status", "")
    if "status" in request.GET and status not in RUN_STATUSES:
        raise ApiError(400, f"status: must be one of {', '.join(RUN_STATUSES)}")
    return status


def _run_cursor(request: HttpRequest) -> int | None:
    if not request.GET.get("cursor"):
        return None
    values = decode_cursor(request.GET["cursor"])
    if len(values) != 1 or not is_id(values[0]):
        raise BadCursor("cursor: not a cursor this API returned")
    return values[0]


def _read_fields(request: HttpRequest, *, partial: bool) -> tuple[dict, list[str]]:
    """The fields of a create (`partial=False`) or change request and every problem of their shape
    (what the services check, the definition's trigger and sizes included, comes after)."""
    body = read_json_body(request, limit=BODY_LIMIT)
    if not isinstance(body, dict):
        raise ApiError(400, "body: must be a JSON object with name, description and definition")
    problems = named_fields_problems(body, FIELDS, required=("name", "definition"), partial=partial)
    if "definition" in body:
        definition = body["definition"]
        if not isinstance(definition, dict):
            problems.append("definition: must be an object (see docs/workflows.md)")
        # Deep or large definitions are the services' to refuse (size_problems); the others are
        # serialised here, and PostgreSQL's jsonb cannot hold a NUL character.
        elif not size_problems(definition):
            if b"\\u0000" in orjson.dumps(definition):
                problems.append("definition: contains a NUL character")
            if _has_huge_number(definition):
                problems.append(f"definition: holds a number over {HUGE - 1} in magnitude")
    return {key: body[key] for key in FIELDS if key in body}, problems


def _has_huge_number(value) -> bool:
    """Whether a JSON value holds a number of 2**63 or more in magnitude. PostgreSQL's jsonb keeps
    1e20 as the integer 100000000000000000000, which reads back as a Python int that orjson cannot
    serialise: the workflow could be stored but never answered again."""
    pending = [value]
    while pending:
        current = pending.pop()
        if isinstance(current, dict):
            pending.extend(current.values())
        elif isinstance(current, list):
            pending.extend(current)
        elif isinstance(current, (int, float)) and not isinstance(current, bool) and abs(current) >= HUGE:
            return True
    return False


def _refused(exc: ValidationError) -> HttpResponse:
    """A service's ValidationError: 409 when the workflow's status forbids the change, else the
    400 with every problem, each naming its field (a definition's with its path in the body)."""
    messages = exc.message_dict
    if "status" in messages:
        raise ApiError(409, f"status: {' '.join(messages['status'])}")
    problems = []
    for key, items in messages.items():
        for message in items:
            if key != "definition":
                problems.append(f"{key}: {message}")
            elif message.startswith(("definition:", "definition.")):
                problems.append(message)
            else:
                problems.append(f"definition.{message}")
    return validation_error_response(problems)
