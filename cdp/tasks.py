import logging
import time

from celery import shared_task

from . import processing

DRAIN_SECONDS = 20
logger = logging.getLogger(__name__)


@shared_task(ignore_result=True)
def process_commands_task(project_id: int) -> None:
    """Drain a project's inbox batch by batch; hand over to a fresh task after DRAIN_SECONDS."""
    deadline = time.monotonic() + DRAIN_SECONDS
    while time.monotonic() < deadline:
        result = processing.commands_process(project_id=project_id)
        if result is None or result.commands == 0:  # another worker has the project, or it is done
            return
    process_commands_task.delay(project_id)


@shared_task(ignore_result=True)
def sweep_commands_task() -> None:
    """Backstop for lost wake-ups: process every project that still has commands waiting."""
    for project_id in processing.projects_with_pending_commands():
        try:
            result = processing.commands_process(project_id=project_id)
        except Exception:  # counted against the failing command; other projects go on
            logger.exception("sweep: processing project=%s failed", project_id)
            continue
        if result is not None and result.commands:
            process_commands_task.delay(project_id)
