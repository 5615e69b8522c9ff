"""The visual condition builder of the segment form, in Chromium against the live platform server.

The textarea is the form's source of truth: these tests build with the visual controls and read
the JSON back, go JSON → Visual → JSON without a change, and check that what the builder cannot
show stays on JSON with a message.
"""

import json
import uuid
from datetime import timedelta

import pytest
from django.conf import settings as django_settings
from playwright.sync_api import Page, expect

from cdp.models import Customer, Event
from organizations.models import Role
from segments.models import Segment
from segments.services import segment_create
from tests.conftest import signed_in_client

# The e2e harness's fixtures: the live server `e2e`, `base_url`, Chromium's path and flags.
from tests.e2e.conftest import base_url, browser_context_args, browser_type_launch_args, e2e  # noqa: F401
from tests.factories import MembershipFactory, ProjectFactory, UserFactory
from timonier import clock

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


PRO = {"type": "trait", "name": "plan", "op": "equals", "value": "pro"}
PRO_BUYERS = {"type": "and", "conditions": [PRO, {"type": "event", "event_name": "purchase"}]}


def customer(project, external_id: str, plan: str, *, bought: bool) -> Customer:
    now = clock.now()
    row = Customer.objects.create(
        project=project, external_id=external_id, traits={"plan": plan}, first_seen_at=now, last_seen_at=now
    )
    if bought:
        Event.objects.create(
            project=project,
            customer=row,
            type="track",
            name="purchase",
            timestamp=now - timedelta(hours=1),
            received_at=now,
            message_id=str(uuid.uuid4()),
        )
    return row


@pytest.fixture
def project(e2e, page: Page):  # noqa: F811 (the imported fixture)
    """A project with three customers, one of them pro and a buyer, and the browser signed in to it."""
    project = ProjectFactory()
    user = UserFactory()
    MembershipFactory(user=user, organization=project.organization, role=Role.OWNER)
    customer(project, "user_001", "pro", bought=True)
    customer(project, "user_002", "pro", bought=False)
    customer(project, "user_003", "free", bought=True)
    session = signed_in_client(user).cookies[django_settings.SESSION_COOKIE_NAME].value
    page.context.add_cookies([{"name": django_settings.SESSION_COOKIE_NAME, "value": session, "url": e2e.url}])
    return project


def new_segment_page(page: Page, project) -> None:
    page.goto(f"/o/{project.organization.slug}/{project.slug}/segments/new")
    expect(page.get_by_role("heading", name="New Segment")).to_be_visible()


def head(page: Page, path: str):
    """The controls of the condition at a JSON path (`$`, `conditions[1]`, …) of the builder."""
    return page.locator(f'[data-path="{path}"] > .cond-head')


def condition_json(page: Page):
    return json.loads(page.get_by_label("Condition (JSON)").input_value())


def test_building_an_and_of_a_trait_and_an_event_writes_its_json(page: Page, project):
    new_segment_page(page, project)
    page.get_by_role("button", name="Visual").click()
    expect(page.get_by_label("Condition (JSON)")).to_be_hidden()

    root = head(page, "$")
    root.get_by_label("Trait").fill("plan")
    expect(root.get_by_label("Operator")).to_have_value("equals")
    root.get_by_label("Value", exact=True).fill("pro")
    root.get_by_label("Condition type").select_option("and")
    expect(head(page, "conditions[0]").get_by_label("Trait")).to_have_value("plan")
    page.get_by_role("button", name="Add condition").click()
    second = head(page, "conditions[1]")
    second.get_by_label("Condition type").select_option("event")
    second.get_by_label("Event").fill("purchase")

    page.get_by_role("button", name="JSON").click()
    expect(page.get_by_label("Condition (JSON)")).to_be_visible()
    assert condition_json(page) == PRO_BUYERS

    page.get_by_role("button", name="Preview").click()
    expect(page.get_by_text("1 customer matches")).to_be_visible()

    page.get_by_label("Name", exact=True).fill("Pro buyers")
    page.get_by_role("button", name="Create Segment").click()
    expect(page.get_by_role("heading", name="Pro buyers", level=1)).to_be_visible()
    assert Segment.objects.get(project=project, name="Pro buyers").condition == PRO_BUYERS


