"""Keeping segment membership equal to what the condition says, set-wise in SQL.

One computation compares a scope of customers (a whole project for a rebuild, the customers of an
ingest batch for an update) with the customers of that scope the condition matches, read once:
- exits: one `DELETE … RETURNING` of the memberships whose customer no longer matches;
- entries: one `INSERT … SELECT … RETURNING` of the matching customers without a membership;
- history: one `INSERT … SELECT` per kind from the returned ids (an array on PostgreSQL, a JSON
  array on SQLite), so no statement or Python loop runs per customer.

Each statement works on what it reads itself, so the ids recorded are exactly the rows changed,
even while ingest keeps writing customers and events.

Who may compute at the same time (PostgreSQL; on SQLite a transaction holds the database's write
lock, so computations never overlap):
- A live update (an ingest batch's customers, a merge or an erasure ending memberships) holds each
  segment's advisory lock in shared mode, so the batches of a project's partitions update one
  segment at once; a rebuild (first build, window refresh, reconcile) holds it exclusively, so it
  never interleaves with a live update of the same segment. A live update also locks its
  customers' rows (FOR NO KEY UPDATE, in id order, before the segment locks), so two live updates
  of one customer (a person whose calls span two partitions, or two batches of one partition
  whose updates overlap) take turns, each reading what the other stored: with that, the
  memberships two updates touch at once are disjoint rows.
- Member counts: a live update appends its change of members (a `MemberCountDelta` row) and, once
  committed, adds the committed rows to `member_count` in a statement of its own (`fold_counts`):
  no update waits for another's lock on the segment's row, and the count shown is that of the
  committed memberships a moment after each commit (a worker killed in between leaves its rows
  to the next update of the segment or to the window refresh). An update run inside a caller's
  transaction adds to the count directly, as a rebuild sets it.
- `MembershipChange` ids are drawn when a change is written, so with concurrent writers a lower id
  can commit after a higher one. A reader following a segment's changes by id (workflows' segment
  triggers) reads only up to `changes_committed_through`, which waits for the writers in flight.
"""

import json
import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime

from django.db import connection, transaction
from django.db.models import BooleanField, Case, Exists, ExpressionWrapper, F, OuterRef, QuerySet, Value, When
from django.db.models.expressions import RawSQL

from cdp.models import Customer, Event
from timonier import clock
from timonier.sql import AmongIds, bigint_array

from .conditions import (
    change_reader,
    compile_sql,
    holds_as_events_grow,
    referenced_segments,
)
from .models import MemberCountDelta, Membership, MembershipChange, Segment
from .signals import segment_entered, segment_exited, segments_changed

logger = logging.getLogger(__name__)

# pg advisory locks (namespace, segment id): held shared by live updates, exclusively by rebuilds
# and by `changes_committed_through` (cdp uses 7_301_000 + partition, workflows 7_302).
LOCK_NAMESPACE = 7_303


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
        _hold_segments([segment.pk], exclusive=True)
        segment = Segment.objects.select_for_update().get(pk=segment.pk)
        changes = _apply(segment, Customer.objects.filter(project_id=segment.project_id), now, cause)
        # Counted whole below: the deltas of live updates (all committed, under the exclusive lock) are in it.
        if connection.vendor == "postgresql":
            MemberCountDelta.objects.filter(segment=segment).delete()
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
    conditions = dict(Segment.objects.filter(project_id=project_id).values_list("pk", "condition"))
    for pk, condition in conditions.items():
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
    return _update(
        project_id, scopes, now, cause=MembershipChange.Cause.INGEST, if_not_member=if_not_member, conditions=conditions
    )


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
    # A live update (the batch holds these customers' rows): shared, before any membership row is touched.
    _hold_segments(segment_ids, exclusive=False)
    for segment in Segment.objects.filter(pk__in=segment_ids).order_by("pk"):
        changes = Changes(segment)
        changes.exited = _returned_ids(
            f"DELETE FROM {table} WHERE segment_id = %s AND customer_id IN ({ids_sql}) RETURNING customer_id",  # noqa: S608
            [segment.pk, ids_param],
        )
        gone = [pk for pk in changes.exited if pk in erased]
        merged = [pk for pk in changes.exited if pk not in erased]
        _record(segment, MembershipChange.Kind.EXITED, merged, now, MembershipChange.Cause.MERGE)
        _record(segment, MembershipChange.Kind.EXITED, gone, now, MembershipChange.Cause.ERASURE)
        all_changes.append(changes)
    # Inside the batch's transaction, whose commit can take a while: the segments' rows are not
    # locked until then, the counts are added to after it.
    if _add_to_counts({c.segment.pk: -len(c.exited) for c in all_changes}, enclosed=False):
        transaction.on_commit(lambda: fold_counts(segment_ids), robust=True)
    _signal_on_commit(all_changes)
    return sum(len(changes.exited) for changes in all_changes)


