"""API keys with scopes (issue 12): a write key, public in web pages, can only send calls; a secret
key can do everything. CORS only on the sending endpoints; a rate limit per client address on bad
keys; the New API Key page and `create_api_key` choose the scope; the raw key is never kept in the
session.

The operations are read from the API's contract (`cdp/openapi.yaml`, which tests/cdp/api/test_openapi.py
proves equal to the URLconf): every operation but the sending ones and Meta needs a secret key, so a
new read or management endpoint is covered as soon as it is documented.
"""

import io
import json
import re
from datetime import UTC, datetime

import pytest
import yaml
from django.contrib.sessions.models import Session
from django.core.cache import cache
from django.core.management import CommandError, call_command
from django.test import Client

from cdp.api.openapi import SPEC_PATH
from cdp.models import Command
from organizations.api_keys import api_key_authenticate, api_key_create
from organizations.models import ApiKey
from segments.models import Segment
from segments.services import segment_create
from tests.factories import ProjectFactory
from timonier import clock

pytestmark = pytest.mark.django_db

SPEC = yaml.safe_load(SPEC_PATH.read_text())
METHODS = ("get", "post", "put", "patch", "delete")
FORBIDDEN = {
    "error": "forbidden",
    "code": "forbidden",
    "message": "authorization: this endpoint needs a secret key; a write key can only send calls",
}
ORIGIN = "https://shop.example"
T0 = datetime(2026, 6, 1, 12, 0, 10, tzinfo=UTC)


def _operations() -> list[tuple[str, str, dict]]:
    return [(m.upper(), path, op) for path, item in SPEC["paths"].items() for m, op in item.items() if m in METHODS]


def _sends_calls(op: dict, method: str) -> bool:
    return "Ingest" in op["tags"] or ("Traitly" in op["tags"] and method == "POST")


SENDING = [(method, path, op) for method, path, op in _operations() if _sends_calls(op, method)]
SECRET_ONLY = [
    (method, path, op)
    for method, path, op in _operations()
    if not _sends_calls(op, method) and "Meta" not in op["tags"]
]


def _example_body(op: dict):
    """The first example of an operation's JSON body in the spec (`$ref`s followed), else {}."""
    body = op["requestBody"]
    if "$ref" in body:
        body = SPEC["components"]["requestBodies"][body["$ref"].rsplit("/", 1)[-1]]
    content = body["content"]["application/json"]
    if "example" in content:
        return content["example"]
    examples = list(content.get("examples", {}).values())
    return examples[0]["value"] if examples else {}


class Api:
    """A project with a key of each scope, a customer and a segment, on the API's URL root."""

    def __init__(self):
        self.project = ProjectFactory()
        _, self.write_key = api_key_create(project=self.project, name="Website", scope=ApiKey.Scope.WRITE)
        _, self.secret_key = api_key_create(project=self.project, name="Backend Server")
        self.segment = segment_create(
            project=self.project,
            name="Pro",
            condition={"type": "trait", "name": "plan", "op": "equals", "value": "pro"},
        )

    def url(self, path: str) -> str:
        return path.replace("{customer_id}", "user_001").replace("{segment_id}", str(self.segment.pk))

    def call(self, method: str, path: str, *, key: str | None, body=None, **headers):
        if key is not None:
            headers["HTTP_AUTHORIZATION"] = f"Bearer {key}"
        data = json.dumps(body) if body is not None else ""
        return Client().generic(method, self.url(path), data, content_type="application/json", **headers)


@pytest.fixture
def api(settings) -> Api:
    settings.ROOT_URLCONF = "timonier.urls_api"
    settings.MIDDLEWARE = ["django.middleware.security.SecurityMiddleware", "cdp.api.http.CorsMiddleware"]
    cache.clear()
    return Api()


def _rows(project) -> tuple:
    return (
        Command.objects.filter(project=project).count(),
        list(Segment.objects.filter(project=project).values_list("pk", "name", "condition")),
    )


# --- Scopes --------------------------------------------------------------------------------------


def test_every_read_and_management_operation_is_documented_as_secret_only():
    assert {(m, p) for m, p, _ in SECRET_ONLY} >= {
        ("GET", "/v1/customers"),
        ("DELETE", "/v1/customers/{customer_id}"),
        ("POST", "/v1/segments"),
        ("GET", "/api/v1/customer"),
    }
    forbidden = {"$ref": "#/components/responses/Forbidden"}
    undocumented = [f"{method} {path}" for method, path, op in SECRET_ONLY if op["responses"].get("403") != forbidden]
    assert undocumented == [], 'add `"403": {$ref: "#/components/responses/Forbidden"}` to these operations'