def test_operators_type_their_values(page: Page, project):
    new_segment_page(page, project)
    page.get_by_role("button", name="Visual").click()
    root = head(page, "$")
    root.get_by_label("Trait").fill("age")
    options = root.get_by_label("Operator").locator("option")
    assert options.evaluate_all("options => options.map(o => o.value)") == [
        "equals", "not_equals", "greater_than", "less_than", "greater_than_or_equals", "less_than_or_equals",
        "contains", "not_contains", "starts_with", "ends_with", "in", "not_in", "is_set", "is_not_set",
    ]  # fmt: skip
    root.get_by_label("Operator").select_option("greater_than")
    root.get_by_label("Value", exact=True).fill("30")
    assert condition_json(page) == {"type": "trait", "name": "age", "op": "greater_than", "value": 30}
    root.get_by_label("Operator").select_option("in")
    root.get_by_label("Value type").select_option("text")
    root.get_by_label("Value", exact=True).fill("pro, team")
    assert condition_json(page)["value"] == ["pro", "team"]
    root.get_by_label("Operator").select_option("is_set")
    expect(root.get_by_label("Value", exact=True)).to_have_count(0)
    assert condition_json(page) == {"type": "trait", "name": "age", "op": "is_set"}


def test_event_count_window_and_filters_and_a_segment_in_a_not(page: Page, project):
    pro = segment_create(project=project, name="Pro Users", condition=PRO)
    new_segment_page(page, project)
    page.get_by_role("button", name="Visual").click()
    root = head(page, "$")
    root.get_by_label("Condition type").select_option("or")
    first = head(page, "conditions[0]")
    first.get_by_label("Condition type").select_option("event")
    first.get_by_label("Event").fill("purchase")
    event = page.locator('[data-path="conditions[0]"]')
    event.get_by_label("How many times").select_option("greater_than_or_equals")
    event.get_by_label("Count").fill("3")
    event.get_by_label("When").select_option("within")
    event.get_by_label("Window length").fill("7")
    event.get_by_label("Window unit").select_option("weeks")
    event.get_by_role("button", name="Add property filter").click()
    event.get_by_label("Property", exact=True).fill("amount")
    event.locator('[data-path="conditions[0].where[0]"]').get_by_label("Operator").select_option("greater_than")
    event.locator('[data-path="conditions[0].where[0]"]').get_by_label("Value", exact=True).fill("20")
    page.get_by_role("button", name="Add condition").last.click()
    second = head(page, "conditions[1]")
    second.get_by_label("Condition type").select_option("segment")
    second.get_by_label("Condition type").select_option("not")
    inner = head(page, "conditions[1].condition")
    expect(inner.get_by_label("Segment")).to_have_value(str(pro.pk))
    assert condition_json(page) == {
        "type": "or",
        "conditions": [
            {
                "type": "event",
                "event_name": "purchase",
                "count": {"op": "greater_than_or_equals", "value": 3},
                "within": {"value": 7, "unit": "weeks"},
                "where": [{"name": "amount", "op": "greater_than", "value": 20}],
            },
            {"type": "not", "condition": {"type": "segment", "segment_id": pro.pk}},
        ],
    }
    # A nested group, then removing the first condition: the group keeps the others.
    page.get_by_role("button", name="Add group").last.click()
    nested = head(page, "conditions[2].conditions[0]")
    nested.get_by_label("Trait").fill("vip")
    nested.get_by_label("Operator").select_option("is_set")
    assert condition_json(page)["conditions"][2] == {
        "type": "and",
        "conditions": [{"type": "trait", "name": "vip", "op": "is_set"}],
    }
    head(page, "conditions[2]").get_by_role("button", name="Remove condition").click()
    head(page, "conditions[0]").get_by_role("button", name="Remove condition").click()
    assert condition_json(page)["conditions"] == [
        {"type": "not", "condition": {"type": "segment", "segment_id": pro.pk}}
    ]


