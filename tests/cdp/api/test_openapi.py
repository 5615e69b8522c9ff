"""The OpenAPI document of the CDP API (`cdp/openapi.yaml`): valid, served as is, complete, and
true of the live API.

`test_live_api_conforms_to_the_spec` runs schemathesis against a real HTTP server of the API
urlconf: for every operation of the document it sends the document's examples, boundary cases and
generated requests (valid and invalid) with a real project key, and checks every answer against the
document: no 5xx, and a documented status code, content type, headers and body.
"""

import base64
import dataclasses
import re

import hypothesis
import orjson
import pytest
import requests
import schemathesis
import yaml
from django.core.management.color import no_style
from django.core.servers.basehttp import WSGIServer
from django.db import DatabaseError, connection
from django.test.testcases import LiveServerThread, QuietWSGIRequestHandler
from django.urls import URLPattern, URLResolver, get_resolver
from hypothesis import HealthCheck
from openapi_spec_validator import validate
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from cdp.api.openapi import SPEC_PATH
from cdp.processing import commands_process, pending_count
from organizations.api_keys import api_key_create
from organizations.models import Project
from tests.emails.conftest import make_template
from tests.factories import ProjectFactory
from workflows import services as workflow_services
from workflows.models import Workflow

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
]
HTTP_METHODS = ("get", "post", "put", "patch", "delete")
API_MIDDLEWARE = ["django.middleware.security.SecurityMiddleware", "cdp.api.http.CorsMiddleware"]

schema = schemathesis.openapi.from_path(SPEC_PATH)


def load_spec() -> dict:
    return yaml.safe_load(SPEC_PATH.read_text())


def spec_operations(spec: dict) -> dict[str, set[str]]:
    return {path: {m for m in item if m in HTTP_METHODS} for path, item in spec["paths"].items()}


def url_paths(patterns, prefix: str = "") -> set[str]:
    """The paths of a urlconf, in OpenAPI's notation: `<str:customer_id>` becomes `{customer_id}`."""
    found = set()
    for pattern in patterns:
        route = prefix + str(pattern.pattern)
        if isinstance(pattern, URLResolver):
            found |= url_paths(pattern.url_patterns, route)
        else:
            assert isinstance(pattern, URLPattern)
            found.add("/" + re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", route))
    return found


def cursor_of(*values) -> str:
    return base64.urlsafe_b64encode(orjson.dumps(values)).decode()


# --- The document ------------------------------------------------------------------------------


def test_spec_is_valid_openapi_3_0_and_loads_in_schemathesis():
    spec = load_spec()
    assert spec["openapi"] == "3.0.3"
    validate(spec)
    operations = [op for item in spec["paths"].values() for m, op in item.items() if m in HTTP_METHODS]
    operation_ids = [op["operationId"] for op in operations]
    assert len(operation_ids) == len(set(operation_ids))
    loaded = sorted(result.ok().label for result in schema.get_all_operations())
    assert len(loaded) == len(operations) == 46


def test_spec_is_served_as_the_file_without_a_key(client):
    response = client.get("/v1/openapi.yaml")
    assert response.status_code == 200
    assert response["Content-Type"] == "application/yaml"
    assert response.content == SPEC_PATH.read_bytes()


def test_every_url_is_in_the_spec_and_every_spec_path_is_a_url():
    urls = url_paths(get_resolver("timonier.urls_api").url_patterns)
    assert {"/v1/identify", "/v1/i", "/v1/customers/{customer_id}/events", "/api/event"} <= urls
    assert set(load_spec()["paths"]) == urls


def test_error_shape_retry_after_and_security_schemes_are_documented():
    components = load_spec()["components"]
    assert components["schemas"]["Error"]["required"] == ["error", "code", "message"]
    for name in ("RateLimited", "ServiceUnavailable"):
        assert components["responses"][name]["headers"]["Retry-After"]["$ref"] == "#/components/headers/RetryAfter"
    assert components["headers"]["RetryAfter"]["required"] is True
    schemes = components["securitySchemes"]
    assert schemes["bearerAuth"] == {**schemes["bearerAuth"], "type": "http", "scheme": "bearer"}
    assert schemes["basicAuth"] == {**schemes["basicAuth"], "type": "http", "scheme": "basic"}
    assert schemes["tokenAuth"] == {**schemes["tokenAuth"], "type": "apiKey", "in": "header", "name": "Authorization"}


@pytest.mark.django_db
def test_undocumented_methods_get_405_with_allow(api):
    """The spec lists every method a path answers; any other gets 405 in the error shape."""
    meta = {"/v1/openapi.yaml", "/health"}  # plain views, outside the API's method handling
    for path, methods in spec_operations(load_spec()).items():
        if path in meta:
            continue
        url = path.replace("{customer_id}", "user_001")
        for method in sorted(set(HTTP_METHODS) - methods):
            response = api.client.generic(method.upper(), url)
            assert response.status_code == 405, (method, path)
            assert response.json()["error"] == response.json()["code"] == "method_not_allowed"
            allowed = {m.strip().lower() for m in response["Allow"].split(",")}
            assert allowed == methods | {"options"}, (method, path)


# --- The live API ------------------------------------------------------------------------------


class ApiServerThread(LiveServerThread):
    """Django's live server, one request at a time: like a gunicorn sync worker, it keeps its
    database connection between requests (the threaded one opens one per request)."""

    def _create_server(self, connections_override=None):
        return WSGIServer((self.host, self.port), QuietWSGIRequestHandler, allow_reuse_address=False)


@dataclasses.dataclass
class LiveApi:
    url: str
    key: str
    project_id: int

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}

    def get(self, path: str, **kwargs) -> requests.Response:
        return requests.get(self.url + path, headers=self.auth, timeout=10, **kwargs)

    def post(self, path: str, body, **kwargs) -> requests.Response:
        kwargs.setdefault("headers", self.auth)
        return requests.post(self.url + path, json=body, timeout=10, **kwargs)

    def process(self) -> None:
        while commands_process(project_id=self.project_id).commands:
            pass


