"""The definition JSON's validation: every problem with its JSON path."""

import pytest

from tests.factories import ProjectFactory
from workflows.definition import structure_problems
from workflows.services import definition_problems

from .engine import definition, published_template

EVENT = {"type": "event", "event_name": "purchase"}
DELAY = {"id": "wait", "type": "delay", "duration": {"value": 1, "unit": "hours"}}
PRO = {"type": "trait", "name": "plan", "op": "equals", "value": "pro"}
COHORTS_54 = [{"key": "a", "weight": 50}, {"key": "b", "weight": 4}]
INCREMENT = {"id": "u", "type": "update_attribute", "action": "increment", "trait": "n", "value": 1}


def test_the_guides_flow_is_valid():
    flow = definition(EVENT, [{"id": "mail", "type": "email", "template_id": 1}], [])
    assert structure_problems(flow) == []


@pytest.mark.parametrize(
    ("flow", "problem"),
    [
        (definition(EVENT, [], []), "edges: the trigger leads nowhere; add a step after it"),
        (
            definition({"type": "event"}, [DELAY], []),
            "trigger.event_name: enter an event name",
        ),
        (
            definition({"type": "clicked"}, [DELAY], []),
            "trigger.type: must be one of event, segment_entered, segment_exited, attribute_changed, api",
        ),
        (
            definition(EVENT, [DELAY], [], frequency={"type": "once_per_period", "days": 0}),
            "frequency.days: must be a whole number of days from 1 to 3650",
        ),
        (
            definition(EVENT, [DELAY, {"id": "lost", "type": "exit"}], []),
            "steps[1]: is not reachable from the trigger",
        ),
        (
            definition(
                EVENT,
                [{"id": "a", "type": "branch", "condition": PRO}, {"id": "b", "type": "branch", "condition": PRO}],
                [("a", "yes", "b"), ("a", "no", "b"), ("b", "yes", "a"), ("b", "no", "a")],
            ),
            "steps[0]: every path from this step loops forever; give it a way out",
        ),
        (
            definition(
                EVENT,
                [{"id": "a", "type": "branch", "condition": PRO}, {"id": "b", "type": "exit"}],
                [("a", "yes", "a"), ("a", "no", "b")],
            ),
            "steps[0]: is on a loop without a delay or wait; add one to the loop",
        ),
        (
            definition(EVENT, [{"id": "a", "type": "branch", "condition": {**PRO, "op": "eq"}}], []),
            'steps[0].condition.op: unknown operator "eq"; did you mean "equals"?',
        ),
        (
            definition(EVENT, [DELAY], [("wait", "yes", "wait")]),
            'edges[1].output: step "wait" has no output "yes" (it has: next)',
        ),
        (
            definition(EVENT, [DELAY], [("wait", "ghost")]),
            'edges[1].to: no step "ghost"',
        ),
        (
            definition(
                EVENT,
                [{"id": "ab", "type": "random_cohort", "cohorts": COHORTS_54}],
                [],
            ),
            "steps[0].cohorts: weights must sum to 100, not 54",
        ),
        (
            definition(EVENT, [{"id": "w", "type": "wait_until", "condition": PRO}], []),
            'steps[0].timeout: must be {"value": <number>, "unit": "seconds|minutes|hours|days|weeks"}',
        ),
        (
            definition(EVENT, [{"id": "h", "type": "webhook", "url": "ftp://example.com/x"}], []),
            "steps[0].url: must be an http:// or https:// URL (at most 2000 characters)",
        ),
        (
            definition(EVENT, [{**INCREMENT, "value": "x"}], []),
            "steps[0].value: must be a number to add",
        ),
        (
            definition(EVENT, [DELAY, {**DELAY}], [("wait", "wait")]),
            'steps[1].id: "wait" is also the id of steps[0]',
        ),
    ],
)
def test_each_problem_is_reported_with_its_path(flow, problem):
    assert problem in structure_problems(flow)


def test_a_deeply_nested_definition_is_refused_before_it_is_walked():
    deep: dict = {}
    node = deep
    for _ in range(300):
        node["x"] = {}
        node = node["x"]
    assert structure_problems({"trigger": EVENT, "layout": deep}) == ["definition: nests deeper than 32 levels"]


def test_a_loop_through_a_delay_with_a_way_out_is_valid():
    flow = definition(
        EVENT,
        [DELAY, {"id": "check", "type": "branch", "condition": PRO}],
        [("wait", "check"), ("check", "no", "wait")],
    )
    assert structure_problems(flow) == []


@pytest.mark.django_db
def test_email_steps_need_a_published_template_of_the_same_project():
    project, other = ProjectFactory(), ProjectFactory()
    mine = published_template(project)
    theirs = published_template(other)
    draft = published_template(project, name="Draft")
    draft.published_version = None
    draft.save()
    flow = definition(
        EVENT,
        [
            {"id": "a", "type": "email", "template_id": mine.pk},
            {"id": "b", "type": "email", "template_id": theirs.pk},
            {"id": "c", "type": "email", "template_id": draft.pk},
        ],
        [("a", "b"), ("b", "c")],
    )
    assert definition_problems(project=project, definition=flow) == [
        f"steps[1].template_id: no published email template {theirs.pk} in this project",
        f"steps[2].template_id: no published email template {draft.pk} in this project",
    ]
