import logging
import queue
import threading
import time

from celery import shared_task
from django.db import connection

from . import processing, storage

DRAIN_SECONDS = 20
# Batches one task keeps in flight, each on a partition and a database connection of its own.
# Most of a batch's time is PostgreSQL's (the COPY, the deferred foreign-key checks at COMMIT, the
# lookups), during which the worker's Python is idle: a second thread prepares and writes another
# partition's batch meanwhile, so one worker process keeps two batches (and two CPUs) busy. Per
# partition nothing changes: each is still drained by one batch at a time under its lock.
DRAIN_THREADS = 2
logger = logging.getLogger(__name__)


@shared_task(ignore_result=True)
def process_commands_task(project_id: int, partition: int | None = None) -> None:
    """Drain the project's inbox from this partition on, a batch of each partition no worker holds
    in turn (see _drain), with DRAIN_THREADS - 1 helper threads doing the same; hand over to fresh
    tasks after DRAIN_SECONDS. Without a partition (a wake-up for the whole project): one task per partition
    with commands waiting, so that as many workers as there are such partitions can take them."""
    if partition is None:
        for pending in processing.partitions_pending(project_id):
            process_commands_task.delay(project_id, pending)
        return
    deadline = time.monotonic() + DRAIN_SECONDS
    # SQLite has one writer: a second batch in flight would only wait for the first.
    helped = _helpers.submit(project_id, deadline) if storage.is_postgres() else []
    try:
        if _drain(project_id, partition, deadline):  # the deadline: fresh tasks take over
            process_commands_task.delay(project_id)
    finally:
        for done in helped:
            done.wait()


class _Helpers:
    """The DRAIN_THREADS - 1 helper threads of this worker process, started on first use (after
    the pool's fork) and kept, each with its own database connection: a thread (and so a new
    PostgreSQL connection, a backend forked and authenticated) per task was 44 % of the worker's
    samples under a storm of wake-ups. A helper that died is replaced at the next task."""

    def __init__(self) -> None:
        self.jobs: queue.SimpleQueue = queue.SimpleQueue()
        self.threads: list[threading.Thread] = []
        self.lock = threading.Lock()

    def submit(self, project_id: int, deadline: float) -> list[threading.Event]:
        """A job per helper thread; the events are set when each has finished it."""
        with self.lock:
            self.threads = [thread for thread in self.threads if thread.is_alive()]
            while len(self.threads) < DRAIN_THREADS - 1:
                thread = threading.Thread(target=self._run, name=f"cdp-drain-{len(self.threads)}", daemon=True)
                thread.start()
                self.threads.append(thread)
            jobs = [threading.Event() for _ in self.threads]
        for done in jobs:
            self.jobs.put((project_id, deadline, done))
        return jobs

    def release(self) -> None:
        """Each helper closes its database connection (before a database is dropped: tests)."""
        with self.lock:
            jobs = [threading.Event() for thread in self.threads if thread.is_alive()]
        for done in jobs:
            self.jobs.put((None, None, done))
        for done in jobs:
            done.wait(timeout=10)

    def _run(self) -> None:
        while True:
            project_id, deadline, done = self.jobs.get()
            try:
                if project_id is None:
                    connection.close()
                else:
                    _drain_others(project_id, deadline)
            finally:
                done.set()


_helpers = _Helpers()


def _drain(project_id: int, partition: int | None, deadline: float) -> bool:
    """Batches of the project's partitions that no worker holds, in rounds of one batch of each
    (the partition given first, then the one with the oldest waiting command first), until a
    round finds none free with commands (False) or the deadline (True).

    One batch per partition per round, not each partition until it is empty: under a steady
    load a partition is never empty, and draining one until the deadline left the calls of the
    others waiting 20 s (the segments bench's freshness probes: a few seen in 0.3 s, most after
    20-30 s). Each partition's batches still run one at a time under its lock, in order."""
    first = partition
    while time.monotonic() < deadline:
        pending = processing.partitions_pending(project_id)
        if first is not None:
            pending = [first, *(p for p in pending if p != first)]
            first = None
        progressed = False
        for pending_partition in pending:
            if time.monotonic() >= deadline:
                return True
            result = processing.commands_process(project_id=project_id, partition=pending_partition)
            progressed = progressed or bool(result is not None and result.commands)
        if not progressed:
            return False
    return True


def _drain_others(project_id: int, deadline: float) -> None:
    """A helper thread: batches of the project's partitions that no worker holds (the oldest
    waiting first, each under its lock as a task of its own would take it), until none is free."""
    try:
        if _drain(project_id, None, deadline):
            process_commands_task.delay(project_id)  # what is left gets tasks of its own, as after a wake-up
    except Exception:  # the commands stay in the inbox: their own tasks, or the sweep, take them
        logger.exception("project=%s: draining other partitions failed", project_id)
    finally:
        # The thread's own connection is kept for its next job, unless broken or past CONN_MAX_AGE.
        connection.close_if_unusable_or_obsolete()


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
