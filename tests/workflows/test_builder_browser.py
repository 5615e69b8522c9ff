"""The workflow pages and the builder in Chromium against the live platform server.

The guide's section 6 pages with its labels; a flow with a delay, a true/false branch and a
webhook built on the canvas, saved, reloaded, the same graph; a validation problem shown on its
node and Activate refused. Every request the browser makes is checked: none may leave 127.0.0.1,
and nothing may be refused by the site's Content-Security-Policy (no inline script).
"""

import re
from pathlib import Path

import pytest
from django.conf import settings as django_settings
from playwright.sync_api import Page, expect

from organizations.models import Role
from tests.conftest import signed_in_client

# The e2e harness's fixtures: the live server `e2e`, `base_url`, Chromium's path and flags.
from tests.e2e.conftest import base_url, browser_context_args, browser_type_launch_args, e2e  # noqa: F401
from tests.emails.test_designer_browser import Network
from tests.factories import MembershipFactory, ProjectFactory, UserFactory
from workflows.models import Workflow

from .engine import published_template

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def screenshot(page: Page, request, name: str) -> None:
    """A screenshot for the issue's note, in pytest-playwright's --output folder (test-results/)."""
    results = Path(request.config.getoption("--output")).absolute()
    results.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(results / name))


@pytest.fixture
def signed_in(e2e, page: Page):  # noqa: F811 (the imported fixture)
    """A project, its owner signed in in the browser."""
    project = ProjectFactory(name="Acme Shop")
    user = UserFactory()
    MembershipFactory(user=user, organization=project.organization, role=Role.OWNER)
    session = signed_in_client(user).cookies[django_settings.SESSION_COOKIE_NAME].value
    page.context.add_cookies([{"name": django_settings.SESSION_COOKIE_NAME, "value": session, "url": e2e.url}])
    page.set_viewport_size({"width": 1400, "height": 900})
    return project


def project_url(project) -> str:
    return f"/o/{project.organization.slug}/{project.slug}/"


def template_of(project, name="Purchase Thank You"):
    # A sender at localhost needs no verified sending domain of the project.
    return published_template(project, name=name, from_email="shop@localhost")


def open_builder(page: Page):
    page.get_by_role("link", name="Builder", exact=True).click()
    page.wait_for_selector("body[data-builder-ready]")
    expect(page.locator('[data-step-id="trigger"]')).to_be_visible()


def node(page: Page, step_id: str):
    return page.locator(f'[data-testid="wf-node"][data-step-id="{step_id}"]')


def add_step(page: Page, label: str) -> None:
    page.get_by_role("button", name="Add Step").click()
    page.get_by_role("menuitem", name=label, exact=True).click()


def save_panel(page: Page) -> None:
    page.get_by_test_id("step-panel").get_by_role("button", name="Save", exact=True).click()
    expect(page.locator("#builder-status")).to_have_text(re.compile(r"^Saved"))


def create_workflow(page: Page, project, name: str) -> None:
    """The guide's New Workflow form: Event Occurred, purchase, Once per customer."""
    page.goto(project_url(project))
    page.get_by_role("navigation", name="Project").get_by_role("link", name="Workflows", exact=True).click()
    page.get_by_role("link", name="New Workflow").click()
    page.get_by_label("Name", exact=True).fill(name)
    page.get_by_label("Description", exact=True).fill("Send a thank-you email after a purchase")
    page.get_by_label("Trigger Type").select_option(label="Event Occurred")
    page.get_by_label("Event Name").fill("purchase")
    page.get_by_label("Frequency", exact=True).select_option(label="Once per customer")
    page.get_by_role("button", name="Create Workflow").click()
    expect(page.get_by_role("heading", name=name, level=1)).to_be_visible()


def test_the_guides_workflow_pages_build_and_activate_the_email_flow(page: Page, signed_in, request):
    project = signed_in
    template = template_of(project)
    network = Network(page)

    create_workflow(page, project, "Purchase Follow-Up")
    expect(page.get_by_test_id("trigger-text")).to_have_text("When purchase occurs")
    open_builder(page)
    add_step(page, "Email")
    panel = page.get_by_test_id("step-panel")
    panel.get_by_label("Template").select_option(label="Purchase Thank You")
    expect(panel.get_by_role("link", name="Preview Purchase Thank You")).to_have_attribute(
        "href", f"{project_url(project)}email-templates/{template.pk}/preview"
    )
    save_panel(page)
    expect(node(page, "email_1")).to_contain_text("Purchase Thank You")
    screenshot(page, request, "workflow-builder-guide.png")

    page.get_by_role("link", name="← Back to workflow").click()
    page.get_by_role("button", name="Activate").click()
    expect(page.get_by_test_id("workflow-status")).to_have_text("Active")
    expect(page.get_by_test_id("running-version")).to_have_text("Version 1")

    workflow = Workflow.objects.get(project=project)
    version = workflow.active_version.definition
    assert version["trigger"] == {"type": "event", "event_name": "purchase"}
    assert version["frequency"] == {"type": "once"}
    assert [(s["id"], s["type"], s["template_id"]) for s in version["steps"]] == [("email_1", "email", template.pk)]
    assert version["edges"] == [{"from": "trigger", "to": "email_1"}]
    assert network.external == [] and network.refused == []


