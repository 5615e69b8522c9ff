"""Each validation limit and each error code of the ingest API, with the documented error shape."""

import base64
import gzip
import json
import uuid

import pytest
from django.db import connection

from cdp.models import Command
from organizations.api_keys import api_key_create, api_key_revoke

pytestmark = pytest.mark.django_db


def _error(response, status: int, message: str):
    assert response.status_code == status, response.content
    body = response.json()
    assert body["error"] == body["code"]
    assert body["message"] == message, body["message"]
    return body


def test_guide_identify_and_track_are_accepted_with_a_command_id(api):
    response = api.post(
        "/v1/identify",
        {"customer_id": "user_001", "traits": {"email": "jane@example.com", "name": "Jane Doe", "plan": "pro"}},
    )
    assert response.status_code == 202
    body = response.json()
    assert body["success"] is True and uuid.UUID(body["command_id"])
    response = api.post(
        "/v1/track",
        {"customer_id": "user_001", "event": "purchase", "properties": {"item": "T-Shirt", "amount": 29.99}},
    )
    assert response.status_code == 202 and response.json()["success"] is True
    assert Command.objects.filter(project=api.project).count() == 2


def test_the_request_writes_no_customer_or_event(api):
    from cdp.models import Customer, Event

    api.post("/v1/identify", {"customer_id": "user_001", "traits": {"plan": "pro"}})
    assert not Customer.objects.exists() and not Event.objects.exists()


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"customer_id": "x" * 256, "event": "e"}, "customer_id: exceeds maximum length of 255 characters"),
        ({"customer_id": "jane doe", "event": "e"}, "customer_id: contains characters outside a-zA-Z0-9 - _ . @ + :"),
        ({"customer_id": ["a"], "event": "e"}, "customer_id: must be a string"),
        ({"event": "e"}, "customer_id: customer_id or anonymous_id is required"),
        ({"anonymous_id": "x" * 256, "event": "e"}, "anonymous_id: exceeds maximum length of 255 characters"),
        ({"customer_id": "u"}, "event: is required"),
        ({"customer_id": "u", "event": "e" * 101}, "event: exceeds maximum length of 100 characters"),
        ({"customer_id": "u", "event": "buy/now"}, "event: contains characters outside a-zA-Z0-9 _ - and spaces"),
        ({"customer_id": "u", "event": "e", "properties": []}, "properties: must be an object"),
        (
            {"customer_id": "u", "event": "e", "properties": {f"k{i}": i for i in range(101)}},
            "properties: exceeds 100 keys",
        ),
        (
            {"customer_id": "u", "event": "e", "properties": {"big": "x" * (32 * 1024)}},
            "properties: exceeds maximum size of 32 KB",
        ),
        (
            {"customer_id": "u", "event": "e", "properties": {"a": {"b": {"c": {"d": {"e": {"f": 1}}}}}}},
            "properties: exceeds maximum nesting depth of 5",
        ),
        (
            {"customer_id": "u", "event": "e", "timestamp": "yesterday"},
            "timestamp: must be an ISO 8601 date-time string, got 'yesterday'",
        ),
        ({"customer_id": "u", "event": "e", "context": "web"}, "context: must be an object"),
        (
            {"customer_id": "u", "event": "e", "message_id": "m" * 256},
            "message_id: exceeds maximum length of 255 characters",
        ),
        ({"customer_id": "u", "event": "e", "type": "identify"}, "type: must be 'track' on this endpoint"),
    ],
)
def test_track_validation_errors_name_the_field(api, body, message):
    _error(api.post("/v1/track", body), 400, message)
    assert not Command.objects.exists()


def test_nesting_depth_of_five_is_accepted(api):
    body = {"customer_id": "u", "event": "e", "properties": {"a": {"b": {"c": {"d": {"e": 1}}}}}}
    assert api.post("/v1/track", body).status_code == 202


def test_hundred_keys_are_accepted(api):
    body = {"customer_id": "u", "traits": {f"k{i}": i for i in range(100)}}
    assert api.post("/v1/identify", body).status_code == 202


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"customer_id": "u", "traits": {f"k{i}": i for i in range(101)}}, "traits: exceeds 100 keys"),
        ({"customer_id": "u", "traits": {"big": "x" * (32 * 1024)}}, "traits: exceeds maximum size of 32 KB"),
        ({"customer_id": "u", "traits": "pro"}, "traits: must be an object"),
    ],
)
def test_identify_traits_limits(api, body, message):
    _error(api.post("/v1/identify", body), 400, message)


