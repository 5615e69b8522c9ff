"""Background work of segments: first builds, time windows aging out, the hourly reconcile."""

import logging
from contextlib import contextmanager
from datetime import timedelta

from celery import shared_task
from django.conf import settings
from django.core.cache import cache

from timonier import clock

from . import services
from .conditions import InvalidCondition, uses_relative_window
from .membership import fold_counts, membership_rebuild
from .models import MembershipChange, Segment

logger = logging.getLogger(__name__)


@shared_task(ignore_result=True)
def segment_build_task(segment_id: int) -> None:
    """Compute a segment's members after it was created or its condition changed."""
    segment = Segment.objects.filter(pk=segment_id).first()
    if segment is None:  # deleted meanwhile
        return
    try:
        entries, exits = membership_rebuild(segment, cause=MembershipChange.Cause.BUILD)
    except Exception as exc:  # marked failed with why, and shown on its page; not retried blindly
        logger.exception("segment %s: build failed", segment_id)
        services.segment_build_failed(segment_id=segment_id, condition=segment.condition, error=build_error(exc))
        return
    logger.info("segment %s built: %s entries, %s exits", segment_id, entries, exits)


def build_error(exc: Exception) -> str:
    """What a segment's page says about the build that raised `exc`."""
    if isinstance(exc, InvalidCondition):  # stored before the limits of this version
        return f"The condition is not valid: {exc}"
    return f"{type(exc).__name__}: {exc}"


@shared_task(ignore_result=True)
def segments_refresh_windows_task() -> None:
    """Re-evaluate the segments with a window relative to now (`within`), so a customer leaves
    "purchased in the last 7 days" on day 8 without sending anything; and build the segments
    whose build task was lost."""
    with _alone("segments:refresh-windows") as first:
        if first:
            # Member counts left behind by a worker killed between a live update's commit and its fold.
            fold_counts()
            # Also the segments still `building` a while after their change: their build task was
            # lost (the broker was down when it was sent).
            stale = clock.now() - timedelta(seconds=settings.SEGMENT_WINDOW_REFRESH_SECONDS)
            _rebuild(
                (segment, MembershipChange.Cause.BUILD if stuck else MembershipChange.Cause.REFRESH)
                # Failed segments wait for a new condition (or the hourly reconcile's try).
                for segment in Segment.objects.exclude(status=Segment.Status.FAILED).order_by("pk")
                if (stuck := segment.status == Segment.Status.BUILDING and segment.updated_at < stale)
                or uses_relative_window(segment.condition)
            )


@shared_task(ignore_result=True)
def segments_reconcile_task() -> None:
    """Rebuild every segment: repairs what an incremental update missed (a worker killed between
    a batch's commit and its membership update). Failed segments are tried too: one that builds
    is ready again (its failure had a passing cause), one that fails again stays failed."""
    with _alone("segments:reconcile") as first:
        if first:
            _rebuild((segment, MembershipChange.Cause.RECONCILE) for segment in Segment.objects.order_by("pk"))


@contextmanager
def _alone(name: str):
    """Whether no other run of this periodic task is under way: a slow run is skipped by the next
    beat, not doubled. The mark expires with the task time limit if a worker dies holding it."""
    first = cache.add(name, "running", timeout=settings.CELERY_TASK_MAX_SECONDS)
    try:
        yield first
    finally:
        if first:
            cache.delete(name)


def _rebuild(segments_and_causes) -> None:
    now = clock.now()
    for segment, cause in segments_and_causes:
        try:
            membership_rebuild(segment, now=now, cause=cause)
        except Exception as exc:  # one broken segment must not stop the others
            logger.exception("segment %s: rebuild failed", segment.pk)
            services.segment_build_failed(segment_id=segment.pk, condition=segment.condition, error=build_error(exc))