def graph_of(page: Page) -> tuple[list, list]:
    nodes = page.locator('[data-testid="wf-node"]')
    edges = page.locator('[data-testid="wf-edge"]')
    return (
        sorted(
            zip(
                nodes.evaluate_all("els => els.map(e => e.dataset.stepId)"),
                nodes.evaluate_all("els => els.map(e => e.dataset.stepType)"),
                strict=True,
            )
        ),
        sorted(edges.evaluate_all("els => els.map(e => e.dataset.edge)")),
    )


def test_a_flow_with_a_delay_a_branch_and_a_webhook_survives_a_reload(page: Page, signed_in, request):
    project = signed_in
    network = Network(page)
    create_workflow(page, project, "Follow-up")
    open_builder(page)

    add_step(page, "Time Delay")  # after the trigger
    panel = page.get_by_test_id("step-panel")
    panel.get_by_label("Amount").fill("2")
    panel.get_by_label("Unit").select_option("hours")
    save_panel(page)
    add_step(page, "True/False Branch")  # after the delay
    panel.get_by_label("Trait").fill("plan")
    panel.get_by_label("Value", exact=True).fill("pro")
    save_panel(page)
    add_step(page, "Webhook")  # on the branch's Yes
    panel.get_by_label("URL").fill("https://hooks.example.com/pro")
    panel.get_by_label("Body").fill('{"id": "{{ customer.id }}"}')
    save_panel(page)
    expect(page.locator('[data-edge="branch_1:yes:webhook_1"]')).to_contain_text("Yes")
    screenshot(page, request, "workflow-builder.png")
    before = graph_of(page)

    page.reload()
    page.wait_for_selector("body[data-builder-ready]")
    expect(page.locator('[data-testid="wf-node"]')).to_have_count(4)

    assert (
        graph_of(page)
        == before
        == (
            [("branch_1", "branch"), ("delay_1", "delay"), ("trigger", "trigger"), ("webhook_1", "webhook")],
            ["branch_1:yes:webhook_1", "delay_1:next:branch_1", "trigger:next:delay_1"],
        )
    )
    expect(node(page, "delay_1")).to_contain_text("wait 2 hours")
    definition = Workflow.objects.get(project=project).definition
    steps = {step["id"]: step for step in definition["steps"]}
    assert steps["delay_1"]["duration"] == {"value": 2, "unit": "hours"}
    assert steps["branch_1"]["condition"] == {"type": "trait", "name": "plan", "op": "equals", "value": "pro"}
    assert steps["webhook_1"]["url"] == "https://hooks.example.com/pro"
    assert definition["edges"] == [
        {"from": "trigger", "to": "delay_1"},
        {"from": "delay_1", "to": "branch_1"},
        {"from": "branch_1", "output": "yes", "to": "webhook_1"},
    ]
    assert set(definition["layout"]) == {"trigger", "delay_1", "branch_1", "webhook_1"}
    assert network.external == [] and network.refused == []


def test_a_validation_problem_shows_on_its_node_and_activate_is_refused(page: Page, signed_in):
    project = signed_in
    network = Network(page)
    create_workflow(page, project, "Unfinished")
    open_builder(page)

    add_step(page, "Email")
    page.get_by_test_id("step-panel").get_by_role("button", name="Save", exact=True).click()  # no template chosen
    expect(page.locator("#builder-status")).to_have_text("Saved, with 1 problem to fix before activating")
    expect(node(page, "email_1").get_by_test_id("node-problems")).to_have_text(
        "steps[0].template_id: choose a published email template"
    )

    page.get_by_role("link", name="← Back to workflow").click()
    page.get_by_role("button", name="Activate").click()
    expect(page.get_by_test_id("activation-problems")).to_contain_text(
        "steps[0].template_id: choose a published email template"
    )
    expect(page.get_by_test_id("workflow-status")).to_have_text("Draft")
    assert Workflow.objects.get(project=project).status == Workflow.Status.DRAFT

    # The problem is on the node again when the builder opens.
    open_builder(page)
    expect(node(page, "email_1").get_by_test_id("node-problems")).to_contain_text("template_id")
    assert network.external == [] and network.refused == []


