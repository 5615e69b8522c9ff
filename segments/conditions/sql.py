"""Compiling a condition to one boolean expression over `Customer`, for PostgreSQL and SQLite.

Trait conditions and event property filters become a `JsonMatch`: SQL written per database so
that it follows the rules of `grammar` exactly (JSON types, case-sensitive text, dates as text).
Every `JsonMatch` is true or false, never NULL, so `not` and the negative operators are exact
negations. Event conditions become `EXISTS` over the customer's events, or, for a count, `IN` (or
`NOT IN`) the customers of one `GROUP BY customer_id HAVING COUNT(*) …` over the matching events.
"""

import json
import operator
from datetime import datetime
from decimal import Decimal

from django.db import NotSupportedError
from django.db.models import BooleanField, Count, Exists, Expression, F, OuterRef, Q

from cdp.models import Event
from segments.models import Membership
from timonier.sql import AmongIds

from .grammar import DATE_SUFFIX, NEGATIONS, ORDERING_OPERATORS, is_number, name_path, parse_instant, window_start
from .validation import ensure_valid

PG_DATE_PATTERN = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}(T[0-9]{2}:[0-9]{2}:[0-9]{2}Z)?$"
SQLITE_DATE_GLOBS = (
    "[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]",
    "[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]T[0-9][0-9]:[0-9][0-9]:[0-9][0-9]Z",
)
SQL_COMPARISONS = {
    "greater_than": ">",
    "less_than": "<",
    "greater_than_or_equals": ">=",
    "less_than_or_equals": "<=",
}
COUNT_TESTS = {
    "equals": operator.eq,
    "not_equals": operator.ne,
    "greater_than": operator.gt,
    "less_than": operator.lt,
    "greater_than_or_equals": operator.ge,
    "less_than_or_equals": operator.le,
}
COUNT_LOOKUPS = {
    "equals": "exact",
    "greater_than": "gt",
    "less_than": "lt",
    "greater_than_or_equals": "gte",
    "less_than_or_equals": "lte",
}


def compile_sql(condition: dict, *, now: datetime, project_id: int | None = None, customer_ids=None) -> Q:
    """A filter for `Customer.objects.filter(project=p).filter(...)` selecting the customers that
    `matches` the condition at `now`. Raises InvalidCondition if the condition is not valid.

    Neither keyword changes the answer, only the events read (counts are computed in one pass
    for many customers): `project_id` (p's id) makes event conditions read only p's events, through
    the indexes that start with the project, instead of every project's (a customer's events are
    all in its project); `customer_ids` (a list), when the filter is applied to those customers
    only, makes them read these customers' events alone."""
    ensure_valid(condition)
    return _compile(condition, now, {"project_id": project_id, "customer_ids": customer_ids})


def _compile(node: dict, now: datetime, scope: dict) -> Q:
    kind = node["type"]
    if kind in ("and", "or"):
        parts = [_compile(child, now, scope) for child in node["conditions"]]
        combined = parts[0]
        for part in parts[1:]:
            combined = combined & part if kind == "and" else combined | part
        return combined
    if kind == "not":
        return ~_compile(node["condition"], now, scope)
    if kind == "trait":
        return Q(JsonMatch(F("traits"), node["name"], node["op"], node.get("value")))
    if kind == "segment":
        return Q(Exists(Membership.objects.filter(segment_id=node["segment_id"], customer=OuterRef("pk"))))
    return _compile_event(node, now, scope)


def _compile_event(node: dict, now: datetime, scope: dict) -> Q:
    events = Event.objects.filter(type="track", name=node["event_name"])
    if "within" in node:
        events = events.filter(timestamp__gte=window_start(node["within"], now))
    if "between" in node:
        between = node["between"]
        events = events.filter(
            timestamp__gte=parse_instant(between["from"]), timestamp__lt=parse_instant(between["to"])
        )
    for item in node.get("where", []):
        events = events.filter(JsonMatch(F("properties"), item["name"], item["op"], item.get("value")))
    # The scope bounds the events read whatever plan the estimates lead to: for a few customers,
    # an index condition on their ids rather than a scan of every matching event of the project.
    if scope["project_id"] is not None:
        events = events.filter(project_id=scope["project_id"])
    if scope["customer_ids"] is not None:
        events = events.filter(AmongIds(F("customer_id"), scope["customer_ids"]))
    rule = node.get("count", {"op": "greater_than_or_equals", "value": 1})
    op, value = rule["op"], rule["value"]
    own_events = events.filter(project=OuterRef("project"), customer=OuterRef("pk"))
    # Presence tests read better and run faster as EXISTS (a semi-join) than as a count.
    if (op, value) in (("greater_than_or_equals", 1), ("greater_than", 0), ("not_equals", 0)):
        return Q(Exists(own_events))
    if (op, value) in (("equals", 0), ("less_than", 1), ("less_than_or_equals", 0)):
        return ~Q(Exists(own_events))
    # Any other count: the customers whose count satisfies the rule, counted once for everyone in
    # one GROUP BY over the matching events (a hashed set), rather than one COUNT per customer.
    # When zero satisfies it, customers without events match too: they are everyone except those
    # whose (non-zero) count does not satisfy it.
    counts = events.order_by().values("customer_id").annotate(matching=Count("*"))
    satisfies = ~Q(matching=value) if op == "not_equals" else Q(**{f"matching__{COUNT_LOOKUPS[op]}": value})
    if COUNT_TESTS[op](0, value):
        return ~Q(pk__in=counts.filter(~satisfies).values("customer_id"))
    return Q(pk__in=counts.filter(satisfies).values("customer_id"))


