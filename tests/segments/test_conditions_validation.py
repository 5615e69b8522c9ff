"""validate(): every problem with its JSON path; and what a condition depends on."""

from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from segments.conditions import matches, referenced_events, referenced_traits, uses_relative_window, validate


def nest(condition, levels):
    for _ in range(levels):
        condition = {"type": "not", "condition": condition}
    return condition


PLAN = {"type": "trait", "name": "plan", "op": "equals", "value": "pro"}


@pytest.mark.parametrize(
    "condition",
    [
        PLAN,
        {"type": "trait", "name": "address.city", "op": "is_set"},
        {"type": "trait", "name": "plan", "op": "in", "value": ["pro", 1, True]},
        {"type": "trait", "name": "signup", "op": "greater_than", "value": "2024-01-01T00:00:00Z"},
        {"type": "event", "event_name": "purchase"},
        {
            "type": "event",
            "event_name": "purchase",
            "count": {"op": "equals", "value": 0},
            "within": {"value": 7, "unit": "days"},
            "where": [{"name": "amount", "op": "greater_than", "value": 20}, {"name": "coupon", "op": "is_not_set"}],
        },
        {
            "type": "event",
            "event_name": "purchase",
            "between": {"from": "2024-01-01", "to": "2024-02-01T00:00:00+00:00"},
        },
        {"type": "and", "conditions": [PLAN, {"type": "or", "conditions": [PLAN]}]},
        nest(PLAN, 9),
    ],
)
def test_valid_conditions_have_no_problems(condition):
    assert validate(condition) == []


@pytest.mark.parametrize(
    ("condition", "errors"),
    [
        ("plan", ["$: must be an object"]),
        ({}, ["type: is required"]),
        ({"type": "trat"}, ['type: unknown condition type "trat"; did you mean "trait"?']),
        (
            {"type": "and", "conditions": [PLAN, {"type": "trait", "name": "plan", "op": "eq", "value": "pro"}]},
            ['conditions[1].op: unknown operator "eq"; did you mean "equals"?'],
        ),
        (
            {"type": "trait", "name": "plan", "op": "equal", "value": "x"},
            ['op: unknown operator "equal"; did you mean "equals"?'],
        ),
        (
            {"type": "trait", "name": "plan", "op": "gte", "value": 1},
            ['op: unknown operator "gte"; did you mean "greater_than_or_equals"?'],
        ),
        (
            {"type": "trait", "name": "plan", "op": "zzz", "value": 1},
            [
                'op: unknown operator "zzz"; expected one of: "equals", "not_equals", "greater_than", "less_than", '
                '"greater_than_or_equals", "less_than_or_equals", "contains", "not_contains", "starts_with", '
                '"ends_with", "in", "not_in", "is_set", "is_not_set"'
            ],
        ),
        ({"type": "trait", "op": "equals"}, ["name: is required", 'value: is required with operator "equals"']),
        ({"type": "trait", "name": "", "op": "is_set"}, ["name: must be a non-empty string"]),
        ({"type": "trait", "name": "address..city", "op": "is_set"}, ['name: has an empty step in "address..city"']),
        ({"type": "trait", "name": 'a"b', "op": "is_set"}, ["name: must not contain quotes or backslashes"]),
        ({"type": "trait", "name": "plan", "op": "is_set", "value": 1}, ['value: not allowed with operator "is_set"']),
        ({"type": "trait", "name": "plan", "op": "in", "value": "pro"}, ['value: must be a list with operator "in"']),
        (
            {"type": "trait", "name": "plan", "op": "not_in", "value": ["pro", None, {"a": 1}]},
            ["value[1]: must be a string, a number or a boolean", "value[2]: must be a string, a number or a boolean"],
        ),
        (
            {"type": "trait", "name": "age", "op": "greater_than", "value": "thirty"},
            ['value: must be a number or a date (YYYY-MM-DD or YYYY-MM-DDTHH:MM:SSZ) with operator "greater_than"'],
        ),
        (
            {"type": "trait", "name": "age", "op": "less_than", "value": True},
            ['value: must be a number or a date (YYYY-MM-DD or YYYY-MM-DDTHH:MM:SSZ) with operator "less_than"'],
        ),
        (
            {"type": "trait", "name": "e", "op": "starts_with", "value": 1},
            ['value: must be a string with operator "starts_with"'],
        ),
        (
            {"type": "trait", "name": "plan", "op": "equals", "value": None},
            ['value: must be a string, a number or a boolean with operator "equals"'],
        ),
        (
            {"type": "trait", "name": "plan", "op": "equals", "value": "pro", "valu": 1},
            ['valu: unknown key; did you mean "value"?'],
        ),
        ({"type": "event"}, ["event_name: is required"]),
        (
            {"type": "event", "event_name": "purchase", "count": {"op": "contains", "value": -1}},
            [
                'count.op: unknown count operator "contains"; expected one of: "equals", "not_equals", '
                '"greater_than", "less_than", "greater_than_or_equals", "less_than_or_equals"',
                "count.value: must be a non-negative integer",
            ],
        ),
        (
            {"type": "event", "event_name": "purchase", "count": {"op": "equals", "value": True}},
            ["count.value: must be a non-negative integer"],
        ),
        (
            {"type": "event", "event_name": "purchase", "count": {"op": "equals", "value": 2**63}},
            ["count.value: must be a non-negative integer"],
        ),
        (
            {"type": "event", "event_name": "purchase", "within": {"value": 100_001, "unit": "weeks"}},
            ["within.value: must be a positive integer up to 100000"],
        ),
        (
            {"type": "trait", "name": "age", "op": "equals", "value": float("nan")},
            ['value: must be a string, a number or a boolean with operator "equals"'],
        ),
        (
            {"type": "trait", "name": "age", "op": "in", "value": [2**64]},
            ["value[0]: must be a string, a number or a boolean"],
        ),
        (
            {"type": "event", "event_name": "purchase", "within": {"value": 0, "unit": "day"}},
            [
                "within.value: must be a positive integer up to 100000",
                'within.unit: unknown unit "day"; did you mean "days"?',
            ],
        ),
        (
            {
                "type": "event",
                "event_name": "purchase",
                "within": {"value": 1, "unit": "days"},
                "between": {"from": "x"},
            },
            [
                'between: cannot be combined with "within"',
                "between.from: must be an ISO-8601 date or date-time",
                "between.to: is required",
            ],
        ),
        (
            {"type": "event", "event_name": "purchase", "between": {"from": "2024-02-01", "to": "2024-01-01"}},
            ['between: "from" must be before "to"'],
        ),
        (
            {"type": "event", "event_name": "purchase", "where": [{"name": "amount", "op": "gt", "value": "x"}, 3]},
            ['where[0].op: unknown operator "gt"; did you mean "greater_than"?', "where[1]: must be an object"],
        ),
        ({"type": "or", "conditions": []}, ["conditions: must not be empty"]),
        ({"type": "and"}, ["conditions: is required"]),
        ({"type": "not", "condition": [PLAN]}, ["condition: must be an object"]),
        (
            nest(PLAN, 10),
            [".".join(["condition"] * 10) + ": conditions nest deeper than 10 levels"],
        ),
    ],
)
def test_problems_are_reported_with_their_path(condition, errors):
    assert validate(condition) == errors


