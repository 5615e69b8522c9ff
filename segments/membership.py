"""Keeping segment membership equal to what the condition says, set-wise in SQL.

One computation compares a scope of customers (a whole project for a rebuild, the customers of an
ingest batch for an update) with the customers of that scope the condition matches, read once:
- exits: one `DELETE … RETURNING` of the memberships whose customer no longer matches;
- entries: one `INSERT … SELECT … RETURNING` of the matching customers without a membership;
- history: one `INSERT … SELECT` per kind from the returned ids (an array on PostgreSQL, a JSON
  array on SQLite), so no statement or Python loop runs per customer.

Each statement works on what it reads itself, so the ids recorded are exactly the rows changed,
even while ingest keeps writing customers and events. Computations of the same segment are
serialised by a lock on its row (`select_for_update`), taken in id order to avoid deadlocks.
"""

import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime

from django.db import connection, transaction
from django.db.models import Exists, F, OuterRef, QuerySet
from django.db.models.expressions import RawSQL

from cdp.models import Customer
from timonier import clock

from .conditions import (
    change_reader,
    compile_sql,
    holds_as_events_grow,
    referenced_segments,
)
from .conditions.sql import AmongIds, bigint_array
from .models import Membership, MembershipChange, Segment
from .signals import segment_entered, segment_exited

logger = logging.getLogger(__name__)


@dataclass
class Changes:
    """Who entered and who left one segment in one computation."""

    segment: Segment
    entered: list[int] = field(default_factory=list)
    exited: list[int] = field(default_factory=list)


def membership_rebuild(
    segment: Segment, *, now: datetime | None = None, cause: str = MembershipChange.Cause.BUILD
) -> tuple[int, int]:
    """Recompute the whole membership of `segment` at `now`, then re-check the customers who
    entered or left it in the segments that use it; returns (entries, exits) of `segment`.
    `cause` is recorded on every change (a first build, a window refresh, a reconcile)."""
    now = now or clock.now()
    with transaction.atomic():
        segment = Segment.objects.select_for_update().get(pk=segment.pk)
        changes = _apply(segment, Customer.objects.filter(project_id=segment.project_id), now, cause)
        Segment.objects.filter(pk=segment.pk).update(
            member_count=Membership.objects.filter(segment=segment).count(),
            last_computed_at=now,
            status=Segment.Status.READY,
            build_error="",
        )
        _signal_on_commit([changes])
    moved = changes.entered + changes.exited
    dependents = segments_depending_on(segment.project_id, {segment.pk})
    if moved and dependents:
        _update(segment.project_id, {pk: moved for pk in dependents}, now, cause=cause)
    return len(changes.entered), len(changes.exited)


def membership_update(
    project_id: int,
    customer_ids: Iterable[int],
    *,
    now: datetime | None = None,
    segment_ids: Iterable[int] | None = None,
    cause: str = MembershipChange.Cause.INGEST,
) -> tuple[int, int]:
    """Re-check only `customer_ids` against the project's segments (or those of `segment_ids`
    and the segments using them); returns total (entries, exits)."""
    customer_ids = list(customer_ids)
    if not customer_ids:
        return 0, 0
    targets = Segment.objects.filter(project_id=project_id)
    if segment_ids is not None:
        targets = targets.filter(pk__in=list(segment_ids))
    return _update(project_id, {pk: customer_ids for pk in targets.values_list("pk", flat=True)}, now, cause=cause)


def membership_apply_changes(
    project_id: int,
    changes: dict[int, tuple[set, set]],
    recheck_all: set[int] = frozenset(),
    *,
    now: datetime | None = None,
) -> tuple[int, int]:
    """Bring membership up to date after an ingest batch: each segment re-checks only the
    customers whose changed traits or tracked events it reads (all segments for `recheck_all`).
    A segment that holds as events grow skips its members whose only change is new events."""
    scopes: dict[int, list[int]] = {}
    if_not_member: dict[int, set[int]] = {}
    for pk, condition in Segment.objects.filter(project_id=project_id).values_list("pk", "condition"):
        reads = change_reader(condition)
        grows = holds_as_events_grow(condition)
        scope, events_only = [], set()
        for customer_id, (traits, tracked) in changes.items():
            if customer_id in recheck_all or reads(traits, ()):
                scope.append(customer_id)
            elif reads((), tracked):
                scope.append(customer_id)
                if grows:
                    events_only.add(customer_id)
        scope.extend(recheck_all.difference(changes))
        if scope:
            scopes[pk] = scope
            if events_only:
                if_not_member[pk] = events_only
    if not scopes:
        return 0, 0
    return _update(project_id, scopes, now, cause=MembershipChange.Cause.INGEST, if_not_member=if_not_member)