def segments_depending_on(
    project_id: int, segment_ids: set[int], conditions: dict[int, dict] | None = None
) -> set[int]:
    """Every segment whose condition reads one of `segment_ids`, directly or through others
    (`conditions`: the project's segments' conditions by id, when the caller has them)."""
    if conditions is None:
        conditions = dict(Segment.objects.filter(project_id=project_id).values_list("pk", "condition"))
    readers: dict[int, set[int]] = {}
    for pk, condition in conditions.items():
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
    conditions: dict[int, dict] | None = None,
) -> tuple[int, int]:
    """Re-check, for each segment id of `scopes`, its customers; a segment reading another is
    computed after it and also re-checks the customers that entered or left it. The customers
    of `if_not_member[segment id]` are re-checked only if they are not members (read under the
    segment's lock, so a concurrent rebuild's exits are seen). `conditions`: every segment of
    the project by id, when the caller has read them already.

    However many segments a batch touches, the work is a fixed number of statements (per level of
    segments reading segments, usually one): one read of their memberships among the customers,
    one SELECT answering every condition for them (`_evaluate`), then one DELETE, one INSERT and
    one history INSERT for all the segments' changes together, and one UPDATE of the counts. Under
    the segments' locks no other computation changes their memberships, so the members read first
    and the conditions' answers give exactly the rows to write."""
    now = now or clock.now()
    if_not_member = if_not_member or {}
    enclosed = connection.in_atomic_block  # inside a caller's transaction (see `_add_to_counts`)
    scopes = {pk: set(ids) for pk, ids in scopes.items()}
    for dependent in segments_depending_on(project_id, set(scopes), conditions):
        scopes.setdefault(dependent, set())
    with transaction.atomic():
        # The customers' rows and the segments' shared locks (see the module's docstring), then
        # the work in dependency order, level by level; the members are read after the locks.
        locked = _lock_and_read_segments(project_id, list(scopes), set().union(*scopes.values()))
        all_changes: dict[int, Changes] = {}
        for level in _levels(locked):
            # The customers who entered or left a segment read are re-checked whatever else.
            moved = {
                segment.pk: {
                    customer_id
                    for used in referenced_segments(segment.condition)
                    if used in all_changes
                    for customer_id in (*all_changes[used].entered, *all_changes[used].exited)
                }
                for segment in level
            }
            level = [segment for segment in level if scopes[segment.pk] or moved[segment.pk]]
            if not level:
                continue
            members = _members_of(level, set().union(*(scopes[s.pk] | moved[s.pk] for s in level)))
            for segment in level:
                candidates = if_not_member.get(segment.pk)
                if candidates:
                    scopes[segment.pk] -= members[segment.pk] & candidates
                scopes[segment.pk] |= moved[segment.pk]
            level = [segment for segment in level if scopes[segment.pk]]
            if not level:
                continue
            matched = _evaluate(project_id, level, scopes, now)
            changes = {}
            for segment in level:
                scope, were = scopes[segment.pk], members[segment.pk]
                changes[segment.pk] = Changes(
                    segment,
                    entered=sorted(matched[segment.pk] - were),
                    exited=sorted((were & scope) - matched[segment.pk]),
                )
            _write(changes.values(), now, cause)
            all_changes.update(changes)
        to_fold = _add_to_counts(
            {pk: len(c.entered) - len(c.exited) for pk, c in all_changes.items()}, enclosed=enclosed
        )
        _signal_on_commit(list(all_changes.values()))
    if to_fold:
        fold_counts(to_fold)
    return sum(len(c.entered) for c in all_changes.values()), sum(len(c.exited) for c in all_changes.values())


