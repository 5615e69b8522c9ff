"""Which segments a change can affect, which age with time, and reads scoped to a project."""

import pytest

from segments.membership import membership_rebuild
from segments.selectors import (
    customer_segment_changes,
    customer_segments,
    segment_members,
    segments_affected_by,
    segments_using_relative_windows,
)
from segments.services import segment_create
from tests.factories import ProjectFactory

from .conditions_support import NOW, store_customer

pytestmark = pytest.mark.django_db

PRO_USERS = {"type": "trait", "name": "plan", "op": "equals", "value": "pro"}
CITY = {"type": "trait", "name": "address.city", "op": "equals", "value": "Paris"}
RECENT_BUYERS = {"type": "event", "event_name": "purchase", "within": {"value": 7, "unit": "days"}}
EVER_BOUGHT = {"type": "event", "event_name": "purchase"}


@pytest.fixture
def project():
    return ProjectFactory()


def names(segments) -> set[str]:
    return {segment.name for segment in segments}


def test_only_segments_with_a_relative_window_age(project):
    segment_create(project=project, name="Recent", condition={"type": "not", "condition": RECENT_BUYERS})
    segment_create(project=project, name="Ever", condition=EVER_BOUGHT)
    segment_create(project=ProjectFactory(), name="Elsewhere", condition=RECENT_BUYERS)

    assert names(segments_using_relative_windows(project)) == {"Recent"}


@pytest.mark.parametrize(
    ("traits", "events", "expected"),
    [
        ({"plan"}, set(), {"Pro"}),
        ({"address"}, set(), {"City"}),
        ({"address.city.district"}, set(), {"City"}),
        ({"email"}, set(), set()),
        (set(), {"purchase"}, {"Ever"}),
        (set(), {"signup"}, set()),
    ],
)
def test_affected_segments_are_those_reading_a_changed_trait_or_event(project, traits, events, expected):
    segment_create(project=project, name="Pro", condition=PRO_USERS)
    segment_create(project=project, name="City", condition=CITY)
    segment_create(project=project, name="Ever", condition=EVER_BOUGHT)
    segment_create(project=ProjectFactory(), name="Other Pro", condition=PRO_USERS)

    assert names(segments_affected_by(project, traits=traits, events=events)) == expected


def test_customer_reads_are_scoped_to_the_project(project):
    jane = store_customer(project, {"plan": "pro"})
    segment = segment_create(project=project, name="Pro", condition=PRO_USERS)
    membership_rebuild(segment, now=NOW)
    other = ProjectFactory()

    assert names(customer_segments(project, jane)) == {"Pro"}
    assert [m.customer for m in segment_members(project, segment)] == [jane]
    assert [(c.kind, c.at) for c in customer_segment_changes(project, jane.pk)] == [("entered", NOW)]
    assert not customer_segments(other, jane).exists()
    assert not segment_members(other, segment).exists()
    assert not customer_segment_changes(other, jane.pk).exists()
