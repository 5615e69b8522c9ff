"""The workflow pages through the Django test client: list, New Workflow, detail, the builder's
JSON save, the life-cycle buttons, the customer page's Workflows section and "used by"."""

import json
import re

import pytest

from emails.models import Delivery
from emails.sending import delivery_send
from organizations.models import Role
from tests.conftest import signed_in_client
from tests.factories import MembershipFactory, ProjectFactory
from tests.smtp import smtp_server  # noqa: F401 (the real SMTP server fixture)
from workflows.models import Run, Workflow

from .engine import active_workflow, definition, identify, run_engine, track
from .engine import published_template as engine_template

pytestmark = pytest.mark.django_db


@pytest.fixture
def client(project):
    user = MembershipFactory(organization=project.organization, role=Role.MEMBER).user
    client = signed_in_client(user)
    client.user = user
    return client


def url(project, path=""):
    return f"/o/{project.organization.slug}/{project.slug}/{path}"


def text(response) -> str:
    """The page's text without tags, whitespace collapsed."""
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", response.content.decode()))


GUIDE_FORM = {
    "name": "Purchase Follow-Up",
    "description": "Send a thank-you email after a purchase",
    "trigger_type": "event",
    "event_name": "purchase",
    "frequency": "once",
}


def published_template(project, name="Purchase Thank You"):
    # A sender at localhost needs no verified sending domain of the project.
    return engine_template(project, name=name, from_email="shop@localhost")


def guide_flow(template) -> dict:
    return definition(
        {"type": "event", "event_name": "purchase"},
        [{"id": "thank_you", "type": "email", "template_id": template.pk}],
        [],
    )


def test_sidebar_lists_workflows_after_email_templates(client, project):
    page = client.get(url(project)).content.decode()
    sidebar = page[page.index('aria-label="Project"') : page.index("</nav>")]
    links = re.findall(r">([A-Za-z ]+)</a>", sidebar)
    assert links.index("Workflows") == links.index("Email Templates") + 1
    assert f'href="{url(project, "workflows")}"' in sidebar


def test_new_workflow_with_the_guides_values_creates_the_draft_and_opens_its_page(client, project):
    response = client.post(url(project, "workflows/new"), GUIDE_FORM)

    workflow = Workflow.objects.get(project=project)
    assert response.status_code == 302 and response["Location"] == url(project, f"workflows/{workflow.pk}")
    assert (workflow.name, workflow.description, workflow.status) == (
        "Purchase Follow-Up",
        "Send a thank-you email after a purchase",
        Workflow.Status.DRAFT,
    )
    assert workflow.definition == {
        "trigger": {"type": "event", "event_name": "purchase"},
        "frequency": {"type": "once"},
        "steps": [],
        "edges": [],
    }
    page = text(client.get(response["Location"]))
    assert "When purchase occurs" in page and "Once per customer" in page and "Draft" in page


def test_new_workflow_form_offers_the_guides_choices(client, project):
    page = client.get(url(project, "workflows/new")).content.decode()
    for label in ("Name", "Description", "Trigger Type", "Event Name", "Frequency"):
        assert f">{label}</label>" in page
    for option in ("Event Occurred", "Segment Entered", "Segment Exited", "Attribute Changed", "API"):
        assert f">{option}</option>" in page
    for option in ("Once per customer", "Every time", "Once per period"):
        assert f">{option}</option>" in page
    assert ">Create Workflow</button>" in page


def test_new_workflow_errors_show_under_their_fields_and_nothing_is_created(client, project):
    response = client.post(url(project, "workflows/new"), {**GUIDE_FORM, "name": "", "event_name": ""})

    assert response.status_code == 200
    assert not Workflow.objects.exists()
    page = response.content.decode()
    assert re.search(r'id="id_name-errors">\s*<li>Enter a name\.', page)
    assert re.search(r'id="id_event_name-errors">\s*<li>[^<]*event name', page)


def test_once_per_period_needs_its_days(client, project):
    form = {**GUIDE_FORM, "frequency": "once_per_period"}
    response = client.post(url(project, "workflows/new"), form)
    assert not Workflow.objects.exists()
    assert re.search(r'id="id_days-errors">\s*<li>[^<]*days', response.content.decode())

    client.post(url(project, "workflows/new"), {**form, "days": "7"})
    assert Workflow.objects.get().definition["frequency"] == {"type": "once_per_period", "days": 7}


def test_attribute_changed_trigger_takes_json_or_text_from_and_to(client, project):
    form = {**GUIDE_FORM, "trigger_type": "attribute_changed", "trait": "plan", "trait_from": "free", "trait_to": "3"}
    client.post(url(project, "workflows/new"), form)
    assert Workflow.objects.get().definition["trigger"] == {
        "type": "attribute_changed",
        "trait": "plan",
        "from": "free",
        "to": 3,
    }


