"""Template tags of workflows: the runs-entered chart, step type names, and what the customer page
(cdp) shows of workflows, through `{% load workflows_tags %}`: cdp's Python code never imports workflows."""

from django import template

from timonier.charts import Bar, nice_ceiling
from workflows import selectors

register = template.Library()

STEP_TYPE_LABELS = {
    "email": "Email",
    "delay": "Time Delay",
    "wait_until": "Wait Until",
    "branch": "True/False Branch",
    "split": "Multi-Split",
    "random_cohort": "Random Cohort",
    "update_attribute": "Update Attribute",
    "webhook": "Webhook",
    "exit": "Exit",
}
# Geometry of the chart in viewBox units, as the segment's members chart: one bar per day.
PLOT_LEFT = 44
PLOT_TOP = 10
PLOT_HEIGHT = 120
CHART_WIDTH = 640  # the plot keeps its width whatever the period: bars get thinner
# The customer page lists this many of the customer's newest runs.
RUNS_SHOWN = 20


@register.filter
def step_type_label(step_type: str) -> str:
    return STEP_TYPE_LABELS.get(step_type, step_type)


@register.inclusion_tag("workflows/includes/runs_chart.html")
def runs_chart(per_day) -> dict:
    """`selectors.runs_entered_per_day` as an inline SVG bar chart with a value axis."""
    baseline = PLOT_TOP + PLOT_HEIGHT
    top = nice_ceiling(max([2, *(day.count for day in per_day)]))
    step = (CHART_WIDTH - PLOT_LEFT) / max(len(per_day), 1)
    bar_width = round(step * 0.7, 1)
    bars, labels = [], []
    label_every = 7 if len(per_day) <= 31 else 14
    for i, day in enumerate(per_day):
        height = round(day.count / top * PLOT_HEIGHT, 1)
        if day.count and height < 1:
            height = 1.0
        x = round(PLOT_LEFT + i * step, 1)
        noun = "run" if day.count == 1 else "runs"
        bars.append(
            Bar(
                x=x,
                y=round(baseline - height, 1),
                height=height,
                title=f"{day.day:%a} {day.day.day} {day.day:%b}: {day.count} {noun} entered",
            )
        )
        if (len(per_day) - 1 - i) % label_every == 0:
            labels.append({"x": round(x + bar_width / 2, 1), "text": f"{day.day.day} {day.day:%b}"})
    ticks = [(baseline, "0"), (PLOT_TOP, f"{top:,}")]
    if top % 2 == 0:
        ticks.insert(1, (PLOT_TOP + PLOT_HEIGHT / 2, f"{top // 2:,}"))
    return {
        "width": CHART_WIDTH + 20,
        "height": baseline + 24,
        "left": PLOT_LEFT,
        "right": CHART_WIDTH,
        "top": PLOT_TOP,
        "plot_height": PLOT_HEIGHT,
        "step": round(step, 1),
        "bar_width": bar_width,
        "label_y": baseline + 16,
        "bars": bars,
        "labels": labels,
        "ticks": ticks,
        "days": len(per_day),
        "total": sum(day.count for day in per_day),
    }


@register.simple_tag(takes_context=True)
def customer_runs(context, customer) -> list:
    """The customer's newest runs in the page's project, with their step history."""
    return selectors.customer_runs(context["request"].project, customer, limit=RUNS_SHOWN)
