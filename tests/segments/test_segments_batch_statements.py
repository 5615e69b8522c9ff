"""An ingest batch brings every segment it touches up to date in a fixed number of statements,
whatever the number of segments, and with the same answer as a rebuild and as `matches`."""

from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from cdp.models import Customer, Event
from segments.conditions import matches
from segments.membership import membership_apply_changes, membership_rebuild
from segments.models import Membership, MembershipChange, Segment
from segments.services import segment_create
from segments.signals import segment_entered, segment_exited
from tests.factories import ProjectFactory

from .conditions_support import NOW, store_customer

pytestmark = pytest.mark.django_db

PRO = {"type": "trait", "name": "plan", "op": "equals", "value": "pro"}
FREE = {"type": "trait", "name": "plan", "op": "equals", "value": "free"}
BOUGHT = {"type": "event", "event_name": "purchase"}
BIG = {"type": "event", "event_name": "purchase", "where": [{"name": "amount", "op": "greater_than", "value": 20}]}


def purchases(op: str, value: int, **more) -> dict:
    return {"type": "event", "event_name": "purchase", "count": {"op": op, "value": value}, **more}


# The kinds of segment a shop keeps live (those of bench/segments.py): traits, event presence and
# counts that grow, are exact or zero, property filters, windows, and / or / not.
TWENTY = {
    "bought": BOUGHT,
    "bought 3 times in 30 days": purchases("greater_than_or_equals", 3, within={"value": 30, "unit": "days"}),
    "big spender": BIG,
    "pro": PRO,
    "pro buyers": {"type": "and", "conditions": [PRO, BOUGHT]},
    "free": FREE,
    "not pro": {"type": "not", "condition": PRO},
    "seen": {"type": "trait", "name": "seen", "op": "is_set"},
    "seen a lot": {"type": "trait", "name": "seen", "op": "greater_than", "value": 5},
    "pro or team": {"type": "trait", "name": "plan", "op": "in", "value": ["pro", "team"]},
    "loyal": purchases("greater_than_or_equals", 4),
    "bought once": purchases("equals", 1),
    "t-shirt buyers": {
        "type": "event",
        "event_name": "purchase",
        "where": [{"name": "item", "op": "equals", "value": "T-Shirt"}],
    },
    "buyers this week": {"type": "event", "event_name": "purchase", "within": {"value": 7, "unit": "days"}},
    "small spender": {
        "type": "event",
        "event_name": "purchase",
        "where": [{"name": "amount", "op": "less_than", "value": 5}],
    },
    "free or big spender": {"type": "or", "conditions": [FREE, BIG]},
    "pro, never bought": {"type": "and", "conditions": [PRO, {"type": "not", "condition": BOUGHT}]},
    "never bought": purchases("equals", 0),
    "free, 2 purchases": {"type": "and", "conditions": [FREE, purchases("greater_than_or_equals", 2)]},
    "signed up": {"type": "event", "event_name": "signed_up"},
}


def purchase(days_ago: int, amount: int, item: str = "Mug") -> dict:
    return {"name": "purchase", "properties": {"amount": amount, "item": item}, "timestamp": NOW - timedelta(days_ago)}


def shop(project, size: int) -> list[Customer]:
    """`size` customers with varied plans and purchase histories."""
    plans = ["pro", "free", "team", None]
    customers = []
    for n in range(size):
        traits = {"plan": plans[n % 4], "seen": n} if plans[n % 4] else {"seen": n}
        history = [purchase(days_ago=(n * 7 + k * 11) % 60, amount=(n + k * 9) % 40) for k in range(n % 5)]
        customers.append(store_customer(project, traits, history))
    return customers


def ingest(project, customers: list[Customer]) -> dict:
    """What a batch does to these customers (traits set, purchases and sign-ups tracked), stored;
    the `changes` the worker announces for it."""
    changes = {}
    for n, customer in enumerate(customers):
        traits, tracked = set(), set()
        if n % 3 == 0:
            customer.traits = {**customer.traits, "plan": ["free", "pro"][n % 2], "seen": n + 3}
            customer.save(update_fields=["traits"])
            traits = {"plan", "seen"}
        if n % 2 == 0:
            for k in range(1 + n % 3):
                Event.objects.create(
                    project=project,
                    customer=customer,
                    type="track",
                    name="purchase",
                    properties={"amount": 10 * k + n % 30, "item": "T-Shirt" if k else "Mug"},
                    timestamp=NOW - timedelta(hours=k),
                    received_at=NOW,
                    message_id=f"batch-{customer.pk}-{k}",
                )
            tracked = {"purchase"}
        if n % 5 == 4:
            Event.objects.create(
                project=project,
                customer=customer,
                type="track",
                name="signed_up",
                properties={},
                timestamp=NOW,
                received_at=NOW,
                message_id=f"signup-{customer.pk}",
            )
            tracked = tracked | {"signed_up"}
        if traits or tracked:
            changes[customer.pk] = (traits, tracked)
    return changes


def live_segments(project, conditions: dict) -> list[Segment]:
    segments = [segment_create(project=project, name=name, condition=c) for name, c in conditions.items()]
    for segment in segments:
        membership_rebuild(segment, now=NOW)
    return segments


