"""The engine through the real batch processor: triggers, frequency, idempotency, the guide's flow."""

from datetime import timedelta

import pytest

from emails.models import Delivery
from tests.factories import ProjectFactory
from timonier import clock
from workflows.executor import runs_execute
from workflows.models import Run, RunStep, Trigger
from workflows.triggers import triggers_process

from .engine import T0, active_workflow, definition, deliveries_to, identify, run_engine, runs_of, track

pytestmark = pytest.mark.django_db


def guide_flow(template) -> dict:
    return definition(
        {"type": "event", "event_name": "purchase"},
        [{"id": "thank_you", "type": "email", "template_id": template.pk}],
        [],
    )


def test_the_guides_purchase_follow_up_sends_one_email_for_the_first_purchase_only(project, travel):
    from .engine import published_template

    template = published_template(project)
    workflow = active_workflow(project, guide_flow(template), name="Purchase Follow-Up")
    identify(project, "user_001", email="jane@example.com", name="Jane Doe", plan="pro")
    track(project, "user_001", "purchase", item="T-Shirt", amount=29.99, currency="USD")
    run_engine(project)

    (run,) = runs_of(workflow)
    assert run.status == Run.Status.COMPLETED
    (delivery,) = deliveries_to("jane@example.com")
    assert delivery.template_version == template.versions.get()
    assert delivery.idempotency_key == f"run-{run.pk}-1"
    assert delivery.event["properties"]["item"] == "T-Shirt"
    step = RunStep.objects.get(run=run)
    assert (step.step_id, step.outcome, step.delivery_id) == ("thank_you", "sent", delivery.pk)

    travel.advance(minutes=5)
    track(project, "user_001", "purchase", item="Mug", amount=9.5, currency="USD")
    run_engine(project)
    assert len(runs_of(workflow)) == 1 and len(deliveries_to("jane@example.com")) == 1


def test_trigger_rows_are_written_only_for_events_a_workflow_listens_to(project, travel):
    from .engine import published_template

    identify(project, "u1", email="a@example.com")
    track(project, "u1", "purchase")
    assert Trigger.objects.count() == 0  # no workflow yet: nothing recorded
    active_workflow(project, guide_flow(published_template(project)))
    track(project, "u1", "page_viewed")
    track(project, "u1", "purchase")
    assert list(Trigger.objects.values_list("name", flat=True)) == ["purchase"]


def test_processing_the_same_triggers_and_runs_twice_enrols_and_sends_once(project, travel):
    from .engine import published_template

    workflow = active_workflow(project, guide_flow(published_template(project)))
    identify(project, "u1", email="a@example.com")
    track(project, "u1", "purchase")
    rows = list(Trigger.objects.all())
    triggers_process(project_id=project.pk)
    # A redelivered occurrence (the same trigger row written again) cannot enrol a second time.
    fields = [f.attname for f in Trigger._meta.fields if f.attname != "id"]
    Trigger.objects.bulk_create([Trigger(**{name: getattr(row, name) for name in fields}) for row in rows])
    triggers_process(project_id=project.pk)
    assert len(runs_of(workflow)) == 1
    runs_execute()
    run = runs_of(workflow)[0]
    # The email step executed again (as after a crash between its commit and the next) is a no-op.
    run.status, run.current_step, run.seq, run.wake_at = Run.Status.ACTIVE, "thank_you", 0, clock.now()
    run.save()
    RunStep.objects.filter(run=run).delete()
    runs_execute()
    assert Delivery.objects.filter(to_email="a@example.com").count() == 1


@pytest.mark.parametrize(
    ("frequency", "purchases", "expected_runs"),
    [
        ({"type": "once"}, [0, 1, 2], 1),
        ({"type": "every_time"}, [0, 1, 2], 3),
        ({"type": "once_per_period", "days": 7}, [0, 3 * 24 * 60, 8 * 24 * 60], 2),
    ],
)
def test_frequency_decides_who_enters_again(project, travel, frequency, purchases, expected_runs):
    from .engine import published_template

    flow = guide_flow(published_template(project))
    flow["frequency"] = frequency
    workflow = active_workflow(project, flow)
    identify(project, "u1", email="a@example.com")
    for minutes in purchases:
        travel.move_to(T0 + timedelta(minutes=minutes))
        track(project, "u1", "purchase")
        run_engine(project)
    assert len(runs_of(workflow)) == expected_runs


def test_a_run_in_progress_keeps_the_customer_out_unless_concurrent_runs_are_allowed(project, travel):
    steps = [{"id": "wait", "type": "delay", "duration": {"value": 1, "unit": "days"}}]
    for concurrent, expected in ((False, 1), (True, 2)):
        flow = definition({"type": "event", "event_name": f"ping{concurrent}"}, steps, [])
        flow["frequency"] = {"type": "every_time"}
        flow["allow_concurrent_runs"] = concurrent
        workflow = active_workflow(project, flow, name=f"Concurrent {concurrent}")
        identify(project, "u1", email="a@example.com")
        track(project, "u1", f"ping{concurrent}")
        run_engine(project)
        track(project, "u1", f"ping{concurrent}")
        run_engine(project)
        assert len(runs_of(workflow)) == expected


def test_event_trigger_property_filters_use_the_condition_language(project, travel):
    from .engine import published_template

    flow = guide_flow(published_template(project))
    flow["trigger"]["where"] = [{"name": "amount", "op": "greater_than", "value": 100}]
    workflow = active_workflow(project, flow)
    identify(project, "u1", email="a@example.com")
    track(project, "u1", "purchase", amount=20)
    run_engine(project)
    assert runs_of(workflow) == []
    track(project, "u1", "purchase", amount=120)
    run_engine(project)
    assert len(runs_of(workflow)) == 1


def test_other_projects_events_never_enrol(project, travel):
    from .engine import published_template

    workflow = active_workflow(project, guide_flow(published_template(project)))
    other = ProjectFactory()
    identify(other, "u1", email="a@example.com")
    track(other, "u1", "purchase")
    run_engine(other)
    run_engine(project)
    assert runs_of(workflow) == []


def test_a_once_per_customer_workflow_records_no_trigger_for_a_customer_it_already_enrolled(project, travel):
    from .engine import published_template

    once = active_workflow(project, guide_flow(published_template(project)), name="Once")
    identify(project, "u1", email="a@example.com")
    track(project, "u1", "purchase")
    assert Trigger.objects.count() == 1
    run_engine(project)
    assert len(runs_of(once)) == 1 and Trigger.objects.count() == 0
    track(project, "u1", "purchase")
    assert Trigger.objects.count() == 0  # enrolment would refuse it: nothing written, nothing to decide

    every = active_workflow(
        project,
        {**guide_flow(published_template(project, name="Again")), "frequency": {"type": "every_time"}},
        name="Every time",
    )
    track(project, "u1", "purchase")
    assert Trigger.objects.count() == 1  # another workflow starts on it every time
    run_engine(project)
    assert len(runs_of(every)) == 1 and len(runs_of(once)) == 1