def memberships_end(
    project_id: int, customer_ids: list[int], *, erased: Iterable[int] = (), now: datetime | None = None
) -> int:
    """End every membership of customers about to be deleted (merged into another, or erased:
    those of `erased`), with history and `segment_exited`; runs inside the caller's transaction.
    Returns the exits."""
    erased = set(erased)
    now = now or clock.now()
    ids_sql, ids_param = _ids_select(customer_ids)
    segment_ids = list(
        Segment.objects.filter(project_id=project_id, memberships__customer_id__in=_ids_in(customer_ids))
        .values_list("pk", flat=True)
        .distinct()
    )
    if not segment_ids:
        return 0
    table = connection.ops.quote_name(Membership._meta.db_table)
    all_changes = []
    # Locked in id order, like every computation, before any membership row is touched.
    for segment in Segment.objects.filter(pk__in=segment_ids).select_for_update().order_by("pk"):
        changes = Changes(segment)
        changes.exited = _returned_ids(
            f"DELETE FROM {table} WHERE segment_id = %s AND customer_id IN ({ids_sql}) RETURNING customer_id",  # noqa: S608
            [segment.pk, ids_param],
        )
        gone = [pk for pk in changes.exited if pk in erased]
        merged = [pk for pk in changes.exited if pk not in erased]
        _record(segment, MembershipChange.Kind.EXITED, merged, now, MembershipChange.Cause.MERGE)
        _record(segment, MembershipChange.Kind.EXITED, gone, now, MembershipChange.Cause.ERASURE)
        if changes.exited:
            Segment.objects.filter(pk=segment.pk).update(member_count=F("member_count") - len(changes.exited))
        all_changes.append(changes)
    _signal_on_commit(all_changes)
    return sum(len(changes.exited) for changes in all_changes)


def segments_depending_on(project_id: int, segment_ids: set[int]) -> set[int]:
    """Every segment whose condition reads one of `segment_ids`, directly or through others."""
    readers: dict[int, set[int]] = {}
    for pk, condition in Segment.objects.filter(project_id=project_id).values_list("pk", "condition"):
        for used in referenced_segments(condition):
            readers.setdefault(used, set()).add(pk)
    found: set[int] = set()
    pending = list(segment_ids)
    while pending:
        for reader in readers.get(pending.pop(), ()):
            if reader not in found:
                found.add(reader)
                pending.append(reader)
    return found - set(segment_ids)


def dependency_order(segments: list[Segment]) -> list[Segment]:
    """`segments` with every segment after the segments it reads (services refuse cycles)."""
    by_pk = {segment.pk: segment for segment in segments}
    ordered: list[Segment] = []
    placed: set[int] = set()

    def place(segment: Segment, path: frozenset) -> None:
        if segment.pk in placed or segment.pk in path:
            return
        for used in sorted(referenced_segments(segment.condition)):
            if used in by_pk:
                place(by_pk[used], path | {segment.pk})
        placed.add(segment.pk)
        ordered.append(segment)

    for segment in sorted(segments, key=lambda s: (s.project_id, s.pk)):
        place(segment, frozenset())
    return ordered


def _update(
    project_id: int,
    scopes: dict[int, list[int]],
    now: datetime | None,
    *,
    cause: str,
    if_not_member: dict[int, set[int]] | None = None,
) -> tuple[int, int]:
    """Re-check, for each segment id of `scopes`, its customers; a segment reading another is
    computed after it and also re-checks the customers that entered or left it. The customers
    of `if_not_member[segment id]` are re-checked only if they are not members (read under the
    segment's lock, so a concurrent rebuild's exits are seen)."""
    now = now or clock.now()
    if_not_member = if_not_member or {}
    scopes = {pk: set(ids) for pk, ids in scopes.items()}
    for dependent in segments_depending_on(project_id, set(scopes)):
        scopes.setdefault(dependent, set())
    with transaction.atomic():
        # Locks are taken in id order (no deadlock with another computation); the work is then
        # done in dependency order.
        locked = list(
            Segment.objects.filter(project_id=project_id, pk__in=list(scopes))
            .exclude(status=Segment.Status.FAILED)  # left out of live updates until its condition changes
            .select_for_update()
            .order_by("pk")
        )
        all_changes: dict[int, Changes] = {}
        for segment in dependency_order(locked):
            candidates = if_not_member.get(segment.pk)
            if candidates:
                scopes[segment.pk] -= _members_among(segment, candidates)
            for used in referenced_segments(segment.condition):
                if used in all_changes:
                    scopes[segment.pk].update(all_changes[used].entered, all_changes[used].exited)
            if not scopes[segment.pk]:
                continue
            ids = sorted(scopes[segment.pk])
            scope = Customer.objects.filter(AmongIds(F("pk"), ids), project_id=project_id)
            changes = _apply(segment, scope, now, cause, customer_ids=ids)
            delta = len(changes.entered) - len(changes.exited)
            if delta:
                Segment.objects.filter(pk=segment.pk).update(member_count=F("member_count") + delta)
            all_changes[segment.pk] = changes
        _signal_on_commit(list(all_changes.values()))
    return sum(len(c.entered) for c in all_changes.values()), sum(len(c.exited) for c in all_changes.values())