def test_batch_error_names_the_item_index(api):
    batch = {
        "batch": [
            {"type": "track", "customer_id": "u", "event": "ok"},
            {"type": "track", "customer_id": "x" * 256, "event": "e"},
        ]
    }
    _error(api.post("/v1/batch", batch), 400, "batch[1].customer_id: exceeds maximum length of 255 characters")
    _error(api.post("/v1/batch", {"batch": [{"customer_id": "u"}]}), 400, "batch[0].type: is required")
    _error(api.post("/v1/batch", {"batch": []}), 400, "batch: must contain at least one call")
    _error(api.post("/v1/batch", {"events": []}), 400, "batch: must be an array of calls")
    assert not Command.objects.exists()


def test_batch_answers_200_with_the_count(api):
    batch = {
        "batch": [
            {"type": "identify", "userId": "u", "traits": {"a": 1}},
            {"type": "track", "userId": "u", "event": "x"},
        ]
    }
    response = api.post("/v1/batch", batch)
    assert response.status_code == 200
    assert response.json()["success"] is True and response.json()["accepted"] == 2


def test_missing_key_is_401(api):
    api.client.defaults.pop("HTTP_AUTHORIZATION")
    _error(
        api.post("/v1/track", {"customer_id": "u", "event": "e"}),
        401,
        "missing API key: send Authorization: Bearer <key>",
    )


def test_invalid_key_is_401(api):
    api.client.defaults["HTTP_AUTHORIZATION"] = "Bearer tk_" + "A" * 40
    _error(api.post("/v1/track", {"customer_id": "u", "event": "e"}), 401, "invalid or revoked API key")


def test_revoked_key_is_401(api):
    key = api.project.api_keys.get()
    assert api.post("/v1/track", {"customer_id": "u", "event": "e"}).status_code == 202
    api_key_revoke(api_key=key)
    _error(api.post("/v1/track", {"customer_id": "u", "event": "e"}), 401, "invalid or revoked API key")
    assert Command.objects.count() == 1


def test_basic_auth_with_key_as_username(api):
    token = base64.b64encode(f"{api.key}:".encode()).decode()
    api.client.defaults["HTTP_AUTHORIZATION"] = f"Basic {token}"
    assert api.post("/v1/track", {"userId": "u", "event": "e"}).status_code == 202


def test_write_key_in_a_text_plain_body(api):
    api.client.defaults.pop("HTTP_AUTHORIZATION")
    body = {"writeKey": api.key, "userId": "u", "event": "e", "type": "track"}
    assert api.post("/v1/t", json.dumps(body), content_type="text/plain").status_code == 202


def test_traitly_token_scheme(api):
    api.client.defaults["HTTP_AUTHORIZATION"] = f"Token {api.key}"
    assert api.post("/v1/track", {"customer_id": "u", "event": "e"}).status_code == 202


def test_body_that_is_not_json_is_400(api):
    message = "body: not valid JSON (unexpected character, expected a string key: line 1 column 2 (char 1))"
    _error(api.post("/v1/track", "{not json"), 400, message)
    _error(api.post("/v1/track", "[1, 2]"), 400, "body: must be a JSON object")


def test_other_content_types_are_415(api):
    response = api.post("/v1/track", "<track/>", content_type="text/xml")
    message = "Content-Type must be application/json (or text/plain or application/x-www-form-urlencoded carrying JSON)"
    _error(response, 415, message)


def test_single_call_over_100_kb_is_413(api):
    body = {"customer_id": "u", "event": "e", "context": {"pad": "x" * (100 * 1024)}}
    _error(api.post("/v1/track", body), 413, "body exceeds 100 KB")


def test_batch_over_500_kb_is_413(api):
    item = {"type": "track", "customer_id": "u", "event": "e", "properties": {"pad": "x" * 20_000}}
    _error(api.post("/v1/batch", {"batch": [item] * 30}), 413, "body exceeds 500 KB")


