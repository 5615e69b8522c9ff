"""Reads of segments, always within one project."""

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta

from django.db.models import Case, IntegerField, Q, QuerySet, Sum, Value, When
from django.db.models.functions import TruncDate

from cdp.models import Customer
from organizations.models import Project
from timonier.api.cursors import BadCursor, decode_cursor, encode_cursor, is_id

from .conditions import (
    compile_sql,
    referenced_segments,
    validate,
)
from .models import Membership, MembershipChange, Segment


def segments_list(project: Project) -> QuerySet[Segment]:
    return Segment.objects.filter(project=project).order_by("name", "pk")


def segment_get(project: Project, segment_id: int) -> Segment:
    """The project's segment; `Segment.DoesNotExist` for another project's id."""
    return Segment.objects.get(project=project, pk=segment_id)


def segment_members(project: Project, segment: Segment) -> QuerySet[Membership]:
    """Members, most recent entries first (the index `segments_membership_recent`)."""
    return (
        Membership.objects.filter(segment=segment, segment__project=project)
        .select_related("customer")
        .order_by("-entered_at", "-pk")
    )


def customer_segments(project: Project, customer: Customer) -> QuerySet[Segment]:
    return Segment.objects.filter(project=project, memberships__customer=customer).order_by("name", "pk")


def customer_segment_changes(project: Project, customer_id: int) -> QuerySet[MembershipChange]:
    """The customer's entries and exits, newest first, for the timeline."""
    return (
        MembershipChange.objects.filter(customer_id=customer_id, segment__project=project)
        .select_related("segment")
        .order_by("-at", "-pk")
    )


# --- The platform pages (segments.views) -------------------------------------------------------


def segment_members_page(
    project: Project, segment: Segment, *, limit: int, cursor: str | None = None
) -> tuple[list[Membership], str | None]:
    """Members, newest entries first, keyset-paginated on (entered_at, id) along the index
    `segments_membership_recent`; `BadCursor` for a cursor this function did not return."""
    query = segment_members(project, segment)
    if cursor:
        values = decode_cursor(cursor)
        at = None
        if len(values) == 2 and isinstance(values[0], str) and is_id(values[1]):
            try:
                at = datetime.fromisoformat(values[0])
            except ValueError:
                pass
        if at is None or at.tzinfo is None:
            raise BadCursor("cursor: not a cursor this API returned")
        query = query.filter(Q(entered_at__lt=at) | Q(entered_at=at, pk__lt=values[1]))
    rows = list(query[: limit + 1])
    next_cursor = None
    if len(rows) > limit:
        last = rows[limit - 1]
        next_cursor = encode_cursor(last.entered_at.isoformat(), last.pk)
    return rows[:limit], next_cursor


def segment_preview_count(project: Project, condition, *, now: datetime) -> tuple[int | None, list[str]]:
    """How many of the project's customers match `condition` at `now`, before it is saved:
    `(count, [])`, or `(None, problems)` with each problem as `path: message`."""
    problems = validate(condition)
    if not problems:
        used = referenced_segments(condition)
        known = set(Segment.objects.filter(project=project, pk__in=used).values_list("pk", flat=True))
        problems = [f"segment_id: no segment {pk} in this project" for pk in sorted(used - known)]
    if problems:
        return None, problems
    return Customer.objects.filter(project=project).filter(compile_sql(condition, now=now)).count(), []


@dataclass(frozen=True)
class DayCount:
    day: date
    count: int


def segment_members_per_day(project: Project, segment: Segment, *, now: datetime, days: int = 30) -> list[DayCount]:
    """Members at the end of each of the last `days` UTC days (today: now), oldest first.

    Counted backwards from the current count: each day's count is the current one minus the net
    entries after that day, from one grouped query over the history (index `segments_change_segment`).
    """
    today = now.astimezone(UTC).date()
    first = today - timedelta(days=days - 1)
    after_first = datetime.combine(first + timedelta(days=1), time.min, tzinfo=UTC)
    entered = MembershipChange.Kind.ENTERED
    rows = (
        MembershipChange.objects.filter(segment=segment, segment__project=project, at__gte=after_first, at__lte=now)
        .annotate(day=TruncDate("at", tzinfo=UTC))
        .values("day")
        .annotate(net=Sum(Case(When(kind=entered, then=Value(1)), default=Value(-1), output_field=IntegerField())))
        .order_by()
    )
    net = {row["day"]: row["net"] for row in rows}
    count = segment.member_count
    counts = []
    for offset in range(days):
        day = today - timedelta(days=offset)
        counts.append(DayCount(day=day, count=max(count, 0)))
        count -= net.get(day, 0)
    return counts[::-1]


def customer_segment_changes_between(
    project: Project, customer_id: int, *, after: datetime | None, until: datetime | None, limit: int
) -> list[MembershipChange]:
    """The customer's newest `limit` entries and exits with `after < at <= until` (an open end
    when None), newest first: the ones to interleave with a page of their timeline."""
    query = customer_segment_changes(project, customer_id)
    if after is not None:
        query = query.filter(at__gt=after)
    if until is not None:
        query = query.filter(at__lte=until)
    return list(query[:limit])
