"""Each operator on traits and events, answered by Python and by the database alike."""

from datetime import timedelta

import pytest

from segments.conditions import InvalidCondition, compile_sql, matches
from tests.factories import ProjectFactory

from .conditions_support import NOW, both_answers, matched_ids, store_customer


def trait(name, op, value=None, **extra):
    condition = {"type": "trait", "name": name, "op": op, **extra}
    if op not in ("is_set", "is_not_set"):
        condition["value"] = value
    return condition


TRAIT_CASES = [
    # equals / not_equals: JSON types must agree; numbers by value; text is case-sensitive.
    ({"plan": "pro"}, trait("plan", "equals", "pro"), True),
    ({"plan": "Pro"}, trait("plan", "equals", "pro"), False),
    ({"plan": "pro"}, trait("plan", "not_equals", "pro"), False),
    ({"plan": "free"}, trait("plan", "not_equals", "pro"), True),
    ({}, trait("plan", "not_equals", "pro"), True),
    ({"age": 30}, trait("age", "equals", 30), True),
    ({"age": 30.0}, trait("age", "equals", 30), True),
    ({"age": "30"}, trait("age", "equals", 30), False),
    ({"age": 30}, trait("age", "equals", "30"), False),
    ({"vip": True}, trait("vip", "equals", True), True),
    ({"vip": True}, trait("vip", "equals", 1), False),
    ({"vip": 1}, trait("vip", "equals", True), False),
    ({"vip": False}, trait("vip", "equals", False), True),
    ({"address": {"city": "Paris"}}, trait("address.city", "equals", "Paris"), True),
    ({"address": "Paris"}, trait("address.city", "equals", "Paris"), False),
    ({"tags": ["a"]}, trait("tags.0", "equals", "a"), False),
    # ordering: numbers with numbers, dates with dates, nothing else.
    ({"age": 31}, trait("age", "greater_than", 30), True),
    ({"age": 30}, trait("age", "greater_than", 30), False),
    ({"age": 30}, trait("age", "greater_than_or_equals", 30), True),
    ({"age": 2.5}, trait("age", "less_than", 3), True),
    ({"age": 3}, trait("age", "less_than_or_equals", 2.5), False),
    ({"age": "31"}, trait("age", "greater_than", 30), False),
    ({"age": True}, trait("age", "greater_than", 0), False),
    ({"age": None}, trait("age", "less_than", 30), False),
    ({"signup": "2024-05-01"}, trait("signup", "greater_than", "2024-04-30"), True),
    ({"signup": "2024-05-01T10:00:00Z"}, trait("signup", "greater_than", "2024-05-01"), True),
    ({"signup": "2024-05-01"}, trait("signup", "greater_than_or_equals", "2024-05-01T00:00:00Z"), True),
    ({"signup": "2024-05-01"}, trait("signup", "less_than", "2024-05-01T00:00:01Z"), True),
    ({"signup": "May 1st"}, trait("signup", "less_than", "2024-05-01"), False),
    ({"signup": "2024-05-01T10:00:00+02:00"}, trait("signup", "greater_than", "2024-01-01"), False),
    ({"signup": 20240501}, trait("signup", "greater_than", "2024-01-01"), False),
    # contains: substring of a string, member of an array.
    ({"email": "jane@example.com"}, trait("email", "contains", "@example"), True),
    ({"email": "jane@example.com"}, trait("email", "contains", "EXAMPLE"), False),
    ({"email": "50%_off"}, trait("email", "contains", "%_"), True),
    ({"email": "50 off"}, trait("email", "contains", "%"), False),
    ({"tags": ["beta", "vip"]}, trait("tags", "contains", "vip"), True),
    ({"tags": ["beta", "vipx"]}, trait("tags", "contains", "vip"), False),
    ({"tags": [1, 2]}, trait("tags", "contains", 2), True),
    ({"tags": [1, 2]}, trait("tags", "contains", "2"), False),
    ({"tags": [True]}, trait("tags", "contains", True), True),
    ({"tags": [1]}, trait("tags", "contains", True), False),
    ({"tags": {"vip": 1}}, trait("tags", "contains", "vip"), False),
    ({"tags": ["vip"]}, trait("tags", "not_contains", "vip"), False),
    ({}, trait("tags", "not_contains", "vip"), True),
    # starts_with / ends_with: exact case, wildcards are plain characters.
    ({"email": "jane@example.com"}, trait("email", "starts_with", "jane"), True),
    ({"email": "jane@example.com"}, trait("email", "starts_with", "Jane"), False),
    ({"email": "j_ne"}, trait("email", "starts_with", "j_"), True),
    ({"email": "jane"}, trait("email", "starts_with", "j_"), False),
    ({"email": "jane@example.com"}, trait("email", "ends_with", ".com"), True),
    ({"email": "jane@example.com"}, trait("email", "ends_with", ".COM"), False),
    ({"email": "om"}, trait("email", "ends_with", ".com"), False),
    ({"email": "été"}, trait("email", "ends_with", "té"), True),
    ({"email": 123}, trait("email", "starts_with", "1"), False),
    # in / not_in
    ({"plan": "pro"}, trait("plan", "in", ["free", "pro"]), True),
    ({"plan": "team"}, trait("plan", "in", ["free", "pro"]), False),
    ({"seats": 5}, trait("seats", "in", [5, "x"]), True),
    ({"plan": "pro"}, trait("plan", "in", []), False),
    ({"plan": "pro"}, trait("plan", "not_in", ["free", "pro"]), False),
    ({}, trait("plan", "not_in", ["free"]), True),
    # is_set / is_not_set: missing and JSON null are both "not set".
    ({"plan": "pro"}, trait("plan", "is_set"), True),
    ({"plan": ""}, trait("plan", "is_set"), True),
    ({"plan": False}, trait("plan", "is_set"), True),
    ({"plan": None}, trait("plan", "is_set"), False),
    ({}, trait("plan", "is_set"), False),
    ({"plan": None}, trait("plan", "is_not_set"), True),
    ({}, trait("address.city", "is_not_set"), True),
    ({"address": {"city": None}}, trait("address.city", "is_set"), False),
]


