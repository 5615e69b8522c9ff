"""Membership computed set-wise: rebuilds, incremental updates, history, signals and time windows."""

from datetime import timedelta

import pytest

from cdp.models import Customer, Event
from segments.membership import membership_rebuild, membership_update
from segments.models import Membership, MembershipChange, Segment
from segments.services import segment_create
from segments.signals import segment_entered, segment_exited
from tests.factories import ProjectFactory

from .conditions_support import NOW, store_customer

pytestmark = pytest.mark.django_db

PRO_USERS = {"type": "trait", "name": "plan", "op": "equals", "value": "pro"}
PRO_AND_PURCHASED = {"type": "and", "conditions": [PRO_USERS, {"type": "event", "event_name": "purchase"}]}
PURCHASED_THIS_WEEK = {"type": "event", "event_name": "purchase", "within": {"value": 7, "unit": "days"}}


def customer(project, external_id: str, traits: dict, events=()) -> Customer:
    stored = store_customer(project, traits, list(events))
    stored.external_id = external_id
    stored.save(update_fields=["external_id"])
    return stored


def member_ids(segment: Segment) -> set[int]:
    return set(Membership.objects.filter(segment=segment).values_list("customer_id", flat=True))


def history(segment: Segment) -> list[tuple[int, str]]:
    return sorted(MembershipChange.objects.filter(segment=segment).values_list("customer_id", "kind"))


@pytest.fixture
def project():
    return ProjectFactory()


def test_pro_users_segment_includes_jane_and_not_a_free_customer(project):
    jane = customer(project, "user_001", {"email": "jane@example.com", "name": "Jane Doe", "plan": "pro"})
    free = customer(project, "user_002", {"plan": "free"})
    segment = segment_create(
        project=project, name="Pro Users", description="Customers on the pro plan", condition=PRO_USERS
    )

    assert membership_rebuild(segment, now=NOW) == (1, 0)

    assert member_ids(segment) == {jane.pk}
    assert free.pk not in member_ids(segment)
    segment.refresh_from_db()
    assert (segment.status, segment.member_count, segment.last_computed_at) == (Segment.Status.READY, 1, NOW)


def test_and_example_needs_pro_plan_and_a_purchase(project):
    purchase = {"name": "purchase", "timestamp": NOW - timedelta(days=1)}
    buyer = customer(project, "user_001", {"plan": "pro"}, [purchase])
    customer(project, "user_002", {"plan": "pro"})
    customer(project, "user_003", {"plan": "free"}, [purchase])
    segment = segment_create(project=project, name="Pro buyers", condition=PRO_AND_PURCHASED)

    membership_rebuild(segment, now=NOW)

    assert member_ids(segment) == {buyer.pk}


def test_rebuild_after_traits_change_records_exits_entries_and_history(project):
    stays = customer(project, "a", {"plan": "pro"})
    leaves = customer(project, "b", {"plan": "pro"})
    joins = customer(project, "c", {"plan": "free"})
    segment = segment_create(project=project, name="Pro Users", condition=PRO_USERS)
    membership_rebuild(segment, now=NOW)
    Customer.objects.filter(pk=leaves.pk).update(traits={"plan": "free"})
    Customer.objects.filter(pk=joins.pk).update(traits={"plan": "pro"})

    later = NOW + timedelta(hours=1)
    assert membership_rebuild(segment, now=later) == (1, 1)

    assert member_ids(segment) == {stays.pk, joins.pk}
    assert history(segment) == sorted(
        [(stays.pk, "entered"), (leaves.pk, "entered"), (leaves.pk, "exited"), (joins.pk, "entered")]
    )
    assert MembershipChange.objects.get(customer_id=joins.pk).at == later
    assert Membership.objects.get(customer=stays).entered_at == NOW
    segment.refresh_from_db()
    assert segment.member_count == 2


def test_rebuild_without_changes_records_nothing(project):
    customer(project, "a", {"plan": "pro"})
    segment = segment_create(project=project, name="Pro Users", condition=PRO_USERS)
    membership_rebuild(segment, now=NOW)

    assert membership_rebuild(segment, now=NOW + timedelta(days=1)) == (0, 0)
    assert MembershipChange.objects.filter(segment=segment).count() == 1


