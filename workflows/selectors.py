"""Reads of workflows for the platform pages, always within one project.

Lists, one workflow's runs and metrics (per step, per version, runs entered per day), a customer's
runs with their history, the runs a person must look at, and which workflows send each template.
"""

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta

from django.db.models import Count, Exists, OuterRef, Prefetch, Q, QuerySet
from django.db.models.functions import TruncDate

from cdp.models import Customer
from organizations.models import Project

from .models import Run, RunStep, WebhookAttempt, Workflow, WorkflowVersion

RUNS_PER_PAGE = 50
# A run this late past its wake time was missed by the executor (or its worker died): it is shown
# among the runs needing attention. The executor's sweep runs every second; a minute is "stuck".
LATE_AFTER = timedelta(minutes=1)


def workflows_list(project: Project) -> QuerySet[Workflow]:
    """The project's workflows by name, with their running version and runs entered / active / completed."""
    return (
        Workflow.objects.filter(project=project)
        .select_related("active_version")
        .annotate(
            runs_entered=Count("runs"),
            runs_active=Count("runs", filter=Q(runs__status__in=Run.IN_PROGRESS)),
            runs_completed=Count("runs", filter=Q(runs__status=Run.Status.COMPLETED)),
        )
        .order_by("name", "pk")
    )


def workflow_get(project: Project, pk: int) -> Workflow:
    """The project's workflow; `Workflow.DoesNotExist` for another project's id."""
    return Workflow.objects.select_related("active_version", "created_by").get(project=project, pk=pk)


def workflow_versions(project: Project, workflow: Workflow) -> list[WorkflowVersion]:
    """Its versions, newest first, each with `runs_in_progress` and `runs_total`."""
    return list(
        WorkflowVersion.objects.filter(workflow=workflow, workflow__project=project)
        .select_related("published_by")
        .annotate(
            runs_total=Count("runs"),
            runs_in_progress=Count("runs", filter=Q(runs__status__in=Run.IN_PROGRESS)),
        )
        .order_by("-number")
    )


def runs_on_older_versions(project: Project, workflow: Workflow) -> int:
    """Runs still in progress on a version other than the one new enrolments run."""
    runs = Run.objects.filter(project=project, workflow=workflow, status__in=Run.IN_PROGRESS)
    if workflow.active_version_id:
        runs = runs.exclude(version_id=workflow.active_version_id)
    return runs.count()


def workflow_runs_page(
    project: Project, workflow: Workflow, *, status: str = "", before: int | None = None, limit: int = RUNS_PER_PAGE
) -> tuple[list[Run], int | None]:
    """Runs newest first (index workflows_run_status), optionally of one status, with ids below
    `before`; and the `before` of the next page, or None on the last one."""
    runs = Run.objects.filter(project=project, workflow=workflow).select_related("customer", "version")
    if status:
        runs = runs.filter(status=status)
    if before is not None:
        runs = runs.filter(pk__lt=before)
    page = list(runs.order_by("-pk")[: limit + 1])
    if len(page) > limit:
        return page[:limit], page[limit - 1].pk
    return page, None


@dataclass(frozen=True)
class DayCount:
    day: date
    count: int


def runs_entered_per_day(project: Project, workflow: Workflow, *, now: datetime, days: int) -> list[DayCount]:
    """Runs started on each of the last `days` UTC days (today included), oldest first."""
    today = now.astimezone(UTC).date()
    first = today - timedelta(days=days - 1)
    rows = (
        Run.objects.filter(
            project=project, workflow=workflow, started_at__gte=datetime.combine(first, time.min, tzinfo=UTC)
        )
        .annotate(day=TruncDate("started_at", tzinfo=UTC))
        .values("day")
        .annotate(count=Count("id"))
        .order_by()
    )
    counts = {row["day"]: row["count"] for row in rows}
    return [
        DayCount(day=first + timedelta(days=i), count=counts.get(first + timedelta(days=i), 0)) for i in range(days)
    ]


@dataclass(frozen=True)
class StepMetrics:
    step_id: str
    name: str
    type: str
    entered: int
    completed: int
    emails_sent: int
    emails_opened: int
    emails_clicked: int
    webhook_failures: int
    conversions: int