@pytest.mark.parametrize(("method", "path"), [(m, p) for m, p, _ in SECRET_ONLY])
def test_write_key_on_a_read_or_management_endpoint_is_403_naming_the_scope(api, method, path):
    op = SPEC["paths"][path][method.lower()]
    body = _example_body(op) if "requestBody" in op else None
    before = _rows(api.project)

    response = api.call(method, path, key=api.write_key, body=body)

    assert response.status_code == 403, response.content
    assert response.json() == FORBIDDEN
    assert _rows(api.project) == before


@pytest.mark.parametrize(("method", "path"), [(m, p) for m, p, _ in SECRET_ONLY])
def test_secret_key_on_a_read_or_management_endpoint_is_not_refused(api, method, path):
    op = SPEC["paths"][path][method.lower()]
    body = _example_body(op) if "requestBody" in op else None
    response = api.call(method, path, key=api.secret_key, body=body)
    assert response.status_code not in (401, 403), response.content


@pytest.mark.parametrize(("method", "path"), [(m, p) for m, p, _ in SENDING])
def test_write_key_can_send_every_call(api, method, path):
    op = SPEC["paths"][path][method.lower()]
    response = api.call(method, path, key=api.write_key, body=_example_body(op))
    assert response.status_code in (200, 202), response.content
    assert Command.objects.filter(project=api.project).exists()


def test_write_key_in_the_body_can_send_as_analytics_js_does(api):
    response = api.call(
        "POST", "/v1/t", key=None, body={"writeKey": api.write_key, "userId": "u1", "event": "Signed Up"}
    )
    assert response.status_code == 202, response.content


def test_a_new_key_is_secret_unless_asked():
    key, raw = api_key_create(project=ProjectFactory(), name="k")
    assert key.scope == ApiKey.Scope.SECRET
    assert api_key_authenticate(raw).scope == ApiKey.Scope.SECRET
    with pytest.raises(ValueError, match="scope: must be one of write, secret"):
        api_key_create(project=ProjectFactory(), name="k", scope="admin")


# --- CORS ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(("method", "path"), [(m, p) for m, p, _ in SENDING])
def test_sending_endpoints_answer_cors_and_preflights(api, method, path):
    preflight = api.call("OPTIONS", path, key=None, HTTP_ORIGIN=ORIGIN, HTTP_ACCESS_CONTROL_REQUEST_METHOD=method)
    assert preflight.status_code == 204
    assert preflight["Access-Control-Allow-Origin"] == "*"
    assert "Authorization" in preflight["Access-Control-Allow-Headers"]
    op = SPEC["paths"][path][method.lower()]
    sent = api.call(method, path, key=api.write_key, body=_example_body(op), HTTP_ORIGIN=ORIGIN)
    assert sent["Access-Control-Allow-Origin"] == "*"
    refused = api.call(method, path, key="tk_not_a_key", body=_example_body(op), HTTP_ORIGIN=ORIGIN)
    assert refused.status_code == 401 and refused["Access-Control-Allow-Origin"] == "*"  # the page can read why


@pytest.mark.parametrize(("method", "path"), [(m, p) for m, p, _ in SECRET_ONLY])
def test_read_and_management_endpoints_answer_no_cors_to_any_origin(api, method, path):
    preflight = api.call(
        "OPTIONS",
        path,
        key=None,
        HTTP_ORIGIN=ORIGIN,
        HTTP_ACCESS_CONTROL_REQUEST_METHOD=method,
        HTTP_ACCESS_CONTROL_REQUEST_HEADERS="authorization",
    )
    assert preflight.status_code == 405
    assert not [name for name in preflight.headers if name.lower().startswith("access-control-")]
    op = SPEC["paths"][path][method.lower()]
    body = _example_body(op) if "requestBody" in op else None
    answered = api.call(method, path, key=api.secret_key, body=body, HTTP_ORIGIN=ORIGIN)
    assert not [name for name in answered.headers if name.lower().startswith("access-control-")]


# --- Bad keys per client address ---------------------------------------------------------------


def _bad(api, key: str | None = "tk_guess0000000000000000000000000000000000", **headers):
    return api.call("POST", "/v1/track", key=key, body={"customer_id": "u", "event": "e"}, **headers)


