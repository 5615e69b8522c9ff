"""Reads behind the project dashboard: events per hour, customer counts, the latest events (the
chart they are drawn as is `timonier.charts.events_chart`).

Every query here is bounded by an index and a time window or a LIMIT, except the customer counts
(see `customer_counts`): the dashboard is the page people open first and leave open.
"""

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from django.db.models import Count, Q
from django.db.models.functions import TruncHour

from organizations.models import Project

from .models import Customer, Event

CHART_HOURS = 7 * 24
LATEST_EVENTS = 20
# The time format of the latest events' rows: rendered by the dashboard template and, for the rows
# the page adds while open, by the JSON it polls (`cdp.views.events_latest`).
RECEIVED_FORMAT = "j M H:i:s"


@dataclass(frozen=True)
class HourCount:
    start: datetime
    count: int


@dataclass(frozen=True)
class CustomerCounts:
    total: int
    new_this_week: int


def events_per_hour(project: Project, *, now: datetime, hours: int = CHART_HOURS) -> list[HourCount]:
    """Events received in each of the last `hours` hours (the current one included), oldest first, in UTC.

    One grouped query (`date_trunc` on PostgreSQL, `strftime` on SQLite, through TruncHour) over the
    `cdp_event_received` index (project, -received_at); the hours without events are filled in here.
    """
    current = now.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    start = current - timedelta(hours=hours - 1)
    rows = (
        Event.objects.filter(project=project, received_at__gte=start, received_at__lt=current + timedelta(hours=1))
        .annotate(hour=TruncHour("received_at", tzinfo=UTC))
        .values("hour")
        .annotate(count=Count("id"))
        .order_by()
    )
    counts = {row["hour"]: row["count"] for row in rows}
    hour_starts = (start + timedelta(hours=i) for i in range(hours))
    return [HourCount(start=at, count=counts.get(at, 0)) for at in hour_starts]


def customer_counts(project: Project, *, now: datetime) -> CustomerCounts:
    """All customers of the project, and those added in the last 7 days.

    The one COUNT on the dashboard: one pass over the project's customers for both numbers. Fine
    for a page opened now and then; the customer list itself never counts (keyset pagination).
    """
    totals = Customer.objects.filter(project=project).aggregate(
        total=Count("id"), new=Count("id", filter=Q(created_at__gte=now - timedelta(days=7)))
    )
    return CustomerCounts(total=totals["total"], new_this_week=totals["new"])


def events_latest(project: Project, *, limit: int, after_id: int = 0) -> list[Event]:
    """The newest `limit` events by reception, newest first; with `after_id`, only those with a larger id.

    The dashboard polls this every few seconds per open page, so it always reads just the top `limit`
    rows of the `cdp_event_received` index and filters those: a `WHERE id > after_id` in SQL would scan
    every event of a quiet project (or of the table) on each poll. An event older than the top `limit`
    is not on the dashboard anyway.
    """
    rows = (
        Event.objects.filter(project=project)
        .select_related("customer")
        .only("type", "name", "timestamp", "received_at", "customer", "customer__external_id")
        .order_by("-received_at", "-pk")[:limit]
    )
    return [event for event in rows if event.pk > after_id]