def test_leaving_the_builder_with_unsaved_changes_asks_first(page: Page, signed_in):
    project = signed_in
    create_workflow(page, project, "Draft")
    open_builder(page)
    add_step(page, "Exit")  # not saved
    asked = []

    def dismiss(dialog):
        asked.append(dialog.message)
        dialog.dismiss()

    page.once("dialog", dismiss)
    page.get_by_role("link", name="← Back to workflow").click()

    assert asked and "unsaved changes" in asked[0]
    expect(page.locator('[data-step-id="exit_1"]')).to_be_visible()  # still in the builder
    assert Workflow.objects.get(project=project).definition["steps"] == []


def test_a_step_inserted_on_an_edge_then_deleted_keeps_the_chain_and_a_moved_node_keeps_its_place(
    page: Page, signed_in
):
    project = signed_in
    network = Network(page)
    create_workflow(page, project, "Chain")
    open_builder(page)
    add_step(page, "Exit")  # trigger → exit_1
    page.get_by_role("button", name="Insert a step between trigger and exit_1").click()
    page.get_by_role("menuitem", name="Random Cohort", exact=True).click()
    page.get_by_test_id("save-workflow").click()
    expect(page.locator("#builder-status")).to_have_text(re.compile(r"^Saved"))
    assert graph_of(page)[1] == ["random_cohort_1:a:exit_1", "trigger:next:random_cohort_1"]
    expect(page.locator('[data-edge="random_cohort_1:a:exit_1"]')).to_contain_text("A 50%")
    assert Workflow.objects.get(project=project).definition["edges"] == [
        {"from": "trigger", "to": "random_cohort_1"},
        {"from": "random_cohort_1", "output": "a", "to": "exit_1"},
    ]

    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_test_id("step-panel").get_by_role("button", name="Delete step").click()
    expect(node(page, "random_cohort_1")).to_have_count(0)
    assert graph_of(page)[1] == ["trigger:next:exit_1"]

    box = node(page, "exit_1").bounding_box()
    page.mouse.move(box["x"] + 40, box["y"] + 20)
    page.mouse.down()
    for i in range(1, 11):
        page.mouse.move(box["x"] + 40 + 16 * i, box["y"] + 20 + 4 * i)
    page.mouse.up()
    page.get_by_test_id("save-workflow").click()
    expect(page.locator("#builder-status")).to_have_text("Saved")
    layout = Workflow.objects.get(project=project).definition["layout"]
    page.reload()
    page.wait_for_selector("body[data-builder-ready]")
    expect(node(page, "exit_1")).to_be_visible()

    definition = Workflow.objects.get(project=project).definition
    assert definition["edges"] == [{"from": "trigger", "to": "exit_1"}]
    assert [step["id"] for step in definition["steps"]] == ["exit_1"]
    assert layout["exit_1"]["x"] - layout["trigger"]["x"] > 100  # moved right, and kept
    assert definition["layout"] == layout
    assert network.external == [] and network.refused == []


def test_send_test_in_the_webhook_panel_shows_the_receivers_answer(page: Page, signed_in, settings):
    from .receiver import Reply, allowed_receiver

    project = signed_in
    with allowed_receiver(settings) as receiver:
        receiver.reply(Reply(202, body=b'{"queued": true}'))
        create_workflow(page, project, "Hook")
        open_builder(page)
        add_step(page, "Webhook")
        panel = page.get_by_test_id("step-panel")
        panel.get_by_label("URL").fill(receiver.url("/hook"))
        panel.get_by_label("Body").fill('{"customer": "{{ customer.id }}"}')
        panel.get_by_role("button", name="Send test").click()

        result = page.get_by_test_id("webhook-test-result")
        expect(result).to_contain_text("HTTP 202")
        expect(result).to_contain_text('{"queued": true}')
        (request,) = receiver.wait_for(1)
    assert request.headers["webhook-signature"].startswith("v1,")


def test_the_trigger_panel_sets_an_exit_condition_with_the_segments_condition_builder(page: Page, signed_in):
    project = signed_in
    create_workflow(page, project, "With exit")
    open_builder(page)
    node(page, "trigger").click()
    panel = page.get_by_test_id("step-panel")
    expect(panel.get_by_test_id("trigger-text")).to_have_text("When purchase occurs")

    panel.get_by_label("Exit condition", exact=True).check()
    panel.get_by_label("Trait").fill("unsubscribed")
    panel.get_by_label("Operator").select_option(label="is set")
    panel.get_by_role("button", name="Save", exact=True).click()
    expect(page.locator("#builder-status")).to_have_text(re.compile(r"^Saved"))

    definition = Workflow.objects.get(project=project).definition
    assert definition["exit_condition"] == {"type": "trait", "name": "unsubscribed", "op": "is_set"}
    assert "goal" not in definition
