"""Keeping segment membership equal to what the condition says, set-wise in SQL.

One computation compares a scope of customers (a whole project for a rebuild, the customers of an
ingest batch for an update) with the customers of that scope the condition matches:
- exits: one `DELETE … RETURNING` of the memberships whose customer no longer matches;
- entries: one `INSERT … SELECT … RETURNING` of the matching customers without a membership;
- history: one `INSERT … SELECT` per kind from the returned ids (an array on PostgreSQL, a JSON
  array on SQLite), so no statement or Python loop runs per customer.

Each statement works on what it reads itself, so the ids recorded are exactly the rows changed,
even while ingest keeps writing customers and events. Computations of the same segment are
serialised by a lock on its row (`select_for_update`), taken in id order to avoid deadlocks.
"""

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime

from django.db import connection, transaction
from django.db.models import Exists, OuterRef, QuerySet

from cdp.models import Customer
from timonier import clock

from .conditions import compile_sql
from .models import Membership, MembershipChange, Segment
from .signals import segment_entered, segment_exited


@dataclass
class Changes:
    """Who entered and who left one segment in one computation."""

    segment: Segment
    entered: list[int] = field(default_factory=list)
    exited: list[int] = field(default_factory=list)


def membership_rebuild(segment: Segment, *, now: datetime | None = None) -> tuple[int, int]:
    """Recompute the whole membership of `segment` at `now`; returns (entries, exits)."""
    now = now or clock.now()
    with transaction.atomic():
        segment = Segment.objects.select_for_update().get(pk=segment.pk)
        changes = _apply(segment, Customer.objects.filter(project_id=segment.project_id), now)
        Segment.objects.filter(pk=segment.pk).update(
            member_count=Membership.objects.filter(segment=segment).count(),
            last_computed_at=now,
            status=Segment.Status.READY,
        )
        _signal_on_commit([changes])
    return len(changes.entered), len(changes.exited)


def membership_update(
    project_id: int,
    customer_ids: Iterable[int],
    *,
    now: datetime | None = None,
    segment_ids: Iterable[int] | None = None,
) -> tuple[int, int]:
    """Re-check only `customer_ids` against the project's segments (or those of `segment_ids`,
    e.g. the ones `selectors.segments_affected_by` finds for a batch); returns total (entries, exits)."""
    customer_ids = list(customer_ids)
    if not customer_ids:
        return 0, 0
    now = now or clock.now()
    scope = Customer.objects.filter(project_id=project_id, pk__in=customer_ids)
    targets = Segment.objects.filter(project_id=project_id)
    if segment_ids is not None:
        targets = targets.filter(pk__in=list(segment_ids))
    with transaction.atomic():
        all_changes = []
        for segment in targets.select_for_update().order_by("pk"):
            changes = _apply(segment, scope, now)
            delta = len(changes.entered) - len(changes.exited)
            if delta:
                Segment.objects.filter(pk=segment.pk).update(member_count=segment.member_count + delta)
            all_changes.append(changes)
        _signal_on_commit(all_changes)
    return sum(len(c.entered) for c in all_changes), sum(len(c.exited) for c in all_changes)


def _apply(segment: Segment, scope: QuerySet[Customer], now: datetime) -> Changes:
    matched = scope.filter(compile_sql(segment.condition, now=now))
    members = Membership.objects.filter(segment=segment)
    changes = Changes(segment)

    # NOT IN over the matched ids (never NULL) is evaluated once, as a hashed set, instead of
    # re-running the condition per member as a correlated NOT EXISTS would.
    leaving = members.filter(customer__in=scope.values("pk")).exclude(customer__in=matched.values("pk"))
    select_sql, select_params = leaving.values("pk").query.sql_with_params()
    table = connection.ops.quote_name(Membership._meta.db_table)
    changes.exited = _returned_ids(
        f"DELETE FROM {table} WHERE id IN ({select_sql}) RETURNING customer_id",  # noqa: S608
        select_params,
    )

    joining = matched.exclude(Exists(members.filter(customer=OuterRef("pk")))).values("pk")
    select_sql, select_params = joining.query.sql_with_params()
    changes.entered = _returned_ids(
        f"INSERT INTO {table} (customer_id, segment_id, entered_at) "  # noqa: S608
        f"SELECT joining.*, %s, %s FROM ({select_sql}) AS joining RETURNING customer_id",
        [segment.pk, _timestamp(now), *select_params],
    )

    _record(segment, MembershipChange.Kind.EXITED, changes.exited, now)
    _record(segment, MembershipChange.Kind.ENTERED, changes.entered, now)
    return changes


def _returned_ids(sql: str, params) -> list[int]:
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return [row[0] for row in cursor.fetchall()]


def _record(segment: Segment, kind: str, customer_ids: list[int], at: datetime) -> None:
    """Append history rows for many customers in one statement."""
    if not customer_ids:
        return
    table = connection.ops.quote_name(MembershipChange._meta.db_table)
    if connection.vendor == "postgresql":
        ids_sql, ids_param = "SELECT unnest(%s::bigint[]) AS id", customer_ids
    else:
        ids_sql, ids_param = "SELECT value AS id FROM json_each(%s)", json.dumps(customer_ids)
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {table} (segment_id, customer_id, kind, at) "  # noqa: S608
            f"SELECT %s, ids.id, %s, %s FROM ({ids_sql}) AS ids",
            [segment.pk, kind, _timestamp(at), ids_param],
        )


def _timestamp(value: datetime):
    return connection.ops.adapt_datetimefield_value(value)


def _signal_on_commit(all_changes: list[Changes]) -> None:
    def send():
        for changes in all_changes:
            if changes.entered:
                segment_entered.send(sender=Segment, segment=changes.segment, customer_ids=changes.entered)
            if changes.exited:
                segment_exited.send(sender=Segment, segment=changes.segment, customer_ids=changes.exited)

    if any(changes.entered or changes.exited for changes in all_changes):
        transaction.on_commit(send)