def _levels(segments: list[Segment]) -> list[list[Segment]]:
    """`segments` in groups computed one after the other: each segment in a later group than the
    segments of the list it reads (whose new memberships its condition must see)."""
    depth: dict[int, int] = {}
    for segment in dependency_order(segments):
        used = [depth[pk] for pk in referenced_segments(segment.condition) if pk in depth]
        depth[segment.pk] = 1 + max(used) if used else 0
    levels: list[list[Segment]] = [[] for _ in range(1 + max(depth.values(), default=-1))]
    for segment in segments:
        levels[depth[segment.pk]].append(segment)
    return levels


def _members_of(segments: list[Segment], customer_ids: set[int]) -> dict[int, set[int]]:
    """The members among `customer_ids` of each segment, in one query."""
    members: dict[int, set[int]] = {segment.pk: set() for segment in segments}
    rows = Membership.objects.filter(
        AmongIds(F("segment_id"), list(members)), AmongIds(F("customer_id"), sorted(customer_ids))
    ).values_list("segment_id", "customer_id")
    for segment_id, customer_id in rows:
        members[segment_id].add(customer_id)
    return members


def _evaluate(project_id: int, segments: list[Segment], scopes: dict[int, set[int]], now: datetime) -> dict:
    """Which customers of its scope each segment's condition matches, for all the segments in one
    SELECT over the customers of all the scopes: a boolean column per segment, computed only for
    the customers of its scope (a CASE, which PostgreSQL and SQLite evaluate lazily). Event counts
    read the events of these customers only, each count once for all of them; on PostgreSQL these
    events are read once for all the conditions (`_reading_events_once`)."""
    everyone = sorted(set().union(*(scopes[segment.pk] for segment in segments)))
    columns = {}
    for segment in segments:
        condition = compile_sql(segment.condition, now=now, project_id=project_id, customer_ids=everyone)
        answer = ExpressionWrapper(condition, output_field=BooleanField())
        if len(scopes[segment.pk]) < len(everyone):
            answer = Case(When(AmongIds(F("pk"), sorted(scopes[segment.pk])), then=answer), default=Value(False))
        columns[f"segment_{segment.pk}"] = answer
    matched: dict[int, set[int]] = {segment.pk: set() for segment in segments}
    rows = Customer.objects.filter(AmongIds(F("pk"), everyone), project_id=project_id).annotate(**columns)
    for customer_id, *answers in _reading_events_once(rows.values_list("pk", *columns), project_id, everyone):
        for segment, answer in zip(segments, answers, strict=True):
            if answer:
                matched[segment.pk].add(customer_id)
    return matched


def _reading_events_once(query: QuerySet, project_id: int, customer_ids: list[int]):
    """The rows of `query`, its event subqueries reading the events of `customer_ids` from one
    materialized CTE instead of the events table (PostgreSQL).

    Each event condition is a subquery of its own, and for a batch's customers (a tenth of a
    project's, say) the planner scans the events table once per condition: 14 scans of every
    event of the project per batch for the bench's 20 segments, growing with the table. Read once
    through the (project, customer) index, the batch's events are then scanned per condition.
    Every subquery still applies all of its filters, so the answers are the same rows'."""
    if connection.vendor != "postgresql":
        return query
    sql, params = query.query.sql_with_params()
    events = connection.ops.quote_name(Event._meta.db_table)
    # Django writes a subquery's tables with a relabelled alias (U0, V1, …).
    sql, uses = re.subn(rf"FROM {re.escape(events)} ([A-Z]\d+)\b", r"FROM segments_batch_events \1", sql)
    if not uses:
        return query
    with connection.cursor() as cursor:
        cursor.execute(
            f"WITH segments_batch_events AS MATERIALIZED (SELECT * FROM {events} "  # noqa: S608
            f"WHERE project_id = %s AND customer_id = ANY(%s::bigint[])) {sql}",
            [project_id, bigint_array(customer_ids), *params],
        )
        return cursor.fetchall()