def test_a_flood_of_bad_keys_from_one_address_gets_429_with_retry_after(api, settings):
    settings.API_BAD_KEY_LIMIT = 20
    with clock.travel(T0):
        statuses = [_bad(api, key=None if i % 2 else f"tk_guess{i:036d}").status_code for i in range(20)]
        assert statuses == [401] * 20  # missing and unknown keys both count

        refused = _bad(api)
        assert refused.status_code == 429
        assert refused["Retry-After"] == "50"  # the minute ends at 12:01:00
        body = refused.json()
        assert body["error"] == body["code"] == "rate_limited"
        assert body["message"] == (
            "authorization: too many requests with a missing or invalid API key from 127.0.0.1; retry in 50 seconds"
        )


def test_a_flooding_address_is_refused_before_any_key_lookup(api, settings, django_assert_num_queries):
    settings.API_BAD_KEY_LIMIT = 3
    with clock.travel(T0):
        for _ in range(3):
            _bad(api)
        with django_assert_num_queries(0):
            assert _bad(api).status_code == 429
        # Even a good key: the address is not told which of its keys would have worked.
        assert (
            api.call("POST", "/v1/track", key=api.write_key, body={"customer_id": "u", "event": "e"}).status_code == 429
        )


def test_the_allowance_comes_back_when_the_minute_ends(api, settings):
    settings.API_BAD_KEY_LIMIT = 3
    with clock.travel(T0) as traveller:
        for _ in range(3):
            _bad(api)
        assert _bad(api).status_code == 429
        traveller.advance(seconds=50)
        assert _bad(api).status_code == 401


def test_good_keys_do_not_count_and_other_addresses_are_not_limited(api, settings):
    settings.API_BAD_KEY_LIMIT = 3
    with clock.travel(T0):
        for _ in range(5):
            assert (
                api.call("POST", "/v1/track", key=api.write_key, body={"customer_id": "u", "event": "e"}).status_code
                == 202
            )
        for _ in range(3):
            _bad(api)
        assert _bad(api).status_code == 429
        assert _bad(api, REMOTE_ADDR="198.51.100.7").status_code == 401


def test_behind_a_proxy_the_address_is_the_one_the_proxy_appended(api, settings):
    settings.API_BAD_KEY_LIMIT = 3
    settings.BEHIND_PROXY = True
    settings.SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    with clock.travel(T0):
        for i in range(3):  # a client varying the X-Forwarded-For it sends itself
            _bad(api, HTTP_X_FORWARDED_FOR=f"10.0.0.{i}, 203.0.113.5")
        assert _bad(api, HTTP_X_FORWARDED_FOR="10.9.9.9, 203.0.113.5").status_code == 429
        assert _bad(api, HTTP_X_FORWARDED_FOR="203.0.113.6").status_code == 401  # another client, same proxy


def test_without_a_proxy_x_forwarded_for_is_not_trusted(api, settings):
    settings.API_BAD_KEY_LIMIT = 3
    with clock.travel(T0):
        for i in range(3):
            _bad(api, HTTP_X_FORWARDED_FOR=f"203.0.113.{i}")
        assert _bad(api, HTTP_X_FORWARDED_FOR="203.0.113.99").status_code == 429


# --- create_api_key --scope ----------------------------------------------------------------------


def _command(*args: str) -> ApiKey:
    out = io.StringIO()
    call_command(
        "create_api_key",
        "--org",
        "acme-corp",
        "--project",
        "my-app",
        "--name",
        "Site",
        *args,
        stdout=out,
        stderr=io.StringIO(),
    )
    raw = out.getvalue().strip().splitlines()[-1]
    return api_key_authenticate(raw)


def test_create_api_key_makes_a_write_key_with_scope_write():
    assert _command("--scope", "write").scope == ApiKey.Scope.WRITE


def test_create_api_key_makes_a_secret_key_by_default_and_with_scope_secret():
    assert _command().scope == ApiKey.Scope.SECRET
    assert _command("--scope", "secret").scope == ApiKey.Scope.SECRET


def test_create_api_key_refuses_an_unknown_scope():
    with pytest.raises(CommandError, match="invalid choice: 'admin'"):
        _command("--scope", "admin")
    assert not ApiKey.objects.exists()


# --- The API Keys pages --------------------------------------------------------------------------


def _base(personas) -> str:
    return f"/o/{personas.organization.slug}/{personas.project.slug}/"


