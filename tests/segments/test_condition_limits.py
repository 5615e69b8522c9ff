"""Segment conditions are bounded in size, so one stored condition cannot make its SQL fail or crawl.

Each bound is checked by `validate()` with its path, so the form, the preview and the API refuse
it alike; and a condition at every bound still compiles and runs (on PostgreSQL and SQLite).
"""

import json

import pytest

from segments.conditions import grammar, validate
from segments.models import Segment
from segments.selectors import segment_preview_count
from timonier import clock

from .test_segment_views import field_errors, make_customer, text, url

pytestmark = pytest.mark.django_db

IS_SET = {"type": "trait", "name": "plan", "op": "is_set"}
TOO_MANY = f"$: has more than {grammar.MAX_NODES} conditions (with where filters); combine smaller segments instead"


def _tree(levels: int, width: int) -> dict:
    node = IS_SET
    for _ in range(levels):
        node = {"type": "or", "conditions": [node] * width}
    return node


def _in(values: list, op: str = "in") -> dict:
    return {"type": "trait", "name": "plan", "op": op, "value": values}


# --- validate() ----------------------------------------------------------------------------------


def test_a_1200_wide_or_is_refused_with_one_error():
    assert validate({"type": "or", "conditions": [IS_SET] * 1200}) == [TOO_MANY]


def test_a_tree_of_3_to_the_9_leaves_is_refused():
    assert validate(_tree(9, 3)) == [TOO_MANY]


def test_where_filters_count_as_nodes():
    where = [{"name": "item", "op": "equals", "value": "x"}] * grammar.MAX_NODES
    assert validate({"type": "event", "event_name": "purchase", "where": where}) == [TOO_MANY]


def test_a_condition_of_200_nodes_is_valid():
    assert validate({"type": "or", "conditions": [IS_SET] * (grammar.MAX_NODES - 1)}) == []


def test_a_40000_value_in_list_is_refused_naming_its_path():
    condition = {"type": "not", "condition": _in(list(range(40_000)))}
    assert validate(condition) == [
        f"$: has 40000 list values in all; at most {grammar.MAX_LIST_VALUES}",
        f"condition.value: has 40000 values; at most {grammar.MAX_LIST_ITEMS}",
    ]


def test_an_in_list_at_its_bound_is_valid():
    assert validate(_in(list(range(grammar.MAX_LIST_ITEMS)), op="not_in")) == []
    assert validate(_in(list(range(grammar.MAX_LIST_ITEMS + 1)))) == [
        f"value: has {grammar.MAX_LIST_ITEMS + 1} values; at most {grammar.MAX_LIST_ITEMS}"
    ]


def test_list_values_are_bounded_in_all():
    lists = [_in([f"{n}-{i}" for i in range(grammar.MAX_LIST_ITEMS)]) for n in range(5)]
    assert validate({"type": "or", "conditions": lists}) == [
        f"$: has {5 * grammar.MAX_LIST_ITEMS} list values in all; at most {grammar.MAX_LIST_VALUES}"
    ]


def test_long_strings_are_refused_with_their_path():
    long = "x" * (grammar.MAX_STRING + 1)
    condition = {
        "type": "and",
        "conditions": [
            {"type": "trait", "name": "plan", "op": "equals", "value": long},
            _in(["ok", long]),
            {
                "type": "event",
                "event_name": "purchase",
                "where": [{"name": "item", "op": "starts_with", "value": long}],
            },
            {"type": "trait", "name": "a" * (grammar.MAX_NAME + 1), "op": "is_set"},
        ],
    }
    limit = f"exceeds maximum length of {grammar.MAX_STRING} characters"
    assert validate(condition) == [
        f"conditions[0].value: {limit}",
        f"conditions[1].value[1]: {limit}",
        f"conditions[2].where[0].value: {limit}",
        f"conditions[3].name: exceeds maximum length of {grammar.MAX_NAME} characters",
    ]


def test_a_string_at_its_bound_is_valid():
    assert validate({"type": "trait", "name": "plan", "op": "equals", "value": "x" * grammar.MAX_STRING}) == []


# --- conditions at every bound run ---------------------------------------------------------------


def test_conditions_at_the_bounds_compile_and_count_on_this_database(personas):
    make_customer(personas.project, "u1", plan="pro")
    make_customer(personas.project, "u2", plan="free")
    values = [f"plan-{i}" for i in range(grammar.MAX_LIST_ITEMS - 1)] + ["pro"]
    per_list = grammar.MAX_LIST_VALUES // grammar.MAX_LIST_ITEMS
    lists = [_in(values)] + [_in([f"{n}-{v}" for v in values]) for n in range(per_list - 1)]
    widest = {"type": "or", "conditions": [{"type": "trait", "name": "plan", "op": "equals", "value": "pro"}] * 199}
    cases = [
        # Not in any of the lists (the first holds "pro"): the free customer.
        ({"type": "not", "condition": {"type": "and", "conditions": [{"type": "or", "conditions": lists}]}}, 1),
        (widest, 1),
        ({"type": "trait", "name": "plan", "op": "not_in", "value": values}, 1),
    ]
    for condition, expected in cases:
        assert validate(condition) == []
        count, problems = segment_preview_count(personas.project, condition, now=clock.now())
        assert problems == []
        assert count == expected


# --- where people type them ----------------------------------------------------------------------


def test_the_form_shows_the_size_error_under_the_condition_and_saves_nothing(personas):
    typed = json.dumps({"type": "or", "conditions": [IS_SET] * 1200})
    page = text(
        personas.client("member").post(url(personas.project, "segments/new"), {"name": "Big", "condition": typed})
    )
    assert field_errors(page, "condition") == [TOO_MANY]
    assert not Segment.objects.exists()


def test_json_nested_thousands_deep_is_an_error_under_the_field(personas):
    deep = '{"type": "not", "condition": ' * 5000 + json.dumps(IS_SET) + "}" * 5000
    page = text(
        personas.client("member").post(url(personas.project, "segments/new"), {"name": "Deep", "condition": deep})
    )
    assert field_errors(page, "condition") == [f"$: conditions nest deeper than {grammar.MAX_DEPTH} levels"]
    assert not Segment.objects.exists()


def test_the_preview_answers_400_for_deep_json(personas):
    deep = "[" * 5000 + "]" * 5000
    response = personas.client("member").post(url(personas.project, "segments/preview"), {"condition": deep})
    assert response.status_code == 400
    assert response.json() == {"errors": [f"$: conditions nest deeper than {grammar.MAX_DEPTH} levels"]}


def test_the_preview_answers_400_with_the_size_error(personas):
    typed = json.dumps(_in(list(range(600))))
    response = personas.client("member").post(url(personas.project, "segments/preview"), {"condition": typed})
    assert response.status_code == 400
    assert response.json() == {"errors": [f"value: has 600 values; at most {grammar.MAX_LIST_ITEMS}"]}
