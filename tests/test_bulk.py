"""timonier.bulk: rows written in one statement read back as the ORM wrote them (JSON, datetimes,
nulls, foreign keys), on PostgreSQL through jsonb_to_recordset and on SQLite through Django."""

from datetime import UTC, datetime

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from cdp.models import Customer
from tests.factories import ProjectFactory
from timonier.bulk import bulk_insert, bulk_update, insert_rows
from workflows.models import Run, Trigger, Workflow, WorkflowVersion

pytestmark = pytest.mark.django_db

AT = datetime(2026, 3, 2, 9, 30, 15, 123456, tzinfo=UTC)
PAYLOAD = {"properties": {"quote": 'say "hi"\\', "nested": [1, 2.5, None, True], "é": "ü"}, "n": 2**62}


@pytest.fixture
def customers():
    project = ProjectFactory()
    return project, [
        Customer.objects.create(project=project, external_id=f"c{n}", first_seen_at=AT, last_seen_at=AT)
        for n in range(3)
    ]


def test_insert_rows_writes_every_row_in_one_statement(customers):
    project, people = customers
    rows = [
        {"project_id": project.pk, "customer_id": c.pk, "kind": "event", "name": "purchase",
         "occurrence": f"m{n}", "payload": {**PAYLOAD, "n": n}, "created_at": AT.isoformat()}
        for n, c in enumerate(people)
    ]  # fmt: skip
    with CaptureQueriesContext(connection) as queries:
        insert_rows(Trigger, rows)
    if connection.vendor == "postgresql":
        assert len(queries.captured_queries) == 1
    stored = list(Trigger.objects.order_by("occurrence"))
    assert [(t.customer_id, t.occurrence, t.created_at) for t in stored] == [
        (c.pk, f"m{n}", AT) for n, c in enumerate(people)
    ]
    assert stored[1].payload == {**PAYLOAD, "n": 1}


def runs(project, people, version=None, **extra):
    if version is None:
        workflow = Workflow.objects.create(project=project, name="Flow")
        version = WorkflowVersion.objects.create(workflow=workflow, number=1, definition={"steps": []})
    return [
        Run(project_id=project.pk, workflow_id=version.workflow_id, version=version, customer_id=c.pk,
            occurrence=f"o{n}", data={"cart": {"id": n}}, started_at=AT, **extra)
        for n, c in enumerate(people)
    ]  # fmt: skip


def test_bulk_insert_skips_rows_that_break_a_unique_constraint_when_asked(customers):
    project, people = customers
    made = runs(project, people, wake_at=AT)
    bulk_insert(Run, made)
    again = runs(project, people, made[0].version)
    bulk_insert(Run, again, ignore_conflicts=True)
    stored = list(Run.objects.order_by("occurrence"))
    assert [(r.customer_id, r.data, r.wake_at, r.wait_match, r.status) for r in stored] == [
        (c.pk, {"cart": {"id": n}}, AT, None, Run.Status.ACTIVE) for n, c in enumerate(people)
    ]


def test_bulk_update_writes_the_named_fields_of_each_row_and_nothing_else(customers):
    project, people = customers
    bulk_insert(Run, runs(project, people, wake_at=AT))
    stored = list(Run.objects.order_by("occurrence"))
    for n, run in enumerate(stored):
        run.status = Run.Status.WAITING if n else Run.Status.COMPLETED
        run.wake_at = None if n == 0 else AT.replace(hour=10 + n)
        run.wait_match = {"cart_id": f'c"{n}'} if n else None
        run.error = "ü" * n
        run.data = {"changed": True}  # not named: stays as stored
    with CaptureQueriesContext(connection) as queries:
        bulk_update(Run, stored, ("status", "wake_at", "wait_match", "error"))
    assert len(queries.captured_queries) == 1
    again = list(Run.objects.order_by("occurrence"))
    assert [(r.status, r.wake_at, r.wait_match, r.error, r.data) for r in again] == [
        (Run.Status.COMPLETED, None, None, "", {"cart": {"id": 0}}),
        (Run.Status.WAITING, AT.replace(hour=11), {"cart_id": 'c"1'}, "ü", {"cart": {"id": 1}}),
        (Run.Status.WAITING, AT.replace(hour=12), {"cart_id": 'c"2'}, "üü", {"cart": {"id": 2}}),
    ]
