"""The command processor: applies accepted calls to customers, identities and events, in batches.

The inbox of each project is split into INGEST_PARTITIONS partitions by a stable hash of each
call's customer identity (its customer_id, else its anonymous_id; `cdp.inbox.partition_of`). One
call of `commands_process` applies the oldest commands of one partition in one transaction
(`cdp/batches.py`): a worker that dies half-way rolls it back and the commands stay in the inbox
for the next run, so nothing is lost and nothing is applied twice. Each (project, partition) has
its own advisory lock, so N workers drain one project N ways, and the calls of one partition are
applied one batch after the other, in the order they were accepted.

Why partitions processed at the same time stay correct:
- Calls naming one identity are in one partition, so they are applied in order (a trait set
  1…N ends at N). Calls about one person under two identities (anonymous calls before an
  identify, then identified ones) may be applied in either order across partitions; what they
  make does not depend on it: identities link and merge the same way, traits keep the newest by
  the call's timestamp (`trait_times`), a timeline is ordered by timestamp.
- A merge, an alias or an identify with both ids joins customers whose calls live in other
  partitions: the hard case is a merge of S into P racing with calls of S in S's partition.
  Every batch locks the rows of the customers its calls resolve to, in id order, before reading
  them (`batches._read`), and holds the locks until it commits. So the merge and a batch of S's
  calls serialise on S's row. If the calls' batch goes first, its events are committed on S and
  the merge, reading after it, moves them to P. If the merge goes first, the other batch finds
  S's row gone once it has the lock: it rolls back (`batches.Conflict`) and runs again, and its
  calls now resolve, through S's identities moved to P, to P. Erasure works the same way.
- Two partitions may both see an id as new and both bind it (an identify with both ids and an
  anonymous call racing): the identity and the customer_id are unique per project, so the
  second insert fails; that batch rolls back and runs again, and links to what the first made.
  A deadlock between two batches (PostgreSQL aborts one) is retried the same way.
- message_id stays unique per project across partitions: a repeat is stored once, and a repeat
  racing in another partition is a unique violation, hence a Conflict, then a duplicate.
A conflict is retried at once, a few times (CONFLICT_RETRIES), and never counted against the
commands: it is not their fault. On SQLite a transaction holds the database's write lock
(BEGIN IMMEDIATE), so batches never overlap and none of this arises.

Failure policy: a batch that fails for another reason is applied one command at a time; a
command that fails alone MAX_ATTEMPTS times is set aside (FailedCommand) instead of blocking its
partition. A database that cannot be reached is not a command's fault: the error propagates and
the task is retried.

Idempotency: every message has a message_id (the client's, or one drawn at the API), stored on its
event row under a unique constraint; a message whose id is already stored is skipped whole (on
PostgreSQL a batch finds a repeat through that constraint, then runs again: `batches.MESSAGE_UNIQUE`).
"""

import gc
import logging
import threading
from contextlib import contextmanager

from django.db import InterfaceError, OperationalError, transaction
from django.db.models import Min

from .batches import BatchResult, Conflict, batch_process
from .models import Command, FailedCommand

logger = logging.getLogger(__name__)

__all__ = ["BatchResult", "commands_process", "partitions_pending", "partitions_with_pending_commands", "pending_count"]

MAX_COMMANDS_PER_BATCH = 1000
MAX_ATTEMPTS = 3  # a command failing this often alone is set aside (FailedCommand)
CONFLICT_RETRIES = 5  # runs of a batch that a concurrent batch got in the way of, before it counts as failing
DATABASE_DOWN = (OperationalError, InterfaceError)


