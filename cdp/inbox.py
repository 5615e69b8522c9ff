"""The inbox of accepted commands: the API's only write, and how workers are woken.

Group commit. An API process answers many requests at once (gunicorn threads), and each one's
INSERT would be a commit of its own: a round trip and a WAL flush each. Outside a transaction,
`commands_enqueue` hands its rows to the process's group instead: the first request to arrive
while no commit is under way leads, writing every row waiting at that moment in one INSERT (one
transaction), then hands the lead to the first request that arrived meanwhile, whose rows and
all those queued behind it go in the next. Each request returns only once the INSERT holding its
rows has committed (the API's "202 means committed"), and fails if that INSERT failed; rows of
different requests are never made to fail together (a group that fails is retried request by
request). The waiting requests touch no database connection at all.
"""

import functools
import logging
import os
import threading
import time
import uuid
import zlib
from datetime import datetime

import orjson
import redis
from django.conf import settings
from django.db import DatabaseError, connection, transaction

from .models import Command

logger = logging.getLogger(__name__)

# Seconds: at most one wake-up message per partition and process this often. A message costs the
# API process about 1 ms of CPU (Celery's apply_async, measured), four times a bare request, and
# under load a worker is already draining the partition: wake-ups in a burst only cost.
WAKE_INTERVAL = 0.25
_last_wake: dict[tuple[int, int | None], float] = {}
_trailing: dict[tuple[int, int | None], float] = {}  # key -> when its trailing wake-up is due
_queued: set[tuple[int, int | None]] = set()  # keys to publish at once
_wake_lock = threading.Lock()
_wake_ready = threading.Condition(_wake_lock)
_publisher: threading.Thread | None = None

GROUP_MAX_ROWS = 500  # rows of one grouped INSERT (6 parameters each: well under every driver's limit)
_COLUMNS = "(project_id, partition, command_id, received_at, message_count, payload, attempts)"


def partition_of(message: dict) -> int:
    """The partition of the project's inbox a call goes to: a stable hash (CRC-32, the same in
    every process and release) of its customer identity, its customer_id or else its anonymous_id,
    so the calls of one customer are applied in order."""
    identity = message.get("customer_id") or message.get("anonymous_id") or ""
    return zlib.crc32(identity.encode()) % settings.INGEST_PARTITIONS


def commands_enqueue(*, project_id: int, messages: list[dict], received_at: datetime) -> uuid.UUID:
    """Store a request's calls durably and wake a worker for each partition they fall in.

    One command per partition, with the calls in the request's order; all share the returned
    command_id. Called outside a transaction (the API) the INSERT has committed when this returns
    (grouped with other requests of this process, see above); inside one, it commits with the
    caller's other writes.
    """
    command_id = uuid.uuid4()
    pieces: dict[int, list[dict]] = {}
    partitions = settings.INGEST_PARTITIONS  # partition_of, inlined: a batch's 100 calls ask each
    for message in messages:
        identity = message.get("customer_id") or message.get("anonymous_id") or ""
        pieces.setdefault(zlib.crc32(identity.encode()) % partitions, []).append(message)
    if not pieces:
        return command_id  # nothing to apply
    command = Command._meta.get_field("command_id").get_db_prep_value(command_id, connection)
    received = Command._meta.get_field("received_at").get_db_prep_value(received_at, connection)
    rows = [
        (project_id, partition, command, received, len(piece), orjson.dumps(piece).decode())
        for partition, piece in pieces.items()
    ]
    if connection.in_atomic_block:
        # Inside a caller's transaction (a workflow step): its connection, its commit; the workers
        # are woken once the commands are visible.
        _insert(rows)
        transaction.on_commit(lambda: [wake(project_id, partition) for partition in pieces])
    else:
        _Group.insert(rows)
        for partition in pieces:
            wake(project_id, partition)
    return command_id


def _insert(rows: list[tuple]) -> None:
    """One plain INSERT of the rows: stored all or none, and the ORM's model machinery would cost
    as much as the write here. Rows are inserted in the order given (ids in arrival order)."""
    postgres = connection.vendor == "postgresql"
    if postgres and len(rows) > VALUES_MAX_ROWS:
        sql, params = _UNNEST, [list(column) for column in zip(*rows, strict=True)]
    else:
        sql = f"INSERT INTO {Command._meta.db_table} {_COLUMNS} VALUES " + ", ".join(  # noqa: S608 (its own table)
            ["(%s, %s, %s, %s, %s, %s, 0)"] * len(rows)
        )
        params = [value for row in rows for value in row]
    with _server_binding_cursor() if postgres else connection.cursor() as cursor:
        cursor.execute(sql, params)