def _members_among(segment: Segment, customer_ids: set[int]) -> set[int]:
    ids = sorted(customer_ids)
    return set(
        Membership.objects.filter(AmongIds(F("customer_id"), ids), segment=segment).values_list(
            "customer_id", flat=True
        )
    )


def _ids_select(ids: list[int]) -> tuple[str, object]:
    """A subquery of the ids with one parameter: an array on PostgreSQL, a JSON array on SQLite."""
    if connection.vendor == "postgresql":
        return "SELECT unnest(%s::bigint[]) AS id", bigint_array(ids)
    return "SELECT value AS id FROM json_each(%s)", json.dumps(list(ids))


def _ids_in(ids: list[int]) -> RawSQL:
    """`_ids_select` as the right-hand side of an `__in` lookup."""
    sql, param = _ids_select(ids)
    return RawSQL(sql, [param])  # noqa: S611 (the text is fixed; the ids are a parameter)


def _apply(
    segment: Segment, scope: QuerySet[Customer], now: datetime, cause: str, customer_ids: list[int] | None = None
) -> Changes:
    """`customer_ids`: the ids of `scope` when it is a few customers (see `compile_sql`)."""
    condition = compile_sql(segment.condition, now=now, project_id=segment.project_id, customer_ids=customer_ids)
    # The condition is evaluated once, by a plain SELECT: PostgreSQL may run it in parallel, which
    # it never does for the SELECT inside an INSERT or DELETE (a whole-project event count: 2 s
    # instead of 4 s, twice). Both writes then compare the members with these ids.
    matched_ids = list(scope.filter(condition).values_list("pk", flat=True))
    members = Membership.objects.filter(segment=segment)
    changes = Changes(segment)

    # NOT IN over the matched ids (never NULL) is evaluated once, as a hashed set, instead of
    # re-running the condition per member as a correlated NOT EXISTS would.
    # For a few customers, their memberships are found by the (segment, customer) index rather
    # than by reading every membership of the segment and joining it with the scope.
    if customer_ids is not None:
        in_scope = members.filter(AmongIds(F("customer_id"), customer_ids))
    else:
        in_scope = members.filter(customer__in=scope.values("pk"))
    leaving = in_scope.exclude(customer__in=_ids_in(matched_ids))
    select_sql, select_params = leaving.values("pk").query.sql_with_params()
    table = connection.ops.quote_name(Membership._meta.db_table)
    changes.exited = _returned_ids(
        f"DELETE FROM {table} WHERE id IN ({select_sql}) RETURNING customer_id",  # noqa: S608
        select_params,
    )

    # Read through `scope` again: a customer merged or erased since the SELECT is not inserted.
    matched = scope.filter(pk__in=_ids_in(matched_ids))
    joining = matched.exclude(Exists(members.filter(customer=OuterRef("pk")))).values("pk")
    select_sql, select_params = joining.query.sql_with_params()
    changes.entered = _returned_ids(
        f"INSERT INTO {table} (customer_id, segment_id, entered_at) "  # noqa: S608
        f"SELECT joining.*, %s, %s FROM ({select_sql}) AS joining RETURNING customer_id",
        [segment.pk, _timestamp(now), *select_params],
    )

    _record(segment, MembershipChange.Kind.EXITED, changes.exited, now, cause)
    _record(segment, MembershipChange.Kind.ENTERED, changes.entered, now, cause)
    return changes


def _returned_ids(sql: str, params) -> list[int]:
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return [row[0] for row in cursor.fetchall()]


def _record(segment: Segment, kind: str, customer_ids: list[int], at: datetime, cause: str) -> None:
    """Append history rows for many customers in one statement."""
    if not customer_ids:
        return
    table = connection.ops.quote_name(MembershipChange._meta.db_table)
    ids_sql, ids_param = _ids_select(customer_ids)
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {table} (segment_id, customer_id, kind, cause, at) "  # noqa: S608
            f"SELECT %s, ids.id, %s, %s, %s FROM ({ids_sql}) AS ids",
            [segment.pk, kind, cause, _timestamp(at), ids_param],
        )


def _timestamp(value: datetime):
    return connection.ops.adapt_datetimefield_value(value)


def _signal_on_commit(all_changes: list[Changes]) -> None:
    """After the commit, each receiver isolated: one that raises is logged, and is never read as a
    failed membership computation (which is stored by then)."""

    def send():
        for changes in all_changes:
            for signal, ids in ((segment_entered, changes.entered), (segment_exited, changes.exited)):
                if not ids:
                    continue
                for receiver, result in signal.send_robust(sender=Segment, segment=changes.segment, customer_ids=ids):
                    if isinstance(result, Exception):
                        logger.error(
                            "segment %s: receiver %s failed",
                            changes.segment.pk,
                            getattr(receiver, "__qualname__", receiver),
                            exc_info=result,
                        )

    if any(changes.entered or changes.exited for changes in all_changes):
        transaction.on_commit(send)