class JsonMatch(Expression):
    """`op value` applied to the value at a dotted name inside a JSON column; never NULL."""

    conditional = True
    output_field = BooleanField()

    def __init__(self, column, name: str, op: str, value):
        super().__init__()
        self.column, self.name, self.op, self.value = column, name, op, value

    def __repr__(self):
        return f"JsonMatch({self.column!r}, {self.name!r}, {self.op!r}, {self.value!r})"

    def get_source_expressions(self):
        return [self.column]

    def set_source_expressions(self, exprs):
        (self.column,) = exprs

    def as_sql(self, compiler, connection):
        column_sql, column_params = compiler.compile(self.column)
        if connection.vendor == "postgresql":
            builder = _PostgresJson(column_sql, list(column_params), self.name)
            false = "FALSE"
        elif connection.vendor == "sqlite":
            builder = _SqliteJson(column_sql, list(column_params), self.name)
            false = "0"
        else:
            raise NotSupportedError(f"segment conditions do not support {connection.vendor}")
        positive = NEGATIONS.get(self.op, self.op)
        sql, params = builder.predicate(positive, self.value)
        sql = f"COALESCE(({sql}), {false})"
        if positive != self.op:
            sql = f"NOT {sql}"
        return sql, params


def _number_param(value):
    # A float goes through its shortest text, the same text json.dumps stored for it.
    return Decimal(repr(value)) if isinstance(value, float) else value


class _PostgresJson:
    """Predicates over `column -> 'step' -> ...`: jsonb, with SQL NULL for a missing name."""

    def __init__(self, column_sql: str, column_params: list, name: str):
        steps = name_path(name)
        self.value_sql = "(" + column_sql + "".join(" -> %s::text" for _ in steps) + ")"
        self.value_params = column_params + steps
        self.text_sql = f"({self.value_sql} #>> '{{}}')"

    def _uses(self, count: int) -> list:
        return self.value_params * count

    def predicate(self, op: str, value) -> tuple[str, list]:
        x, t = self.value_sql, self.text_sql
        if op == "is_set":
            return f"jsonb_typeof({x}) <> 'null'", self._uses(1)
        if op == "equals":
            return f"{x} = %s::jsonb", self._uses(1) + [json.dumps(value)]
        if op == "in":
            if not value:
                return "FALSE", []
            placeholders = ", ".join("%s::jsonb" for _ in value)
            return f"{x} IN ({placeholders})", self._uses(1) + [json.dumps(item) for item in value]
        if op == "contains":
            # Only the module's own fragments are interpolated; every value is a parameter.
            array = f"EXISTS (SELECT 1 FROM jsonb_array_elements({x}) AS element(v) WHERE element.v = %s::jsonb)"  # noqa: S608
            array_params = self._uses(1) + [json.dumps(value)]
            if isinstance(value, str):
                sql = (
                    f"CASE jsonb_typeof({x}) WHEN 'string' THEN strpos({t}, %s) > 0 "
                    f"WHEN 'array' THEN {array} ELSE FALSE END"
                )
                return sql, self._uses(2) + [value] + array_params
            return f"CASE jsonb_typeof({x}) WHEN 'array' THEN {array} ELSE FALSE END", self._uses(1) + array_params
        if op == "starts_with":
            return f"jsonb_typeof({x}) = 'string' AND left({t}, length(%s)) = %s", self._uses(2) + [value, value]
        if op == "ends_with":
            return f"jsonb_typeof({x}) = 'string' AND right({t}, length(%s)) = %s", self._uses(2) + [value, value]
        if op in ORDERING_OPERATORS:
            sign = SQL_COMPARISONS[op]
            if is_number(value):
                sql = f"CASE WHEN jsonb_typeof({x}) = 'number' THEN ({x})::numeric {sign} %s::numeric ELSE FALSE END"
                return sql, self._uses(2) + [_number_param(value)]
            key = f"(CASE WHEN length({t}) = 10 THEN {t} || %s ELSE {t} END)"
            sql = (
                f"CASE WHEN jsonb_typeof({x}) = 'string' AND {t} ~ %s "
                f'THEN {key} COLLATE "C" {sign} %s COLLATE "C" ELSE FALSE END'
            )
            params = self._uses(2) + [PG_DATE_PATTERN] + self._uses(2) + [DATE_SUFFIX] + self._uses(1)
            return sql, params + [value + DATE_SUFFIX if len(value) == 10 else value]
        raise AssertionError(f"operator {op} has no SQL")