# On PostgreSQL the parameters are bound in the server: Django binds them in the client, escaping
# each payload into the statement's text in Python (1.3-1.9x the CPU, measured for 8-400 rows).
# psycopg caches how it splits a statement of at most 50 parameters; past that it splits each
# VALUES list anew (a sixth of a batch request's CPU under load, py-spy), so a group of more rows
# is one statement of arrays instead (binary, `%b`: as text every quote of the JSON is escaped),
# which is dearer for a few rows (1 row: 50 us as VALUES, 250 as arrays).
VALUES_MAX_ROWS = 8
_UNNEST = (
    f"INSERT INTO {Command._meta.db_table} {_COLUMNS} "  # noqa: S608 (a model's own table)
    "SELECT p, n, c, r, m, l, 0 FROM unnest(%b::bigint[], %b::smallint[], %b::uuid[], %b::timestamptz[], "
    "%b::integer[], %b::text[]) WITH ORDINALITY AS t(p, n, c, r, m, l, o) ORDER BY o"
)


def _server_binding_cursor():
    """A cursor binding its parameters in the server, never preparing (the statements vary, and a
    pooler in transaction mode cannot keep prepared statements), wrapped as Django wraps its
    cursors (its errors, its query log)."""
    connection.ensure_connection()
    with connection.wrap_database_errors:
        cursor = _unprepared()(connection.connection)
    return connection.make_debug_cursor(cursor) if connection.queries_logged else connection.make_cursor(cursor)


@functools.cache
def _unprepared():
    from django.db.backends.postgresql.base import ServerBindingCursor  # needs psycopg: PostgreSQL only

    class Unprepared(ServerBindingCursor):
        def execute(self, query, params=None, *, prepare=None, binary=None):
            return super().execute(query, params, prepare=False, binary=binary)

    return Unprepared


def _insert_reconnecting(rows: list[tuple]) -> None:
    """_insert, once more on a new connection if the one it used turns out dead (the database
    restarted): the API process checks no connection before each request (a round trip as dear
    as the INSERT itself; see the API section of timonier/settings.py), so it finds out here. If
    the first INSERT did commit before its connection dropped, its calls are stored twice in the
    inbox but applied once: a call's message_id is unique per project."""
    try:
        _insert(rows)
    except DatabaseError:
        if connection.in_atomic_block or connection.is_usable():
            raise
        connection.close()
        _insert(rows)


class _Group:
    """The process's group commit (the module docstring): requests waiting for their rows' commit."""

    _lock = threading.Lock()
    _waiting: list["_Group"] = []  # in arrival order; the first may be leading
    _leading = False  # a request is committing; when False nothing waits

    def __init__(self, rows: list[tuple]) -> None:
        self.rows = rows
        self.woken = threading.Event()  # set when done, or when handed the lead
        self.done = False
        self.error: BaseException | None = None

    @classmethod
    def insert(cls, rows: list[tuple]) -> None:
        """Return once `rows` are committed (raise DatabaseError if they could not be)."""
        me = cls(rows)
        with cls._lock:
            cls._waiting.append(me)
            lead = not cls._leading
            cls._leading = True
        if not lead:
            me.woken.wait()
        if not me.done:  # leading: my rows are the first waiting
            cls._lead()
        if me.error is not None:
            if isinstance(me.error, DatabaseError):
                raise type(me.error)(*me.error.args)  # each waiting request raises its own
            raise DatabaseError(f"the grouped INSERT failed: {me.error!r}")

    @classmethod
    def _lead(cls) -> None:
        with cls._lock:
            group, size = [], 0
            while cls._waiting and (not group or size + len(cls._waiting[0].rows) <= GROUP_MAX_ROWS):
                size += len(cls._waiting[0].rows)
                group.append(cls._waiting.pop(0))
        try:
            cls._commit(group)
        except BaseException as exc:  # never leave a waiting request without an answer
            for member in group:
                if not member.done:
                    member.error, member.done = exc, True
            raise
        finally:
            with cls._lock:
                following = cls._waiting[0] if cls._waiting else None
                cls._leading = following is not None
            for member in group:
                if member.done:
                    member.woken.set()
            if following is not None:
                following.woken.set()

    @staticmethod
    def _commit(group: list["_Group"]) -> None:
        try:
            _insert_reconnecting([row for member in group for row in member.rows])
        except DatabaseError as exc:
            if len(group) == 1:
                group[0].error = exc
            else:  # one request's bad row must not fail the others: each alone
                logger.warning("a grouped INSERT of %s requests failed (%s); inserting each alone", len(group), exc)
                for member in group:
                    try:
                        _insert(member.rows)
                    except DatabaseError as alone:
                        member.error = alone
        for member in group:
            member.done = True