def step_metrics(
    project: Project, workflow: Workflow, *, version: WorkflowVersion | None, since: datetime, until: datetime
) -> list[StepMetrics]:
    """Per step of `version` (or of every version), for steps entered in [since, until): how many
    runs entered it, left it, the emails it sent and their opens and clicks, webhook steps that
    failed for good, and the runs that entered it and converted to the goal. One grouped query.

    The steps are listed in the order of the version's definition (the draft's without a version);
    steps of other versions that runs entered follow.
    """
    rows = RunStep.objects.filter(
        run__project=project, run__workflow=workflow, entered_at__gte=since, entered_at__lt=until
    )
    if version is not None:
        rows = rows.filter(run__version=version)
    counts = {
        row["step_id"]: row
        for row in rows.values("step_id", "step_type")
        .annotate(
            entered=Count("id"),
            completed=Count("id", filter=Q(left_at__isnull=False)),
            emails_sent=Count("id", filter=Q(delivery__sent_at__isnull=False)),
            emails_opened=Count("id", filter=Q(delivery__opened_at__isnull=False)),
            emails_clicked=Count("id", filter=Q(delivery__click_count__gt=0)),
            webhook_failures=Count("id", filter=Q(step_type="webhook", outcome__startswith="failed")),
            conversions=Count("id", filter=Q(run__converted_at__isnull=False)),
        )
        .order_by()
    }
    definition = version.definition if version is not None else workflow.definition
    listed = definition.get("steps") if isinstance(definition.get("steps"), list) else []  # a draft may be any JSON
    steps = [step for step in listed if isinstance(step, dict) and isinstance(step.get("id"), str)]
    known = {step["id"] for step in steps}
    steps += [{"id": step_id, "type": row["step_type"]} for step_id, row in counts.items() if step_id not in known]
    metrics = []
    for step in steps:
        row = counts.get(step["id"], {})
        metrics.append(
            StepMetrics(
                step_id=step["id"],
                name=step.get("name") or "",
                type=step.get("type", ""),
                **{
                    key: row.get(key, 0)
                    for key in (
                        "entered",
                        "completed",
                        "emails_sent",
                        "emails_opened",
                        "emails_clicked",
                        "webhook_failures",
                        "conversions",
                    )
                },
            )
        )
    return metrics


def workflow_conversions(project: Project, workflow: Workflow, *, since: datetime, until: datetime) -> int:
    return Run.objects.filter(
        project=project, workflow=workflow, converted_at__gte=since, converted_at__lt=until
    ).count()


def _with_history(runs: QuerySet[Run]) -> QuerySet[Run]:
    return runs.select_related("workflow", "version", "customer").prefetch_related(
        Prefetch("steps", queryset=RunStep.objects.select_related("delivery", "actor").order_by("seq")),
        Prefetch("webhook_attempts", queryset=WebhookAttempt.objects.order_by("seq", "number")),
    )


def customer_runs(project: Project, customer: Customer, *, limit: int = 20) -> list[Run]:
    """The customer's newest runs with their steps, deliveries and webhook attempts
    (`run.attempts_by_seq` groups the attempts by step)."""
    runs = list(_with_history(Run.objects.filter(project=project, customer=customer)).order_by("-started_at")[:limit])
    for run in runs:
        _attach_attempts(run)
    return runs


def _attach_attempts(run: Run) -> None:
    attempts: dict[int, list[WebhookAttempt]] = {}
    for attempt in run.webhook_attempts.all():
        attempts.setdefault(attempt.seq, []).append(attempt)
    for step in run.steps.all():
        step.attempts = attempts.get(step.seq, [])


def runs_needing_attention(project: Project, *, now: datetime, limit: int = 200) -> list[Run]:
    """Runs in progress a person should act on (retry, skip step, end run), oldest problem first:
    those the executor flagged (`attention`: an interrupted send or webhook request), those whose
    current webhook step has a failed or interrupted attempt, and those not held but past their
    wake time (`run.late`)."""
    failed_attempt = WebhookAttempt.objects.filter(
        run=OuterRef("pk"),
        seq=OuterRef("seq"),
        status__in=[WebhookAttempt.Status.INTERRUPTED, WebhookAttempt.Status.FAILED],
    )
    late = Q(held=False, wake_at__lt=now - LATE_AFTER)
    runs = list(
        _with_history(Run.objects.filter(project=project, status__in=Run.IN_PROGRESS))
        .filter(~Q(attention="") | late | Q(Exists(failed_attempt)))
        .order_by("wake_at", "pk")[:limit]
    )
    for run in runs:
        _attach_attempts(run)
        run.late = not run.held and run.wake_at is not None and run.wake_at < now - LATE_AFTER
    return runs


def runs_failed_recently(project: Project, *, now: datetime, days: int = 7, limit: int = 100) -> list[Run]:
    """Runs that ended failed in the last `days` days (a webhook without a failure path that
    failed for good, …), newest first: nothing is left to act on, but a person should know."""
    runs = list(
        _with_history(
            Run.objects.filter(project=project, status=Run.Status.FAILED, ended_at__gte=now - timedelta(days=days))
        ).order_by("-ended_at", "-pk")[:limit]
    )
    for run in runs:
        _attach_attempts(run)
    return runs


def attention_run_get(project: Project, pk: int) -> Run:
    return Run.objects.select_related("workflow", "customer").get(project=project, pk=pk)


def templates_used_by(project: Project) -> dict[int, list[Workflow]]:
    """For each email template id, the project's workflows (not archived) whose draft or running
    version has an email step sending it, by name."""
    used: dict[int, list[Workflow]] = {}
    workflows = (
        Workflow.objects.filter(project=project)
        .exclude(status=Workflow.Status.ARCHIVED)
        .select_related("active_version")
        .order_by("name", "pk")
    )
    for workflow in workflows:
        definitions = [workflow.definition]
        if workflow.active_version is not None:
            definitions.append(workflow.active_version.definition)
        ids = {
            step.get("template_id")
            for definition in definitions
            if isinstance(definition, dict) and isinstance(definition.get("steps"), list)
            for step in definition["steps"]
            if isinstance(step, dict) and step.get("type") == "email" and isinstance(step.get("template_id"), int)
        }
        for template_id in ids:
            if isinstance(template_id, int):
                used.setdefault(template_id, []).append(workflow)
    return used
