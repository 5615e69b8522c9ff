"""Template tags of segments: the members chart, and what the customer page (cdp) shows of segments.

The customer page uses `customer_segments` and `segment_timeline` through `{% load segments_tags %}`,
so cdp's Python code never imports segments.
"""

from dataclasses import dataclass
from datetime import datetime

from django import template

from segments import selectors
from timonier.api.cursors import BadCursor, decode_cursor
from timonier.charts import Bar, nice_ceiling

register = template.Library()

# Geometry of the members chart, in viewBox units: one 14-unit bar per day with a 6-unit gap.
BAR_STEP = 20
BAR_WIDTH = 14
PLOT_LEFT = 44
PLOT_TOP = 10
PLOT_HEIGHT = 120


@dataclass(frozen=True)
class Label:
    x: float
    text: str


@register.inclusion_tag("segments/includes/members_chart.html")
def members_chart(per_day) -> dict:
    """`selectors.segment_members_per_day` as an inline SVG bar chart with a value axis."""
    baseline = PLOT_TOP + PLOT_HEIGHT
    top = nice_ceiling(max([2, *(day.count for day in per_day)]))
    bars, labels = [], []
    for i, day in enumerate(per_day):
        height = round(day.count / top * PLOT_HEIGHT, 1)
        if day.count and height < 1:
            height = 1.0
        x = PLOT_LEFT + i * BAR_STEP
        noun = "member" if day.count == 1 else "members"
        bars.append(
            Bar(
                x=x,
                y=round(baseline - height, 1),
                height=height,
                title=f"{day.day:%a} {day.day.day} {day.day:%b}: {day.count} {noun}",
            )
        )
        if (len(per_day) - 1 - i) % 7 == 0:  # weekly, ending on today
            labels.append(Label(x=x + BAR_WIDTH / 2, text=f"{day.day.day} {day.day:%b}"))
    ticks = [(baseline, "0"), (PLOT_TOP, f"{top:,}")]
    if top % 2 == 0:
        ticks.insert(1, (PLOT_TOP + PLOT_HEIGHT / 2, f"{top // 2:,}"))
    right = PLOT_LEFT + len(per_day) * BAR_STEP
    return {
        "width": right + 20,  # room for the last day label, centred on the last bar
        "height": baseline + 24,
        "left": PLOT_LEFT,
        "right": right,
        "top": PLOT_TOP,
        "plot_height": PLOT_HEIGHT,
        "step": BAR_STEP,
        "bar_width": BAR_WIDTH,
        "baseline": baseline,
        "label_y": baseline + 16,
        "bars": bars,
        "labels": labels,
        "ticks": ticks,
        "days": len(per_day),
        "latest": per_day[-1].count if per_day else 0,
    }


@register.simple_tag(takes_context=True)
def customer_segments(context, customer) -> list:
    """The segments of the page's project the customer is in now, by name."""
    return list(selectors.customer_segments(context["request"].project, customer))


# A page of the timeline shows at most this many segment changes (the newest of its period): a
# customer flapping in and out of a time-window segment must not make one page endless.
MAX_CHANGES_PER_PAGE = 100


@dataclass(frozen=True)
class TimelineItem:
    """One line of the customer's timeline: an event (with its displayed pairs) or a segment change."""

    at: datetime
    event: object = None
    properties: list | None = None
    context: str = ""
    change: object = None


def _cursor_time(cursor: str | None) -> datetime | None:
    if not cursor:
        return None
    try:
        return datetime.fromisoformat(decode_cursor(cursor)[0])
    except (BadCursor, ValueError, TypeError, IndexError):
        return None


@register.simple_tag(takes_context=True)
def segment_timeline(context, customer, events, cursor=None, next_cursor=None, name="") -> list[TimelineItem]:
    """The page's events (`(event, properties, context)`, newest first) with the customer's segment
    entries and exits of the same period between them.

    The period: from the last event shown (or the beginning, on the last page) up to the page's
    cursor (or now, on the first page). A page filtered by event name shows events only.
    """
    items = [
        TimelineItem(at=event.timestamp, event=event, properties=pairs, context=ctx) for event, pairs, ctx in events
    ]
    if name:
        return items
    until = _cursor_time(cursor)
    after = items[-1].at if next_cursor and items else None
    changes = selectors.customer_segment_changes_between(
        context["request"].project, customer.pk, after=after, until=until, limit=MAX_CHANGES_PER_PAGE
    )
    merged = items + [TimelineItem(at=change.at, change=change) for change in changes]
    # A stable sort: events keep their order, and an event comes before a change of the same instant.
    merged.sort(key=lambda item: item.at, reverse=True)
    return merged