def test_new_api_key_page_asks_which_kind_with_secret_preselected(personas):
    html = personas.client("admin").get(_base(personas) + "api-keys/new").content.decode()
    assert "<legend>Key type</legend>" in html
    secret = re.search(r'<input type="radio" name="scope" value="secret"[^>]*>', html).group(0)
    write = re.search(r'<input type="radio" name="scope" value="write"[^>]*>', html).group(0)
    assert "checked" in secret and "checked" not in write
    assert re.search(r'<label for="id_scope_0">Secret key</label>', html)
    assert re.search(r'<label for="id_scope_1">Write key</label>', html)
    assert "A write key is public" in html and "can only send calls" in html
    assert "A secret key can send calls and also read customers and events, erase customers, and manage" in html


def test_a_write_key_made_on_the_page_is_one_and_the_list_shows_each_kind(personas):
    client = personas.client("admin")
    client.post(_base(personas) + "api-keys/new", {"name": "Website", "scope": "write"})
    client.post(_base(personas) + "api-keys/new", {"name": "Backend Server", "scope": "secret"})
    client.post(_base(personas) + "api-keys/new", {"name": "Script"})  # as the guide's steps, unchanged
    scopes = dict(ApiKey.objects.values_list("name", "scope"))
    assert scopes == {"Website": "write", "Backend Server": "secret", "Script": "secret"}

    listing = client.get(_base(personas) + "api-keys").content.decode()
    rows = dict(re.findall(r"<td>([^<]+)</td>\s*<td data-key-scope=\"\w+\">([^<]+)</td>", listing))
    assert rows == {"Website": "Write key", "Backend Server": "Secret key", "Script": "Secret key"}


def test_an_unknown_kind_is_an_error_under_its_field_and_creates_nothing(personas):
    response = personas.client("admin").post(_base(personas) + "api-keys/new", {"name": "X", "scope": "admin"})
    html = response.content.decode()
    assert re.search(
        r'id="id_scope-errors"><li>Select a valid choice. admin is not one of the available choices.', html
    )
    assert not ApiKey.objects.exists()


# --- The raw key is shown once and never kept in the session ------------------------------------


def _sessions_hold(raw: str) -> bool:
    return any(raw in json.dumps(session.get_decoded(), default=str) for session in Session.objects.all())


def test_the_raw_key_is_never_in_the_session_and_shown_once(personas):
    client = personas.client("admin")
    response = client.post(_base(personas) + "api-keys/new", {"name": "Backend Server"})
    assert response.status_code == 302
    cookie = response.cookies["api_key_once"]
    assert cookie["httponly"] and cookie["path"] == response["Location"] and int(cookie["max-age"]) <= 300

    page = client.get(response["Location"])
    raw = re.search(r'value="(tk_[A-Za-z0-9]{40})"', page.content.decode()).group(1)
    assert raw not in cookie.value  # encrypted in the cookie
    assert not _sessions_hold(raw)
    assert page["Cache-Control"] == "no-store"
    assert page.cookies["api_key_once"].value == "" and page.cookies["api_key_once"]["max-age"] == 0

    again = client.get(response["Location"], follow=True).content.decode()
    assert raw not in again and "An API key is shown only once" in again


def test_the_raw_key_is_not_in_the_session_even_if_its_page_is_never_opened(personas):
    client = personas.client("admin")
    client.post(_base(personas) + "api-keys/new", {"name": "Backend Server"})
    client.get(_base(personas) + "api-keys")  # the user went elsewhere
    key = ApiKey.objects.get()
    for session in Session.objects.all():
        data = json.dumps(session.get_decoded(), default=str)
        assert key.prefix not in data


def test_the_created_page_does_not_show_the_key_after_five_minutes(personas):
    client = personas.client("admin")
    with clock.travel(T0) as traveller:
        response = client.post(_base(personas) + "api-keys/new", {"name": "Backend Server"})
        traveller.advance(seconds=301)
        page = client.get(response["Location"], follow=True).content.decode()
    assert not re.search(r"tk_[A-Za-z0-9]{40}", page) and "An API key is shown only once" in page


def test_another_member_cannot_open_a_key_with_the_creators_cookie(personas):
    response = personas.client("admin").post(_base(personas) + "api-keys/new", {"name": "Backend Server"})
    owner = personas.client("owner")
    owner.cookies["api_key_once"] = response.cookies["api_key_once"].value
    page = owner.get(response["Location"], follow=True).content.decode()
    assert not re.search(r"tk_[A-Za-z0-9]{40}", page) and "An API key is shown only once" in page
