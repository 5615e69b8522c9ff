"""The Workflows API of the CDP API service: workflows and drafts, activation, pause / resume /
archive, runs, enrolments and metrics, with another project's key and the errors it names."""

import json

import pytest

from emails.models import Delivery
from organizations.api_keys import api_key_create
from organizations.models import ApiKey, Project
from tests.cdp.api.conftest import ApiClient, _api_urls  # noqa: F401  (autouse: the API's URL root)
from tests.cdp.api.test_openapi import CHECKS, live_api, load_spec, schema  # noqa: F401  (live_api: a real server)
from tests.workflows.engine import published_template, run_engine
from tests.workflows.receiver import Reply, allowed_receiver
from timonier import clock
from timonier.api.cursors import encode_cursor
from workflows.models import Run, WebhookAttempt, Workflow
from workflows.webhook_attempts import webhook_attempt_send

pytestmark = pytest.mark.django_db


class WorkflowsApiClient(ApiClient):
    """The CDP API test client, with PATCH and the worker's steps (ingest, then the engine)."""

    def patch(self, path: str, body):
        data = body if isinstance(body, (bytes, str)) else json.dumps(body)
        return self.client.patch(path, data=data, content_type="application/json")

    def identify(self, customer_id: str, **traits) -> None:
        response = self.post("/v1/identify", {"customer_id": customer_id, "traits": traits})
        assert response.status_code == 202, response.content
        self.process()

    def track(self, customer_id: str, event: str, **properties) -> None:
        response = self.post("/v1/track", {"customer_id": customer_id, "event": event, "properties": properties})
        assert response.status_code == 202, response.content
        self.process()
        run_engine(self.project)


@pytest.fixture
def api(db) -> WorkflowsApiClient:
    return WorkflowsApiClient.for_new_project("test")


@pytest.fixture
def other_api(db) -> WorkflowsApiClient:
    return WorkflowsApiClient.for_new_project("other")


@pytest.fixture
def template(api):
    return published_template(api.project)


def guide_definition(template_id: int) -> dict:
    """Section 6 of the guide: Event Occurred `purchase`, Once per customer, one email step."""
    return {
        "trigger": {"type": "event", "event_name": "purchase"},
        "frequency": {"type": "once"},
        "steps": [{"id": "thank_you", "type": "email", "name": "Thank you", "template_id": template_id}],
        "edges": [{"from": "trigger", "to": "thank_you"}],
    }


def api_definition(template_id: int, frequency: str = "every_time", **extra) -> dict:
    return {**guide_definition(template_id), "trigger": {"type": "api"}, "frequency": {"type": frequency}, **extra}


def create(api, definition: dict, name: str = "Purchase Follow-Up", **fields) -> dict:
    response = api.post("/v1/workflows", {"name": name, "definition": definition, **fields})
    assert response.status_code == 201, response.content
    return response.json()


def activated(api, definition: dict, name: str = "Purchase Follow-Up") -> dict:
    workflow = create(api, definition, name)
    response = api.post(f"/v1/workflows/{workflow['id']}/activate", None, content_type="application/json")
    assert response.status_code == 200, response.content
    return response.json()


def action(api, workflow: dict, name: str, body=None):
    data = "" if body is None else body
    return api.post(f"/v1/workflows/{workflow['id']}/{name}", data)


def enrol(api, workflow: dict, body: dict, **headers):
    return api.post(f"/v1/workflows/{workflow['id']}/enrollments", body, **headers)


def assert_error(response, status: int, message: str) -> dict:
    assert response.status_code == status, response.content
    body = response.json()
    assert body["error"] == body["code"]
    assert body["message"] == message, body["message"]
    return body


def assert_bad_request(response, *problems: str) -> list[str]:
    """A 400 in the error shape whose `errors` hold `problems`, all in `message` too."""
    assert response.status_code == 400, response.content
    body = response.json()
    assert body["error"] == body["code"] == "bad_request"
    assert body["message"] == "; ".join(body["errors"])
    for problem in problems:
        assert problem in body["errors"], (problem, body["errors"])
    return body["errors"]


