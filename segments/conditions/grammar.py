"""The vocabulary of the condition language and the value rules every evaluator shares.

The rules, identical in Python (`evaluation.py`) and SQL (`sql.py`), on PostgreSQL and SQLite:

- A name is a dotted path into a JSON object (`address.city`); a step into anything but an
  object (an array, a string) finds nothing. A value that is missing or JSON null is "not set".
- Values compare by JSON type and a type mismatch is false, never an error: numbers compare as
  numbers (`1 == 1.0`), strings exactly (case-sensitive), booleans only with booleans (`true`
  is not `1`). A numeric string such as `"30"` is a string, not a number.
- Ordering operators take a number or a date. A date is a string of the exact form
  `YYYY-MM-DD` or `YYYY-MM-DDTHH:MM:SSZ` (UTC); a plain date counts as midnight UTC. Dates
  compare with dates of these forms only, so comparing their text is comparing their time.
- `equals` compares dates as strings (`"2024-01-01"` does not equal `"2024-01-01T00:00:00Z"`).
- `contains` is a substring test on a string and a membership test (by `equals`) on an array.
- The negative operators (`not_equals`, `not_contains`, `not_in`, `is_not_set`) are the exact
  negation of their positive twin, so they also hold when the value is missing.

Event conditions count the customer's `track` events with that exact name; without `count`
they ask for at least one. `within` keeps events at or after `now` minus the window (later
events included, even ones stamped in the future); `between` keeps `from <= timestamp < to`,
a date without a time being midnight UTC. All `where` filters must hold on the same event.
A `count` of `equals 0` holds for a customer with no events at all.

A segment condition `{"type": "segment", "segment_id": 12}` holds for the customers currently
in that segment (of the same project; wrap it in `not` for "not in"). Whether the segment
exists, belongs to the project and is not part of a cycle is checked where segments are saved
(`segments.services`), since it needs the database; the grammar only checks the id's shape.
"""

import math
import re
from datetime import UTC, datetime, timedelta

MAX_DEPTH = 10
# Size bounds, so one stored condition cannot make its SQL fail or crawl (a 40,000-value `in`, a
# 3^9-leaf tree). Each compiles to SQL on PostgreSQL and SQLite alike: SQLite parses an `in` list
# as a chain of ORs, refused past a depth of 1,000 ("Expression tree is too large"), and takes at
# most 32,766 parameters per query, so lists stay well under both.
MAX_NODES = 200  # condition objects and `where` filters, all levels together
MAX_LIST_ITEMS = 500  # values of one `in` / `not_in` list
MAX_LIST_VALUES = 2_000  # values of all the lists of one condition
MAX_STRING = 1_000  # characters of a string value
MAX_NAME = 255  # characters of a trait, property or event name

VALUE_OPERATORS = (
    "equals",
    "not_equals",
    "greater_than",
    "less_than",
    "greater_than_or_equals",
    "less_than_or_equals",
    "contains",
    "not_contains",
    "starts_with",
    "ends_with",
    "in",
    "not_in",
)
PRESENCE_OPERATORS = ("is_set", "is_not_set")
OPERATORS = VALUE_OPERATORS + PRESENCE_OPERATORS
ORDERING_OPERATORS = ("greater_than", "less_than", "greater_than_or_equals", "less_than_or_equals")
STRING_OPERATORS = ("starts_with", "ends_with")
LIST_OPERATORS = ("in", "not_in")
COUNT_OPERATORS = ("equals", "not_equals") + ORDERING_OPERATORS
# The positive operator each negative one negates.
NEGATIONS = {"not_equals": "equals", "not_contains": "contains", "not_in": "in", "is_not_set": "is_set"}
# Short spellings people bring from other tools, suggested before close matches.
ALIASES = {
    "eq": "equals",
    "=": "equals",
    "==": "equals",
    "ne": "not_equals",
    "neq": "not_equals",
    "!=": "not_equals",
    "gt": "greater_than",
    ">": "greater_than",
    "lt": "less_than",
    "<": "less_than",
    "gte": "greater_than_or_equals",
    ">=": "greater_than_or_equals",
    "lte": "less_than_or_equals",
    "<=": "less_than_or_equals",
    "exists": "is_set",
}

WINDOW_UNITS = {
    "minutes": timedelta(minutes=1),
    "hours": timedelta(hours=1),
    "days": timedelta(days=1),
    "weeks": timedelta(weeks=1),
}

CONDITION_KEYS = {
    "trait": ("type", "name", "op", "value"),
    "event": ("type", "event_name", "count", "within", "between", "where"),
    "and": ("type", "conditions"),
    "or": ("type", "conditions"),
    "not": ("type", "condition"),
    "segment": ("type", "segment_id"),
}
WHERE_KEYS = ("name", "op", "value")

# ASCII digits only: Python's \d would also accept other scripts' digits, SQL's [0-9] does not.
DATE_RE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}(T[0-9]{2}:[0-9]{2}:[0-9]{2}Z)?")
DATE_SUFFIX = "T00:00:00Z"


def is_number(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


# Integers the databases can take as parameters (SQLite's are 64-bit).
MAX_INTEGER = 2**63 - 1
# The longest `within` window in any unit: 100,000 weeks still ends after year 1.
MAX_WINDOW = 100_000


def is_scalar(value) -> bool:
    """A value `equals` can compare: a string, a finite number or a boolean."""
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return -MAX_INTEGER <= value <= MAX_INTEGER
    return isinstance(value, str | bool)


def is_date(value) -> bool:
    return isinstance(value, str) and DATE_RE.fullmatch(value) is not None


def date_key(value: str) -> str:
    """The text that orders a date like its time: a plain date becomes midnight UTC."""
    return value + DATE_SUFFIX if len(value) == 10 else value


def name_path(name: str) -> list[str]:
    return name.split(".")


def parse_instant(value) -> datetime | None:
    """An ISO-8601 date or date-time as an aware datetime (naive ones are UTC), else None."""
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def window_start(within: dict, now: datetime) -> datetime:
    return now - within["value"] * WINDOW_UNITS[within["unit"]]