def _write(all_changes: Iterable[Changes], now: datetime, cause: str) -> None:
    """The changes of several segments as one DELETE, one INSERT and one history INSERT (the
    counts are the caller's, `_add_to_counts`). An entry whose customer was deleted (merged,
    erased) since the evaluation is not inserted, nor recorded."""
    all_changes = list(all_changes)
    table = connection.ops.quote_name(Membership._meta.db_table)
    exits = [(changes.segment.pk, customer_id) for changes in all_changes for customer_id in changes.exited]
    entries = [(changes.segment.pk, customer_id) for changes in all_changes for customer_id in changes.entered]
    by_segment = {changes.segment.pk: changes for changes in all_changes}
    if exits:
        pairs_sql, pairs_params = _pairs_select(exits)
        removed = _returned_rows(
            f"DELETE FROM {table} WHERE (segment_id, customer_id) IN ({pairs_sql}) "  # noqa: S608
            f"RETURNING segment_id, customer_id",
            pairs_params,
        )
        _keep_only(by_segment, removed, "exited")
    if entries:
        pairs_sql, pairs_params = _pairs_select(entries)
        customers = connection.ops.quote_name(Customer._meta.db_table)
        inserted = _returned_rows(
            f"INSERT INTO {table} (segment_id, customer_id, entered_at) "  # noqa: S608
            f"SELECT pairs.a, pairs.b, %s FROM ({pairs_sql}) AS pairs JOIN {customers} c ON c.id = pairs.b "
            f"RETURNING segment_id, customer_id",
            [_timestamp(now), *pairs_params],
        )
        _keep_only(by_segment, inserted, "entered")
    _record_many(all_changes, now, cause)


def changes_committed_through(segment_id: int) -> int | None:
    """A `MembershipChange` id such that every change of the segment up to it has committed (or
    rolled back) and none can still appear: read the changes with ids up to it, in a statement
    after this call, and none is skipped. None: no bound is needed (SQLite, one writer at a time).

    Ids are drawn as changes are written, so with live updates running concurrently a lower id
    may commit after a higher one, and a reader going by id alone would step over it. Taking the
    segment's lock exclusively waits for the updates in flight (they hold it shared from before
    their first write); the id sequence's last value, read under it, bounds every id they drew;
    updates that start later draw higher ids. The lock is released in the same statement, so the
    reader holds up no update for longer than that wait."""
    if connection.vendor != "postgresql":
        return None
    with connection.cursor() as cursor:
        # Evaluated left to right: the lock, then the sequence, then the release.
        cursor.execute(
            "SELECT pg_advisory_lock(%s, %s), pg_sequence_last_value(pg_get_serial_sequence(%s, 'id')), "
            "pg_advisory_unlock(%s, %s)",
            [LOCK_NAMESPACE, segment_id, MembershipChange._meta.db_table, LOCK_NAMESPACE, segment_id],
        )
        return cursor.fetchone()[1] or 0


def _hold_segments(segment_ids: Iterable[int], *, exclusive: bool) -> None:
    """Hold the segments' advisory locks until the transaction ends (see the module's docstring);
    in id order: exclusive holders then never deadlock with each other."""
    segment_ids = sorted(set(segment_ids))
    if connection.vendor != "postgresql" or not segment_ids:
        return
    function = "pg_advisory_xact_lock" if exclusive else "pg_advisory_xact_lock_shared"
    with connection.cursor() as cursor:
        # A volatile function in the target list runs after the ORDER BY, row by row.
        cursor.execute(
            f"SELECT {function}(%s, id::int) FROM (SELECT unnest(%s::bigint[]) AS id ORDER BY 1) AS ids",  # noqa: S608
            [LOCK_NAMESPACE, bigint_array(segment_ids)],
        )


def _lock_and_read_segments(project_id: int, segment_ids: list[int], customer_ids: set[int]) -> list[Segment]:
    """For a live update, in one statement: lock the customers' rows in id order until the
    transaction ends (FOR NO KEY UPDATE, as an ingest batch does), so the live updates of one
    customer take turns, each reading what the other stored, and a batch changing or deleting the
    customer waits for the update reading it (or the update finds it gone); then hold the
    segments' locks shared; and read the segments, in id order. Failed segments are left out of
    live updates until their condition changes.

    And JIT compilation off for the rest of the transaction: the planner's estimates for a batch's
    customers (thousands of ids, a subquery per event condition) pass jit_above_cost, and
    compiling the 200-odd functions of 20 segments' SELECT took 1-2 s of a statement that runs
    in milliseconds (auto_explain under the bench's load); rebuilds, over a whole project, keep it."""
    segments = Segment.objects.filter(project_id=project_id, pk__in=segment_ids).exclude(status=Segment.Status.FAILED)
    if connection.vendor != "postgresql":
        return list(segments.order_by("pk"))
    table = connection.ops.quote_name(Segment._meta.db_table)
    customers = connection.ops.quote_name(Customer._meta.db_table)
    # The one-row `locks` is computed before any segment is returned, its columns left to right.
    return list(
        Segment.objects.raw(
            f"SELECT s.* FROM {table} s, (SELECT "  # noqa: S608
            f"(SELECT count(*) FROM (SELECT id FROM {customers} WHERE id = ANY(%s::bigint[]) "
            f"ORDER BY id FOR NO KEY UPDATE) AS c) AS customers, "
            f"(SELECT count(*) FROM (SELECT pg_advisory_xact_lock_shared(%s, id::int) "
            f"FROM (SELECT unnest(%s::bigint[]) AS id ORDER BY 1) AS ids) AS l) AS segments, "
            f"set_config('jit', 'off', true) AS jit) AS locks "
            f"WHERE s.project_id = %s AND s.id = ANY(%s::bigint[]) AND s.status <> %s "
            f"AND locks.customers >= 0 AND locks.segments >= 0 AND locks.jit IS NOT NULL ORDER BY s.id",
            [
                bigint_array(sorted(customer_ids)),
                LOCK_NAMESPACE,
                bigint_array(sorted(segment_ids)),
                project_id,
                bigint_array(sorted(segment_ids)),
                Segment.Status.FAILED,
            ],
        )
    )


