"""The inbox of accepted commands: the API's only write, and how workers are woken."""

import logging
import queue
import threading
import time
import uuid
import zlib
from datetime import datetime

import orjson
from django.conf import settings
from django.db import connection, transaction

from .models import Command

logger = logging.getLogger(__name__)

WAKE_INTERVAL = 0.05  # seconds: at most one wake-up message per partition and process this often
_last_wake: dict[tuple[int, int | None], float] = {}
_trailing: set[tuple[int, int | None]] = set()
_wake_lock = threading.Lock()
_outbox: queue.SimpleQueue = queue.SimpleQueue()
_publisher: threading.Thread | None = None
_queued: set[tuple[int, int | None]] = set()


def partition_of(message: dict) -> int:
    """The partition of the project's inbox a call goes to: a stable hash (CRC-32, the same in
    every process and release) of its customer identity, its customer_id or else its anonymous_id,
    so the calls of one customer are applied in order."""
    identity = message.get("customer_id") or message.get("anonymous_id") or ""
    return zlib.crc32(identity.encode()) % settings.INGEST_PARTITIONS


def commands_enqueue(*, project_id: int, messages: list[dict], received_at: datetime) -> uuid.UUID:
    """Store a request's calls durably and wake a worker for each partition they fall in.

    One command per partition, with the calls in the request's order; all share the returned
    command_id. Called outside a transaction (the API) the INSERT has committed when this returns;
    inside one, it commits with the caller's other writes.
    """
    command_id = uuid.uuid4()
    pieces: dict[int, list[dict]] = {}
    for message in messages:
        pieces.setdefault(partition_of(message), []).append(message)
    if not pieces:
        return command_id  # nothing to apply
    command = Command._meta.get_field("command_id").get_db_prep_value(command_id, connection)
    received = Command._meta.get_field("received_at").get_db_prep_value(received_at, connection)
    params: list = []
    for partition, piece in pieces.items():
        params += [project_id, partition, command, received, len(piece), orjson.dumps(piece).decode()]
    # One plain INSERT (autocommit) of every piece: the request is stored whole or not at all, and
    # the ORM's model machinery would cost as much as the write here.
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {Command._meta.db_table} "  # noqa: S608 (a model's own table name)
            "(project_id, partition, command_id, received_at, message_count, payload, attempts) VALUES "
            + ", ".join(["(%s, %s, %s, %s, %s, %s, 0)"] * len(pieces)),
            params,
        )
    # Inside a caller's transaction (a workflow step), the workers are woken once the commands are
    # visible; outside one, on_commit runs at once.
    transaction.on_commit(lambda: [wake(project_id, partition) for partition in pieces])
    return command_id


def wake(project_id: int, partition: int | None = None) -> None:
    """Ask a worker to drain one partition of this project's inbox (None: every partition).

    At most one message per partition and process every WAKE_INTERVAL: a call inside the interval
    arms one trailing wake-up at its end instead, so the last command of a burst is not left
    waiting for the periodic sweep. Best effort: the sweep is the backstop, so a broker that is
    down delays processing but loses nothing (the command is in the database).
    """
    key = (project_id, partition)
    now = time.monotonic()
    with _wake_lock:
        elapsed = now - _last_wake.get(key, -WAKE_INTERVAL)
        if elapsed >= WAKE_INTERVAL:
            _last_wake[key] = now
        else:
            if key not in _trailing:
                _trailing.add(key)
                timer = threading.Timer(WAKE_INTERVAL - elapsed, _wake_trailing, args=[key])
                timer.daemon = True
                timer.start()
            return
    _hand_off(key)


def _hand_off(key: tuple[int, int | None]) -> None:
    """Publish from a background thread: a request never waits for the broker (nor on its outage)."""
    global _publisher
    with _wake_lock:
        if _publisher is None or not _publisher.is_alive():  # none yet, or lost in a fork
            _publisher = threading.Thread(target=_publish_forever, name="cdp-wake", daemon=True)
            _publisher.start()
        if key in _queued:  # already waiting to be sent (say, while the broker is slow)
            return
        _queued.add(key)
    _outbox.put(key)


def _publish_forever() -> None:
    while True:
        key = _outbox.get()
        with _wake_lock:
            _queued.discard(key)
        _publish(*key)


def _wake_trailing(key: tuple[int, int | None]) -> None:
    with _wake_lock:
        _trailing.discard(key)
        _last_wake[key] = time.monotonic()
    _publish(*key)


def _publish(project_id: int, partition: int | None) -> None:
    from .tasks import process_commands_task

    try:
        process_commands_task.apply_async(args=[project_id, partition], retry=False)
    except Exception:  # broker unreachable: the sweep will pick the command up
        logger.warning(
            "could not publish wake-up for project=%s partition=%s; the sweep will process it", project_id, partition
        )
