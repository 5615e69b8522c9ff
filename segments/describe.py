"""A condition as a sentence people read on the segment page: `plan equals "pro" AND NOT (…)`."""

import json

OPERATOR_WORDS = {
    "equals": "equals",
    "not_equals": "does not equal",
    "greater_than": "greater than",
    "less_than": "less than",
    "greater_than_or_equals": "greater than or equal to",
    "less_than_or_equals": "less than or equal to",
    "contains": "contains",
    "not_contains": "does not contain",
    "starts_with": "starts with",
    "ends_with": "ends with",
    "in": "is one of",
    "not_in": "is not one of",
    "is_set": "is set",
    "is_not_set": "is not set",
}
COUNT_WORDS = {
    "equals": "exactly",
    "not_equals": "other than",
    "greater_than": "more than",
    "less_than": "fewer than",
    "greater_than_or_equals": "at least",
    "less_than_or_equals": "at most",
}


def describe(condition, *, segment_names: dict[int, str] | None = None) -> str:
    """`condition` (a valid one, as stored) in words; `segment_names` names the segments it uses."""
    return _describe(condition, segment_names or {}, top=True)


def _value(value) -> str:
    return json.dumps(value, ensure_ascii=False)


def _comparison(node: dict) -> str:
    op = node["op"]
    words = OPERATOR_WORDS.get(op, op)
    if "value" not in node:
        return f"{node['name']} {words}"
    value = node["value"]
    if isinstance(value, list):
        shown = "(" + ", ".join(_value(item) for item in value) + ")"
    else:
        shown = _value(value)
    return f"{node['name']} {words} {shown}"


def _times(count: int) -> str:
    return "once" if count == 1 else f"{count} times"


def _event(node: dict) -> str:
    text = f"performed {node['event_name']}"
    count = node.get("count")
    if count:
        text += f" {COUNT_WORDS.get(count['op'], count['op'])} {_times(count['value'])}"
    within = node.get("within")
    if within:
        unit = within["unit"] if within["value"] != 1 else within["unit"].rstrip("s")
        text += f" in the last {within['value']} {unit}"
    between = node.get("between")
    if between:
        text += f" between {between['from']} and {between['to']}"
    filters = node.get("where") or []
    if filters:
        text += " where " + " and ".join(_comparison(item) for item in filters)
    return text


def _describe(node, names: dict[int, str], *, top: bool = False) -> str:
    kind = node.get("type") if isinstance(node, dict) else None
    if kind == "trait":
        return _comparison(node)
    if kind == "event":
        return _event(node)
    if kind == "segment":
        name = names.get(node["segment_id"])
        return f"in segment {_value(name)}" if name is not None else f"in segment #{node['segment_id']}"
    if kind == "not":
        return f"NOT ({_describe(node['condition'], names, top=True)})"
    if kind in ("and", "or"):
        parts = [_describe(child, names) for child in node["conditions"]]
        text = f" {kind.upper()} ".join(parts)
        return text if top or len(parts) == 1 else f"({text})"
    return _value(node)