def expected_members(segment: Segment) -> set[int]:
    """Who `matches` puts in the segment, customer by customer, in Python."""
    found = set()
    for customer in Customer.objects.filter(project_id=segment.project_id):
        events = [
            {"type": e.type, "name": e.name, "properties": e.properties, "timestamp": e.timestamp}
            for e in Event.objects.filter(customer=customer)
        ]
        if matches(segment.condition, traits=customer.traits, events=events, now=NOW):
            found.add(customer.pk)
    return found


def statements_of_a_batch(conditions: dict) -> tuple[int, list[Segment]]:
    project = ProjectFactory()
    customers = shop(project, 24)
    segments = live_segments(project, conditions)
    changes = ingest(project, customers)
    with CaptureQueriesContext(connection) as queries:
        membership_apply_changes(project.pk, changes, now=NOW)
    return len(queries), segments


def test_a_batch_touching_20_segments_costs_the_statements_of_one():
    with_twenty, segments = statements_of_a_batch(TWENTY)
    with_one, _ = statements_of_a_batch({"pro buyers": TWENTY["pro buyers"]})
    # Read the segments, lock them, read their members, answer every condition, then one DELETE,
    # one INSERT, one history INSERT and one UPDATE of the counts (and the savepoint around them).
    assert with_twenty <= 10
    assert with_twenty <= with_one + 1  # a history INSERT or count UPDATE one segment may not need
    for segment in segments:
        segment.refresh_from_db()
        assert Membership.objects.filter(segment=segment).count() == segment.member_count, segment.name
        assert set(segment.memberships.values_list("customer_id", flat=True)) == expected_members(segment), segment.name
        assert membership_rebuild(segment, now=NOW) == (0, 0), segment.name


def test_a_batch_signals_each_segments_entries_and_exits_once_with_the_ingest_cause(django_capture_on_commit_callbacks):
    project = ProjectFactory()
    customers = shop(project, 24)
    segments = live_segments(project, TWENTY)
    before = {s.pk: set(s.memberships.values_list("customer_id", flat=True)) for s in segments}
    last_change = MembershipChange.objects.order_by("-pk").values_list("pk", flat=True).first()
    received: list[tuple[str, int, list[int]]] = []

    def entered(sender, segment, customer_ids, **kwargs):
        received.append(("entered", segment.pk, sorted(customer_ids)))

    def exited(sender, segment, customer_ids, **kwargs):
        received.append(("exited", segment.pk, sorted(customer_ids)))

    segment_entered.connect(entered)
    segment_exited.connect(exited)
    try:
        changes = ingest(project, customers)
        with django_capture_on_commit_callbacks(execute=True):
            membership_apply_changes(project.pk, changes, now=NOW)
    finally:
        segment_entered.disconnect(entered)
        segment_exited.disconnect(exited)

    expected = []
    for segment in segments:
        after = expected_members(segment)
        if after - before[segment.pk]:
            expected.append(("entered", segment.pk, sorted(after - before[segment.pk])))
        if before[segment.pk] - after:
            expected.append(("exited", segment.pk, sorted(before[segment.pk] - after)))
    assert len(expected) >= 10  # the batch moves customers in and out of most segments
    assert sorted(received) == sorted(expected)
    recorded = MembershipChange.objects.filter(pk__gt=last_change or 0)
    assert sorted(recorded.values_list("kind", "segment_id", "customer_id")) == sorted(
        (kind, pk, customer_id) for kind, pk, ids in expected for customer_id in ids
    )
    assert set(recorded.values_list("cause", flat=True)) == {MembershipChange.Cause.INGEST}


def test_segments_reading_segments_see_the_memberships_the_same_batch_changed():
    project = ProjectFactory()
    customers = shop(project, 24)
    pro, big = live_segments(project, {"pro": PRO, "big spender": BIG})
    pro_big = live_segments(
        project,
        {"pro big spender": {"type": "and", "conditions": [{"type": "segment", "segment_id": pro.pk}, BIG]}},
    )[0]
    (outside,) = live_segments(
        project, {"not a pro big spender": {"type": "not", "condition": {"type": "segment", "segment_id": pro_big.pk}}}
    )
    membership_apply_changes(project.pk, ingest(project, customers), now=NOW)

    pro_members = expected_members(pro)
    big_members = expected_members(big)
    everyone = set(Customer.objects.filter(project=project).values_list("pk", flat=True))
    assert set(pro_big.memberships.values_list("customer_id", flat=True)) == pro_members & big_members
    assert set(outside.memberships.values_list("customer_id", flat=True)) == everyone - (pro_members & big_members)
    for segment in (pro, big, pro_big, outside):
        assert membership_rebuild(segment, now=NOW) == (0, 0), segment.name


def test_after_the_commit_a_batch_moving_20_segments_asks_once_which_workflows_listen(
    django_capture_on_commit_callbacks,
):
    project = ProjectFactory()
    customers = shop(project, 24)
    live_segments(project, TWENTY)
    changes = ingest(project, customers)
    with django_capture_on_commit_callbacks() as callbacks:
        membership_apply_changes(project.pk, changes, now=NOW)
    with CaptureQueriesContext(connection) as queries:
        for callback in callbacks:
            callback()
    asked = [q["sql"] for q in queries.captured_queries if "workflows_workflow" in q["sql"]]
    assert len(asked) == 1, asked