def wake(project_id: int, partition: int | None = None) -> None:
    """Ask a worker to drain one partition of this project's inbox (None: every partition).

    At most one message per partition and process every WAKE_INTERVAL: a call inside the interval
    arms one trailing wake-up at its end instead, so the last command of a burst is not left
    waiting for the periodic sweep. Across processes, one message per partition every interval
    too (see _claim). Best effort: the sweep is the backstop, so a broker that is down delays
    processing but loses nothing (the command is in the database). Publishing is the one
    publisher thread's (a request never waits for the broker, nor on its outage), which also
    sends the trailing wake-ups when they fall due: no thread is started per wake-up.
    """
    global _publisher
    key = (project_id, partition)
    now = time.monotonic()
    with _wake_lock:
        elapsed = now - _last_wake.get(key, -WAKE_INTERVAL)
        if elapsed >= WAKE_INTERVAL:
            _last_wake[key] = now
            if key in _queued:  # already waiting to be sent (say, while the broker is slow)
                return
            _queued.add(key)
        elif key not in _trailing:
            _trailing[key] = now + WAKE_INTERVAL - elapsed
        else:
            return
        if _publisher is None or not _publisher.is_alive():  # none yet, or lost in a fork
            _publisher = threading.Thread(target=_publish_forever, name="cdp-wake", daemon=True)
            _publisher.start()
        _wake_ready.notify()


def _publish_forever() -> None:
    while True:
        with _wake_lock:
            while True:
                now = time.monotonic()
                due = [key for key, at in _trailing.items() if at <= now]
                for key in due:
                    del _trailing[key]
                    _last_wake[key] = now
                fresh = list(dict.fromkeys([*_queued, *due]))
                _queued.clear()
                rechecks = [key for key, (_, at) in _rechecks.items() if at <= now and key not in fresh]
                if fresh or rechecks:
                    break
                waits = [at for at in _trailing.values()] + [at for _, at in _rechecks.values()]
                _wake_ready.wait(min(waits) - now if waits else None)
        for key in _claim(fresh, rechecks):
            _publish(*key)


# Every API process throttles its own wake-ups, so N processes under load would still send N
# messages per partition and interval, and a worker already draining the partition gets them all
# (a task, a claim query each). The publisher thread first claims the interval in Redis (SET NX
# with the interval as its expiry), for all its ready keys in one round trip, and sends only the
# wake-ups it claimed. One that lost was asked for by commands committed before it asked, and the
# holder may have published before they committed: it asks again once the holder's claim expires,
# and is answered by whoever claims the next interval (set after it asked, so published after
# those commands committed) — itself, or another process (a token it has not seen: nothing to do).
_WAKE_SCRIPT = """
local out = {}
for i, key in ipairs(KEYS) do
  if redis.call('SET', key, ARGV[1], 'NX', 'PX', ARGV[2]) then
    out[i] = {1, '', 0}
  else
    out[i] = {0, redis.call('GET', key) or '', redis.call('PTTL', key)}
  end
end
return out
"""
_rechecks: dict[tuple[int, int | None], tuple[bytes, float]] = {}  # key -> (claim it lost to, when to ask again)
_wake_scripts: dict[int, object] = {}


def _claim(fresh: list[tuple[int, int | None]], rechecks: list[tuple[int, int | None]]) -> list:
    """The keys among `fresh` (wake-ups asked for) and `rechecks` (asked again, see above) that this
    process claimed the interval of in Redis and so publishes; all of `fresh` without Redis, or when
    it fails (more messages, nothing lost)."""
    from timonier.redis_client import get_redis

    keys = [*fresh, *rechecks]
    client = get_redis()
    if client is None or not keys:
        return fresh
    if id(client) not in _wake_scripts:
        _wake_scripts[id(client)] = client.register_script(_WAKE_SCRIPT)
    token = os.urandom(8).hex().encode()
    try:
        answers = _wake_scripts[id(client)](
            keys=[
                f"cdp:wake:{project_id}:{'all' if partition is None else partition}" for project_id, partition in keys
            ],
            args=[token, max(1, int(WAKE_INTERVAL * 1000))],
        )
    except redis.RedisError:
        logger.warning("could not claim wake-ups in Redis; publishing them all", exc_info=True)
        with _wake_lock:
            for key in rechecks:
                _rechecks.pop(key, None)
        return [*fresh, *rechecks]
    claimed = []
    now = time.monotonic()
    with _wake_lock:
        for index, (key, (won, holder, ttl_ms)) in enumerate(zip(keys, answers, strict=True)):
            if won:
                claimed.append(key)
                _rechecks.pop(key, None)  # this message goes out after every command asking so far
            elif index < len(fresh) or _rechecks.get(key, (None,))[0] == holder:
                _rechecks[key] = (holder, now + max(0, ttl_ms) / 1000 + 0.002)
            else:
                del _rechecks[key]  # another process claimed the next interval: it publishes
    return claimed


def _publish(project_id: int, partition: int | None) -> None:
    from .tasks import process_commands_task

    try:
        process_commands_task.apply_async(args=[project_id, partition], retry=False)
    except Exception:  # broker unreachable: the sweep will pick the command up
        logger.warning(
            "could not publish wake-up for project=%s partition=%s; the sweep will process it", project_id, partition
        )
