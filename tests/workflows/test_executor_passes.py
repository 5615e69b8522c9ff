"""How a pass of the executor writes: statements that do not grow with the runs it carries, and a
run whose step raises failing alone (the pass, taken without savepoints, is redone with one per run)."""

from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from emails.models import Delivery
from workflows.executor import runs_execute
from workflows.models import Run, RunStep, WorkflowVersion
from workflows.triggers import triggers_process

from .engine import active_workflow, definition, identify, published_template, runs_of, track

pytestmark = pytest.mark.django_db


def delay_then_email(template) -> dict:
    return definition(
        {"type": "event", "event_name": "purchase"},
        [
            {"id": "wait", "type": "delay", "duration": {"value": 1, "unit": "hours"}},
            {"id": "thank_you", "type": "email", "template_id": template.pk},
        ],
        [("wait", "thank_you")],
    )


def enrol_customers(project, workflow, prefix: str, count: int) -> None:
    for n in range(count):
        identify(project, f"{prefix}{n}", email=f"{prefix}{n}@example.com", name=f"Customer {n}")
        track(project, f"{prefix}{n}", "purchase", item="T-Shirt")
    triggers_process(project_id=project.pk)


def statements_of_passes(travel) -> int:
    with CaptureQueriesContext(connection) as queries:
        while runs_execute():
            pass
    return len(queries.captured_queries)


def test_a_pass_takes_as_many_statements_for_thirty_runs_as_for_three(project, travel):
    template = published_template(project)
    workflow = active_workflow(project, delay_then_email(template))
    enrol_customers(project, workflow, "few-", 3)
    few_delay = statements_of_passes(travel)
    travel.advance(hours=2)
    few_email = statements_of_passes(travel)
    enrol_customers(project, workflow, "many-", 30)
    many_delay = statements_of_passes(travel)
    travel.advance(hours=2)
    many_email = statements_of_passes(travel)

    assert Delivery.objects.count() == 33
    assert RunStep.objects.filter(step_id="thank_you", outcome="sent").count() == 33
    assert all(run.status == Run.Status.COMPLETED for run in runs_of(workflow))
    # No statement per run: no savepoint, no UPDATE or INSERT per row.
    assert (many_delay, many_email) == (few_delay, few_email), (few_delay, few_email, many_delay, many_email)


def test_a_run_whose_step_raises_fails_alone_and_the_others_of_its_pass_go_on(project, travel):
    template = published_template(project)
    good = active_workflow(project, delay_then_email(template), name="Good")
    broken = active_workflow(project, delay_then_email(template), name="Broken")
    enrol_customers(project, good, "c-", 3)
    assert Run.objects.filter(workflow=broken).count() == 3 and Run.objects.filter(workflow=good).count() == 3
    # A version whose delay the executor cannot read (what a bug in a step handler looks like).
    version = WorkflowVersion.objects.get(pk=broken.active_version_id)
    version.definition["steps"][0]["duration"] = {"value": 1, "unit": "fortnights"}
    version.save(update_fields=["definition"])

    assert runs_execute() == 6  # one pass: rolled back once, redone with a savepoint per run
    travel.advance(hours=2)
    while runs_execute():
        pass

    failed = runs_of(broken)
    assert {(run.status, run.exit_reason) for run in failed} == {(Run.Status.FAILED, "error")}
    assert all(run.error for run in failed)
    assert not RunStep.objects.filter(run__workflow=broken).exists()  # the failing steps were rolled back
    assert {run.status for run in runs_of(good)} == {Run.Status.COMPLETED}
    assert Delivery.objects.count() == 3
    travel.advance(timedelta(days=1))
    assert runs_execute() == 0


def test_a_batch_of_many_customers_rechecks_runs_with_one_array_not_a_placeholder_per_customer(project, travel):
    """recheck_runs and the goal window after every batch: the batch's customers are one parameter
    (an array on PostgreSQL, a JSON array on SQLite; an IN list of thousands of placeholders cost a
    tenth of the worker's CPU)."""
    from .engine import ingest

    statements: list[tuple[str, int]] = []

    def record(execute, sql, params, many, context):
        if "workflows_run" in sql and not many:
            statements.append((sql, len(params or ())))
        return execute(sql, params, many, context)

    calls = [{"type": "identify", "customer_id": f"c{n}", "traits": {"plan": "pro"}} for n in range(300)]
    with connection.execute_wrapper(record):
        ingest(project, *calls)
    array = "ANY(" if connection.vendor == "postgresql" else "json_each("
    rechecks = [(sql, count) for sql, count in statements if array in sql]
    # The wake-up UPDATE and the goal window, after each batch (one per inbox partition the calls fell in).
    assert rechecks and len(rechecks) % 2 == 0, statements
    assert max(count for _, count in statements) <= 8, statements
