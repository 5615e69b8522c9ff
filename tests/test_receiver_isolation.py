"""A receiver that fails after a commit is not the failure of what committed."""

import pytest

from cdp.models import Command, Event
from cdp.signals import customers_changed
from segments.models import Segment
from segments.services import segment_create
from segments.signals import segment_entered
from tests.factories import ProjectFactory
from tests.workflows.engine import identify, ingest

pytestmark = pytest.mark.django_db


def _boom(**kwargs):
    raise RuntimeError("a receiver's bug")


@pytest.fixture
def failing(request):
    signal = request.param
    signal.connect(_boom, dispatch_uid="test.boom")
    yield
    signal.disconnect(dispatch_uid="test.boom")


@pytest.mark.parametrize("failing", [customers_changed], indirect=True)
def test_a_failing_customers_changed_receiver_does_not_reapply_or_count_the_batch(failing, caplog):
    project = ProjectFactory()
    ingest(
        project,
        {"type": "identify", "customer_id": "u1", "traits": {"plan": "pro"}},
        {"type": "track", "customer_id": "u1", "event": "purchase"},
    )
    assert Command.objects.filter(project_id=project.pk).count() == 0  # applied once, deleted
    assert Event.objects.filter(project_id=project.pk).count() == 2
    assert "batch failed" not in caplog.text  # not re-applied command by command
    assert "customers_changed receiver" in caplog.text and "a receiver's bug" in caplog.text


@pytest.mark.parametrize("failing", [segment_entered], indirect=True)
def test_a_failing_segment_entered_receiver_is_not_a_failed_membership_update(failing, caplog):
    project = ProjectFactory()
    segment = segment_create(
        project=project, name="Pro", condition={"type": "trait", "name": "plan", "op": "equals", "value": "pro"}
    )
    Segment.objects.filter(pk=segment.pk).update(status=Segment.Status.READY)
    identify(project, "u1", plan="pro")
    segment.refresh_from_db()
    assert segment.member_count == 1
    assert "incremental segment update failed" not in caplog.text  # no rebuild of every segment
    assert "receiver" in caplog.text and "a receiver's bug" in caplog.text
