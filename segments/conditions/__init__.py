"""The condition language segments and workflows share: JSON conditions on traits and events.

- `validate(condition)`: every problem, each as `path: message`.
- `matches(condition, traits=, events=, now=)`: evaluate for one customer in Python.
- `compile_sql(condition, now=)`: the same answer as a filter over `Customer` (PostgreSQL, SQLite).
- `referenced_traits`, `referenced_events`, `referenced_segments`, `uses_relative_window`,
  `change_reader`, `holds_as_events_grow`: what a condition depends on.

The grammar and the value rules both evaluators follow are described in `grammar`.
"""

from .evaluation import matches
from .references import (
    change_reader,
    holds_as_events_grow,
    referenced_events,
    referenced_segments,
    referenced_traits,
    uses_relative_window,
)
from .sql import compile_sql
from .validation import InvalidCondition, validate

__all__ = [
    "InvalidCondition",
    "change_reader",
    "compile_sql",
    "holds_as_events_grow",
    "matches",
    "referenced_events",
    "referenced_segments",
    "referenced_traits",
    "uses_relative_window",
    "validate",
]