def test_event_property_filters_that_are_not_json_are_refused_under_their_field(client, project):
    response = client.post(url(project, "workflows/new"), {**GUIDE_FORM, "property_filters": "[{"})
    assert not Workflow.objects.exists()
    assert re.search(r'id="id_property_filters-errors">\s*<li>not valid JSON', response.content.decode())


def test_activate_is_refused_with_the_problems_listed_while_the_graph_is_invalid(client, project):
    template = published_template(project)
    workflow = Workflow.objects.create(
        project=project,
        name="Broken",
        definition=definition(
            {"type": "event", "event_name": "purchase"},
            [{"id": "thank_you", "type": "email", "template_id": template.pk + 1000}],
            [],
        ),
    )

    response = client.post(url(project, f"workflows/{workflow.pk}/activate"))

    assert response.status_code == 400
    page = response.content.decode()
    assert 'data-testid="activation-problems"' in page
    assert f"steps[0].template_id: no published email template {template.pk + 1000} in this project" in page
    workflow.refresh_from_db()
    assert workflow.status == Workflow.Status.DRAFT and workflow.active_version is None


def test_activate_publishes_version_1_and_the_page_says_it_runs(client, project):
    template = published_template(project)
    workflow = Workflow.objects.create(project=project, name="Purchase Follow-Up", definition=guide_flow(template))

    response = client.post(url(project, f"workflows/{workflow.pk}/activate"), follow=True)

    workflow.refresh_from_db()
    assert workflow.status == Workflow.Status.ACTIVE and workflow.active_version.number == 1
    page = text(response)
    assert "Version 1" in page and "is active" in page


def test_builder_save_stores_the_draft_and_answers_its_problems(client, project):
    workflow = Workflow.objects.create(project=project, name="Flow", definition=definition({"type": "api"}, [], []))
    draft = definition(
        {"type": "api"},
        [{"id": "email_1", "type": "email", "name": "", "template_id": None}],
        [],
        layout={"trigger": {"x": 0, "y": 0}, "email_1": {"x": 0, "y": 170}},
    )

    response = client.post(
        url(project, f"workflows/{workflow.pk}/definition"), {"definition": draft}, content_type="application/json"
    )

    assert response.status_code == 200
    assert response.json()["saved"] is True
    assert response.json()["problems"] == ["steps[0].template_id: choose a published email template"]
    workflow.refresh_from_db()
    assert workflow.definition == draft


def test_builder_save_of_a_bad_body_answers_the_api_error_shape_and_changes_nothing(client, project):
    before = definition({"type": "api"}, [], [])
    workflow = Workflow.objects.create(project=project, name="Flow", definition=before)
    endpoint = url(project, f"workflows/{workflow.pk}/definition")

    not_json = client.post(endpoint, "{", content_type="application/json")
    bad_trigger = client.post(
        endpoint, {"definition": {**before, "trigger": {"type": "nope"}}}, content_type="application/json"
    )

    assert not_json.status_code == 400
    assert not_json.json() == {"error": "bad_request", "code": "bad_request", "message": "body: not JSON"}
    assert bad_trigger.status_code == 400 and bad_trigger.json()["message"].startswith("trigger.type: ")
    workflow.refresh_from_db()
    assert workflow.definition == before


def test_builder_page_passes_its_data_as_json_script_without_inline_code(client, project):
    template = published_template(project)
    workflow = Workflow.objects.create(project=project, name="Flow", definition=guide_flow(template))

    page = client.get(url(project, f"workflows/{workflow.pk}/builder")).content.decode()

    config = json.loads(
        re.search(r'<script id="workflow-builder-config" type="application/json">(.*?)</script>', page, re.S).group(1)
    )
    assert config["definition"] == workflow.definition
    assert config["templates"] == [
        {
            "id": template.pk,
            "name": "Purchase Thank You",
            "previewUrl": url(project, f"email-templates/{template.pk}/preview"),
        }
    ]
    assert config["saveUrl"] == url(project, f"workflows/{workflow.pk}/definition")
    scripts = re.findall(r"<script([^>]*)>(.*?)</script>", page, re.S)
    assert all(
        'type="application/json"' in attributes or ("src=" in attributes and not body) for attributes, body in scripts
    )
    assert not re.search(r"\son[a-z]+=", page)


