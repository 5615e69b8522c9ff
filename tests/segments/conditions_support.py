"""Storing customers and events for the condition tests, and asking both evaluators about them."""

import itertools
from datetime import UTC, datetime

from cdp.models import Customer, Event
from segments.conditions import compile_sql, matches

NOW = datetime(2026, 3, 15, 12, 0, 0, tzinfo=UTC)
_message_ids = itertools.count()


def store_customer(project, traits: dict, events: list[dict] = ()) -> Customer:
    customer = Customer.objects.create(project=project, traits=traits, first_seen_at=NOW, last_seen_at=NOW)
    Event.objects.bulk_create(
        Event(
            project=project,
            customer=customer,
            type=event.get("type", "track"),
            name=event["name"],
            properties=event.get("properties", {}),
            timestamp=event["timestamp"],
            received_at=event["timestamp"],
            message_id=f"m{next(_message_ids)}",
        )
        for event in events
    )
    return customer


def as_event(event: dict) -> dict:
    return {"type": "track", "properties": {}, **event}


def matched_ids(project, condition: dict, *, now=NOW) -> set[int]:
    return set(
        Customer.objects.filter(project=project).filter(compile_sql(condition, now=now)).values_list("id", flat=True)
    )


def both_answers(project, condition: dict, traits: dict, events: list[dict] = (), *, now=NOW) -> tuple[bool, bool]:
    """(Python's answer, SQL's answer) for one stored customer."""
    customer = store_customer(project, traits, events)
    in_python = matches(condition, traits=traits, events=[as_event(e) for e in events], now=now)
    return in_python, customer.id in matched_ids(project, condition, now=now)
