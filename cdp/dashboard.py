"""Reads behind the project dashboard: events per hour, customer counts, the latest events.

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


# Geometry of the inline SVG chart, in viewBox units: one 4-unit bar per hour with a 1-unit gap.
BAR_STEP = 5
PLOT_LEFT = 44
PLOT_TOP = 10
PLOT_HEIGHT = 140


@dataclass(frozen=True)
class Bar:
    x: int
    y: float
    height: float
    title: str


@dataclass(frozen=True)
class Tick:
    y: float
    label: str


@dataclass(frozen=True)
class DayLabel:
    x: float
    separator_x: int | None
    label: str


@dataclass(frozen=True)
class EventsChart:
    width: int
    height: int
    left: int
    right: int
    top: int
    plot_height: int
    step: int
    baseline: int
    label_y: int
    bars: list[Bar]
    ticks: list[Tick]
    days: list[DayLabel]
    total: int


def nice_ceiling(value: int) -> int:
    """The smallest 1, 2 or 5 × 10ⁿ at or above `value`, for a readable top of the axis."""
    magnitude = 1
    while True:
        for step in (1, 2, 5):
            if step * magnitude >= value:
                return step * magnitude
        magnitude *= 10


def _day(at: datetime) -> str:
    return f"{at:%a} {at.day} {at:%b}"


def events_chart(hours: list[HourCount]) -> EventsChart:
    """Lay out `events_per_hour` as bars with a value axis and one label per day (server-rendered SVG)."""
    baseline = PLOT_TOP + PLOT_HEIGHT
    top = nice_ceiling(max([2, *(hour.count for hour in hours)]))
    bars = []
    for i, hour in enumerate(hours):
        height = round(hour.count / top * PLOT_HEIGHT, 1)
        if hour.count and height < 1:
            height = 1.0  # a single event stays visible next to a busy hour
        noun = "event" if hour.count == 1 else "events"
        title = (
            f"{_day(hour.start)} {hour.start:%H:00}–{hour.start + timedelta(hours=1):%H:00} UTC: {hour.count} {noun}"
        )
        bars.append(Bar(x=PLOT_LEFT + i * BAR_STEP, y=round(baseline - height, 1), height=height, title=title))
    days = []
    i = 0
    while i < len(hours):
        day = hours[i].start.date()
        span = 1
        while i + span < len(hours) and hours[i + span].start.date() == day:
            span += 1
        # A day cut short at either end of the window gets no label if it has no room for one.
        if span >= 12:
            days.append(
                DayLabel(
                    x=PLOT_LEFT + (i + span / 2) * BAR_STEP,
                    separator_x=PLOT_LEFT + i * BAR_STEP - 1 if i else None,
                    label=_day(hours[i].start),
                )
            )
        elif i:
            days.append(DayLabel(x=0, separator_x=PLOT_LEFT + i * BAR_STEP - 1, label=""))
        i += span
    ticks = [Tick(y=baseline, label="0"), Tick(y=PLOT_TOP, label=f"{top:,}")]
    if top % 2 == 0:
        ticks.insert(1, Tick(y=PLOT_TOP + PLOT_HEIGHT / 2, label=f"{top // 2:,}"))
    right = PLOT_LEFT + len(hours) * BAR_STEP
    return EventsChart(
        width=right + 4,
        height=baseline + 26,
        left=PLOT_LEFT,
        right=right,
        top=PLOT_TOP,
        plot_height=PLOT_HEIGHT,
        step=BAR_STEP,
        baseline=baseline,
        label_y=baseline + 18,
        bars=bars,
        ticks=ticks,
        days=days,
        total=sum(hour.count for hour in hours),
    )