# --- Create, read, list -------------------------------------------------------------------------


def test_create_answers_201_with_the_draft_and_its_location(api, template):
    definition = guide_definition(template.pk)

    response = api.post(
        "/v1/workflows",
        {
            "name": "Purchase Follow-Up",
            "description": "Send a thank-you email after a purchase",
            "definition": definition,
        },
    )

    assert response.status_code == 201, response.content
    body = response.json()
    assert response["Location"] == f"/v1/workflows/{body['id']}"
    assert body == {
        "id": body["id"],
        "name": "Purchase Follow-Up",
        "description": "Send a thank-you email after a purchase",
        "status": "draft",
        "definition": definition,
        "has_unpublished_changes": True,
        "active_version": None,
        "versions": [],
        "problems": [],
        "created_at": body["created_at"],
        "updated_at": body["updated_at"],
    }
    assert body["created_at"].endswith("Z")
    stored = Workflow.objects.get(pk=body["id"])
    assert (stored.project, stored.status, stored.definition) == (api.project, "draft", definition)


def test_a_draft_with_problems_is_saved_and_lists_them(api):
    definition = guide_definition(987654)

    body = create(api, definition)

    assert body["status"] == "draft"
    assert body["problems"] == ["steps[0].template_id: no published email template 987654 in this project"]
    assert api.get(f"/v1/workflows/{body['id']}").json()["problems"] == body["problems"]


def test_create_names_every_problem_with_its_field_and_stores_nothing(api):
    body = {
        "name": "",
        "descr": "typo",
        "definition": {"trigger": {"type": "evnt"}, "frequency": {"type": "once_per_period", "days": 0}},
    }

    assert_bad_request(
        api.post("/v1/workflows", body),
        "descr: unknown field; expected one of: name, description, definition",
    )
    del body["descr"]
    errors = assert_bad_request(
        api.post("/v1/workflows", body),
        "name: Enter a name.",
        "definition.frequency.days: must be a whole number of days from 1 to 3650",
    )
    assert any(error.startswith("definition.trigger.type: must be one of event") for error in errors)
    assert not Workflow.objects.exists()


def test_create_requires_name_and_definition(api):
    assert_bad_request(api.post("/v1/workflows", {}), "name: is required", "definition: is required")


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ("[1, 2]", "body: must be a JSON object with name, description and definition"),
        ("{nope", None),
    ],
)
def test_create_with_a_body_that_is_not_a_json_object_is_a_400(api, data, message):
    response = api.post("/v1/workflows", data)

    assert response.status_code == 400
    if message:
        assert response.json()["message"] == message
    else:
        assert response.json()["message"].startswith("body: not valid JSON")


def test_deep_json_in_a_definition_is_a_400_naming_the_field(api, template):
    deep = {"a": 1}
    for _ in range(40):
        deep = {"a": deep}
    very_deep = "[" * 1000 + "]" * 1000  # as deep as orjson parses
    definition = {**guide_definition(template.pk), "layout": deep}

    assert_bad_request(
        api.post("/v1/workflows", {"name": "Deep", "definition": definition}),
        ("definition: nests deeper than 32 levels"),
    )
    raw = '{"name": "Deeper", "definition": {"trigger": {"type": "api"}, "frequency": {"type": "once"}, "layout": %s}}'
    assert_bad_request(api.post("/v1/workflows", raw % very_deep), "definition: nests deeper than 32 levels")
    assert not Workflow.objects.exists()


def test_nul_characters_the_database_cannot_store_are_refused(api, template):
    definition = guide_definition(template.pk)
    definition["steps"][0]["name"] = "Thank\u0000you"

    assert_bad_request(api.post("/v1/workflows", {"name": "A\u0000", "definition": guide_definition(template.pk)}),
                       "name: contains a NUL character")  # fmt: skip
    assert_bad_request(api.post("/v1/workflows", {"name": "A", "definition": definition}),
                       "definition: contains a NUL character")  # fmt: skip
    assert not Workflow.objects.exists()


