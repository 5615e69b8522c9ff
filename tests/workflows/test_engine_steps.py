"""Every step type, waits moved by the clock, versions, pause and resume, exit and goal."""

from datetime import timedelta

import pytest
from django.core.exceptions import ValidationError

from cdp.models import Customer
from emails.models import Delivery, Unsubscription
from segments.membership import membership_rebuild
from segments.services import segment_create
from timonier import clock
from workflows import services
from workflows.evaluation import cohort_of
from workflows.models import Run, RunStep

from .engine import (
    T0,
    active_workflow,
    definition,
    deliveries_to,
    identify,
    ingest,
    published_template,
    run_engine,
    runs_of,
    track,
)

pytestmark = pytest.mark.django_db
EVENT = {"type": "event", "event_name": "signed_up"}
SAME_CART = {"property": "cart_id", "trigger_property": "cart_id"}


def pro_segment(project):
    """The guide's Pro Users segment, built (its first build fires no Segment Entered)."""
    segment = segment_create(
        project=project, name="Pro", condition={"type": "trait", "name": "plan", "op": "equals", "value": "pro"}
    )
    membership_rebuild(segment)
    return segment


def outcomes(run) -> list[tuple[str, str]]:
    return list(RunStep.objects.filter(run=run).order_by("seq").values_list("step_id", "outcome"))


def start(project, flow, customer_id="u1", **traits):
    workflow = active_workflow(project, flow)
    identify(project, customer_id, email=f"{customer_id}@example.com", **traits)
    track(project, customer_id, EVENT["event_name"])
    run_engine(project)
    return workflow


def test_a_delay_waits_until_its_time_then_the_email_goes(project, travel):
    template = published_template(project)
    flow = definition(
        EVENT,
        [
            {"id": "wait", "type": "delay", "duration": {"value": 2, "unit": "hours"}},
            {"id": "mail", "type": "email", "template_id": template.pk},
        ],
        [("wait", "mail")],
    )
    workflow = start(project, flow)
    (run,) = runs_of(workflow)
    assert (run.status, run.current_step, run.wake_at) == (Run.Status.WAITING, "wait", T0 + timedelta(hours=2))
    travel.advance(minutes=119)
    run_engine(project)
    assert deliveries_to("u1@example.com") == []
    travel.advance(minutes=1)
    run_engine(project)
    assert len(deliveries_to("u1@example.com")) == 1
    run.refresh_from_db()
    assert run.status == Run.Status.COMPLETED
    assert outcomes(run) == [("wait", "next"), ("mail", "sent")]


@pytest.mark.parametrize(
    ("zone_trait", "expected_utc_hour"),
    [("America/New_York", 14), (None, 8)],  # 09:00 New York (EST, UTC-5); else the project's Europe/Paris
)
def test_a_delay_until_a_time_of_day_follows_the_customers_time_zone(project, travel, zone_trait, expected_utc_hour):
    project.timezone = "Europe/Paris"
    project.save()
    flow = definition(EVENT, [{"id": "nine", "type": "delay", "until": {"time": "09:00", "days": ["tue"]}}], [])
    traits = {"timezone": zone_trait} if zone_trait else {}
    workflow = start(project, flow, **traits)
    (run,) = runs_of(workflow)
    # Entered on Monday 2026-03-02 09:00 UTC: the next Tuesday 09:00 local.
    assert run.wake_at.date().isoformat() == "2026-03-03" and run.wake_at.hour == expected_utc_hour


