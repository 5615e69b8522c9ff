"""Workflows listen to the CDP and to segments. Receivers inside a batch's transaction write rows
that commit with it; receivers after a commit only wake work up (a beat sweep is the backstop)."""

import logging

from django.db.models import F
from django.dispatch import receiver

from cdp.signals import batch_stored, customer_merged, customers_changed
from segments.signals import segments_changed
from timonier import clock
from timonier.sql import AmongIds

from . import triggers
from .models import Run, Trigger, Workflow

logger = logging.getLogger(__name__)


@receiver(batch_stored, dispatch_uid="workflows.record_triggers")
def record_triggers(sender, *, project_id: int, events: list, trait_changes: list, **kwargs) -> None:
    triggers.record_triggers(project_id=project_id, events=events, trait_changes=trait_changes)


@receiver(customer_merged, dispatch_uid="workflows.runs_follow_primary")
def runs_follow_primary(sender, *, project_id: int, secondary_id: int, primary_id: int, **kwargs) -> None:
    """Inside the merging batch: runs and pending triggers follow the primary customer; a run of the
    secondary in a workflow where the primary also has one in progress ends (no second run)."""
    Trigger.objects.filter(customer_id=secondary_id).update(customer_id=primary_id)
    moving = list(Run.objects.filter(customer_id=secondary_id))
    if not moving:
        return
    busy = set(
        Run.objects.filter(customer_id=primary_id, status__in=Run.IN_PROGRESS).values_list("workflow_id", flat=True)
    )
    now = clock.now()
    for run in moving:
        run.customer_id = primary_id
        # The unique (workflow, customer, occurrence) must hold for the primary too.
        run.occurrence = triggers.occurrence_key(run.occurrence, "merged", secondary_id)
        if run.in_progress and run.workflow_id in busy:
            run.status, run.exit_reason, run.ended_at, run.wake_at = Run.Status.EXITED, "merged", now, None
        elif run.in_progress:
            busy.add(run.workflow_id)
    Run.objects.bulk_update(moving, ["customer_id", "occurrence", "status", "exit_reason", "ended_at", "wake_at"])


@receiver(customers_changed, dispatch_uid="workflows.recheck_runs")
def recheck_runs(sender, *, project_id: int, changes: dict, recheck_all=frozenset(), **kwargs) -> None:
    """After a batch commits: runs re-checked on data change (a Wait Until condition, an exit
    condition, a goal) are due now; ended runs within their goal window check the goal."""
    customer_ids = list(set(changes) | set(recheck_all))
    if not customer_ids:
        return
    now = clock.now()
    # The ids as one array parameter (AmongIds): a batch touches thousands of customers, and an IN
    # list of that many placeholders cost a tenth of the worker's CPU (py-spy) with no run to wake.
    # The partial index workflows_run_watching holds only the waiting runs that watch.
    woken = (
        Run.objects.filter(
            AmongIds(F("customer_id"), customer_ids),
            project_id=project_id,
            status=Run.Status.WAITING,
            watches_changes=True,
            held=False,
            wake_at__gt=now,
        )
        .update(wake_at=now)
    )
    converted = triggers.check_goals_after_end(project_id, customer_ids, now=now)
    if woken or converted:
        triggers._wake_executor_on_commit()


@receiver(segments_changed, dispatch_uid="workflows.segments_changed")
def on_segments_changed(sender, *, project_id: int, segment_ids: list[int], **kwargs) -> None:
    """Once per membership computation (not per segment: a batch moving 20 segments asks once)."""
    listening = Workflow.objects.filter(
        project_id=project_id,
        status=Workflow.Status.ACTIVE,
        trigger_type__in=["segment_entered", "segment_exited"],
        trigger_segment_id__in=segment_ids,
    ).exists()
    if listening:
        from .tasks import triggers_process_task

        triggers_process_task.delay(project_id)
