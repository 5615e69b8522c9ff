"""Reads of the Workflows API (:3030), always within one project: pages by keyset cursor, the
versions of a page of workflows in one query, and runs with their whole history.

The platform pages' reads are in `selectors.py`; these are the ones the API needs in another shape
(many workflows at once, runs filtered by customer, a cursor on every list).
"""

from django.db.models import Count, Prefetch, Q, QuerySet

from cdp.models import Customer
from organizations.models import Project

from .models import Run, RunStep, WebhookAttempt, Workflow, WorkflowVersion


def workflows_page(project: Project, *, limit: int, after: tuple[str, int] | None) -> tuple[list[Workflow], bool]:
    """The project's workflows by (name, id), those after `after`; and whether more follow."""
    workflows = Workflow.objects.filter(project=project).select_related("active_version").order_by("name", "pk")
    if after is not None:
        name, last_id = after
        workflows = workflows.filter(Q(name__gt=name) | Q(name=name, pk__gt=last_id))
    rows = list(workflows[: limit + 1])
    return rows[:limit], len(rows) > limit


def versions_of(project: Project, workflows: list[Workflow]) -> dict[int, list[WorkflowVersion]]:
    """For each workflow, its versions newest first with `runs_in_progress`: one grouped query."""
    versions: dict[int, list[WorkflowVersion]] = {workflow.pk: [] for workflow in workflows}
    rows = (
        WorkflowVersion.objects.filter(workflow__project=project, workflow__in=list(versions))
        .annotate(runs_in_progress=Count("runs", filter=Q(runs__status__in=Run.IN_PROGRESS)))
        .order_by("workflow_id", "-number")
    )
    for version in rows:
        versions[version.workflow_id].append(version)
    return versions


def version_get(project: Project, workflow: Workflow, number: int) -> WorkflowVersion:
    """Version `number` of the workflow; `WorkflowVersion.DoesNotExist` if it has none such."""
    return WorkflowVersion.objects.get(workflow=workflow, workflow__project=project, number=number)


def runs_page(
    project: Project,
    *,
    workflow: Workflow | None = None,
    customer: Customer | None = None,
    status: str = "",
    before: int | None = None,
    limit: int,
) -> tuple[list[Run], bool]:
    """Runs newest first (by id), of a workflow and/or a customer, optionally of one status, with ids
    below `before`; each with its steps and their webhook attempts (`step.attempts`); and whether
    more follow."""
    runs = Run.objects.filter(project=project)
    if workflow is not None:
        runs = runs.filter(workflow=workflow)
    if customer is not None:
        runs = runs.filter(customer=customer)
    if status:
        runs = runs.filter(status=status)
    if before is not None:
        runs = runs.filter(pk__lt=before)
    rows = _with_history(runs.order_by("-pk"), limit=limit + 1)
    return rows[:limit], len(rows) > limit


def run_get(project: Project, pk: int) -> Run:
    """One run of the project as `runs_page` gives it; `Run.DoesNotExist` if none."""
    rows = _with_history(Run.objects.filter(project=project, pk=pk), limit=1)
    if not rows:
        raise Run.DoesNotExist(f"no run {pk} in project {project.pk}")
    return rows[0]


def _with_history(runs: QuerySet[Run], *, limit: int) -> list[Run]:
    rows = list(
        runs.select_related("version", "customer").prefetch_related(
            Prefetch("steps", queryset=RunStep.objects.order_by("seq")),
            Prefetch("webhook_attempts", queryset=WebhookAttempt.objects.order_by("seq", "number")),
        )[:limit]
    )
    for run in rows:
        attempts: dict[int, list[WebhookAttempt]] = {}
        for attempt in run.webhook_attempts.all():
            attempts.setdefault(attempt.seq, []).append(attempt)
        for step in run.steps.all():
            step.attempts = attempts.get(step.seq, [])
    return rows