def test_a_second_workflow_with_the_same_name_is_refused(api, template):
    create(api, guide_definition(template.pk))

    assert_bad_request(
        api.post("/v1/workflows", {"name": "Purchase Follow-Up", "definition": guide_definition(template.pk)}),
        "name: A workflow with this name already exists in this project.",
    )


def test_a_draft_of_any_json_steps_is_read_with_its_problems_not_a_500(api):
    definition = {
        "trigger": {"type": "api"},
        "frequency": {"type": "once"},
        "steps": [
            {"id": []},
            {"id": "s", "type": "split", "branches": [{"key": {}}]},
            5,
            {"id": "e", "type": "email", "template_id": [1]},
            {"id": "d", "type": "delay", "duration": {"value": 1, "unit": {}}},
        ],
        "edges": [{"from": "trigger", "to": ["s"]}, {"from": "s", "output": [], "to": "s"}],
    }
    workflow = create(api, definition)

    assert workflow["problems"]
    assert "steps[2]: must be an object" in workflow["problems"]
    assert api.get(f"/v1/workflows/{workflow['id']}/metrics").status_code == 200
    assert_bad_request(action(api, workflow, "activate"))


def test_a_number_postgresql_would_give_back_too_large_to_answer_is_refused(api, template):
    definition = guide_definition(template.pk)

    for huge in (2**64, 1e20):
        definition["steps"][0]["template_id"] = huge
        assert_bad_request(
            api.post("/v1/workflows", {"name": "Huge", "definition": definition}),
            "definition: holds a number over 9223372036854775807 in magnitude",
        )
    assert not Workflow.objects.exists()


def test_list_pages_by_name_with_next_cursor(api, template):
    for name in ("b", "a", "c"):
        create(api, guide_definition(template.pk), name)

    first = api.get("/v1/workflows", {"limit": 2}).json()
    second = api.get("/v1/workflows", {"limit": 2, "cursor": first["next_cursor"]}).json()

    assert [w["name"] for w in first["workflows"]] == ["a", "b"]
    assert [w["name"] for w in second["workflows"]] == ["c"]
    assert second["next_cursor"] is None


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"cursor": "nope"}, "cursor: not a cursor this API returned"),
        ({"cursor": encode_cursor(1, 2)}, "cursor: not a cursor this API returned"),
        ({"limit": "0"}, "limit: must be an integer from 1 to 500"),
        ({"status": "active"}, "status: unknown parameter; expected limit, cursor"),
    ],
)
def test_list_refuses_bad_parameters(api, params, message):
    assert_error(api.get("/v1/workflows", params), 400, message)


# --- Tenancy ------------------------------------------------------------------------------------


def test_another_projects_key_gets_404_on_every_workflow_operation_and_changes_nothing(api, other_api, template):
    workflow = activated(api, api_definition(template.pk))
    api.identify("user_001", email="jane@example.com")
    base = f"/v1/workflows/{workflow['id']}"
    missing = f"workflow_id: no workflow {workflow['id']} in this project"
    calls = [
        ("GET", base, None),
        ("PATCH", base, {"name": "Taken over"}),
        ("DELETE", base, None),
        ("POST", f"{base}/activate", None),
        ("POST", f"{base}/pause", None),
        ("POST", f"{base}/resume", {"overdue": "run"}),
        ("POST", f"{base}/archive", None),
        ("GET", f"{base}/runs", None),
        ("POST", f"{base}/enrollments", {"customer_id": "user_001", "key": "k"}),
        ("GET", f"{base}/metrics", None),
    ]
    for method, path, body in calls:
        data = json.dumps(body) if body is not None else ""
        response = other_api.client.generic(method, path, data, content_type="application/json")
        assert_error(response, 404, missing)
    assert_error(
        other_api.get("/v1/customers/user_001/runs"), 404, "customer_id: no customer 'user_001' in this project"
    )
    assert other_api.get("/v1/workflows").json()["workflows"] == []
    stored = Workflow.objects.get(pk=workflow["id"])
    assert (stored.name, stored.status) == ("Purchase Follow-Up", "active")
    assert not Run.objects.exists()