def commands_process(*, project_id: int, partition: int | None = None) -> BatchResult | None:
    """Apply the oldest pending commands of one partition of a project in one transaction.

    Without a partition: of the first partition, by oldest command, that no other worker holds.
    Returns None when other workers hold the partition (every pending one), else what was done
    (an empty result when there is nothing to do).
    """
    if partition is None:
        return _any_partition(project_id)
    with _collector_paused():
        try:
            return _retrying_conflicts(project_id, partition, MAX_COMMANDS_PER_BATCH)
        except DATABASE_DOWN:
            raise  # the database is unreachable: nothing to learn, the task is retried
        except Exception:
            logger.exception(
                "batch failed project=%s partition=%s; applying its commands one by one", project_id, partition
            )
            return _process_oldest_alone(project_id, partition)


def _any_partition(project_id: int) -> BatchResult | None:
    pending = partitions_pending(project_id)
    for partition in pending:
        result = commands_process(project_id=project_id, partition=partition)
        if result is not None:
            return result
    return None if pending else BatchResult()


_paused = 0  # batches in flight in this process (a task runs up to tasks.DRAIN_THREADS)
_paused_lock = threading.Lock()
_was_enabled = [True]  # whether the collector ran before the first of them paused it


@contextmanager
def _collector_paused():
    # A batch allocates tens of thousands of small objects that all die together at its end;
    # the cyclic collector would scan them repeatedly meanwhile for nothing. Counted, so that of
    # two batches in flight the first to end does not switch it back on under the other.
    global _paused
    with _paused_lock:
        if _paused == 0:
            _was_enabled[0] = gc.isenabled()
            gc.disable()
        _paused += 1
    try:
        yield
    finally:
        with _paused_lock:
            _paused -= 1
            if _paused == 0 and _was_enabled[0]:
                gc.enable()


def _retrying_conflicts(project_id: int, partition: int, max_commands: int) -> BatchResult | None:
    for _ in range(CONFLICT_RETRIES - 1):
        try:
            return batch_process(project_id=project_id, partition=partition, max_commands=max_commands)
        except Conflict as exc:
            logger.info("project=%s partition=%s: %s; running the batch again", project_id, partition, exc)
    return batch_process(project_id=project_id, partition=partition, max_commands=max_commands)


def _process_oldest_alone(project_id: int, partition: int) -> BatchResult | None:
    """Apply the partition's oldest command by itself; after MAX_ATTEMPTS failures, set it aside."""
    try:
        return _retrying_conflicts(project_id, partition, 1)
    except DATABASE_DOWN:
        raise
    except Exception as exc:
        with transaction.atomic():
            command = (
                Command.objects.select_for_update()
                .filter(project_id=project_id, partition=partition)
                .order_by("id")
                .first()
            )
            if command is not None:
                command.attempts += 1
                if command.attempts < MAX_ATTEMPTS:
                    command.save(update_fields=["attempts"])
                else:
                    FailedCommand.objects.create(
                        project_id=project_id,
                        partition=partition,
                        command_id=command.command_id,
                        received_at=command.received_at,
                        message_count=command.message_count,
                        payload=command.payload,
                        error=f"{type(exc).__name__}: {exc}"[:10_000],
                    )
                    command.delete()
        if command is None or command.attempts < MAX_ATTEMPTS:
            raise  # counted (outside the block above, so the count is kept); tried again later
        logger.error("command %s set aside after %s attempts: %s", command.command_id, MAX_ATTEMPTS, exc)
        return BatchResult(commands=1, messages=command.message_count)


def partitions_pending(project_id: int) -> list[int]:
    """The project's partitions with commands waiting, the one with the oldest command first."""
    return list(
        Command.objects.filter(project_id=project_id)
        .values("partition")
        .annotate(oldest=Min("id"))
        .order_by("oldest")
        .values_list("partition", flat=True)
    )


def partitions_with_pending_commands() -> list[tuple[int, int]]:
    """(project id, partition) of every partition with commands waiting."""
    return list(Command.objects.values_list("project_id", "partition").distinct())


def pending_count(project_id: int | None = None) -> int:
    query = Command.objects.all() if project_id is None else Command.objects.filter(project_id=project_id)
    return query.count()
