"""Creating, changing and deleting segments: an invalid condition is never saved."""

import pytest
from django.core.exceptions import ValidationError

from segments.membership import membership_rebuild
from segments.models import Membership, MembershipChange, Segment
from segments.services import segment_create, segment_delete, segment_update
from tests.factories import ProjectFactory

from .conditions_support import NOW, store_customer

pytestmark = pytest.mark.django_db

PRO_USERS = {"type": "trait", "name": "plan", "op": "equals", "value": "pro"}
INVALID = {
    "type": "and",
    "conditions": [PRO_USERS, {"type": "trait", "name": "plan", "op": "eq", "value": "pro"}, {"type": "evnt"}],
}


@pytest.fixture
def project():
    return ProjectFactory()


def test_create_stores_a_building_segment(project):
    segment = segment_create(
        project=project, name="Pro Users", description="Customers on the pro plan", condition=PRO_USERS
    )

    stored = Segment.objects.get(pk=segment.pk)
    assert (stored.project, stored.name, stored.condition) == (project, "Pro Users", PRO_USERS)
    assert (stored.status, stored.member_count, stored.last_computed_at) == (Segment.Status.BUILDING, 0, None)


def test_create_with_invalid_condition_raises_every_problem_with_its_path_and_saves_nothing(project):
    with pytest.raises(ValidationError) as raised:
        segment_create(project=project, name="Broken", description="", condition=INVALID)

    messages = raised.value.message_dict["condition"]
    assert 'conditions[1].op: unknown operator "eq"; did you mean "equals"?' in messages
    assert any(message.startswith("conditions[2].type:") for message in messages)
    assert not Segment.objects.exists()


def test_create_with_too_long_name_names_the_field(project):
    with pytest.raises(ValidationError) as raised:
        segment_create(project=project, name="x" * 101, condition=PRO_USERS)

    assert list(raised.value.message_dict) == ["name"]
    assert not Segment.objects.exists()


def test_update_with_invalid_condition_changes_nothing(project):
    segment = segment_create(project=project, name="Pro Users", condition=PRO_USERS)

    with pytest.raises(ValidationError) as raised:
        segment_update(segment=segment, name="Renamed", condition=INVALID)

    assert 'conditions[1].op: unknown operator "eq"; did you mean "equals"?' in raised.value.message_dict["condition"]
    stored = Segment.objects.get(pk=segment.pk)
    assert (stored.name, stored.condition) == ("Pro Users", PRO_USERS)
    assert (segment.name, segment.condition) == ("Pro Users", PRO_USERS)


def test_update_of_the_condition_marks_the_segment_building_again(project):
    segment = segment_create(project=project, name="Pro Users", condition=PRO_USERS)
    membership_rebuild(segment, now=NOW)
    free = {"type": "trait", "name": "plan", "op": "equals", "value": "free"}

    segment_update(segment=segment, description="now free", condition=free)

    assert (segment.description, segment.condition, segment.status) == ("now free", free, Segment.Status.BUILDING)


def test_update_of_the_name_keeps_the_segment_ready(project):
    segment = segment_create(project=project, name="Pro Users", condition=PRO_USERS)
    membership_rebuild(segment, now=NOW)

    segment_update(segment=segment, name="Pros", condition=PRO_USERS)

    assert (segment.name, segment.status) == ("Pros", Segment.Status.READY)


def test_delete_removes_memberships_and_history(project):
    store_customer(project, {"plan": "pro"})
    segment = segment_create(project=project, name="Pro Users", condition=PRO_USERS)
    membership_rebuild(segment, now=NOW)

    segment_delete(segment=segment)

    assert not Segment.objects.exists()
    assert not Membership.objects.exists()
    assert not MembershipChange.objects.exists()