def test_a_write_key_cannot_manage_workflows(api):
    _, write_key = api_key_create(project=api.project, name="site", scope=ApiKey.Scope.WRITE)
    response = api.client.get("/v1/workflows", HTTP_AUTHORIZATION=f"Bearer {write_key}")

    assert_error(response, 403, "authorization: this endpoint needs a secret key; a write key can only send calls")


@pytest.mark.parametrize("workflow_id", ["0", "abc", "99999999999999999999", "9223372036854775807"])
def test_an_id_of_no_workflow_is_a_404_naming_the_field(api, workflow_id):
    assert_error(
        api.get(f"/v1/workflows/{workflow_id}"), 404, f"workflow_id: no workflow {workflow_id} in this project"
    )


# --- Change, activate, delete -------------------------------------------------------------------


def test_editing_an_active_workflow_edits_a_draft_that_activate_publishes_as_version_2(api, template):
    workflow = activated(api, guide_definition(template.pk))
    assert (workflow["status"], workflow["active_version"]["number"]) == ("active", 1)
    assert workflow["has_unpublished_changes"] is False
    changed = guide_definition(template.pk)
    changed["steps"][0]["name"] = "Thanks!"

    draft = api.patch(f"/v1/workflows/{workflow['id']}", {"definition": changed, "description": "v2"}).json()

    assert (draft["has_unpublished_changes"], draft["active_version"]["number"]) == (True, 1)
    assert (draft["definition"], draft["description"]) == (changed, "v2")
    assert Workflow.objects.get(pk=workflow["id"]).active_version.definition == guide_definition(template.pk)
    published = action(api, workflow, "activate").json()
    assert [v["number"] for v in published["versions"]] == [2, 1]
    assert (published["active_version"]["number"], published["has_unpublished_changes"]) == (2, False)


def test_patch_keeps_the_fields_not_sent_and_refuses_an_empty_change(api, template):
    workflow = create(api, guide_definition(template.pk), description="Keep me")

    renamed = api.patch(f"/v1/workflows/{workflow['id']}", {"name": "Renamed"}).json()

    assert (renamed["name"], renamed["description"]) == ("Renamed", "Keep me")
    assert renamed["definition"] == workflow["definition"]
    assert_bad_request(
        api.patch(f"/v1/workflows/{workflow['id']}", {}), "body: send at least one of: name, description, definition"
    )


def test_activation_is_refused_with_every_problem_named_in_the_body(api):
    definition = guide_definition(4242)
    definition["steps"].append({"id": "lost", "type": "exit"})
    workflow = create(api, definition)

    response = action(api, workflow, "activate")

    assert_bad_request(
        response,
        "definition.steps[0].template_id: no published email template 4242 in this project",
        "definition.steps[1]: is not reachable from the trigger",
    )
    stored = Workflow.objects.get(pk=workflow["id"])
    assert (stored.status, stored.active_version) == ("draft", None)


def test_delete_answers_204_and_the_workflow_is_gone(api, template):
    workflow = create(api, guide_definition(template.pk))

    response = api.delete(f"/v1/workflows/{workflow['id']}")

    assert response.status_code == 204 and response.content == b""
    assert_error(
        api.get(f"/v1/workflows/{workflow['id']}"), 404, f"workflow_id: no workflow {workflow['id']} in this project"
    )
    assert not Workflow.objects.exists()


def test_undocumented_methods_get_405_with_allow(api):
    response = api.client.put("/v1/workflows/1/activate")

    assert response.status_code == 405
    assert response["Allow"] == "POST, OPTIONS"


# --- Pause, resume, archive ---------------------------------------------------------------------


