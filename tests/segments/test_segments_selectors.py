"""Which conditions a change can affect, which age with time, and reads scoped to a project."""

import pytest

from segments.conditions import change_reader, uses_relative_window
from segments.membership import membership_rebuild
from segments.selectors import customer_segment_changes, customer_segments, segment_members
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


def test_only_conditions_with_a_relative_window_age():
    conditions = {"Recent": {"type": "not", "condition": RECENT_BUYERS}, "Ever": EVER_BOUGHT, "Pro": PRO_USERS}

    assert {name for name, condition in conditions.items() if uses_relative_window(condition)} == {"Recent"}


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
def test_affected_conditions_are_those_reading_a_changed_trait_or_event(traits, events, expected):
    conditions = {"Pro": PRO_USERS, "City": CITY, "Ever": EVER_BOUGHT}

    assert {name for name, condition in conditions.items() if change_reader(condition)(traits, events)} == expected


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