class _SqliteJson:
    """Predicates with json_type()/json_extract() on a path `$."step"...` (NULL type: missing)."""

    def __init__(self, column_sql: str, column_params: list, name: str):
        self.column_sql, self.column_params = column_sql, column_params
        self.path = "$" + "".join(f'."{step}"' for step in name_path(name))
        self.type_sql = f"json_type({column_sql}, %s)"
        self.value_sql = f"json_extract({column_sql}, %s)"

    def _uses(self, count: int) -> list:
        return (self.column_params + [self.path]) * count

    def _equals(self, value) -> tuple[str, list]:
        kind, extract = self.type_sql, self.value_sql
        if isinstance(value, bool):
            return f"{kind} = %s", self._uses(1) + ["true" if value else "false"]
        if is_number(value):
            return f"({kind} IN ('integer', 'real') AND {extract} = %s)", self._uses(2) + [value]
        return f"({kind} = 'text' AND {extract} = %s)", self._uses(2) + [value]

    def predicate(self, op: str, value) -> tuple[str, list]:
        kind, extract = self.type_sql, self.value_sql
        if op == "is_set":
            return f"{kind} <> 'null'", self._uses(1)
        if op == "equals":
            return self._equals(value)
        if op == "in":
            if not value:
                return "0", []
            parts = [self._equals(item) for item in value]
            return " OR ".join(sql for sql, _ in parts), [p for _, params in parts for p in params]
        if op == "contains":
            if isinstance(value, bool):
                element, element_params = "element.type = %s", ["true" if value else "false"]
            elif is_number(value):
                element, element_params = "element.type IN ('integer', 'real') AND element.value = %s", [value]
            else:
                element, element_params = "element.type = 'text' AND element.value = %s", [value]
            # Only the module's own fragments are interpolated; every value is a parameter.
            array = f"EXISTS (SELECT 1 FROM json_each({self.column_sql}, %s) AS element WHERE {element})"  # noqa: S608
            array_params = self._uses(1) + element_params
            if isinstance(value, str):
                sql = f"CASE {kind} WHEN 'text' THEN instr({extract}, %s) > 0 WHEN 'array' THEN {array} ELSE 0 END"
                return sql, self._uses(2) + [value] + array_params
            return f"CASE {kind} WHEN 'array' THEN {array} ELSE 0 END", self._uses(1) + array_params
        if op == "starts_with":
            sql = f"{kind} = 'text' AND substr({extract}, 1, length(%s)) = %s"
            return sql, self._uses(2) + [value, value]
        if op == "ends_with":
            sql = (
                f"{kind} = 'text' AND length({extract}) >= length(%s) "
                f"AND substr({extract}, length({extract}) - length(%s) + 1) = %s"
            )
            return sql, self._uses(2) + [value] + self._uses(2) + [value, value]
        if op in ORDERING_OPERATORS:
            sign = SQL_COMPARISONS[op]
            if is_number(value):
                return f"{kind} IN ('integer', 'real') AND {extract} {sign} %s", self._uses(2) + [value]
            shape = f"({extract} GLOB %s OR {extract} GLOB %s)"
            key = f"(CASE WHEN length({extract}) = 10 THEN {extract} || %s ELSE {extract} END)"
            sql = f"{kind} = 'text' AND {shape} AND {key} {sign} %s"
            params = self._uses(1) + self._uses(1) + [SQLITE_DATE_GLOBS[0]] + self._uses(1) + [SQLITE_DATE_GLOBS[1]]
            params += self._uses(2) + [DATE_SUFFIX] + self._uses(1)
            return sql, params + [value + DATE_SUFFIX if len(value) == 10 else value]
        raise AssertionError(f"operator {op} has no SQL")
