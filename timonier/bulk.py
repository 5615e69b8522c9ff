"""Many rows written in one statement with one parameter: a JSON document of the rows.

Django's `bulk_create` on PostgreSQL sends one array per column (`UNNEST`), which psycopg builds
element by element in Python, escaping every string with a regular expression: for rows holding
JSON (a run's data, a trigger's payload) that dominated the workflow executor's profile
(bench/profile_workflows.py). `bulk_update` builds a CASE per field over every row, and one
UPDATE per row is a statement per row. Here the rows become one JSON array, serialised by orjson
(C), and PostgreSQL takes them apart with `jsonb_to_recordset`:

    INSERT INTO t (a, b) SELECT a, b FROM jsonb_to_recordset(%s::jsonb) AS r(a bigint, b jsonb)
    UPDATE t SET a = r.a FROM jsonb_to_recordset(%s::jsonb) AS r(id bigint, a text) WHERE t.id = r.id

A JSON null is SQL NULL for every column type, as Django stores None. Other databases (the
embedded SQLite default) keep Django's own bulk_create and one UPDATE per row.
"""

from collections.abc import Sequence
from datetime import date, datetime

import orjson
from django.db import connection, models

CHUNK = 5000  # rows per statement: bounds one JSON document (and one statement's memory)


def _value(field: models.Field, obj: models.Model):
    value = getattr(obj, field.attname)
    if value is None or isinstance(field, models.JSONField):
        return value
    if isinstance(value, datetime | date):
        return value.isoformat()
    return field.get_db_prep_save(value, connection)


def _rows(fields: Sequence[models.Field], objs: Sequence[models.Model], *, with_pk: bool) -> list[dict]:
    """The objects as the rows of the JSON document, keyed by column (what jsonb_to_recordset reads)."""
    rows = [{field.column: _value(field, obj) for field in fields} for obj in objs]
    if with_pk:
        for row, obj in zip(rows, objs, strict=True):
            row["id"] = obj.pk
    return rows


def _record(fields: Sequence[models.Field], with_pk: bool) -> str:
    quote = connection.ops.quote_name
    columns = [f"{quote(field.column)} {field.db_type(connection)}" for field in fields]
    if with_pk:
        columns.append("id bigint")
    return ", ".join(columns)


def _concrete(model, names: Sequence[str] | None) -> list[models.Field]:
    if names is None:
        return [f for f in model._meta.concrete_fields if not f.primary_key]
    return [model._meta.get_field(name) for name in names]


def bulk_insert(model, objs: Sequence[models.Model], *, ignore_conflicts: bool = False) -> None:
    """INSERT the objects (every concrete field but the id; ids are not read back). With
    ignore_conflicts a row that would break a unique constraint is skipped (ON CONFLICT DO
    NOTHING), as bulk_create(ignore_conflicts=True) does."""
    if not objs:
        return
    if connection.vendor != "postgresql":
        model.objects.bulk_create(objs, ignore_conflicts=ignore_conflicts, batch_size=1000)
        return
    fields = _concrete(model, None)
    for obj in objs:  # what bulk_create does first: defaults that are callables, auto_now
        for field in fields:
            setattr(obj, field.attname, field.pre_save(obj, add=True))
    _insert(model, fields, _rows(fields, objs, with_pk=False), ignore_conflicts)


def insert_rows(model, rows: Sequence[dict], *, ignore_conflicts: bool = False) -> None:
    """INSERT rows given as {attname: JSON value} (datetimes as ISO strings), without building
    model instances: for the hot paths that make thousands of rows (a batch's triggers). Every
    row names the same fields; the others take their database default."""
    if not rows:
        return
    fields = [model._meta.get_field(name) for name in rows[0]]
    if connection.vendor != "postgresql":
        objs = [model(**{field.attname: row[field.attname] for field in fields}) for row in rows]
        model.objects.bulk_create(objs, ignore_conflicts=ignore_conflicts, batch_size=1000)
        return
    if any(field.attname != field.column for field in fields):
        rows = [{field.column: row[field.attname] for field in fields} for row in rows]
    _insert(model, fields, rows, ignore_conflicts)


def _insert(model, fields: Sequence[models.Field], rows: Sequence[dict], ignore_conflicts: bool) -> None:
    """INSERT rows keyed by column, CHUNK rows per statement (PostgreSQL)."""
    quote = connection.ops.quote_name
    columns = ", ".join(quote(field.column) for field in fields)
    sql = (
        f"INSERT INTO {quote(model._meta.db_table)} ({columns}) "  # noqa: S608 (a model's own table and columns)
        f"SELECT {columns} FROM jsonb_to_recordset(%s::jsonb) AS r({_record(fields, False)})"
        + (" ON CONFLICT DO NOTHING" if ignore_conflicts else "")
    )
    with connection.cursor() as cursor:
        for first in range(0, len(rows), CHUNK):
            cursor.execute(sql, [orjson.dumps(rows[first : first + CHUNK]).decode()])


def bulk_update(model, objs: Sequence[models.Model], names: Sequence[str]) -> None:
    """UPDATE the named fields of saved objects, by id, in one statement (per CHUNK rows)."""
    if not objs:
        return
    fields = _concrete(model, names)
    quote = connection.ops.quote_name
    table = quote(model._meta.db_table)
    if connection.vendor != "postgresql":
        assignments = ", ".join(f"{quote(field.column)} = %s" for field in fields)
        params = [[field.get_db_prep_save(getattr(obj, field.attname), connection) for field in fields] + [obj.pk]
                  for obj in objs]  # fmt: skip
        with connection.cursor() as cursor:
            cursor.executemany(f"UPDATE {table} SET {assignments} WHERE id = %s", params)  # noqa: S608
        return
    assignments = ", ".join(f"{quote(field.column)} = r.{quote(field.column)}" for field in fields)
    sql = (
        f"UPDATE {table} SET {assignments} FROM jsonb_to_recordset(%s::jsonb) AS r({_record(fields, True)}) "  # noqa: S608
        f"WHERE {table}.id = r.id"
    )
    with connection.cursor() as cursor:
        for first in range(0, len(objs), CHUNK):
            cursor.execute(sql, [orjson.dumps(_rows(fields, objs[first : first + CHUNK], with_pk=True)).decode()])