def test_every_problem_is_reported_at_once():
    condition = {
        "type": "and",
        "conditions": [
            {"type": "trait", "name": "plan", "op": "eq", "value": "pro"},
            {"type": "event", "event_name": "purchase", "within": {"value": 7, "unit": "dayz"}},
        ],
    }

    assert validate(condition) == [
        'conditions[0].op: unknown operator "eq"; did you mean "equals"?',
        'conditions[1].within.unit: unknown unit "dayz"; did you mean "days"?',
    ]


def test_references_list_traits_and_events_and_relative_windows():
    condition = {
        "type": "or",
        "conditions": [
            PLAN,
            {"type": "not", "condition": {"type": "trait", "name": "address.city", "op": "is_set"}},
            {"type": "event", "event_name": "purchase", "between": {"from": "2024-01-01", "to": "2024-02-01"}},
            {"type": "event", "event_name": "signup"},
        ],
    }

    assert referenced_traits(condition) == {"plan", "address.city"}
    assert referenced_events(condition) == {"purchase", "signup"}
    assert uses_relative_window(condition) is False
    assert uses_relative_window(nest({"type": "event", "event_name": "x", "within": {"value": 1, "unit": "days"}}, 2))


json_documents = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.sampled_from(["trait", "event", "and", "not", "plan"]),
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(
            st.sampled_from(
                ["type", "name", "op", "value", "conditions", "condition", "event_name", "count", "within"]
            ),
            inner,
            max_size=4,
        )
    ),
    max_leaves=12,
)


@settings(max_examples=200, deadline=None, derandomize=True)
@given(document=json_documents)
def test_validate_reports_problems_of_any_json_without_raising(document):
    problems = validate(document)

    assert all(isinstance(problem, str) and ": " in problem for problem in problems)
    if not problems:
        matches(document, traits={}, events=[], now=datetime(2026, 1, 1, tzinfo=UTC))