def test_wait_until_a_later_event_with_the_same_cart_id_or_the_timeout(project, travel):
    template = published_template(project, name="Come back")
    flow = definition(
        {"type": "event", "event_name": "cart_updated"},
        [
            {
                "id": "wait",
                "type": "wait_until",
                "event": {"event_name": "order_completed", "match": [SAME_CART]},
                "timeout": {"value": 1, "unit": "hours"},
            },
            {"id": "nudge", "type": "email", "template_id": template.pk},
        ],
        [("wait", "timeout", "nudge")],
        frequency={"type": "every_time"},
        allow_concurrent_runs=True,
    )
    workflow = active_workflow(project, flow)
    identify(project, "u1", email="u1@example.com")
    track(project, "u1", "cart_updated", cart_id="A")
    track(project, "u1", "cart_updated", cart_id="B")
    run_engine(project)
    travel.advance(minutes=10)
    track(project, "u1", "order_completed", cart_id="A")  # completes cart A only
    run_engine(project)
    run_a, run_b = runs_of(workflow)
    run_a.refresh_from_db()
    assert (run_a.status, outcomes(run_a)) == (Run.Status.COMPLETED, [("wait", "met")])
    assert run_b.status == Run.Status.WAITING
    travel.advance(minutes=51)
    run_engine(project)
    run_b.refresh_from_db()
    assert outcomes(run_b) == [("wait", "timeout"), ("nudge", "sent")]
    assert len(deliveries_to("u1@example.com")) == 1


def test_wait_until_a_condition_moves_on_when_the_customers_data_changes(project, travel):
    flow = definition(
        EVENT,
        [
            {
                "id": "until_pro",
                "type": "wait_until",
                "condition": {"type": "trait", "name": "plan", "op": "equals", "value": "pro"},
                "timeout": {"value": 3, "unit": "days"},
            }
        ],
        [],
    )
    workflow = start(project, flow, plan="free")
    (run,) = runs_of(workflow)
    assert run.status == Run.Status.WAITING and run.watches_changes
    travel.advance(hours=1)
    identify(project, "u1", plan="pro")  # the batch's after-commit re-check makes the run due
    run_engine(project)
    run.refresh_from_db()
    assert run.status == Run.Status.COMPLETED and outcomes(run) == [("until_pro", "met")]


def test_branch_split_and_cohort_take_their_outputs(project, travel):
    pro = {"type": "trait", "name": "plan", "op": "equals", "value": "pro"}
    flow = definition(
        EVENT,
        [
            {"id": "is_pro", "type": "branch", "condition": pro},
            {
                "id": "by_country",
                "type": "split",
                "branches": [
                    {"key": "fr", "condition": {"type": "trait", "name": "country", "op": "equals", "value": "FR"}},
                    {"key": "de", "condition": {"type": "trait", "name": "country", "op": "equals", "value": "DE"}},
                ],
            },
            {"id": "ab", "type": "random_cohort", "cohorts": [{"key": "a", "weight": 50}, {"key": "b", "weight": 50}]},
            {"id": "no_end", "type": "exit"},
        ],
        [("is_pro", "yes", "by_country"), ("is_pro", "no", "no_end"), ("by_country", "de", "ab")],
    )
    workflow = start(project, flow, plan="pro", country="DE")
    (run,) = runs_of(workflow)
    cohort = cohort_of(flow["steps"][2], workflow_id=workflow.pk, customer_id=run.customer_id)
    assert outcomes(run) == [("is_pro", "yes"), ("by_country", "de"), ("ab", cohort)]
    identify(project, "u2", email="u2@example.com", plan="free")
    track(project, "u2", "signed_up")
    run_engine(project)
    run2 = runs_of(workflow)[1]
    assert outcomes(run2) == [("is_pro", "no"), ("no_end", "exit")]
    assert run2.status == Run.Status.EXITED and run2.exit_reason == "exit_step"


def test_random_cohorts_are_stable_per_customer_and_follow_the_weights():
    step = {"id": "ab", "cohorts": [{"key": "a", "weight": 20}, {"key": "b", "weight": 80}]}
    picks = [cohort_of(step, workflow_id=7, customer_id=pk) for pk in range(2000)]
    assert picks == [cohort_of(step, workflow_id=7, customer_id=pk) for pk in range(2000)]
    assert 300 < picks.count("a") < 500  # 20 % of 2,000, give or take


