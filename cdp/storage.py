"""Bulk SQL for the command processor, per database.

PostgreSQL gets COPY for events and one `UPDATE … FROM (VALUES …)` for customers; SQLite gets
`executemany`. Both take rows already resolved by `cdp/processing.py`, inside its transaction.
"""

from collections.abc import Iterable, Sequence
from datetime import datetime

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


def project_lock(project_id: int) -> bool:
    """Serialise processing per project for the current transaction; False if another worker has it.

    On SQLite the transaction itself (BEGIN IMMEDIATE) already holds the database's write lock.
    """
    if not is_postgres():
        return True
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_xact_lock(%s, %s)", [7_301, project_id])
        return bool(cursor.fetchone()[0])


def events_insert(rows: Sequence[tuple]) -> None:
    """Insert event rows (values in EVENT_COLUMNS order, JSON already dumped to text)."""
    if not rows:
        return
    table = Event._meta.db_table
    if is_postgres():
        with connection.cursor() as cursor:
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
        assignments = ", ".join(
            f"{c} = v.{c}::jsonb" if c in ("traits", "trait_times") else f"{c} = v.{c}" for c in CUSTOMER_UPDATE_COLUMNS
        )
        casts = ("bigint", "varchar", "text", "text", "varchar", "varchar", "timestamptz", "timestamptz", "timestamptz")
        for start in range(0, len(rows), 1000):
            chunk = rows[start : start + 1000]
            first = "(" + ", ".join(f"%s::{t}" for t in casts) + ")"
            rest = "(" + ", ".join(["%s"] * len(casts)) + ")"
            values = ", ".join([first] + [rest] * (len(chunk) - 1))
            sql = (
                f"UPDATE {table} AS c SET {assignments} "
                f"FROM (VALUES {values}) AS v(id, {', '.join(CUSTOMER_UPDATE_COLUMNS)}) WHERE c.id = v.id"
            )
            with connection.cursor() as cursor:
                cursor.execute(sql, [value for row in chunk for value in row])
        return
    assignments = ", ".join(f"{c} = %s" for c in CUSTOMER_UPDATE_COLUMNS)
    sql = f"UPDATE {table} SET {assignments} WHERE id = %s"
    with connection.cursor() as cursor:
        cursor.executemany(sql, [(*r[1:6], _dt(r[6]), _dt(r[7]), _dt(r[8]), r[0]) for r in rows])


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