def test_gzip_body_is_accepted(api):
    batch = {"batch": [{"type": "track", "userId": "u", "event": "e"}] * 50}
    assert api.post("/v1/batch", batch, gzip_body=True).status_code == 200


def test_gzip_bomb_is_refused_without_inflating_it(api):
    bomb = gzip.compress(b'{"batch": [' + b" " * (50 * 1024 * 1024) + b"]}")
    assert len(bomb) < 500 * 1024
    response = api.post("/v1/batch", bomb, HTTP_CONTENT_ENCODING="gzip")
    _error(response, 413, "body exceeds 500 KB once inflated")


def test_corrupt_gzip_is_400(api):
    _error(api.post("/v1/batch", b"not gzip at all", HTTP_CONTENT_ENCODING="gzip"), 400, "body: not valid gzip")


def test_rate_limit_answers_429_with_retry_after_and_enqueues_nothing(api):
    api.project.ingest_rate_limit = 1
    api.project.save()
    from django.core.cache import cache

    cache.clear()  # the key lookup caches the project
    statuses = [api.post("/v1/track", {"customer_id": "u", "event": "e"}).status_code for _ in range(3)]
    assert statuses == [202, 202, 429]  # a burst of 2 s at 1 request per second
    response = api.post("/v1/track", {"customer_id": "u", "event": "e"})
    body = _error(response, 429, "rate limit of 1 requests per second exceeded")
    assert body and int(response["Retry-After"]) >= 1
    assert Command.objects.count() == 2


def test_wrong_method_is_405(api):
    response = api.get("/v1/track")
    _error(response, 405, "GET is not allowed here; use POST")


def test_cors_preflight_and_headers(api):
    response = api.client.options("/v1/t", HTTP_ORIGIN="http://shop.example", HTTP_ACCESS_CONTROL_REQUEST_METHOD="POST")
    assert response.status_code == 204
    assert response["Access-Control-Allow-Origin"] == "*"
    assert "Content-Type" in response["Access-Control-Allow-Headers"]
    posted = api.post("/v1/track", {"customer_id": "u", "event": "e"}, HTTP_ORIGIN="http://shop.example")
    assert posted["Access-Control-Allow-Origin"] == "*"


@pytest.mark.django_db(transaction=True)
def test_database_that_cannot_take_the_command_is_503_with_retry_after(api):
    if connection.vendor != "postgresql":
        pytest.skip("holds a real table lock: PostgreSQL only")
    import threading

    from django.db import connections

    locked = threading.Event()
    release = threading.Event()

    def hold_lock():
        with connections["default"].cursor() as cursor:
            cursor.execute("BEGIN")
            cursor.execute("LOCK TABLE cdp_command IN ACCESS EXCLUSIVE MODE")
            locked.set()
            release.wait(10)
            cursor.execute("ROLLBACK")
        connections["default"].close()

    holder = threading.Thread(target=hold_lock)
    holder.start()
    locked.wait(10)
    try:
        with connection.cursor() as cursor:
            cursor.execute("SET lock_timeout = '200ms'")
        response = api.post("/v1/track", {"customer_id": "u", "event": "e"})
    finally:
        release.set()
        holder.join(10)
        with connection.cursor() as cursor:
            cursor.execute("SET lock_timeout = 0")
    _error(response, 503, "the event store is unavailable; retry later")
    assert response["Retry-After"] == "5"
    assert not Command.objects.exists()


def test_revoked_key_of_one_project_does_not_affect_another(api, other_api):
    api_key_revoke(api_key=api.project.api_keys.get())
    assert other_api.post("/v1/track", {"customer_id": "u", "event": "e"}).status_code == 202


def test_merge_requires_primary_and_secondary(api):
    _error(
        api.post("/v1/merge", {"primary": {"customer_id": "a"}}),
        400,
        "secondary: must be an object with customer_id or anonymous_id",
    )
    _error(
        api.post("/v1/merge", {"primary": {"customer_id": "a"}, "secondary": {"customer_id": "a"}}),
        400,
        "secondary: must differ from primary",
    )


def test_api_key_is_created_fresh_per_test(api):
    _, raw = api_key_create(project=api.project, name="second")
    api.client.defaults["HTTP_AUTHORIZATION"] = f"Bearer {raw}"
    assert api.post("/v1/track", {"customer_id": "u", "event": "e"}).status_code == 202
