"""The inbox of accepted commands: the API's only write, and how workers are woken."""

import logging
import queue
import threading
import time
import uuid
from datetime import datetime

import orjson
from django.db import connection, transaction

from .models import Command

logger = logging.getLogger(__name__)

WAKE_INTERVAL = 0.05  # seconds: at most one wake-up message per project and process this often
_last_wake: dict[int, float] = {}
_trailing: set[int] = set()
_wake_lock = threading.Lock()
_outbox: queue.SimpleQueue = queue.SimpleQueue()
_publisher: threading.Thread | None = None
_queued: set[int] = set()


def commands_enqueue(*, project_id: int, messages: list[dict], received_at: datetime) -> uuid.UUID:
    """Store a command durably and wake a worker. Called outside a transaction (the API) the INSERT
    has committed when this returns; inside one, it commits with the caller's other writes."""
    command_id = uuid.uuid4()
    # One plain INSERT (autocommit): the ORM's model machinery costs as much as the write here.
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {Command._meta.db_table} "  # noqa: S608 (a model's own table name)
            "(project_id, command_id, received_at, message_count, payload, attempts) VALUES (%s, %s, %s, %s, %s, 0)",
            [
                project_id,
                Command._meta.get_field("command_id").get_db_prep_value(command_id, connection),
                Command._meta.get_field("received_at").get_db_prep_value(received_at, connection),
                len(messages),
                orjson.dumps(messages).decode(),
            ],
        )
    # Inside a caller's transaction (a workflow step), the worker is woken once the command is
    # visible; outside one, on_commit runs at once.
    transaction.on_commit(lambda: wake(project_id))
    return command_id


def wake(project_id: int) -> None:
    """Ask a worker to drain this project's inbox.

    At most one message per project and process every WAKE_INTERVAL: a call inside the interval
    arms one trailing wake-up at its end instead, so the last command of a burst is not left
    waiting for the periodic sweep. Best effort: the sweep is the backstop, so a broker that is
    down delays processing but loses nothing (the command is in the database).
    """
    now = time.monotonic()
    with _wake_lock:
        elapsed = now - _last_wake.get(project_id, -WAKE_INTERVAL)
        if elapsed >= WAKE_INTERVAL:
            _last_wake[project_id] = now
        else:
            if project_id not in _trailing:
                _trailing.add(project_id)
                timer = threading.Timer(WAKE_INTERVAL - elapsed, _wake_trailing, args=[project_id])
                timer.daemon = True
                timer.start()
            return
    _hand_off(project_id)


def _hand_off(project_id: int) -> None:
    """Publish from a background thread: a request never waits for the broker (nor on its outage)."""
    global _publisher
    with _wake_lock:
        if _publisher is None or not _publisher.is_alive():  # none yet, or lost in a fork
            _publisher = threading.Thread(target=_publish_forever, name="cdp-wake", daemon=True)
            _publisher.start()
        if project_id in _queued:  # already waiting to be sent (say, while the broker is slow)
            return
        _queued.add(project_id)
    _outbox.put(project_id)


def _publish_forever() -> None:
    while True:
        project_id = _outbox.get()
        with _wake_lock:
            _queued.discard(project_id)
        _publish(project_id)


def _wake_trailing(project_id: int) -> None:
    with _wake_lock:
        _trailing.discard(project_id)
        _last_wake[project_id] = time.monotonic()
    _publish(project_id)


def _publish(project_id: int) -> None:
    from .tasks import process_commands_task

    try:
        process_commands_task.apply_async(args=[project_id], retry=False)
    except Exception:  # broker unreachable: the sweep will pick the command up
        logger.warning("could not publish wake-up for project=%s; the sweep will process it", project_id)
