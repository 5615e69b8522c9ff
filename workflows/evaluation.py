"""Conditions (the segments' language) evaluated for one customer, and the schedule of waits."""

import hashlib
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cdp.models import Customer
from segments.conditions import compile_sql, matches, referenced_events, referenced_segments

from .definition import DAYS, duration_seconds


def holds(condition: dict, *, customer: Customer, now: datetime) -> bool:
    """Whether `customer` matches `condition` at `now`: in Python from the traits when the condition
    reads nothing else, else with the segments' SQL over this one customer (events, memberships)."""
    if not referenced_events(condition) and not referenced_segments(condition):
        return matches(condition, traits=customer.traits or {}, events=[], now=now)
    query = compile_sql(condition, now=now, project_id=customer.project_id, customer_ids=[customer.pk])
    return Customer.objects.filter(pk=customer.pk, project_id=customer.project_id).filter(query).exists()


def cohort_of(step: dict, *, workflow_id: int, customer_id: int) -> str:
    """The cohort key of a Random Cohort step for a customer: the same every time for this customer
    and workflow (a hash, not a draw), spread by the weights."""
    digest = hashlib.sha256(f"{workflow_id}:{step['id']}:{customer_id}".encode()).digest()
    bucket = int.from_bytes(digest[:8], "big") % 100
    total = 0
    for cohort in step["cohorts"]:
        total += cohort["weight"]
        if bucket < total:
            return cohort["key"]
    return step["cohorts"][-1]["key"]


def customer_zone(customer: Customer, project_zone: str) -> ZoneInfo:
    """The customer's `timezone` trait when it names a zone, else the project's, else UTC."""
    for name in ((customer.traits or {}).get("timezone"), project_zone, "UTC"):
        if isinstance(name, str) and name:
            try:
                return ZoneInfo(name)
            except (ZoneInfoNotFoundError, ValueError):
                continue
    return ZoneInfo("UTC")


def delay_until(step: dict, *, now: datetime, zone: ZoneInfo) -> datetime:
    """When a Delay step entered at `now` is over."""
    if "duration" in step:
        return now + timedelta(seconds=duration_seconds(step["duration"]))
    hour, minute = (int(part) for part in step["until"]["time"].split(":"))
    days = {DAYS.index(day) for day in step["until"].get("days", DAYS)}
    local = now.astimezone(zone)
    for ahead in range(8):
        day = (local + timedelta(days=ahead)).date()
        if day.weekday() not in days:
            continue
        # Wall time in the zone (a time that does not exist on a DST change is taken as after it).
        candidate = datetime(day.year, day.month, day.day, hour, minute, tzinfo=zone)
        if candidate > local:
            return candidate.astimezone(now.tzinfo)
    raise AssertionError("a week always has one of the step's days")  # validation requires a day
