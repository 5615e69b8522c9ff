"""A Wait Until (event) step never misses its event: not when the event is stored while the pass
entering the wait is still open (two connections interleaved, PostgreSQL), not when it came before
the wait, and not when the look after the pass was lost (at the timeout, it is met)."""

import threading

import pytest
from django.db import connection

from tests.factories import ProjectFactory
from workflows.executor import runs_execute
from workflows.models import Run, RunStep, Trigger
from workflows.triggers import triggers_process

from .engine import active_workflow, definition, identify, run_engine, runs_of, track

SIGNED_UP = {"type": "event", "event_name": "signed_up"}
TIMEOUT_STEP = 30  # seconds a test waits for the other connection, at most


def _flow() -> dict:
    return definition(
        SIGNED_UP,
        [
            {
                "id": "wait",
                "type": "wait_until",
                "event": {"event_name": "purchase"},
                "timeout": {"value": 1, "unit": "days"},
            },
            {"id": "tag", "type": "update_attribute", "action": "set", "trait": "bought", "value": True},
        ],
        [("wait", "met", "tag")],
    )


def _outcomes(run: Run) -> list[tuple[str, str]]:
    return list(RunStep.objects.filter(run=run).order_by("seq").values_list("step_id", "outcome"))


@pytest.mark.django_db(transaction=True)
def test_an_event_stored_while_the_pass_entering_the_wait_is_open_is_not_missed(travel):
    if connection.vendor != "postgresql":
        pytest.skip("two connections at once: PostgreSQL only (SQLite has one writer)")
    project = ProjectFactory(name="Shop")
    workflow = active_workflow(project, _flow())
    identify(project, "u1", email="u1@example.com")
    track(project, "u1", "signed_up")
    assert triggers_process(project_id=project.pk) == 1  # enrolled, not yet executed

    run_written = threading.Event()
    go_on = threading.Event()
    failures: list[BaseException] = []

    def hold_before_commit(execute, sql, params, many, context):
        result = execute(sql, params, many, context)
        if sql.startswith("UPDATE") and '"workflows_run"' in sql and not run_written.is_set():
            run_written.set()  # the pass has written the run as waiting; it has not committed
            if not go_on.wait(TIMEOUT_STEP):
                raise TimeoutError("the test never let the pass commit")
        return result

    def executor() -> None:
        try:
            with connection.execute_wrapper(hold_before_commit):
                runs_execute()
        except BaseException as exc:  # reported by the test's thread
            failures.append(exc)
        finally:
            connection.close()

    worker = threading.Thread(target=executor, daemon=True)
    worker.start()
    try:
        assert run_written.wait(TIMEOUT_STEP), "the executor's pass never wrote the run"
        # Meanwhile, on this connection: the purchase is stored and its trigger row processed. The
        # trigger processing sees the run as the database has it committed: not waiting yet.
        track(project, "u1", "purchase")
        triggers_process(project_id=project.pk)
        assert not Trigger.objects.filter(project=project).exists()
    finally:
        go_on.set()
        worker.join(TIMEOUT_STEP)
    assert not worker.is_alive() and not failures, failures
    (run,) = runs_of(workflow)
    assert (run.status, run.resume_output) == (Run.Status.WAITING, "met")
    run_engine(project)
    run.refresh_from_db()
    assert run.status == Run.Status.COMPLETED
    assert _outcomes(run) == [("wait", "met"), ("tag", "next")]


def test_an_event_stored_before_the_run_reaches_the_wait_meets_it(project, travel):
    workflow = active_workflow(project, _flow())
    identify(project, "u1", email="u1@example.com")
    track(project, "u1", "signed_up")
    assert triggers_process(project_id=project.pk) == 1
    track(project, "u1", "purchase")  # before the executor runs the wait
    Trigger.objects.filter(project=project).delete()  # its trigger row found no waiting run anyway
    run_engine(project)
    (run,) = runs_of(workflow)
    assert _outcomes(run) == [("wait", "met"), ("tag", "next")]


def test_an_event_whose_look_after_the_pass_was_lost_is_met_at_the_timeout(project, travel):
    workflow = active_workflow(project, _flow())
    identify(project, "u1", email="u1@example.com")
    track(project, "u1", "signed_up")
    run_engine(project)
    (run,) = runs_of(workflow)
    assert run.status == Run.Status.WAITING
    # The purchase stored, and its trigger row consumed by a processing that did not see the run
    # waiting (as when the worker that entered the wait died before looking after its commit).
    track(project, "u1", "purchase")
    Trigger.objects.filter(project=project).delete()
    run_engine(project)
    assert _outcomes(run) == [("wait", "")]
    travel.advance(days=1, seconds=1)
    run_engine(project)
    run.refresh_from_db()
    assert _outcomes(run) == [("wait", "met"), ("tag", "next")]
