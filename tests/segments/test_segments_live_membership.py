"""Membership kept live by ingest: what the worker does after each batch, merges and erasure,
segments that use other segments, and what services refuse about them."""

from datetime import timedelta

import pytest
from django.core.exceptions import ValidationError

from segments.membership import membership_apply_changes, membership_rebuild
from segments.models import Membership, MembershipChange, Segment
from segments.services import segment_create, segment_delete, segment_update
from segments.signals import segment_entered, segment_exited
from tests.cdp.api.conftest import ApiClient, _api_urls  # noqa: F401  (the API's URLs for these tests)
from tests.factories import ProjectFactory

from .conditions_support import NOW, store_customer

pytestmark = pytest.mark.django_db

PRO = {"type": "trait", "name": "plan", "op": "equals", "value": "pro"}
PURCHASED = {"type": "event", "event_name": "purchase"}
CITY = {"type": "trait", "name": "address.city", "op": "equals", "value": "Lyon"}


@pytest.fixture
def api(db):
    return ApiClient.for_new_project()


def members(segment: Segment) -> set[str]:
    return set(Membership.objects.filter(segment=segment).values_list("customer__external_id", flat=True))


def count(segment: Segment) -> int:
    segment.refresh_from_db()
    assert segment.member_count == Membership.objects.filter(segment=segment).count()
    return segment.member_count


def ready(api, name: str, condition: dict) -> Segment:
    segment = segment_create(project=api.project, name=name, condition=condition)
    membership_rebuild(segment)
    return segment


def process(api, capture) -> None:
    """Apply the pending calls as the worker does, running what it runs after each commit."""
    with capture(execute=True):
        api.process()


def identify(api, customer_id: str, traits: dict) -> None:
    assert api.post("/v1/identify", {"customer_id": customer_id, "traits": traits}).status_code == 202


def track(api, customer_id: str, event: str) -> None:
    assert api.post("/v1/track", {"customer_id": customer_id, "event": event}).status_code == 202


def test_identify_enters_and_leaves_a_trait_segment_in_the_batch_pipeline(api, django_capture_on_commit_callbacks):
    pro = ready(api, "Pro Users", PRO)
    identify(api, "user_001", {"name": "Jane Doe", "plan": "pro"})
    process(api, django_capture_on_commit_callbacks)
    assert members(pro) == {"user_001"}
    assert count(pro) == 1

    identify(api, "user_001", {"plan": "free"})
    process(api, django_capture_on_commit_callbacks)
    assert members(pro) == set()
    assert count(pro) == 0
    kinds = list(MembershipChange.objects.filter(segment=pro).order_by("pk").values_list("kind", flat=True))
    assert kinds == ["entered", "exited"]


def test_guide_and_example_needs_both_the_trait_and_the_purchase(api, django_capture_on_commit_callbacks):
    both = ready(api, "Pro buyers", {"type": "and", "conditions": [PRO, PURCHASED]})
    identify(api, "user_001", {"plan": "pro"})
    process(api, django_capture_on_commit_callbacks)
    assert members(both) == set()

    track(api, "user_001", "purchase")
    process(api, django_capture_on_commit_callbacks)
    assert members(both) == {"user_001"}


def test_new_customer_enters_a_segment_of_customers_without_a_trait(api, django_capture_on_commit_callbacks):
    no_plan = ready(api, "No plan", {"type": "trait", "name": "plan", "op": "is_not_set"})
    never_bought = ready(
        api, "Never bought", {"type": "event", "event_name": "purchase", "count": {"op": "equals", "value": 0}}
    )
    track(api, "visitor", "page_viewed")
    process(api, django_capture_on_commit_callbacks)
    assert members(no_plan) == {"visitor"}
    assert members(never_bought) == {"visitor"}