def test_signals_are_sent_once_per_rebuild_with_every_customer(project, django_capture_on_commit_callbacks):
    first = customer(project, "a", {"plan": "pro"})
    second = customer(project, "b", {"plan": "pro"})
    segment = segment_create(project=project, name="Pro Users", condition=PRO_USERS)
    received = []

    def entered(sender, segment, customer_ids, **kwargs):
        received.append(("entered", segment.pk, sorted(customer_ids)))

    def exited(sender, segment, customer_ids, **kwargs):
        received.append(("exited", segment.pk, sorted(customer_ids)))

    segment_entered.connect(entered)
    segment_exited.connect(exited)
    try:
        with django_capture_on_commit_callbacks(execute=True):
            membership_rebuild(segment, now=NOW)
        Customer.objects.filter(pk__in=[first.pk, second.pk]).update(traits={})
        with django_capture_on_commit_callbacks(execute=True):
            membership_rebuild(segment, now=NOW)
    finally:
        segment_entered.disconnect(entered)
        segment_exited.disconnect(exited)

    assert received == [
        ("entered", segment.pk, sorted([first.pk, second.pk])),
        ("exited", segment.pk, sorted([first.pk, second.pk])),
    ]


def test_membership_update_only_touches_the_given_customers(project):
    checked = customer(project, "a", {"plan": "free"})
    not_checked = customer(project, "b", {"plan": "free"})
    pro = segment_create(project=project, name="Pro Users", condition=PRO_USERS)
    membership_rebuild(pro, now=NOW)
    Customer.objects.filter(pk__in=[checked.pk, not_checked.pk]).update(traits={"plan": "pro"})

    assert membership_update(project.pk, [checked.pk], now=NOW) == (1, 0)

    assert member_ids(pro) == {checked.pk}
    assert history(pro) == [(checked.pk, "entered")]
    pro.refresh_from_db()
    assert pro.member_count == 1


def test_membership_update_applies_exits_and_can_be_limited_to_some_segments(project):
    member = customer(project, "a", {"plan": "pro"})
    pro = segment_create(project=project, name="Pro Users", condition=PRO_USERS)
    everyone = segment_create(
        project=project, name="Everyone", condition={"type": "trait", "name": "x", "op": "is_not_set"}
    )
    membership_rebuild(pro, now=NOW)
    membership_rebuild(everyone, now=NOW)
    Customer.objects.filter(pk=member.pk).update(traits={"plan": "free", "x": 1})

    assert membership_update(project.pk, [member.pk], now=NOW, segment_ids=[pro.pk]) == (0, 1)

    assert member_ids(pro) == set()
    assert member_ids(everyone) == {member.pk}
    pro.refresh_from_db()
    assert pro.member_count == 0


def test_customer_ages_out_of_a_time_window_without_new_events(project, monkeypatch):
    monkeypatch.setattr("timonier.clock.now", lambda: NOW)
    buyer = customer(project, "a", {}, [{"name": "purchase", "timestamp": NOW - timedelta(days=1)}])
    segment = segment_create(project=project, name="Recent buyers", condition=PURCHASED_THIS_WEEK)
    membership_rebuild(segment)
    assert member_ids(segment) == {buyer.pk}

    monkeypatch.setattr("timonier.clock.now", lambda: NOW + timedelta(days=8))
    assert membership_rebuild(segment) == (0, 1)

    assert member_ids(segment) == set()
    exit_row = MembershipChange.objects.get(segment=segment, kind="exited")
    assert (exit_row.customer_id, exit_row.at) == (buyer.pk, NOW + timedelta(days=8))


def test_segment_never_includes_another_projects_customers(project):
    other = ProjectFactory()
    mine = customer(project, "user_001", {"plan": "pro"})
    theirs = customer(other, "user_001", {"plan": "pro"}, [{"name": "purchase", "timestamp": NOW}])
    customer(project, "user_002", {"plan": "pro"}, [])
    Event.objects.filter(customer=theirs).update(customer=mine)  # an event of the other project on my customer
    segment = segment_create(project=project, name="Pro buyers", condition=PRO_AND_PURCHASED)
    pro = segment_create(project=project, name="Pro Users", condition=PRO_USERS)

    membership_rebuild(segment, now=NOW)
    membership_rebuild(pro, now=NOW)
    membership_update(project.pk, [theirs.pk], now=NOW)
    membership_update(other.pk, [mine.pk, theirs.pk], now=NOW)

    assert member_ids(segment) == set()
    assert theirs.pk not in member_ids(pro)
    assert len(member_ids(pro)) == 2


def test_history_survives_customer_deletion(project):
    gone = customer(project, "a", {"plan": "pro"})
    segment = segment_create(project=project, name="Pro Users", condition=PRO_USERS)
    membership_rebuild(segment, now=NOW)

    gone_id = gone.pk

    gone.delete()

    assert member_ids(segment) == set()
    assert history(segment) == [(gone_id, "entered")]
