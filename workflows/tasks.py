"""Background work of workflows: enrolling from triggers, executing due runs, sending webhooks."""

import logging
import time

from celery import shared_task

from timonier import clock

from . import executor, triggers
from .models import Run
from .webhook_attempts import webhook_attempt_send

logger = logging.getLogger(__name__)

DRAIN_SECONDS = 20


@shared_task(ignore_result=True)
def triggers_process_task(project_id: int) -> None:
    """Enrol from a project's pending triggers (a no-op when there are none: safe to run twice)."""
    triggers.triggers_process(project_id=project_id)


@shared_task(ignore_result=True)
def triggers_sweep_task() -> None:
    """Backstop for lost wake-ups: every project with triggers or segment changes waiting."""
    for project_id in sorted(triggers.projects_with_pending_triggers()):
        try:
            triggers.triggers_process(project_id=project_id)
        except Exception:  # one project's failure must not stop the others
            logger.exception("workflows: trigger processing failed for project=%s", project_id)


@shared_task(ignore_result=True)
def runs_execute_task() -> None:
    """Execute due runs batch by batch; hand over to a fresh task after DRAIN_SECONDS. Run by the
    beat every second too (the backstop for wake-ups, and how delays fall due)."""
    deadline = time.monotonic() + DRAIN_SECONDS
    while time.monotonic() < deadline:
        if executor.runs_execute() == 0:
            return
    runs_execute_task.delay()


@shared_task(ignore_result=True)
def webhook_attempt_task(attempt_id: int) -> None:
    webhook_attempt_send(attempt_id=attempt_id)


@shared_task(ignore_result=True)
def runs_recheck_task() -> None:
    """Backstop for a lost data-change wake-up: runs that re-check on data change look again now."""
    now = clock.now()
    Run.objects.filter(status=Run.Status.WAITING, watches_changes=True, held=False, wake_at__gt=now).update(wake_at=now)
