"""Keeping membership live: segments listen to what the CDP's ingest batches change."""

import logging

from django.dispatch import receiver

from cdp.signals import customers_changed, customers_removing

from . import services
from .membership import dependency_order, membership_apply_changes, membership_update, memberships_end
from .models import Segment
from .tasks import build_error

logger = logging.getLogger(__name__)


@receiver(customers_changed, dispatch_uid="segments.update_memberships")
def update_memberships(sender, *, project_id: int, changes: dict, recheck_all=frozenset(), **kwargs) -> None:
    """Right after a batch commits, in the same worker: re-check the customers it changed."""
    try:
        membership_apply_changes(project_id, changes, set(recheck_all))
    except Exception:
        # The batch is stored. One segment whose SQL fails must not hold back the others, nor
        # make every batch rebuild the project: each segment is tried alone, and those that
        # still fail are marked failed (and left out of live updates until they change).
        logger.exception("project %s: incremental segment update failed; retrying segment by segment", project_id)
        _update_each_segment(project_id, set(changes) | set(recheck_all))


def _update_each_segment(project_id: int, customer_ids: set[int]) -> None:
    """Readers before the segments they read: an update also computes the segments reading it, so
    a failing reader must be marked failed (and so skipped) before its good source is tried."""
    segments = Segment.objects.filter(project_id=project_id).exclude(status=Segment.Status.FAILED)
    for segment in reversed(dependency_order(list(segments))):
        try:
            membership_update(project_id, sorted(customer_ids), segment_ids=[segment.pk])
        except Exception as exc:
            logger.exception("segment %s: incremental update failed", segment.pk)
            services.segment_build_failed(segment_id=segment.pk, condition=segment.condition, error=build_error(exc))


@receiver(customers_removing, dispatch_uid="segments.end_memberships")
def end_memberships(sender, *, project_id: int, customer_ids: list[int], erased=(), **kwargs) -> None:
    """Inside the batch that merges or erases customers: they leave their segments with it."""
    memberships_end(project_id, customer_ids, erased=erased)