def test_pause_holds_runs_and_resume_requires_the_overdue_choice(api, template):
    workflow = activated(api, api_definition(template.pk))
    api.identify("user_001", email="jane@example.com")
    assert enrol(api, workflow, {"customer_id": "user_001", "key": "before-pause"}).status_code == 201

    paused = action(api, workflow, "pause").json()
    assert paused["status"] == "paused"
    assert Run.objects.get().held is True
    assert_error(
        action(api, workflow, "pause"), 409, "status: Only an active workflow can be paused; this one is paused."
    )
    assert_bad_request(
        action(api, workflow, "resume", {}),
        'overdue: is required: "run" (run overdue steps now) or "skip_emails" (skip overdue emails)',
    )
    assert_bad_request(
        action(api, workflow, "resume", {"overdue": "later"}),
        'overdue: Choose "run" (run them now) or "skip_emails" (skip overdue emails).',
    )
    resumed = action(api, workflow, "resume", {"overdue": "skip_emails"}).json()

    assert resumed["status"] == "active"
    run = Run.objects.get()
    assert (run.held, run.skip_overdue_emails) == (False, True)
    assert_error(action(api, workflow, "resume", {"overdue": "run"}), 409,
                 "status: Only a paused workflow can be resumed; this one is active.")  # fmt: skip


def test_a_draft_cannot_be_paused(api, template):
    workflow = create(api, guide_definition(template.pk))

    assert_error(
        action(api, workflow, "pause"), 409, "status: Only an active workflow can be paused; this one is draft."
    )


def test_archive_ends_the_runs_and_the_workflow_can_no_longer_change(api, template):
    workflow = activated(api, api_definition(template.pk))
    api.identify("user_001", email="jane@example.com")
    enrol(api, workflow, {"customer_id": "user_001", "key": "k1"})

    archived = action(api, workflow, "archive").json()

    assert archived["status"] == "archived"
    run = Run.objects.get()
    assert (run.status, run.exit_reason) == ("exited", "archived")
    assert_bad_request(
        api.patch(f"/v1/workflows/{workflow['id']}", {"description": "again"}),
        "definition: an archived workflow cannot be changed",
    )
    assert_bad_request(action(api, workflow, "activate"), "definition: an archived workflow cannot be activated")
    listed = api.get(f"/v1/workflows/{workflow['id']}/runs").json()["runs"]
    assert [(r["status"], r["exit_reason"]) for r in listed] == [("exited", "archived")]


# --- Enrolments ---------------------------------------------------------------------------------


def test_enrolment_with_a_key_answers_201_then_200_with_the_same_run(api, template):
    workflow = activated(api, api_definition(template.pk))
    api.identify("user_001", email="jane@example.com")
    body = {"customer_id": "user_001", "key": "order-1234", "data": {"coupon": "WELCOME10"}}

    first = enrol(api, workflow, body)
    again = enrol(api, workflow, {**body, "data": {"coupon": "OTHER"}})

    assert first.status_code == 201, first.content
    assert again.status_code == 200, again.content
    assert again.json() == first.json()
    run = first.json()
    assert (run["workflow_id"], run["version"], run["customer_id"], run["status"]) == (
        workflow["id"], 1, "user_001", "active"
    )  # fmt: skip
    assert Run.objects.get().data == {"coupon": "WELCOME10"}


def test_enrolment_takes_the_idempotency_key_header(api, template):
    workflow = activated(api, api_definition(template.pk))
    api.identify("user_001", email="jane@example.com")

    first = enrol(api, workflow, {"customer_id": "user_001"}, HTTP_IDEMPOTENCY_KEY="retry-me")
    again = enrol(api, workflow, {"customer_id": "user_001", "key": "retry-me"}, HTTP_IDEMPOTENCY_KEY="retry-me")

    assert (first.status_code, again.status_code) == (201, 200)
    assert first.json()["id"] == again.json()["id"]
    assert_bad_request(
        enrol(api, workflow, {"customer_id": "user_001", "key": "a"}, HTTP_IDEMPOTENCY_KEY="b"),
        "key: differs from the Idempotency-Key header; send one of them",
    )


def test_enrolment_without_a_key_is_refused_and_derives_none(api, template):
    workflow = activated(api, api_definition(template.pk))
    api.identify("user_001", email="jane@example.com")

    assert_bad_request(
        enrol(api, workflow, {"customer_id": "user_001"}),
        "key: required (or Idempotency-Key): a key of yours that makes a retry return the same run",
    )
    assert not Run.objects.exists()