def test_pause_then_resume_with_the_choice_for_overdue_steps(client, project):
    template = published_template(project)
    workflow = active_workflow(project, guide_flow(template))

    client.post(url(project, f"workflows/{workflow.pk}/pause"))
    workflow.refresh_from_db()
    assert workflow.status == Workflow.Status.PAUSED
    page = client.get(url(project, f"workflows/{workflow.pk}")).content.decode()
    assert 'value="run"' in page and 'value="skip_emails"' in page and ">Resume</button>" in page

    client.post(url(project, f"workflows/{workflow.pk}/resume"), {"overdue": "skip_emails"})
    workflow.refresh_from_db()
    assert workflow.status == Workflow.Status.ACTIVE


def test_archive_asks_first_then_archives(client, project):
    template = published_template(project)
    workflow = active_workflow(project, guide_flow(template))

    assert ">Archive</button>" in client.get(url(project, f"workflows/{workflow.pk}/archive")).content.decode()
    workflow.refresh_from_db()
    assert workflow.status == Workflow.Status.ACTIVE
    client.post(url(project, f"workflows/{workflow.pk}/archive"))
    workflow.refresh_from_db()
    assert workflow.status == Workflow.Status.ARCHIVED


def test_detail_shows_step_metrics_the_chart_and_runs_linked_to_their_customer(
    client,
    project,
    travel,
    smtp_server,  # noqa: F811 (the imported fixture)
    settings,
):
    settings.PLATFORM_URL = "http://platform.test"
    template = published_template(project)
    workflow = active_workflow(project, guide_flow(template), name="Purchase Follow-Up")
    jane = identify(project, "user_001", email="jane@example.com", name="Jane Doe")
    identify(project, "user_002", email="joe@example.com", name="Joe")
    track(project, "user_001", "purchase", item="T-Shirt")
    track(project, "user_002", "purchase", item="Mug")
    run_engine(project)
    for delivery in Delivery.objects.filter(project=project):
        delivery_send(delivery_id=delivery.pk)
    smtp_server.wait_for("joe@example.com")

    page = client.get(url(project, f"workflows/{workflow.pk}")).content.decode()

    row = re.search(r'<tr data-step-id="thank_you">(.*?)</tr>', page, re.S).group(1)
    cells = [re.sub(r"<[^>]+>", "", cell).strip() for cell in re.findall(r"<td>(.*?)</td>", row, re.S)]
    assert cells[1:5] == ["2", "2", "2", "0"]  # entered, completed, emails sent, opened
    assert "Runs entered on each of the last 30 days (UTC): 2 in all" in page
    assert f'href="{url(project, f"customers/{jane.pk}")}#workflows-heading"' in page
    assert page.count("<tr data-run-id=") == 2

    completed = client.get(url(project, f"workflows/{workflow.pk}?status=completed")).content.decode()
    failed = client.get(url(project, f"workflows/{workflow.pk}?status=failed")).content.decode()
    assert completed.count("<tr data-run-id=") == 2 and failed.count("<tr data-run-id=") == 0


def test_list_shows_status_trigger_version_and_run_counts(client, project, travel):
    template = published_template(project)
    workflow = active_workflow(project, guide_flow(template), name="Purchase Follow-Up")
    identify(project, "user_001", email="jane@example.com")
    track(project, "user_001", "purchase")
    run_engine(project)

    page = client.get(url(project, "workflows")).content.decode()

    row = re.search(rf'<tr data-workflow-id="{workflow.pk}">(.*?)</tr>', page, re.S).group(1)
    cells = [
        re.sub(r"\s+", " ", re.sub(r"<[^>]+>", "", cell)).strip() for cell in re.findall(r"<td>(.*?)</td>", row, re.S)
    ]
    assert cells == ["Purchase Follow-Up", "Active", "When purchase occurs", "v1", "1", "0", "1"]
    assert ">New Workflow</a>" in page


def test_email_templates_list_names_the_workflows_sending_each_template(client, project):
    template = published_template(project)
    unused = published_template(project, name="Unused")
    Workflow.objects.create(project=project, name="Purchase Follow-Up", definition=guide_flow(template))

    page = client.get(url(project, "email-templates")).content.decode()

    used_row = re.search(rf'<tr data-template-id="{template.pk}">(.*?)</tr>', page, re.S).group(1)
    unused_row = re.search(rf'<tr data-template-id="{unused.pk}">(.*?)</tr>', page, re.S).group(1)
    assert "Purchase Follow-Up" in used_row
    assert "Purchase Follow-Up" not in unused_row and "None" in unused_row