def test_only_segments_reading_what_changed_recheck_a_customer(api, django_capture_on_commit_callbacks):
    jane = store_customer(api.project, {"plan": "pro", "address": {"city": "Lyon"}})
    pro = segment_create(project=api.project, name="Pro", condition=PRO)
    lyon = segment_create(project=api.project, name="Lyon", condition=CITY)
    # Nothing was built: a segment re-checks a customer only when the batch touched what it reads.
    assert membership_apply_changes(api.project.pk, {jane.pk: ({"address"}, set())}, now=NOW) == (1, 0)
    assert set(Membership.objects.filter(customer=jane).values_list("segment_id", flat=True)) == {lyon.pk}
    assert membership_apply_changes(api.project.pk, {jane.pk: (set(), {"purchase"})}, now=NOW) == (0, 0)
    assert membership_apply_changes(api.project.pk, {jane.pk: ({"plan.tier"}, set())}, now=NOW) == (1, 0)
    assert pro.pk in set(Membership.objects.filter(customer=jane).values_list("segment_id", flat=True))


def test_merge_ends_the_secondary_memberships_and_rechecks_the_primary(api, django_capture_on_commit_callbacks):
    pro = ready(api, "Pro Users", PRO)
    buyers = ready(api, "Buyers", PURCHASED)
    identify(api, "primary", {"plan": "free"})
    identify(api, "secondary", {"plan": "pro"})
    track(api, "secondary", "purchase")
    process(api, django_capture_on_commit_callbacks)
    assert members(pro) == {"secondary"} and members(buyers) == {"secondary"}
    exited = []
    segment_exited.connect(handler := lambda sender, segment, customer_ids, **kw: exited.append(segment.name))
    try:
        api.post("/v1/merge", {"primary": {"customer_id": "primary"}, "secondary": {"customer_id": "secondary"}})
        process(api, django_capture_on_commit_callbacks)
    finally:
        segment_exited.disconnect(handler)

    # The secondary leaves both; the primary, now holding its purchase and newer plan, enters both.
    assert members(pro) == {"primary"}
    assert members(buyers) == {"primary"}
    assert (count(pro), count(buyers)) == (1, 1)
    assert sorted(exited) == ["Buyers", "Pro Users"]


def test_erasure_ends_memberships_with_history(api, django_capture_on_commit_callbacks):
    pro = ready(api, "Pro Users", PRO)
    identify(api, "user_001", {"plan": "pro"})
    process(api, django_capture_on_commit_callbacks)
    customer_pk = Membership.objects.get(segment=pro).customer_id

    assert api.delete("/v1/customers/user_001").status_code == 202
    process(api, django_capture_on_commit_callbacks)

    assert members(pro) == set() and count(pro) == 0
    assert list(
        MembershipChange.objects.filter(segment=pro, customer_id=customer_pk)
        .values_list("kind", flat=True)
        .order_by("pk")
    ) == ["entered", "exited"]


def test_a_segment_of_a_segment_follows_it(api, django_capture_on_commit_callbacks):
    pro = ready(api, "Pro Users", PRO)
    pro_in_lyon = ready(
        api, "Pro in Lyon", {"type": "and", "conditions": [{"type": "segment", "segment_id": pro.pk}, CITY]}
    )
    not_pro = ready(api, "Not pro", {"type": "not", "condition": {"type": "segment", "segment_id": pro.pk}})
    entered = []
    segment_entered.connect(handler := lambda sender, segment, customer_ids, **kw: entered.append(segment.name))
    try:
        identify(api, "jane", {"plan": "pro", "address": {"city": "Lyon"}})
        process(api, django_capture_on_commit_callbacks)
        assert members(pro_in_lyon) == {"jane"} and members(not_pro) == set()

        # Only the plan changes: "Pro in Lyon" reads no trait of this batch, but reads "Pro Users".
        identify(api, "jane", {"plan": "free"})
        process(api, django_capture_on_commit_callbacks)
    finally:
        segment_entered.disconnect(handler)
    assert members(pro) == set() and members(pro_in_lyon) == set() and members(not_pro) == {"jane"}
    assert entered == ["Pro Users", "Pro in Lyon", "Not pro"]


