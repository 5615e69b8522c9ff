"""SQL pieces every app uses: a column among many ids, with one parameter.

Ingest batches, segment updates and the workflow engine ask about thousands of customers at a
time. Django's `__in` writes a placeholder per id (a tenth of a worker's CPU once, in the driver's
adaptation and the server's parsing, with no row to find); here the ids are one parameter.
"""

import json

from django.db.models import BooleanField, Expression


class AmongIds(Expression):
    """`column` is one of `ids`, with one parameter: `= ANY(array)` on PostgreSQL, which is an index
    condition and a hashed test whatever the planner estimates (an `IN (SELECT unnest(…))` joined
    as estimated from stale statistics can compare every event with every id); a JSON array on SQLite."""

    conditional = True
    output_field = BooleanField()

    def __init__(self, column, ids):
        super().__init__()
        self.column, self.ids = column, [int(value) for value in ids]

    def get_source_expressions(self):
        return [self.column]

    def set_source_expressions(self, exprs):
        (self.column,) = exprs

    def as_sql(self, compiler, connection):
        column_sql, column_params = compiler.compile(self.column)
        if connection.vendor == "postgresql":
            return f"{column_sql} = ANY(%s::bigint[])", [*column_params, bigint_array(self.ids)]
        # Only the compiled column is interpolated; the ids are a parameter.
        sql = f"{column_sql} IN (SELECT value FROM json_each(%s))"  # noqa: S608
        return sql, [*column_params, json.dumps(self.ids)]


def bigint_array(ids: list[int]) -> str:
    """The text of a PostgreSQL bigint[] of `ids`: psycopg adapts a list of thousands of ints
    element by element, a cost that showed in every ingest batch."""
    return "{" + ",".join(str(int(value)) for value in ids) + "}"
