"""Triggers and frequencies of workflows in words, for the pages (as segments/describe.py does for conditions)."""

import json

from segments.describe import describe as describe_condition


def _value(value) -> str:
    return json.dumps(value, ensure_ascii=False)


def trigger_text(trigger, *, segment_names: dict[int, str] | None = None) -> str:
    """`When purchase occurs (where amount greater than 10)`, `When a customer enters Pro Users`, …"""
    names = segment_names or {}
    if not isinstance(trigger, dict):
        return "No trigger"
    kind = trigger.get("type")
    if kind == "event":
        text = f"When {trigger.get('event_name') or '?'} occurs"
        where = trigger.get("where") or []
        if where:
            condition = {"type": "event", "event_name": trigger.get("event_name") or "?", "where": where}
            described = describe_condition(condition, segment_names=names)
            _, _, filters = described.partition(" where ")
            if filters:
                text += f" where {filters}"
        return text
    if kind in ("segment_entered", "segment_exited"):
        segment = names.get(trigger.get("segment_id"), f"segment #{trigger.get('segment_id')}")
        verb = "enters" if kind == "segment_entered" else "leaves"
        text = f"When a customer {verb} {segment}"
        if trigger.get("include_existing"):
            text += " (and the customers already in it at activation)"
        return text
    if kind == "attribute_changed":
        text = f"When the trait {trigger.get('trait') or '?'} changes"
        if "from" in trigger:
            text += f" from {_value(trigger['from'])}"
        if "to" in trigger:
            text += f" to {_value(trigger['to'])}"
        return text
    if kind == "api":
        return "When an API call enrols a customer"
    return f"Unknown trigger {kind!r}"


def frequency_text(definition) -> str:
    frequency = definition.get("frequency") if isinstance(definition, dict) else None
    kind = frequency.get("type") if isinstance(frequency, dict) else None
    if kind == "once":
        text = "Once per customer"
    elif kind == "every_time":
        text = "Every time"
    elif kind == "once_per_period":
        days = frequency.get("days")
        text = f"At most once every {days} day{'' if days == 1 else 's'}"
    else:
        text = "No frequency"
    if isinstance(definition, dict) and definition.get("allow_concurrent_runs"):
        text += ", concurrent runs allowed"
    return text