def test_rebuild_of_a_segment_updates_the_segments_using_it(api):
    jane = store_customer(api.project, {"plan": "pro"})
    pro = segment_create(project=api.project, name="Pro Users", condition=PRO)
    uses = segment_create(project=api.project, name="Uses pro", condition={"type": "segment", "segment_id": pro.pk})
    membership_rebuild(uses, now=NOW)
    assert not Membership.objects.filter(segment=uses).exists()
    membership_rebuild(pro, now=NOW)
    assert set(Membership.objects.filter(segment=uses).values_list("customer_id", flat=True)) == {jane.pk}


def test_segment_conditions_must_name_a_segment_of_the_project_and_make_no_cycle(api):
    other = segment_create(project=ProjectFactory(), name="Elsewhere", condition=PRO)
    with pytest.raises(ValidationError) as error:
        segment_create(project=api.project, name="X", condition={"type": "segment", "segment_id": other.pk})
    assert error.value.message_dict["condition"] == [f"segment_id: no segment {other.pk} in this project"]

    a = segment_create(project=api.project, name="A", condition=PRO)
    b = segment_create(project=api.project, name="B", condition={"type": "segment", "segment_id": a.pk})
    with pytest.raises(ValidationError) as error:
        segment_update(segment=a, condition={"type": "not", "condition": {"type": "segment", "segment_id": b.pk}})
    assert error.value.message_dict["condition"] == [
        f"condition.segment_id: this would make a cycle: segment {b.pk} uses this segment"
    ]
    with pytest.raises(ValidationError) as error:
        segment_update(segment=a, condition={"type": "segment", "segment_id": a.pk})
    assert error.value.message_dict["condition"] == ["segment_id: a segment cannot use itself"]
    a.refresh_from_db()
    assert a.condition == PRO


def test_a_segment_in_use_cannot_be_deleted(api):
    a = segment_create(project=api.project, name="A", condition=PRO)
    segment_create(project=api.project, name="B", condition={"type": "segment", "segment_id": a.pk})
    with pytest.raises(ValidationError) as error:
        segment_delete(segment=a)
    assert '"B"' in error.value.messages[0]
    assert Segment.objects.filter(pk=a.pk).exists()


def test_creating_a_segment_schedules_its_build(api, django_capture_on_commit_callbacks, monkeypatch):
    sent = []
    monkeypatch.setattr("segments.tasks.segment_build_task.delay", sent.append)
    with django_capture_on_commit_callbacks(execute=True):
        segment = segment_create(project=api.project, name="Pro", condition=PRO)
    with django_capture_on_commit_callbacks(execute=True):
        segment_update(segment=segment, name="Pro users")
    with django_capture_on_commit_callbacks(execute=True):
        segment_update(segment=segment, condition=CITY)
    assert sent == [segment.pk, segment.pk]


def test_time_window_segments_are_refreshed_by_the_periodic_task(api, monkeypatch):
    from segments.tasks import segments_refresh_windows_task

    monkeypatch.setattr("timonier.clock.now", lambda: NOW)
    recent = {"type": "event", "event_name": "purchase", "within": {"value": 7, "unit": "days"}}
    store_customer(api.project, {}, [{"name": "purchase", "timestamp": NOW - timedelta(days=1)}])
    weekly = ready(api, "Bought this week", recent)
    pro = ready(api, "Pro", PRO)
    assert count(weekly) == 1

    monkeypatch.setattr("timonier.clock.now", lambda: NOW + timedelta(days=8))
    segments_refresh_windows_task()
    assert count(weekly) == 0
    pro.refresh_from_db()
    assert pro.last_computed_at == NOW  # no window: not re-evaluated


