"""Bulk SQL for the command processor, per database.

PostgreSQL gets COPY for events and one `UPDATE … FROM (VALUES …)` for customers; SQLite gets
`executemany`. Both take rows already resolved by `cdp/batches.py`, inside its transaction.
"""

from collections.abc import Iterable, Sequence
from datetime import UTC, datetime

import orjson
from django.db import connection

from .models import Customer, Event

EVENT_COLUMNS = (
    "project_id",
    "customer_id",
    "type",
    "name",
    "properties",
    "context",
    "timestamp",
    "received_at",
    "message_id",
)
CUSTOMER_UPDATE_COLUMNS = (
    "external_id",
    "traits",
    "trait_times",
    "email",
    "name",
    "first_seen_at",
    "last_seen_at",
    "updated_at",
)


def dumps(value) -> str:
    return orjson.dumps(value).decode()


def is_postgres() -> bool:
    return connection.vendor == "postgresql"


def _dt(value: datetime):
    return connection.ops.adapt_datetimefield_value(value)


PARTITION_LOCK_NAMESPACE = 7_301_000  # + the partition: pg advisory locks (namespace, project id)


def partition_lock_key(project_id: int, partition: int) -> tuple[int, int]:
    return PARTITION_LOCK_NAMESPACE + partition, project_id


def partition_lock(project_id: int, partition: int) -> bool:
    """Serialise processing per (project, partition) for the current transaction; False if another
    worker has it.

    On SQLite the transaction itself (BEGIN IMMEDIATE) already holds the database's write lock.
    """
    if not is_postgres():
        return True
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_xact_lock(%s, %s)", partition_lock_key(project_id, partition))
        return bool(cursor.fetchone()[0])


def customers_lock(ids: Iterable[int]) -> list[tuple[int, str | None, float, float]]:
    """Lock these customers' rows until the transaction ends, in id order (two batches locking
    overlapping sets cannot deadlock on them), and read (id, external_id, first seen, last seen as
    epoch seconds): what a batch of events needs. A row deleted meanwhile is left out.

    FOR NO KEY UPDATE, the lock an UPDATE of the row takes: it waits for another batch's lock or
    DELETE, but not for the key-share locks of rows inserted that point to the customer (events).
    On SQLite the transaction already holds the database's write lock.
    """
    if is_postgres():
        sql = (
            "SELECT id, external_id, EXTRACT(EPOCH FROM first_seen_at)::float8, "
            "EXTRACT(EPOCH FROM last_seen_at)::float8 FROM cdp_customer WHERE id {values} "
            "ORDER BY id FOR NO KEY UPDATE"
        )
        return select_in(sql, [], ids)
    rows = select_in("SELECT id, external_id, first_seen_at, last_seen_at FROM cdp_customer WHERE id {values}", [], ids)
    return [(pk, ext, aware(first).timestamp(), aware(last).timestamp()) for pk, ext, first, last in rows]


def events_insert(rows: Sequence[tuple]) -> None:
    """Insert event rows (values in EVENT_COLUMNS order, JSON already dumped to text)."""
    if not rows:
        return
    table = Event._meta.db_table
    if is_postgres():
        # As Django's IntegrityError (COPY is psycopg's own): a repeated message_id is a Conflict.
        with connection.cursor() as cursor, connection.wrap_database_errors:
            with cursor.copy(f"COPY {table} ({', '.join(EVENT_COLUMNS)}) FROM STDIN") as copy:
                for row in rows:
                    copy.write_row(row)
        return
    placeholders = ", ".join(["%s"] * len(EVENT_COLUMNS))
    sql = f"INSERT OR IGNORE INTO {table} ({', '.join(EVENT_COLUMNS)}) VALUES ({placeholders})"
    with connection.cursor() as cursor:
        cursor.executemany(sql, [(*r[:6], _dt(r[6]), _dt(r[7]), r[8]) for r in rows])