def _add_to_counts(deltas: dict[int, int], *, enclosed: bool) -> list[int]:
    """Count each segment's change of members; returns the segments whose deltas are to be folded
    (`fold_counts`) once the transaction has committed.

    On PostgreSQL, outside a caller's transaction: one `MemberCountDelta` row per segment, which
    locks nothing another update needs. Otherwise added to `member_count` directly: on SQLite one
    transaction writes at a time; inside a caller's transaction (a test, a script) the caller
    chose to hold its locks, and its reads then see the count it changed. The rows are locked in
    id order, so two transactions adding to the same segments never deadlock.
    """
    deltas = {pk: delta for pk, delta in deltas.items() if delta}
    if not deltas:
        return []
    pks = sorted(deltas)
    if connection.vendor != "postgresql":
        Segment.objects.filter(pk__in=pks).update(
            member_count=F("member_count")
            + Case(*(When(pk=pk, then=Value(delta)) for pk, delta in deltas.items()), default=Value(0))
        )
        return []
    table = connection.ops.quote_name(Segment._meta.db_table)
    with connection.cursor() as cursor:
        if not enclosed:
            cursor.execute(
                f"INSERT INTO {connection.ops.quote_name(MemberCountDelta._meta.db_table)} (segment_id, delta) "  # noqa: S608
                f"SELECT * FROM unnest(%s::bigint[], %s::bigint[])",
                [bigint_array(pks), bigint_array([deltas[pk] for pk in pks])],
            )
            return pks
        cursor.execute(
            f"WITH d AS (SELECT * FROM unnest(%s::bigint[], %s::bigint[]) AS d(id, delta)), "  # noqa: S608
            f"locked AS (SELECT id FROM {table} WHERE id IN (SELECT id FROM d) ORDER BY id FOR NO KEY UPDATE) "
            f"UPDATE {table} AS s SET member_count = s.member_count + d.delta FROM d, locked "
            f"WHERE s.id = d.id AND locked.id = d.id",
            [bigint_array(pks), bigint_array([deltas[pk] for pk in pks])],
        )
    return []


def fold_counts(segment_ids: Iterable[int] | None = None) -> None:
    """Add the committed `MemberCountDelta` rows of these segments (of every segment: None) to
    their `member_count`, in one statement: the segments' rows locked in id order (two folds never
    deadlock, and a row is folded once: a concurrent fold waits, then finds it deleted); rows of
    updates not committed yet are not seen, and are folded by their own update after its commit.

    Alone in its transaction, it commits without waiting for the WAL flush (one durable commit
    fewer per ingest batch): a fold lost in a crash loses its DELETE of the deltas with its UPDATE
    of the counts, so the deltas are still there to be folded again."""
    if connection.vendor != "postgresql":
        return
    # Only its own transaction: inside a caller's, the setting would apply to the caller's commit.
    no_wait = "" if connection.in_atomic_block else "AND set_config('synchronous_commit', 'off', true) = 'off' "
    segments = connection.ops.quote_name(Segment._meta.db_table)
    deltas = connection.ops.quote_name(MemberCountDelta._meta.db_table)
    which = "" if segment_ids is None else "AND s.id = ANY(%s::bigint[])"
    params = [] if segment_ids is None else [bigint_array(sorted(set(segment_ids)))]
    with connection.cursor() as cursor:
        cursor.execute(
            f"WITH locked AS (SELECT s.id FROM {segments} s WHERE EXISTS (SELECT 1 FROM {deltas} d "  # noqa: S608
            f"WHERE d.segment_id = s.id) {which} {no_wait}ORDER BY s.id FOR NO KEY UPDATE OF s), "
            f"gone AS (DELETE FROM {deltas} d USING locked WHERE d.segment_id = locked.id "
            f"RETURNING d.segment_id, d.delta), "
            f"sums AS (SELECT segment_id, sum(delta) AS delta FROM gone GROUP BY segment_id) "
            f"UPDATE {segments} s SET member_count = s.member_count + sums.delta "
            f"FROM sums WHERE s.id = sums.segment_id",
            params,
        )