def test_enrolment_names_each_bad_field(api, template):
    workflow = activated(api, api_definition(template.pk))

    assert_bad_request(
        enrol(api, workflow, {"data": [1], "key": "x" * 151, "extra": 1}),
        "extra: unknown field; expected one of: customer_id, data, key",
        "customer_id: is required (the customer_id your application gave the customer)",
        "data: must be an object",
        "key: must be a string of 1 to 150 characters",
    )
    assert_bad_request(
        enrol(api, workflow, {"customer_id": "u", "key": "k", "data": {"a": {"b": {"c": {"d": {"e": {}}}}}}}),
        "data: exceeds maximum nesting depth of 5",
    )
    assert_bad_request(
        enrol(api, workflow, {"customer_id": "user\u0000001", "key": "k"}),
        "customer_id: not a customer_id (at most 255 characters of a-zA-Z0-9 - _ . @ + :)",
    )


def test_enrolment_of_an_unknown_customer_is_a_404(api, template):
    workflow = activated(api, api_definition(template.pk))

    assert_error(enrol(api, workflow, {"customer_id": "nobody", "key": "k"}), 404,
                 "customer_id: no customer 'nobody' in this project")  # fmt: skip


def test_enrolment_is_refused_with_409_naming_the_reason(api, template):
    api.identify("user_001", email="jane@example.com")
    event_triggered = activated(api, guide_definition(template.pk), "By event")
    draft = create(api, api_definition(template.pk), "Draft")
    once = activated(api, api_definition(template.pk, frequency="once"), "Once")
    body = {"customer_id": "user_001", "key": "k1"}

    assert_error(enrol(api, event_triggered, body), 409, "workflow_id: the workflow's trigger is not API")
    assert_error(enrol(api, draft, body), 409, "workflow_id: the workflow is draft, not active")
    assert enrol(api, once, body).status_code == 201
    assert_error(enrol(api, once, {**body, "key": "k2"}), 409,
                 "customer_id: the workflow's frequency does not let this customer in again now")  # fmt: skip
    assert Run.objects.filter(workflow_id=once["id"]).count() == 1


# --- Runs and metrics ---------------------------------------------------------------------------


def test_runs_show_the_history_of_the_guides_flow(api, template):
    workflow = activated(api, guide_definition(template.pk))
    api.identify("user_001", email="jane@example.com", name="Jane Doe")
    api.track("user_001", "purchase", item="T-Shirt", amount=29.99, currency="USD")

    (run,) = api.get(f"/v1/workflows/{workflow['id']}/runs").json()["runs"]

    delivery = Delivery.objects.get(to_email="jane@example.com")
    assert (run["status"], run["customer_id"], run["version"], run["current_step"]) == (
        "completed", "user_001", 1, "thank_you"
    )  # fmt: skip
    assert run["ended_at"] is not None and run["wake_at"] is None and run["exit_reason"] is None
    (step,) = run["steps"]
    assert (step["seq"], step["step_id"], step["step_type"], step["outcome"], step["delivery_id"]) == (
        1, "thank_you", "email", "sent", delivery.pk
    )  # fmt: skip
    assert step["webhook_attempts"] == []
    assert api.get("/v1/customers/user_001/runs").json()["runs"] == [run]