def test_customer_page_lists_their_runs_with_step_history_and_the_email_sent(client, project, travel):
    template = published_template(project)
    workflow = active_workflow(project, guide_flow(template), name="Purchase Follow-Up")
    jane = identify(project, "user_001", email="jane@example.com", name="Jane Doe")
    track(project, "user_001", "purchase")
    run_engine(project)
    run = Run.objects.get(workflow=workflow)
    delivery_id = run.steps.get().delivery_id

    page = client.get(url(project, f"customers/{jane.pk}")).content.decode()

    section = page[page.index('id="workflows-heading"') : page.index('id="emails-heading"')]
    assert "Purchase Follow-Up" in section and "v1" in section and "Completed" in section
    assert 'data-step-id="thank_you"' in section and "sent" in section
    assert f"#delivery-{delivery_id}" in section
    assert f'id="delivery-{delivery_id}"' in page


def test_every_workflow_url_is_404_for_an_outsider(project):
    template = published_template(project)
    workflow = active_workflow(project, guide_flow(template))
    outsider_project = ProjectFactory()
    outsider = MembershipFactory(organization=outsider_project.organization, role=Role.OWNER).user
    client = signed_in_client(outsider)
    paths = ["workflows", "workflows/new", "workflows/attention", f"workflows/{workflow.pk}"]
    paths += [f"workflows/{workflow.pk}/{action}" for action in ("builder", "archive", "delete")]
    for path in paths:
        assert client.get(url(project, path)).status_code == 404, path
    for path in ("definition", "activate", "pause", "resume", "archive", "delete"):
        assert client.post(url(project, f"workflows/{workflow.pk}/{path}")).status_code == 404, path
    assert client.post(url(project, "workflows/webhook-test")).status_code == 404
    # Their own project's URL with this project's workflow id: no such workflow there.
    assert client.get(url(outsider_project, f"workflows/{workflow.pk}")).status_code == 404
    workflow.refresh_from_db()
    assert workflow.status == Workflow.Status.ACTIVE


def test_editing_an_active_workflow_edits_a_draft_that_publish_changes_makes_version_2(client, project, travel):
    template = published_template(project)
    workflow = active_workflow(project, guide_flow(template), name="Purchase Follow-Up")
    identify(project, "user_001", email="jane@example.com")
    track(project, "user_001", "purchase")
    run_engine(project)  # a run on version 1
    edited = guide_flow(template)
    edited["steps"][0]["name"] = "Thank you"

    client.post(
        url(project, f"workflows/{workflow.pk}/definition"), {"definition": edited}, content_type="application/json"
    )

    workflow.refresh_from_db()
    assert workflow.active_version.number == 1 and workflow.active_version.definition == guide_flow(template)
    page = client.get(url(project, f"workflows/{workflow.pk}")).content.decode()
    assert ">Publish changes</button>" in page and "Unpublished changes" in page

    client.post(url(project, f"workflows/{workflow.pk}/activate"))

    workflow.refresh_from_db()
    assert workflow.active_version.number == 2 and workflow.active_version.definition == edited
    page = text(client.get(url(project, f"workflows/{workflow.pk}")))
    assert "Version 2" in page and "Publish changes" not in page


def test_runs_in_progress_on_an_older_version_are_counted_on_the_page(client, project, travel):
    flow = definition(
        {"type": "event", "event_name": "purchase"},
        [{"id": "wait", "type": "delay", "duration": {"value": 1, "unit": "days"}}],
        [],
    )
    workflow = active_workflow(project, flow, name="Slow")
    identify(project, "user_001", email="jane@example.com")
    track(project, "user_001", "purchase")
    run_engine(project)  # waiting on version 1
    flow["steps"][0]["duration"]["value"] = 2
    client.post(
        url(project, f"workflows/{workflow.pk}/definition"), {"definition": flow}, content_type="application/json"
    )
    client.post(url(project, f"workflows/{workflow.pk}/activate"))

    page = text(client.get(url(project, f"workflows/{workflow.pk}")))
    builder = client.get(url(project, f"workflows/{workflow.pk}/builder")).content.decode()

    assert "1 run on older versions" in page
    config = json.loads(
        re.search(r'id="workflow-builder-config" type="application/json">(.*?)</script>', builder).group(1)
    )
    assert (config["activeVersion"], config["runsOnOlderVersions"]) == (2, 1)


def test_send_test_posts_the_webhook_step_and_shows_the_response(client, project, settings):
    from .receiver import Reply, allowed_receiver

    with allowed_receiver(settings) as receiver:
        receiver.reply(Reply(201, body=b'{"ok": true}'))
        step = {"type": "webhook", "method": "POST", "url": receiver.url("/hook"), "headers": {}, "body": '{"a": 1}'}

        response = client.post(url(project, "workflows/webhook-test"), {"step": step}, content_type="application/json")

        (request,) = receiver.wait_for(1)
    answer = response.json()
    assert response.status_code == 200
    assert (answer["status"], answer["body"]) == (201, '{"ok": true}') and not answer["error"]
    assert request.body == b'{"a": 1}' and request.headers["webhook-id"].startswith("test-")