def test_json_to_visual_and_back_is_unchanged(page: Page, project):
    typed = json.dumps(
        {
            "type": "and",
            "conditions": [
                {"type": "trait", "name": "plan", "op": "in", "value": ["pro", "team"]},
                {"type": "event", "event_name": "purchase", "between": {"from": "2026-01-01", "to": "2026-02-01"}},
                {"type": "not", "condition": {"type": "trait", "name": "vip", "op": "equals", "value": True}},
            ],
        }
    )
    new_segment_page(page, project)
    page.get_by_label("Condition (JSON)").fill(typed)
    page.get_by_role("button", name="Visual").click()
    expect(page.locator("[data-builder]")).to_be_visible()
    expect(head(page, "conditions[1]").get_by_label("Event")).to_have_value("purchase")
    expect(page.locator('[data-path="conditions[1]"]').get_by_label("From")).to_have_value("2026-01-01")
    expect(head(page, "conditions[2].condition").get_by_label("Value", exact=True)).to_have_value("true")
    page.get_by_role("button", name="JSON").click()
    assert page.get_by_label("Condition (JSON)").input_value() == typed


@pytest.mark.parametrize(
    ("typed", "message"),
    [
        ('{"type": "trait", "name": "plan", "op": "equals", "value": pro}', "is not valid JSON"),
        ('{"type": "trait", "name": "plan", "op": "in", "value": ["pro", 1]}', "value: a list of mixed values"),
        ('{"type": "trait", "name": "plan", "op": "equals", "value": "pro", "extra": 1}', "extra: unknown key"),
    ],
)
def test_what_the_builder_cannot_show_stays_on_json_with_a_message(page: Page, project, typed, message):
    new_segment_page(page, project)
    page.get_by_label("Condition (JSON)").fill(typed)
    page.get_by_role("button", name="Visual").click()
    expect(page.get_by_role("status").filter(has_text=message)).to_be_visible()
    expect(page.locator("[data-builder]")).to_be_hidden()
    expect(page.get_by_label("Condition (JSON)")).to_have_value(typed)
    expect(page.get_by_role("button", name="JSON")).to_have_attribute("aria-pressed", "true")


def test_preview_shows_the_count_or_the_errors(page: Page, project):
    new_segment_page(page, project)
    page.get_by_label("Condition (JSON)").fill(json.dumps(PRO))
    page.get_by_role("button", name="Preview").click()
    expect(page.get_by_text("2 customers match")).to_be_visible()
    page.get_by_label("Condition (JSON)").fill('{"type": "trait", "name": "plan"}')
    page.get_by_role("button", name="Preview").click()
    expect(page.locator("[data-preview-errors]")).to_contain_text("op: is required")
    assert not Segment.objects.filter(project=project).exists()


def test_the_form_works_without_javascript(browser, page: Page, e2e, project):  # noqa: F811
    context = browser.new_context(java_script_enabled=False, base_url=e2e.url)
    try:
        context.add_cookies(page.context.cookies())
        plain = context.new_page()
        new_segment_page(plain, project)
        expect(plain.get_by_role("button", name="Visual")).to_be_hidden()
        expect(plain.get_by_role("button", name="Preview")).to_be_hidden()
        plain.get_by_label("Name", exact=True).fill("Pro Users")
        plain.get_by_label("Condition (JSON)").fill(json.dumps(PRO))
        plain.get_by_role("button", name="Create Segment").click()
        expect(plain.get_by_role("heading", name="Pro Users", level=1)).to_be_visible()
    finally:
        context.close()
    assert Segment.objects.get(project=project).condition == PRO