def _keep_only(by_segment: dict[int, Changes], rows: list[tuple[int, int]], kind: str) -> None:
    """Keep in each Changes' `kind` list only the customers a statement did change."""
    done: dict[int, set[int]] = {}
    for segment_id, customer_id in rows:
        done.setdefault(segment_id, set()).add(customer_id)
    for pk, changes in by_segment.items():
        ids = getattr(changes, kind)
        if len(done.get(pk, ())) != len(ids):
            setattr(changes, kind, [customer_id for customer_id in ids if customer_id in done.get(pk, ())])


def _pairs_select(pairs: list[tuple[int, int]]) -> tuple[str, list]:
    """A subquery of (a, b) integer pairs: two arrays on PostgreSQL, a JSON array on SQLite."""
    if connection.vendor == "postgresql":
        left, right = zip(*pairs, strict=True)
        return (
            "SELECT * FROM unnest(%s::bigint[], %s::bigint[]) AS pairs(a, b)",
            [bigint_array(left), bigint_array(right)],
        )
    return (
        "SELECT json_extract(value, '$[0]') AS a, json_extract(value, '$[1]') AS b FROM json_each(%s)",
        [json.dumps(pairs)],
    )


def _returned_rows(sql: str, params) -> list[tuple]:
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.fetchall()


def _record_many(all_changes: list[Changes], at: datetime, cause: str) -> None:
    """History rows of several segments' entries and exits in one statement."""
    rows = [
        (changes.segment.pk, customer_id, kind)
        for changes in all_changes
        for kind, ids in ((1, changes.entered), (0, changes.exited))
        for customer_id in ids
    ]
    if not rows:
        return
    table = connection.ops.quote_name(MembershipChange._meta.db_table)
    if connection.vendor == "postgresql":
        segments, customers, kinds = zip(*rows, strict=True)
        rows_sql = "SELECT * FROM unnest(%s::bigint[], %s::bigint[], %s::bigint[]) AS r(s, c, k)"
        params = [bigint_array(segments), bigint_array(customers), bigint_array(kinds)]
    else:
        rows_sql = (
            "SELECT json_extract(value, '$[0]') AS s, json_extract(value, '$[1]') AS c, "
            "json_extract(value, '$[2]') AS k FROM json_each(%s)"
        )
        params = [json.dumps(rows)]
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {table} (segment_id, customer_id, kind, cause, at) "  # noqa: S608
            f"SELECT r.s, r.c, CASE WHEN r.k = 1 THEN %s ELSE %s END, %s, %s FROM ({rows_sql}) AS r",
            [MembershipChange.Kind.ENTERED, MembershipChange.Kind.EXITED, cause, _timestamp(at), *params],
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

    def report(segment_pk, receiver, result) -> None:
        if isinstance(result, Exception):
            logger.error(
                "segment %s: receiver %s failed",
                segment_pk,
                getattr(receiver, "__qualname__", receiver),
                exc_info=result,
            )

    def send():
        for changes in all_changes:
            for signal, ids in ((segment_entered, changes.entered), (segment_exited, changes.exited)):
                if not ids:
                    continue
                for receiver, result in signal.send_robust(sender=Segment, segment=changes.segment, customer_ids=ids):
                    report(changes.segment.pk, receiver, result)
        for receiver, result in segments_changed.send_robust(
            sender=Segment, project_id=moved[0].segment.project_id, segment_ids=[c.segment.pk for c in moved]
        ):
            report([c.segment.pk for c in moved], receiver, result)

    moved = [changes for changes in all_changes if changes.entered or changes.exited]
    if moved:
        transaction.on_commit(send)