@pytest.mark.parametrize(("traits", "condition", "expected"), TRAIT_CASES)
def test_trait_operator(db, traits, condition, expected):
    in_python, in_sql = both_answers(ProjectFactory(), condition, traits)

    assert (in_python, in_sql) == (expected, expected)


def purchase(minutes_ago=0, type="track", **properties):
    return {
        "name": "purchase",
        "type": type,
        "properties": properties,
        "timestamp": NOW - timedelta(minutes=minutes_ago),
    }


EVENT_CASES = [
    ([purchase()], {"type": "event", "event_name": "purchase"}, True),
    ([], {"type": "event", "event_name": "purchase"}, False),
    ([purchase(type="page")], {"type": "event", "event_name": "purchase"}, False),
    ([purchase()], {"type": "event", "event_name": "Purchase"}, False),
    (
        [purchase(), purchase()],
        {"type": "event", "event_name": "purchase", "count": {"op": "equals", "value": 2}},
        True,
    ),
    ([purchase()], {"type": "event", "event_name": "purchase", "count": {"op": "greater_than", "value": 1}}, False),
    ([], {"type": "event", "event_name": "purchase", "count": {"op": "equals", "value": 0}}, True),
    ([], {"type": "event", "event_name": "purchase", "count": {"op": "less_than", "value": 2}}, True),
    ([purchase()], {"type": "event", "event_name": "purchase", "count": {"op": "not_equals", "value": 1}}, False),
    ([], {"type": "event", "event_name": "purchase", "count": {"op": "not_equals", "value": 1}}, True),
    # within: from now minus the window, inclusive.
    (
        [purchase(minutes_ago=59)],
        {"type": "event", "event_name": "purchase", "within": {"value": 1, "unit": "hours"}},
        True,
    ),
    (
        [purchase(minutes_ago=60)],
        {"type": "event", "event_name": "purchase", "within": {"value": 1, "unit": "hours"}},
        True,
    ),
    (
        [purchase(minutes_ago=61)],
        {"type": "event", "event_name": "purchase", "within": {"value": 1, "unit": "hours"}},
        False,
    ),
    (
        [purchase(minutes_ago=60 * 24 * 8)],
        {"type": "event", "event_name": "purchase", "within": {"value": 1, "unit": "weeks"}},
        False,
    ),
    # "has not purchased in the last 7 days"
    (
        [purchase(minutes_ago=60 * 24 * 10)],
        {
            "type": "event",
            "event_name": "purchase",
            "count": {"op": "equals", "value": 0},
            "within": {"value": 7, "unit": "days"},
        },
        True,
    ),
    # between: from inclusive, to exclusive.
    (
        [purchase(minutes_ago=60 * 12)],
        {"type": "event", "event_name": "purchase", "between": {"from": "2026-03-15", "to": "2026-03-16"}},
        True,
    ),
    (
        [purchase(minutes_ago=60 * 12)],
        {"type": "event", "event_name": "purchase", "between": {"from": "2026-03-14", "to": "2026-03-15T00:00:00Z"}},
        False,
    ),
    # where: every filter on the same event.
    (
        [purchase(amount=25)],
        {"type": "event", "event_name": "purchase", "where": [{"name": "amount", "op": "greater_than", "value": 20}]},
        True,
    ),
    (
        [purchase(amount="25")],
        {"type": "event", "event_name": "purchase", "where": [{"name": "amount", "op": "greater_than", "value": 20}]},
        False,
    ),
    (
        [purchase(amount=25, currency="EUR"), purchase(amount=5, currency="USD")],
        {
            "type": "event",
            "event_name": "purchase",
            "where": [
                {"name": "amount", "op": "greater_than", "value": 20},
                {"name": "currency", "op": "equals", "value": "USD"},
            ],
        },
        False,
    ),
    (
        [purchase(item={"sku": "A-1"})],
        {
            "type": "event",
            "event_name": "purchase",
            "where": [{"name": "item.sku", "op": "starts_with", "value": "A-"}],
        },
        True,
    ),
    (
        [purchase()],
        {"type": "event", "event_name": "purchase", "where": [{"name": "coupon", "op": "is_not_set"}]},
        True,
    ),
]