def customers_update(rows: Sequence[tuple]) -> None:
    """Update customers: each row is (id, *values in CUSTOMER_UPDATE_COLUMNS order)."""
    if not rows:
        return
    table = Customer._meta.db_table
    if is_postgres():
        # COPY into a temporary table, then one UPDATE … FROM it: the rows are sent in COPY's
        # compact format instead of as thousands of query parameters.
        with connection.cursor() as cursor:
            cursor.execute(
                "CREATE TEMPORARY TABLE IF NOT EXISTS cdp_customer_changes "
                "(id bigint, external_id varchar(255), traits jsonb, trait_times jsonb, email varchar(320), "
                "name varchar(255), first_seen_at timestamptz, last_seen_at timestamptz, updated_at timestamptz) "
                "ON COMMIT DELETE ROWS"
            )
            with cursor.copy(
                f"COPY cdp_customer_changes (id, {', '.join(CUSTOMER_UPDATE_COLUMNS)}) FROM STDIN"
            ) as copy:
                for row in rows:
                    copy.write_row(row)
            cursor.execute(
                f"UPDATE {table} AS c SET {_UPDATE_ASSIGNMENTS.format(new='v')} FROM cdp_customer_changes AS v "
                "WHERE c.id = v.id"
            )
            cursor.execute("DELETE FROM cdp_customer_changes")
        return
    sql = f"UPDATE {table} SET {_UPDATE_ASSIGNMENTS_SQLITE} WHERE id = %s"
    with connection.cursor() as cursor:
        cursor.executemany(
            sql, [(*r[1:6], _dt(r[6]) if r[6] else None, _dt(r[7]) if r[7] else None, _dt(r[8]), r[0]) for r in rows]
        )


# Null means "unchanged": traits that were never loaded, and seen-times the batch did not move.
# The first/last seen times only ever widen, so an out-of-order batch cannot narrow them.
_UPDATE_ASSIGNMENTS = (
    "external_id = COALESCE({new}.external_id, c.external_id), traits = COALESCE({new}.traits, c.traits), "
    "trait_times = COALESCE({new}.trait_times, c.trait_times), email = COALESCE({new}.email, c.email), "
    "name = COALESCE({new}.name, c.name), first_seen_at = LEAST(c.first_seen_at, {new}.first_seen_at), "
    "last_seen_at = GREATEST(c.last_seen_at, {new}.last_seen_at), updated_at = {new}.updated_at"
)
_UPDATE_ASSIGNMENTS_SQLITE = (
    "external_id = COALESCE(%s, external_id), traits = COALESCE(%s, traits), "
    "trait_times = COALESCE(%s, trait_times), email = COALESCE(%s, email), name = COALESCE(%s, name), "
    "first_seen_at = COALESCE(min(first_seen_at, %s), first_seen_at), "
    "last_seen_at = COALESCE(max(last_seen_at, %s), last_seen_at), updated_at = %s"
)


def customers_load(ids: Iterable[int]) -> list[dict]:
    """The fields the processor needs of these customers, as plain dicts."""
    rows = select_in(
        "SELECT id, external_id, traits, trait_times, first_seen_at, last_seen_at FROM cdp_customer WHERE id {values}",
        [],
        ids,
    )
    return [
        {
            "pk": pk,
            "external_id": external_id,
            "traits": _json(traits),
            "trait_times": _json(trait_times),
            "first_seen_at": aware(first_seen),
            "last_seen_at": aware(last_seen),
        }
        for pk, external_id, traits, trait_times, first_seen, last_seen in rows
    ]


def _json(value):
    return orjson.loads(value) if isinstance(value, (str, bytes)) else value


def aware(value) -> datetime:
    """A datetime column's value as an aware datetime (SQLite's raw cursor gives naive UTC text)."""
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def select_in(sql: str, params: list, values: Iterable) -> list[tuple]:
    """Run `sql`, whose last condition is `column IN {values}`, for many values.

    PostgreSQL gets one `= ANY(%s)` with an array; SQLite gets `IN (…)` chunks under its
    parameter limit.
    """
    values = list(values)
    if not values:
        return []
    with connection.cursor() as cursor:
        if is_postgres():
            cursor.execute(sql.format(values="= ANY(%s)"), [*params, values])
            return cursor.fetchall()
        rows: list[tuple] = []
        for chunk in ids_in(values, size=900):
            cursor.execute(sql.format(values=f"IN ({', '.join(['%s'] * len(chunk))})"), [*params, *chunk])
            rows.extend(cursor.fetchall())
        return rows


def ids_in(values: Iterable, size: int = 5000) -> Iterable[list]:
    """Chunks for `IN (...)` lists, under SQLite's parameter limit."""
    chunk: list = []
    for value in values:
        chunk.append(value)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk
