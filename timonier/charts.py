"""Geometry of the server-rendered SVG bar charts: the dashboard's events per hour, and the bars
and axis top that the segment and workflow charts share. Layout only: the counts come from each
app's queries, so this module reads no model."""

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol


class HourlyCount(Protocol):
    """One bar of `events_chart`, e.g. `cdp.dashboard.HourCount`."""

    @property
    def start(self) -> datetime: ...

    @property
    def count(self) -> int: ...


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


def events_chart(hours: list[HourlyCount]) -> EventsChart:
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