def test_update_attribute_sets_unsets_and_increments_through_the_inbox_once(project, travel):
    flow = definition(
        EVENT,
        [
            {"id": "score", "type": "update_attribute", "action": "increment", "trait": "score", "value": 5},
            {"id": "city", "type": "update_attribute", "action": "set", "trait": "address.city", "value": "Lyon"},
            {"id": "drop", "type": "update_attribute", "action": "unset", "trait": "coupon"},
        ],
        [("score", "city"), ("city", "drop")],
    )
    start(project, flow, score=10, coupon="X1", address={"zip": "69001"})
    ingest(project)  # apply the identifies the steps queued
    customer = Customer.objects.get(project=project, external_id="u1")
    assert customer.traits["score"] == 15
    assert customer.traits["address"] == {"zip": "69001", "city": "Lyon"}
    assert "coupon" not in customer.traits
    # The identifies carry message ids derived from the run and step: queued again, applied once.
    from cdp.models import Event

    ids = list(Event.objects.filter(customer=customer, type="identify").values_list("message_id", flat=True))
    assert sum(1 for i in ids if i.startswith("run-")) == 3


def test_unsubscribed_customers_are_skipped_and_the_run_goes_on(project, travel):
    template = published_template(project)
    flow = definition(
        EVENT,
        [
            {"id": "mail", "type": "email", "template_id": template.pk},
            {"id": "tag", "type": "update_attribute", "action": "set", "trait": "reached", "value": True},
        ],
        [("mail", "tag")],
    )
    workflow = active_workflow(project, flow)
    customer = identify(project, "u1", email="u1@example.com")
    Unsubscription.objects.create(project=project, email="u1@example.com", customer=customer)
    track(project, "u1", "signed_up")
    run_engine(project)
    (run,) = runs_of(workflow)
    assert run.status == Run.Status.COMPLETED
    assert outcomes(run) == [("mail", "skipped: the customer has unsubscribed"), ("tag", "next")]
    assert not Delivery.objects.filter(status=Delivery.Status.QUEUED).exists()


def test_runs_finish_on_the_version_they_started(project, travel):
    first = published_template(project, name="First")
    second = published_template(project, name="Second")
    steps = [
        {"id": "wait", "type": "delay", "duration": {"value": 1, "unit": "days"}},
        {"id": "mail", "type": "email", "template_id": first.pk},
    ]
    workflow = start(project, definition(EVENT, steps, [("wait", "mail")]))
    changed = definition(EVENT, [steps[0], {**steps[1], "template_id": second.pk}], [("wait", "mail")])
    services.workflow_update(workflow=workflow, user=None, definition=changed)
    services.workflow_activate(workflow=workflow, user=None)
    identify(project, "u2", email="u2@example.com")
    track(project, "u2", "signed_up")
    run_engine(project)
    travel.advance(days=1)
    run_engine(project)
    assert [r.version.number for r in runs_of(workflow)] == [1, 2]
    assert deliveries_to("u1@example.com")[0].template == first
    assert deliveries_to("u2@example.com")[0].template == second


@pytest.mark.parametrize(("overdue", "emails"), [("run", 1), ("skip_emails", 0)])
def test_pause_holds_runs_and_resume_runs_or_skips_what_fell_due(project, travel, overdue, emails):
    template = published_template(project)
    steps = [
        {"id": "wait", "type": "delay", "duration": {"value": 1, "unit": "hours"}},
        {"id": "mail", "type": "email", "template_id": template.pk},
    ]
    workflow = start(project, definition(EVENT, steps, [("wait", "mail")]))
    services.workflow_pause(workflow=workflow, user=None)
    identify(project, "u2", email="u2@example.com")
    track(project, "u2", "signed_up")  # no enrolment while paused
    travel.advance(hours=3)
    run_engine(project)
    assert len(runs_of(workflow)) == 1 and deliveries_to("u1@example.com") == []
    services.workflow_resume(workflow=workflow, user=None, overdue=overdue)
    run_engine(project)
    (run,) = runs_of(workflow)
    assert run.status == Run.Status.COMPLETED
    assert len(deliveries_to("u1@example.com")) == emails
    with pytest.raises(ValidationError):
        services.workflow_resume(workflow=workflow, user=None, overdue="run")  # not paused any more


