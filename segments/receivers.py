"""Keeping membership live: segments listen to what the CDP's ingest batches change."""

import logging

from django.dispatch import receiver

from cdp.signals import customers_changed, customers_removing

from .membership import membership_apply_changes, memberships_end
from .models import Segment
from .tasks import segment_build_task

logger = logging.getLogger(__name__)


@receiver(customers_changed, dispatch_uid="segments.update_memberships")
def update_memberships(sender, *, project_id: int, changes: dict, recheck_all=frozenset(), **kwargs) -> None:
    """Right after a batch commits, in the same worker: re-check the customers it changed."""
    try:
        membership_apply_changes(project_id, changes, set(recheck_all))
    except Exception:
        # The batch is stored; membership catches up by rebuilding the project's segments.
        logger.exception("project %s: incremental segment update failed; rebuilding its segments", project_id)
        for segment_id in Segment.objects.filter(project_id=project_id).values_list("pk", flat=True):
            segment_build_task.delay(segment_id)


@receiver(customers_removing, dispatch_uid="segments.end_memberships")
def end_memberships(sender, *, project_id: int, customer_ids: list[int], erased=(), **kwargs) -> None:
    """Inside the batch that merges or erases customers: they leave their segments with it."""
    memberships_end(project_id, customer_ids, erased=erased)