@pytest.fixture
def live_api(transactional_db, settings):
    """A real HTTP server of the API urlconf and middleware, and a project with a key and data.

    Not pytest-django's `live_server`: that one starts once per session, with the middleware of
    whichever test asks first, and the browser tests need the platform's.
    """
    settings.ROOT_URLCONF = "timonier.urls_api"
    settings.MIDDLEWARE = API_MIDDLEWARE
    settings.ALLOWED_HOSTS = ["127.0.0.1"]
    project = ProjectFactory()
    _, key = api_key_create(project=project, name="schemathesis")
    thread = ApiServerThread("127.0.0.1", static_handler=lambda handler: handler)
    thread.daemon = True
    thread.start()
    thread.is_ready.wait(timeout=10)
    if thread.error:
        raise thread.error
    live = LiveApi(url=f"http://127.0.0.1:{thread.port}", key=key, project_id=project.pk)
    try:
        _seed(live)
        yield live
    finally:
        thread.terminate()


def _seed(live: LiveApi) -> None:
    """The guide's Jane Doe (`user_001`, the spec's example) with a purchase, and an anonymous visitor."""
    calls = [
        ("identify", {"customer_id": "user_001", "traits": {"email": "jane@example.com", "name": "Jane Doe"}}),
        ("track", {"customer_id": "user_001", "event": "purchase", "properties": {"amount": 29.99}}),
        ("page", {"anonymous_id": "3f1c9e1e-2b7d-4d2b-9d1a-6c3b1a0e9f00", "name": "Pricing"}),
    ]
    for kind, body in calls:
        response = live.post(f"/v1/{kind}", body)
        assert response.status_code == 202, response.text
    live.process()
    _seed_workflow(live.project_id)


def _seed_workflow(project_id: int) -> None:
    """Workflow 1, the spec's example id (`WorkflowIdPath`): API-triggered, active, with a run of
    user_001, so the examples of the workflow operations reach a workflow, not only 404s."""
    project = Project.objects.get(pk=project_id)
    template = make_template(project, publish=True)
    definition = {
        "trigger": {"type": "api"},
        "frequency": {"type": "every_time"},
        "allow_concurrent_runs": True,
        "steps": [{"id": "thank_you", "type": "email", "template_id": template.pk}],
        "edges": [{"from": "trigger", "to": "thank_you"}],
    }
    created = workflow_services.workflow_create(project=project, name="Welcome", definition=definition, user=None)
    Workflow.objects.filter(pk=created.pk).update(id=1)  # the tables are empty: a transactional test
    with connection.cursor() as cursor:  # so that the next workflow created gets 2, not 1
        for sql in connection.ops.sequence_reset_sql(no_style(), [Workflow]):
            cursor.execute(sql)
    workflow = Workflow.objects.get(pk=1)
    workflow_services.workflow_activate(workflow=workflow, user=None)
    customer = project.customers.get(external_id="user_001")
    workflow_services.workflow_enrol(workflow=workflow, customer=customer, key="seed", data={"coupon": "WELCOME10"})


@schema.parametrize()
@hypothesis.settings(
    max_examples=25, deadline=None, derandomize=True, database=None, suppress_health_check=list(HealthCheck)
)
def test_live_api_conforms_to_the_spec(case, live_api):
    case.call_and_validate(base_url=live_api.url, headers=live_api.auth, checks=CHECKS, timeout=10)


