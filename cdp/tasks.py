import logging
import time

from celery import shared_task

from . import processing

DRAIN_SECONDS = 20
logger = logging.getLogger(__name__)


@shared_task(ignore_result=True)
def process_commands_task(project_id: int, partition: int | None = None) -> None:
    """Drain one partition of a project's inbox batch by batch; hand over to a fresh task after
    DRAIN_SECONDS. Without a partition (a wake-up for the whole project): one task per partition
    with commands waiting, so that as many workers as there are such partitions can take them."""
    if partition is None:
        for pending in processing.partitions_pending(project_id):
            process_commands_task.delay(project_id, pending)
        return
    deadline = time.monotonic() + DRAIN_SECONDS
    while time.monotonic() < deadline:
        result = processing.commands_process(project_id=project_id, partition=partition)
        if result is None or result.commands == 0:  # another worker has the partition, or it is done
            return
    process_commands_task.delay(project_id, partition)


@shared_task(ignore_result=True)
def sweep_commands_task() -> None:
    """Backstop for lost wake-ups: process every partition that still has commands waiting."""
    for project_id, partition in processing.partitions_with_pending_commands():
        try:
            result = processing.commands_process(project_id=project_id, partition=partition)
        except Exception:  # counted against the failing command; other partitions go on
            logger.exception("sweep: processing project=%s partition=%s failed", project_id, partition)
            continue
        if result is not None and result.commands:
            process_commands_task.delay(project_id, partition)