def test_archive_ends_the_runs_and_stops_enrolments(project, travel):
    steps = [{"id": "wait", "type": "delay", "duration": {"value": 1, "unit": "days"}}]
    workflow = start(project, definition(EVENT, steps, []))
    services.workflow_archive(workflow=workflow, user=None)
    (run,) = runs_of(workflow)
    assert (run.status, run.exit_reason) == (Run.Status.EXITED, "archived")
    identify(project, "u2", email="u2@example.com")
    track(project, "u2", "signed_up")
    run_engine(project)
    assert len(runs_of(workflow)) == 1


def test_the_exit_condition_ends_a_waiting_run_when_the_data_changes(project, travel):
    template = published_template(project)
    steps = [
        {"id": "wait", "type": "delay", "duration": {"value": 2, "unit": "days"}},
        {"id": "mail", "type": "email", "template_id": template.pk},
    ]
    flow = definition(
        EVENT, steps, [("wait", "mail")], exit_condition={"type": "event", "event_name": "purchase"}
    )
    workflow = start(project, flow)
    travel.advance(hours=5)
    track(project, "u1", "purchase")  # its batch's after-commit re-check wakes the run now
    run_engine(project)
    (run,) = runs_of(workflow)
    assert (run.status, run.exit_reason, run.ended_at) == (Run.Status.EXITED, "exit_condition", clock.now())
    assert outcomes(run) == [("wait", "left: the run ended")]
    travel.advance(days=2)
    run_engine(project)
    assert deliveries_to("u1@example.com") == []


def test_a_goal_counts_a_conversion_within_its_window_and_can_end_the_run(project, travel):
    steps = [
        {"id": "wait", "type": "delay", "duration": {"value": 1, "unit": "days"}},
        {"id": "wait_more", "type": "delay", "duration": {"value": 1, "unit": "days"}},
    ]
    goal = {"condition": {"type": "event", "event_name": "purchase"}, "within_days": 7, "exit_on_conversion": True}
    workflow = start(project, definition(EVENT, steps, [("wait", "wait_more")], goal=goal))
    travel.advance(hours=2)
    track(project, "u1", "purchase")
    travel.advance(days=1)
    run_engine(project)
    (run,) = runs_of(workflow)
    assert run.converted_at is not None
    assert (run.status, run.exit_reason) == (Run.Status.EXITED, "goal")


def test_an_erased_customers_runs_are_deleted_with_them(project, travel):
    steps = [{"id": "wait", "type": "delay", "duration": {"value": 1, "unit": "days"}}]
    workflow = start(project, definition(EVENT, steps, []))
    ingest(project, {"type": "delete", "customer_id": "u1"})
    assert runs_of(workflow) == [] and not RunStep.objects.exists()


def test_merged_customers_runs_follow_the_primary_with_no_second_run(project, travel):
    steps = [{"id": "wait", "type": "delay", "duration": {"value": 1, "unit": "days"}}]
    workflow = active_workflow(project, definition(EVENT, steps, [], frequency={"type": "every_time"}))
    for customer_id in ("a", "b"):
        identify(project, customer_id, email=f"{customer_id}@example.com")
        track(project, customer_id, "signed_up")
    run_engine(project)
    ingest(project, {"type": "merge", "primary": {"customer_id": "a"}, "secondary": {"customer_id": "b"}})
    primary = Customer.objects.get(project=project, external_id="a")
    runs = runs_of(workflow)
    assert {run.customer_id for run in runs} == {primary.pk}
    assert sorted(run.status for run in runs) == [Run.Status.EXITED, Run.Status.WAITING]
    assert [run.exit_reason for run in runs if run.status == Run.Status.EXITED] == ["merged"]