def test_live_api_refuses_every_operation_without_a_key_as_documented(live_api, settings):
    settings.API_BAD_KEY_LIMIT = 1000  # 93 bad keys from one address: not a flood here
    secured = [
        result.ok() for result in schema.get_all_operations() if result.ok().definition.raw.get("security") != []
    ]
    assert len(secured) == 44
    for operation in secured:
        url = live_api.url + operation.path.replace("{customer_id}", "user_001")
        body = {"customer_id": "user_001", "event": "purchase"} if operation.method == "post" else None
        for headers in ({}, {"Authorization": "Bearer tk_not_a_key"}, {"Authorization": "Basic !!"}):
            response = requests.request(operation.method, url, json=body, headers=headers, timeout=10)
            assert response.status_code == 401, (operation.label, headers)
            assert response.json()["error"] == response.json()["code"] == "unauthorized"
            operation.validate_response(response)


def test_live_api_takes_the_key_in_every_documented_way(live_api):
    track = schema["/v1/track"]["POST"]
    body = {"customer_id": "user_001", "event": "purchase"}
    for kwargs in (
        {"headers": {"Authorization": f"Bearer {live_api.key}"}},
        {"headers": {"Authorization": f"Token {live_api.key}"}},
        {"headers": {}, "auth": (live_api.key, "")},  # Basic, the key as the username
    ):
        response = requests.post(live_api.url + "/v1/track", json=body, timeout=10, **kwargs)
        assert response.status_code == 202, kwargs
        track.validate_response(response)
    response = live_api.post("/v1/batch", {"batch": [{"type": "t", **body}], "writeKey": live_api.key}, headers={})
    assert response.status_code == 200
    schema["/v1/batch"]["POST"].validate_response(response)


def test_live_api_answers_unknown_paths_with_the_error_shape(live_api):
    for path in ("/v1/nope", "/v1/customers/a%2Fb", "/v1/customers/"):
        response = live_api.get(path)
        assert response.status_code == 404, path
        assert response.headers["Content-Type"] == "application/json"
        assert response.json()["error"] == response.json()["code"] == "not_found"


def test_live_api_documented_limits_and_errors(live_api):
    """Answers schemathesis is unlikely to draw: each is a documented status in the documented shape."""
    track = schema["/v1/track"]["POST"]
    big = {"customer_id": "user_001", "event": "purchase", "properties": {"x": "a" * 110_000}}
    cases = [
        (track, live_api.post("/v1/track", big), 413),
        (track, live_api.post("/v1/track", None, data="{}",
                              headers={**live_api.auth, "Content-Type": "text/xml"}), 415),
        (track, live_api.post("/v1/track", None, data=b"\x1f\x8b nope",
                                            headers={**live_api.auth, "Content-Type": "application/json",
                                                     "Content-Encoding": "gzip"}), 400),
        (track, live_api.post("/v1/track", {"customer_id": "u", "event": "e",
                                            "properties": {"a": {"b": {"c": {"d": {"e": {}}}}}}}), 400),
        # A sentAt thousands of years after the timestamp once overflowed the clock-skew correction.
        (track, live_api.post("/v1/track", {"customer_id": "u", "event": "e", "timestamp": "1970-01-01T00:00:00Z",
                                            "sentAt": "9000-01-01T00:00:00Z"}), 400),
        # Superscript digits pass str.isdigit() but not int().
        (schema["/v1/customers"]["GET"], live_api.get("/v1/customers", params={"limit": "¹"}), 400),
        (schema["/v1/customers"]["GET"], live_api.get("/v1/customers", params={"color": "red"}), 400),
    ]  # fmt: skip
    for operation, response, status in cases:
        assert response.status_code == status, (operation.label, response.text)
        operation.validate_response(response)


def test_live_api_rate_limit_is_429_with_retry_after(live_api, settings):
    settings.API_RATE_LIMIT = 1  # a burst of 2 requests, then one a second
    track = schema["/v1/track"]["POST"]
    body = {"customer_id": "user_001", "event": "purchase"}
    statuses = []
    for _ in range(4):
        case = track.Case(body=body, media_type="application/json")
        response = case.call_and_validate(base_url=live_api.url, headers=live_api.auth, checks=CHECKS, timeout=10)
        statuses.append(response.status_code)
    assert statuses[:2] == [202, 202] and statuses[-1] == 429, statuses
    (retry_after,) = response.headers["retry-after"]  # schemathesis' Response: lowercase names, lists
    assert int(retry_after) >= 1
    assert response.json()["error"] == "rate_limited"


