"""Evaluating a condition in Python for one customer (see `grammar` for the value rules)."""

from collections.abc import Collection
from datetime import datetime

from .grammar import (
    NEGATIONS,
    ORDERING_OPERATORS,
    date_key,
    is_date,
    is_number,
    name_path,
    parse_instant,
    window_start,
)
from .validation import ensure_valid

MISSING = object()


def matches(
    condition: dict, *, traits: dict, events: list[dict], now: datetime, segments: Collection[int] = ()
) -> bool:
    """Whether a customer with these traits and events (dicts with name, type, properties and an
    aware timestamp), member of `segments` (ids), matches the condition at `now`. Raises
    InvalidCondition if it is not valid."""
    ensure_valid(condition)
    return _matches(condition, traits, events, now, frozenset(segments))


def _matches(node: dict, traits: dict, events: list[dict], now: datetime, segments: frozenset) -> bool:
    kind = node["type"]
    if kind == "and":
        return all(_matches(child, traits, events, now, segments) for child in node["conditions"])
    if kind == "or":
        return any(_matches(child, traits, events, now, segments) for child in node["conditions"])
    if kind == "not":
        return not _matches(node["condition"], traits, events, now, segments)
    if kind == "segment":
        return node["segment_id"] in segments
    if kind == "trait":
        return value_matches(lookup(traits, node["name"]), node["op"], node.get("value"))
    return _event_matches(node, events, now)


def lookup(data, name: str):
    """The value at a dotted name, or MISSING; a step into anything but an object finds nothing."""
    value = data
    for step in name_path(name):
        if not isinstance(value, dict) or step not in value:
            return MISSING
        value = value[step]
    return value


def json_equal(left, right) -> bool:
    if isinstance(right, bool) or isinstance(left, bool):
        return isinstance(left, bool) and isinstance(right, bool) and left == right
    if is_number(right):
        return is_number(left) and left == right
    return isinstance(left, str) and isinstance(right, str) and left == right


def value_matches(actual, op: str, expected) -> bool:
    if op in NEGATIONS:
        return not value_matches(actual, NEGATIONS[op], expected)
    if op == "is_set":
        return actual is not MISSING and actual is not None
    if op == "equals":
        return json_equal(actual, expected)
    if op == "in":
        return any(json_equal(actual, item) for item in expected)
    if op == "contains":
        if isinstance(actual, str):
            return isinstance(expected, str) and expected in actual
        return isinstance(actual, list) and any(json_equal(item, expected) for item in actual)
    if op == "starts_with":
        return isinstance(actual, str) and actual.startswith(expected)
    if op == "ends_with":
        return isinstance(actual, str) and actual.endswith(expected)
    if op in ORDERING_OPERATORS:
        if is_number(expected):
            return is_number(actual) and _compare(op, actual, expected)
        return is_date(actual) and _compare(op, date_key(actual), date_key(expected))
    raise AssertionError(f"operator {op} passed validation but has no evaluation")


def _compare(op: str, left, right) -> bool:
    if op == "greater_than":
        return left > right
    if op == "less_than":
        return left < right
    if op == "greater_than_or_equals":
        return left >= right
    if op == "less_than_or_equals":
        return left <= right
    return left == right if op == "equals" else left != right


def _event_matches(node: dict, events: list[dict], now: datetime) -> bool:
    start = end = None
    if "within" in node:
        start = window_start(node["within"], now)
    if "between" in node:
        start, end = parse_instant(node["between"]["from"]), parse_instant(node["between"]["to"])
    filters = node.get("where", [])
    count = 0
    for event in events:
        if event["type"] != "track" or event["name"] != node["event_name"]:
            continue
        if start is not None and event["timestamp"] < start:
            continue
        if end is not None and event["timestamp"] >= end:
            continue
        properties = event.get("properties") or {}
        if all(value_matches(lookup(properties, f["name"]), f["op"], f.get("value")) for f in filters):
            count += 1
    rule = node.get("count", {"op": "greater_than_or_equals", "value": 1})
    return _compare(rule["op"], count, rule["value"])