@pytest.mark.parametrize(("events", "condition", "expected"), EVENT_CASES)
def test_event_condition(db, events, condition, expected):
    in_python, in_sql = both_answers(ProjectFactory(), condition, {}, events)

    assert (in_python, in_sql) == (expected, expected)


def test_and_or_not_compose(db):
    condition = {
        "type": "and",
        "conditions": [
            {"type": "trait", "name": "plan", "op": "equals", "value": "pro"},
            {
                "type": "or",
                "conditions": [
                    {"type": "event", "event_name": "purchase"},
                    {"type": "not", "condition": trait("vip", "is_set")},
                ],
            },
        ],
    }
    project = ProjectFactory()
    buyer = store_customer(project, {"plan": "pro", "vip": True}, [purchase()])
    no_vip = store_customer(project, {"plan": "pro"})
    store_customer(project, {"plan": "pro", "vip": True})
    store_customer(project, {"plan": "free"})

    assert matched_ids(project, condition) == {buyer.id, no_vip.id}


def test_events_of_another_customer_or_project_do_not_count(db):
    project, other = ProjectFactory(), ProjectFactory()
    store_customer(project, {})
    store_customer(other, {}, [purchase()])

    assert matched_ids(project, {"type": "event", "event_name": "purchase"}) == set()


def test_invalid_condition_is_refused_by_both_evaluators():
    condition = {"type": "trait", "name": "plan", "op": "eq", "value": "pro"}

    with pytest.raises(InvalidCondition) as python_error:
        matches(condition, traits={}, events=[], now=NOW)
    with pytest.raises(InvalidCondition):
        compile_sql(condition, now=NOW)
    assert python_error.value.errors == ['op: unknown operator "eq"; did you mean "equals"?']