def test_live_api_database_outage_is_503_with_retry_after(live_api, monkeypatch):
    def unavailable(**kwargs):
        raise DatabaseError("connection refused")

    monkeypatch.setattr("cdp.inbox.commands_enqueue", unavailable)
    writes = [
        ("/v1/track", "POST", {"body": {"customer_id": "user_001", "event": "purchase"}}),
        ("/v1/batch", "POST", {"body": {"batch": [{"type": "identify", "customer_id": "user_001"}]}}),
        ("/v1/customers/{customer_id}", "DELETE", {"path_parameters": {"customer_id": "user_001"}}),
        ("/api/v1/customer", "POST", {"body": {"customer_id": "1", "name": "J", "email": "j@x.io", "plan": "p"}}),
        ("/api/v1/event", "POST", {"body": {"customer_id": "1", "name": "purchase"}}),
    ]
    for path, method, data in writes:
        media_type = "application/json" if "body" in data else None
        case = schema[path][method].Case(media_type=media_type, **data)
        # A documented 503 (not_a_server_error would flag any 5xx).
        response = case.call_and_validate(base_url=live_api.url, headers=live_api.auth, checks=CHECKS[1:], timeout=10)
        assert response.status_code == 503, path
        assert response.headers["retry-after"] == ["5"]


def test_live_api_refuses_cursors_it_did_not_return(live_api):
    """Base64 JSON of the wrong shape was a 500 before cdp/selectors.py checked the decoded values."""
    for path, cursor in [
        ("/v1/customers", "not a cursor"),
        ("/v1/customers", cursor_of(1, 2)),
        ("/v1/customers", cursor_of("x")),
        ("/v1/customers", cursor_of(None)),
        ("/v1/customers/user_001/events", cursor_of("2020-01-01T00:00:00", "x")),
        ("/v1/customers/user_001/events", cursor_of("2020-01-01T00:00:00", None)),
        ("/v1/customers/user_001/events", cursor_of(1)),
    ]:
        response = live_api.get(path, params={"cursor": cursor})
        assert response.status_code == 400, (path, cursor)
        schema[path.replace("user_001", "{customer_id}")]["GET"].validate_response(response)


def test_live_api_pages_follow_next_cursor(live_api):
    for i in range(3):
        live_api.post("/v1/identify", {"customer_id": f"c{i}"})
    live_api.process()
    operation = schema["/v1/customers"]["GET"]
    seen, cursor = [], None
    while True:
        response = live_api.get("/v1/customers", params={"limit": 2, **({"cursor": cursor} if cursor else {})})
        operation.validate_response(response)
        seen += [c["customer_id"] for c in response.json()["customers"]]
        cursor = response.json()["next_cursor"]
        if cursor is None:
            break
    assert seen == ["c2", "c1", "c0", None, "user_001"]


# --- Inputs that once made the API fail ------------------------------------------------------


def test_trait_filters_are_json_keys_not_lookups(live_api):
    live_api.post("/v1/identify", {"customer_id": "pro_1", "traits": {"plan": "pro", "address": {"city": "Oslo"}}})
    live_api.process()
    for name in ("traits.plan.regex", "traits.plan__regex"):
        response = live_api.get("/v1/customers", params={name: "("})
        assert response.status_code == 200, name
        assert response.json()["customers"] == []
    found = live_api.get("/v1/customers", params={"traits.address.city": "Oslo"}).json()["customers"]
    assert [c["customer_id"] for c in found] == ["pro_1"]


def test_nul_in_query_or_path_is_a_400(live_api):
    for path in (
        "/v1/customers?search=%00",
        "/v1/customers?traits.plan=%00",
        "/v1/customers/%00",
        "/v1/customers/user_001/events?event=%00",
        "/api/v1/customer?name=%00",
        "/api/v1/customer?customer_id=%00",
        "/api/v1/event?name=%00",
    ):
        response = live_api.get(path)
        assert response.status_code == 400, path
        assert response.json()["message"] == "query: contains a NUL character"


def test_a_call_the_worker_could_not_store_is_refused_up_front(live_api):
    bodies = [
        ("identify", {"customer_id": "n1", "traits": {"a": "x\u0000y"}}, "traits: contains a NUL character"),
        (
            "track",
            {"customer_id": "n2", "event": "e", "properties": {"k\u0000": 1}},
            "properties: contains a NUL character",
        ),
        ("identify", {"customer_id": "n3", "message_id": "m\u0000"}, "message_id: contains a NUL character"),
        ("page", {"customer_id": "n4", "name": "p\u0000"}, "name: contains a NUL character"),
        (
            "track",
            {"customer_id": "n5", "event": "e", "context": {"ip": "\u0000"}},
            "context: contains a NUL character",
        ),
    ]
    for kind, body, message in bodies:
        response = live_api.post(f"/v1/{kind}", body)
        assert response.status_code == 400, (kind, body)
        assert response.json()["message"] == message
    assert pending_count(live_api.project_id) == 0
