"""Update Attribute `increment` is counted where the call is applied (the batch processor), from the
value held then: runs incrementing at once, or an identify arriving meanwhile, lose nothing."""

from datetime import timedelta

from django.test import TestCase

from cdp.inbox import commands_enqueue
from cdp.messages import normalize
from cdp.models import Customer, Event
from cdp.processing import commands_process
from cdp.services import customer_trait_increment_enqueue
from timonier import clock
from workflows.models import Run, RunStep

from .engine import active_workflow, definition, identify, ingest, run_engine, runs_of, track

EVENT = {"type": "event", "event_name": "purchase"}


def _increment_flow(trait="score", by=1) -> dict:
    return definition(
        EVENT, [{"id": "count", "type": "update_attribute", "action": "increment", "trait": trait, "value": by}], []
    )


def _customer(project, external_id="u1") -> Customer:
    return Customer.objects.get(project=project, external_id=external_id)


def test_two_runs_incrementing_the_same_trait_at_once_add_both(project, travel):
    first = active_workflow(project, _increment_flow(), name="Count purchases")
    second = active_workflow(project, _increment_flow(), name="Count purchases again")
    identify(project, "u1", score=10)
    track(project, "u1", "purchase")
    run_engine(project)  # both runs step in the same pass, each seeing score 10
    assert [run.status for run in runs_of(first) + runs_of(second)] == [Run.Status.COMPLETED] * 2
    ingest(project)  # apply what the steps queued
    assert _customer(project).traits["score"] == 12


def test_an_increment_counts_from_an_identify_queued_before_it_not_from_what_the_step_read(project, travel):
    active_workflow(project, _increment_flow(by=5))
    identify(project, "u1", score=10)
    track(project, "u1", "purchase")
    now = clock.now()
    # The application's identify is in the inbox, not applied yet, when the step runs.
    identify_call = normalize({"type": "identify", "customer_id": "u1", "traits": {"score": 50}}, received_at=now)
    commands_enqueue(project_id=project.pk, messages=[identify_call], received_at=now)
    run_engine(project)
    ingest(project)
    assert _customer(project).traits["score"] == 55


def test_an_increment_of_a_dotted_trait_keeps_its_siblings_and_counts_a_missing_value_as_zero(project, travel):
    active_workflow(project, _increment_flow(trait="stats.orders", by=2))
    identify(project, "u1", stats={"refunds": 1})
    track(project, "u1", "purchase")
    run_engine(project)
    ingest(project)
    assert _customer(project).traits["stats"] == {"refunds": 1, "orders": 2}
    (step,) = RunStep.objects.filter(step_id="count")
    assert step.detail == {"increment": {"trait": "stats.orders", "by": 2}}


def test_an_increment_applies_over_a_newer_identify_of_the_trait(project, travel):
    """The increment counts from what is held, even when an identify dated later set it."""
    active_workflow(project, _increment_flow())
    identify(project, "u1", score=1)
    track(project, "u1", "purchase")
    run_engine(project)  # the increment is queued, dated now
    later = clock.now() + timedelta(minutes=1)
    identify_call = normalize(
        {"type": "identify", "customer_id": "u1", "traits": {"score": 7}, "timestamp": later.isoformat()},
        received_at=later,
    )
    ingest(project)  # the increment: 2
    commands_enqueue(project_id=project.pk, messages=[identify_call], received_at=later)
    ingest(project)  # the later identify: 7
    customer = _customer(project)
    assert customer.traits["score"] == 7
    # An increment queued now (dated before that identify) still counts from 7.
    customer_trait_increment_enqueue(
        customer=customer, trait="score", by=1, message_id="late", at=clock.now(), source="t"
    )
    ingest(project)
    assert _customer(project).traits["score"] == 8


def test_a_retried_increment_is_applied_once(project, travel):
    customer = identify(project, "u1", score=10)
    with TestCase.captureOnCommitCallbacks(execute=True):
        for _ in range(2):  # a pass redone: the same key queued twice, in one batch
            customer_trait_increment_enqueue(
                customer=customer, trait="score", by=1, message_id="run-7-1", at=clock.now(), source="workflows"
            )
        while commands_process(project_id=project.pk).commands:
            pass
    # And once more, in a later batch.
    customer_trait_increment_enqueue(
        customer=customer, trait="score", by=1, message_id="run-7-1", at=clock.now(), source="workflows"
    )
    ingest(project)
    assert _customer(project).traits["score"] == 11
    assert Event.objects.filter(customer=customer, message_id="run-7-1").count() == 1


def test_an_api_call_cannot_carry_an_increment(project, travel):
    identify(project, "u1", score=10)
    ingest(project, {"type": "identify", "customer_id": "u1", "traits": {}, "_increment": {"trait": "score", "by": 90}})
    assert _customer(project).traits["score"] == 10