def test_runs_filter_by_status_and_customer_and_page_by_cursor(api, template):
    workflow = activated(api, api_definition(template.pk, allow_concurrent_runs=True))
    for customer_id in ("a", "b"):
        api.identify(customer_id, email=f"{customer_id}@example.com")
    for key, customer_id in (("1", "a"), ("2", "b"), ("3", "a")):
        assert enrol(api, workflow, {"customer_id": customer_id, "key": key}).status_code == 201
    runs_path = f"/v1/workflows/{workflow['id']}/runs"

    page = api.get(runs_path, {"limit": 2}).json()
    rest = api.get(runs_path, {"limit": 2, "cursor": page["next_cursor"]}).json()
    ids = [r["id"] for r in page["runs"] + rest["runs"]]
    of_a = api.get(runs_path, {"customer_id": "a"}).json()["runs"]

    assert ids == sorted(ids, reverse=True) and len(ids) == 3 and rest["next_cursor"] is None
    assert [r["customer_id"] for r in of_a] == ["a", "a"]
    assert api.get(runs_path, {"status": "completed"}).json()["runs"] == []
    assert len(api.get("/v1/customers/a/runs", {"status": "active"}).json()["runs"]) == 2
    assert_error(api.get(runs_path, {"status": "done"}), 400,
                 "status: must be one of active, waiting, completed, exited, failed")  # fmt: skip
    assert_error(
        api.get(runs_path, {"customer_id": "nobody"}), 404, "customer_id: no customer 'nobody' in this project"
    )
    assert_error(api.get(runs_path, {"cursor": encode_cursor("x")}), 400, "cursor: not a cursor this API returned")
    assert_error(
        api.get(runs_path, {"who": "a"}), 400, "who: unknown parameter; expected limit, cursor, status, customer_id"
    )


def test_metrics_count_each_step_per_version_and_window(api, template):
    workflow = activated(api, guide_definition(template.pk))
    api.identify("user_001", email="jane@example.com", name="Jane Doe")
    api.track("user_001", "purchase", item="T-Shirt")
    metrics_path = f"/v1/workflows/{workflow['id']}/metrics"

    metrics = api.get(metrics_path, {"version": "1"}).json()

    assert (metrics["workflow_id"], metrics["version"], metrics["since"], metrics["until"]) == (
        workflow["id"], 1, None, None
    )  # fmt: skip
    assert metrics["steps"] == [
        {
            "step_id": "thank_you",
            "name": "Thank you",
            "type": "email",
            "entered": 1,
            "completed": 1,
            "emails_sent": 0,  # queued: the worker sends it (the live test sees it arrive)
            "emails_opened": 0,
            "emails_clicked": 0,
            "webhook_failures": 0,
            "conversions": 0,
        }
    ]
    later = clock.now().replace(year=clock.now().year + 1).isoformat()
    assert api.get(metrics_path, {"since": later}).json()["steps"][0]["entered"] == 0
    assert api.get(metrics_path).json()["steps"][0]["entered"] == 1
    assert_error(api.get(metrics_path, {"version": "2"}), 404, f"version: workflow {workflow['id']} has no version 2")
    assert_error(api.get(metrics_path, {"version": "x"}), 400, "version: must be a version number (a positive integer)")
    assert_error(api.get(metrics_path, {"since": "yesterday"}), 400,
                 "since: must be an ISO 8601 date-time, e.g. 2026-03-01T00:00:00Z")  # fmt: skip
    assert_error(api.get(metrics_path, {"since": later, "until": later}), 400, "until: must be after since")


# --- Against the spec, on a real HTTP server -----------------------------------------------------


def spec_call(live, path: str, method: str, *, status: int, **data):
    """One request through schemathesis, validated by every check of the spec test; the answer must be `status`."""
    media_type = "application/json" if "body" in data else None
    case = schema[path][method].Case(media_type=media_type, **data)
    response = case.call_and_validate(base_url=live.url, headers=live.auth, checks=CHECKS, timeout=10)
    assert response.status_code == status, response.text
    return response.json() if response.content else None


def send_due_webhooks() -> None:
    """What the webhook tasks do after the executor's commit (no worker here)."""
    for attempt in WebhookAttempt.objects.filter(status=WebhookAttempt.Status.QUEUED, due_at__lte=clock.now()):
        webhook_attempt_send(attempt_id=attempt.pk)