def test_a_periodic_refresh_already_running_is_not_doubled(api, monkeypatch):
    from django.core.cache import cache

    from segments.tasks import segments_refresh_windows_task

    monkeypatch.setattr("timonier.clock.now", lambda: NOW)
    weekly = segment_create(
        project=api.project,
        name="Bought this week",
        condition={"type": "event", "event_name": "purchase", "within": {"value": 7, "unit": "days"}},
    )
    assert cache.add("segments:refresh-windows", "running", timeout=60)
    try:
        segments_refresh_windows_task()
        weekly.refresh_from_db()
        assert weekly.last_computed_at is None
    finally:
        cache.delete("segments:refresh-windows")
    segments_refresh_windows_task()
    weekly.refresh_from_db()
    assert weekly.last_computed_at == NOW


def test_a_segment_whose_build_task_was_lost_is_built_by_the_periodic_refresh(api, monkeypatch):
    from segments.tasks import segments_refresh_windows_task
    from timonier import clock

    store_customer(api.project, {"plan": "pro"})
    pro = segment_create(project=api.project, name="Pro", condition=PRO)  # no worker ever builds it
    segments_refresh_windows_task()
    assert Segment.objects.get(pk=pro.pk).status == Segment.Status.BUILDING  # its task may still come

    later = clock.now() + timedelta(minutes=5)
    monkeypatch.setattr("timonier.clock.now", lambda: later)
    segments_refresh_windows_task()
    pro.refresh_from_db()
    assert (pro.status, pro.member_count) == (Segment.Status.READY, 1)


@pytest.mark.parametrize(
    ("condition", "grows"),
    [
        (PURCHASED, True),
        (
            {
                **PURCHASED,
                "count": {"op": "greater_than_or_equals", "value": 3},
                "within": {"value": 7, "unit": "days"},
            },
            True,
        ),
        ({**PURCHASED, "count": {"op": "greater_than", "value": 2}}, True),
        ({**PURCHASED, "count": {"op": "less_than", "value": 2}}, False),
        ({**PURCHASED, "count": {"op": "equals", "value": 1}}, False),
        ({"type": "not", "condition": PURCHASED}, False),
        ({"type": "not", "condition": {"type": "not", "condition": PURCHASED}}, True),
        ({"type": "and", "conditions": [PRO, PURCHASED]}, True),
        ({"type": "or", "conditions": [PRO, {"type": "not", "condition": PURCHASED}]}, False),
        ({"type": "not", "condition": PRO}, True),
    ],
)
def test_which_conditions_hold_as_events_grow(condition, grows):
    from segments.conditions import holds_as_events_grow

    assert holds_as_events_grow(condition) is grows


def test_incremental_membership_equals_a_rebuild_after_many_batches(api, django_capture_on_commit_callbacks):
    """Members skipped because their segment holds as events grow, and segments that do not hold
    (counts capped, `not`): after each batch, what the updates kept equals a rebuild from scratch."""
    segments = [
        ready(api, "bought", PURCHASED),
        ready(api, "bought twice", {**PURCHASED, "count": {"op": "greater_than_or_equals", "value": 2}}),
        ready(api, "bought once", {**PURCHASED, "count": {"op": "equals", "value": 1}}),
        ready(api, "never bought", {"type": "not", "condition": PURCHASED}),
        ready(api, "pro buyers", {"type": "and", "conditions": [PRO, PURCHASED]}),
    ]
    steps = [
        [("identify", "a", {"plan": "pro"}), ("track", "b", "purchase")],
        [("track", "a", "purchase"), ("track", "b", "purchase"), ("track", "c", "view")],
        [("track", "a", "purchase"), ("identify", "b", {"plan": "pro"}), ("track", "c", "purchase")],
        [("identify", "a", {"plan": "free"}), ("track", "c", "purchase"), ("track", "b", "purchase")],
    ]
    for step in steps:
        for kind, customer_id, payload in step:
            if kind == "identify":
                identify(api, customer_id, payload)
            else:
                track(api, customer_id, payload)
        process(api, django_capture_on_commit_callbacks)
        kept = {segment.name: members(segment) for segment in segments}
        for segment in segments:
            membership_rebuild(segment)
        assert kept == {segment.name: members(segment) for segment in segments}
    assert kept["bought once"] == set() and kept["bought twice"] == {"a", "b", "c"}
