"""A segment whose members cannot be computed is marked failed with why, shown so on its page, left
out of live updates until its condition changes, and never sets off rebuilds of the others.

The failing segments here are the realistic kind: conditions stored before this version's size
limits (a 600-value `in` list), which no longer compile.
"""

import logging

import pytest

from cdp.inbox import commands_enqueue
from cdp.messages import normalize
from cdp.processing import commands_process
from segments.membership import membership_rebuild
from segments.models import Membership, Segment
from segments.services import segment_build_failed, segment_create, segment_update
from segments.tasks import segment_build_task, segments_reconcile_task
from timonier import clock

from .test_segment_views import text, url

pytestmark = pytest.mark.django_db

PRO = {"type": "trait", "name": "plan", "op": "equals", "value": "pro"}
# Valid before the limits existed; `validate` now refuses it, so its SQL is never compiled.
OVERSIZED = {"type": "trait", "name": "plan", "op": "in", "value": [f"plan-{i}" for i in range(600)]}
OVERSIZED_ERROR = "The condition is not valid: value: has 600 values; at most 500"


def stored_before_the_limits(project, name: str, *, status=Segment.Status.READY) -> Segment:
    """A segment as an earlier version stored it: straight into the table, past today's services."""
    return Segment.objects.create(project=project, name=name, condition=OVERSIZED, status=status)


def ready(project, name: str, condition: dict) -> Segment:
    segment = segment_create(project=project, name=name, condition=condition)
    membership_rebuild(segment)
    return segment


def identify(project, capture, customer_id: str, traits: dict) -> None:
    """An identify through the inbox and the worker's step, running what it runs after commit."""
    now = clock.now()
    message = normalize({"type": "identify", "customer_id": customer_id, "traits": traits}, received_at=now)
    commands_enqueue(project_id=project.pk, messages=[message], received_at=now)
    with capture(execute=True):
        while commands_process(project_id=project.pk).commands:
            pass


def members(segment: Segment) -> set[str]:
    return set(Membership.objects.filter(segment=segment).values_list("customer__external_id", flat=True))


@pytest.fixture
def builds_sent(monkeypatch) -> list[int]:
    sent: list[int] = []
    monkeypatch.setattr("segments.tasks.segment_build_task.delay", sent.append)
    return sent


def test_a_build_that_fails_marks_the_segment_failed_with_its_error(personas):
    segment = stored_before_the_limits(personas.project, "Old plans", status=Segment.Status.BUILDING)
    segment_build_task(segment.pk)
    segment.refresh_from_db()
    assert (segment.status, segment.build_error) == (Segment.Status.FAILED, OVERSIZED_ERROR)


def test_the_failed_segment_page_shows_the_error_and_the_list_its_status(personas):
    segment = stored_before_the_limits(personas.project, "Old plans", status=Segment.Status.BUILDING)
    segment_build_task(segment.pk)
    client = personas.client("member")
    page = text(client.get(url(personas.project, f"segments/{segment.pk}")))
    assert 'data-testid="segment-failed"' in page
    assert "The members of this segment could not be computed." in page
    assert f'<pre class="mono" data-testid="build-error">{OVERSIZED_ERROR}</pre>' in page
    assert '<meta http-equiv="refresh"' not in page
    listing = text(client.get(url(personas.project)))
    assert 'data-status="failed"' in listing and ">Failed</span>" in listing


def test_an_incremental_update_that_fails_marks_only_the_failing_segment_and_rebuilds_nothing(
    personas, django_capture_on_commit_callbacks, builds_sent, caplog
):
    project = personas.project
    pro = ready(project, "Pro", PRO)
    broken = stored_before_the_limits(project, "Old plans")
    # A reader of the broken segment is computed (from its stored members), not failed with it.
    reader = ready(project, "Not old plans", {"type": "not", "condition": {"type": "segment", "segment_id": broken.pk}})
    with caplog.at_level(logging.ERROR, logger="segments"):
        identify(project, django_capture_on_commit_callbacks, "jane", {"plan": "pro"})
    assert members(pro) == {"jane"} and members(reader) == {"jane"}
    broken.refresh_from_db()
    assert (broken.status, broken.build_error) == (Segment.Status.FAILED, OVERSIZED_ERROR)
    assert Segment.objects.get(pk=pro.pk).status == Segment.Status.READY
    assert Segment.objects.get(pk=reader.pk).status == Segment.Status.READY
    assert builds_sent == []


def test_a_failed_segment_is_left_out_of_live_updates(
    personas, django_capture_on_commit_callbacks, builds_sent, caplog
):
    project = personas.project
    pro = ready(project, "Pro", PRO)
    broken = stored_before_the_limits(project, "Old plans")
    identify(project, django_capture_on_commit_callbacks, "jane", {"plan": "pro"})
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="segments"):
        identify(project, django_capture_on_commit_callbacks, "joe", {"plan": "pro"})
    # The next batch is applied at once, without the failed segment: no failure, no retry.
    assert [r.getMessage() for r in caplog.records if r.name.startswith("segments")] == []
    assert members(pro) == {"jane", "joe"}
    assert Segment.objects.get(pk=broken.pk).status == Segment.Status.FAILED
    assert builds_sent == []


def test_changing_the_condition_of_a_failed_segment_builds_it_again(personas):
    segment = stored_before_the_limits(personas.project, "Old plans", status=Segment.Status.BUILDING)
    segment_build_task(segment.pk)
    segment_update(segment=segment, condition=PRO)
    segment.refresh_from_db()
    assert (segment.status, segment.build_error) == (Segment.Status.BUILDING, "")
    segment_build_task(segment.pk)
    segment.refresh_from_db()
    assert segment.status == Segment.Status.READY


def test_a_failure_of_a_condition_since_replaced_is_not_recorded(personas):
    segment = ready(personas.project, "Pro", PRO)
    segment_update(segment=segment, condition={"type": "trait", "name": "plan", "op": "equals", "value": "free"})
    assert segment_build_failed(segment_id=segment.pk, condition=PRO, error="boom") is False
    segment.refresh_from_db()
    assert (segment.status, segment.build_error) == (Segment.Status.BUILDING, "")


def test_the_reconcile_marks_a_segment_that_fails_and_builds_the_others(personas):
    pro = ready(personas.project, "Pro", PRO)
    broken = stored_before_the_limits(personas.project, "Old plans")
    segments_reconcile_task()
    assert Segment.objects.get(pk=broken.pk).status == Segment.Status.FAILED
    assert Segment.objects.get(pk=pro.pk).status == Segment.Status.READY