@pytest.mark.django_db(transaction=True)
def test_every_workflow_operation_answers_as_documented_with_runs_that_have_history(live_api, settings):  # noqa: F811
    """The statuses and shapes the generated requests rarely reach: runs with steps, a delivery and
    webhook attempts, metrics with counts, 409s, 201 then 200 for one key."""
    project = Project.objects.get(pk=live_api.project_id)
    template = published_template(project, name="Guide Thank You")  # the seed made "Purchase Thank You"
    with allowed_receiver(settings) as receiver:
        receiver.reply(Reply(503))
        definition = guide_definition(template.pk)
        definition["steps"].append({"id": "notify", "type": "webhook", "url": receiver.url("/orders")})
        definition["edges"].append({"from": "thank_you", "to": "notify"})
        created = spec_call(
            live_api, "/v1/workflows", "POST", status=201, body={"name": "Guide", "definition": definition}
        )
        one = {"path_parameters": {"workflow_id": created["id"]}}
        assert (
            spec_call(live_api, "/v1/workflows/{workflow_id}/pause", "POST", status=409, **one)["error"] == "conflict"
        )
        spec_call(live_api, "/v1/workflows/{workflow_id}/activate", "POST", status=200, **one)
        live_api.post("/v1/track", {"customer_id": "user_001", "event": "purchase", "properties": {"item": "Mug"}})
        live_api.process()
        run_engine(project)
        send_due_webhooks()
        run_engine(project)

        (run,) = spec_call(live_api, "/v1/workflows/{workflow_id}/runs", "GET", status=200, **one)["runs"]
    assert [step["step_id"] for step in run["steps"]] == ["thank_you", "notify"]
    assert run["steps"][0]["delivery_id"] is not None
    assert run["steps"][1]["webhook_attempts"][0]["response_status"] == 503
    customer_runs = {"path_parameters": {"customer_id": "user_001"}, "query": {"status": run["status"]}}
    assert run in spec_call(live_api, "/v1/customers/{customer_id}/runs", "GET", status=200, **customer_runs)["runs"]
    metrics = spec_call(live_api, "/v1/workflows/{workflow_id}/metrics", "GET", status=200, query={"version": 1}, **one)
    assert [step["entered"] for step in metrics["steps"]] == [1, 1]
    spec_call(live_api, "/v1/workflows/{workflow_id}/pause", "POST", status=200, **one)
    spec_call(live_api, "/v1/workflows/{workflow_id}/resume", "POST", status=200, body={"overdue": "run"}, **one)
    enrolment = {"body": {"customer_id": "user_001", "key": "k1"}, **one}
    refused = spec_call(live_api, "/v1/workflows/{workflow_id}/enrollments", "POST", status=409, **enrolment)
    assert refused["message"] == "workflow_id: the workflow's trigger is not API"
    seeded = {"path_parameters": {"workflow_id": 1}, "body": {"customer_id": "user_001", "key": "k1"}}
    first = spec_call(live_api, "/v1/workflows/{workflow_id}/enrollments", "POST", status=201, **seeded)
    assert spec_call(live_api, "/v1/workflows/{workflow_id}/enrollments", "POST", status=200, **seeded) == first
    broken = {"definition": guide_definition(987654)}
    spec_call(live_api, "/v1/workflows/{workflow_id}", "PATCH", status=200, body=broken, **one)
    problems = spec_call(live_api, "/v1/workflows/{workflow_id}/activate", "POST", status=400, **one)["errors"]
    assert problems == ["definition.steps[0].template_id: no published email template 987654 in this project"]
    assert spec_call(live_api, "/v1/workflows", "GET", status=200, query={"limit": 1})["next_cursor"]
    spec_call(live_api, "/v1/workflows/{workflow_id}/archive", "POST", status=200, **one)
    spec_call(live_api, "/v1/workflows/{workflow_id}", "DELETE", status=204, **one)
    spec_call(live_api, "/v1/workflows/{workflow_id}", "GET", status=404, **one)


def test_the_specs_two_example_definitions_activate_once_their_templates_exist(api, template):
    examples = load_spec()["paths"]["/v1/workflows"]["post"]["requestBody"]["content"]["application/json"]["examples"]
    assert set(examples) == {"purchaseFollowUp", "cartAbandonment"}
    for example in examples.values():
        body = example["value"]
        for step in body["definition"]["steps"]:
            if step["type"] == "email":
                step["template_id"] = template.pk

        workflow = create(api, body["definition"], body["name"], description=body["description"])

        assert workflow["problems"] == []
        assert action(api, workflow, "activate").json()["status"] == "active"