def test_segment_entered_fires_on_live_entries_not_on_the_first_build(project, travel):
    identify(project, "old", email="old@example.com", plan="pro")
    segment = pro_segment(project)
    steps = [{"id": "tag", "type": "update_attribute", "action": "set", "trait": "welcomed", "value": True}]
    workflow = active_workflow(project, definition({"type": "segment_entered", "segment_id": segment.pk}, steps, []))
    membership_rebuild(segment)  # a rebuild (cause: build) changes nothing and fires nothing
    identify(project, "new", email="new@example.com", plan="pro")  # a live entry
    run_engine(project)
    assert [r.customer.external_id for r in runs_of(workflow)] == ["new"]


def test_segment_entered_can_also_enrol_the_existing_members(project, travel):
    identify(project, "old", email="old@example.com", plan="pro")
    segment = pro_segment(project)
    steps = [{"id": "tag", "type": "update_attribute", "action": "set", "trait": "welcomed", "value": True}]
    trigger = {"type": "segment_entered", "segment_id": segment.pk, "include_existing": True}
    workflow = active_workflow(project, definition(trigger, steps, []))
    run_engine(project)
    assert [r.customer.external_id for r in runs_of(workflow)] == ["old"]


def test_segment_exited_fires_when_a_customer_leaves(project, travel):
    identify(project, "u1", email="u1@example.com", plan="pro")
    segment = pro_segment(project)
    steps = [{"id": "tag", "type": "update_attribute", "action": "set", "trait": "churned", "value": True}]
    workflow = active_workflow(project, definition({"type": "segment_exited", "segment_id": segment.pk}, steps, []))
    identify(project, "u1", plan="free")
    run_engine(project)
    assert len(runs_of(workflow)) == 1


@pytest.mark.parametrize(
    ("trigger_extra", "changes", "expected"),
    [
        ({}, ["free", "pro", "pro", "team"], 3),  # each real change (the first identify sets it: a change too)
        ({"from": "free", "to": "pro"}, ["free", "pro", "free", "team", "pro"], 1),
        ({"to": "pro"}, ["free", "pro", "free", "pro"], 2),
    ],
)
def test_attribute_changed_fires_on_changes_of_the_trait_matching_from_and_to(
    project, travel, trigger_extra, changes, expected
):
    steps = [{"id": "tag", "type": "update_attribute", "action": "set", "trait": "seen", "value": True}]
    trigger = {"type": "attribute_changed", "trait": "plan", **trigger_extra}
    workflow = active_workflow(project, definition(trigger, steps, [], frequency={"type": "every_time"}))
    for index, plan in enumerate(changes):
        travel.move_to(T0 + timedelta(minutes=index))
        identify(project, "u1", plan=plan)
        run_engine(project)
    assert len(runs_of(workflow)) == expected


def test_api_enrolment_is_idempotent_by_key_and_follows_the_frequency(project, travel):
    from workflows.triggers import EnrolmentRefused

    steps = [{"id": "tag", "type": "update_attribute", "action": "set", "trait": "seen", "value": True}]
    workflow = active_workflow(project, definition({"type": "api"}, steps, []))
    customer = identify(project, "u1", email="u1@example.com")
    run, created = services.workflow_enrol(workflow=workflow, customer=customer, key="k1", data={"coupon": "X"})
    again, created_again = services.workflow_enrol(workflow=workflow, customer=customer, key="k1", data={})
    assert created and not created_again and again.pk == run.pk and run.data == {"coupon": "X"}
    with pytest.raises(EnrolmentRefused):
        services.workflow_enrol(workflow=workflow, customer=customer, key="k2", data={})  # once per customer
