"""One clock that moves everything: services, querysets and model defaults follow `travel`."""

from datetime import UTC, datetime, timedelta

import pytest
from django.utils import timezone

from timonier import clock
from workflows.models import Trigger

T = datetime(2030, 6, 1, 12, 0, tzinfo=UTC)


def test_travel_freezes_and_advances_and_then_gives_time_back():
    with clock.travel(T) as traveller:
        assert clock.now() == T
        assert traveller.advance(hours=2) == T + timedelta(hours=2)
        assert clock.now() == T + timedelta(hours=2)
    assert abs(clock.now() - timezone.now()) < timedelta(seconds=1)


def test_ticking_travel_lets_time_flow_from_the_instant():
    with clock.travel(T, tick=True):
        first = clock.now()
        second = clock.now()
        assert T <= first <= second < T + timedelta(seconds=5)


@pytest.mark.django_db
def test_model_defaults_follow_the_clock():
    from tests.factories import ProjectFactory

    with clock.travel(T):
        project = ProjectFactory()
        assert project.created_at == T
        assert Trigger._meta.get_field("created_at").default() == T
