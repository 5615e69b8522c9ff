"""The Traitly calls of docs/traitly-api-reference.md, as a migrating client sends them."""

import time

import pytest

from cdp.models import Customer, Event

pytestmark = pytest.mark.django_db


@pytest.fixture
def traitly(api):
    api.client.defaults["HTTP_AUTHORIZATION"] = f"Token {api.key}"
    return api


JOHN = {
    "customer_id": "123",
    "name": "John Smith",
    "monthly_payment_amount": 199,
    "location": "San Francisco",
    "plan": "Starter",
    "email": "john.smith@example.com",
}


def test_create_customer_answers_with_the_traitly_envelope(traitly):
    before = int(time.time())
    response = traitly.post("/api/v1/customer", {**JOHN, "custom_attributes": {"role": "manager"}})
    assert response.status_code == 200
    body = response.json()
    assert body["object"] == "customer" and body["metadata"] == {}
    assert int(body["created"]) >= before
    (data,) = body["data"]
    assert data["customer_id"] == "123" and data["plan"] == "Starter"
    assert data["custom_attributes"] == {"role": "manager"}
    assert int(data["created_at"]) >= before


def test_customer_fields_become_traits_and_custom_attributes_merge(traitly):
    traitly.post("/api/v1/customer", {**JOHN, "created_at": 1493933699, "custom_attributes": {"role": "manager"}})
    traitly.process()
    customer = Customer.objects.get(external_id="123")
    assert customer.traits == {
        "name": "John Smith",
        "monthly_payment_amount": 199,
        "location": "San Francisco",
        "plan": "Starter",
        "email": "john.smith@example.com",
        "role": "manager",
        "created_at": 1493933699,
    }
    assert customer.email == "john.smith@example.com"


def test_list_customers_with_filters(traitly):
    traitly.post("/api/v1/customer", {**JOHN, "created_at": 1493933699, "custom_attributes": {"role": "manager"}})
    traitly.post(
        "/api/v1/customer",
        {"customer_id": "456", "name": "Alice Smith", "email": "alice@example.com", "plan": "Freemium"},
    )
    traitly.process()
    body = traitly.get("/api/v1/customer").json()
    assert body["object"] == "customer" and "retrieved" in body
    assert {c["customer_id"] for c in body["data"]} == {"123", "456"}
    john = next(c for c in body["data"] if c["customer_id"] == "123")
    assert john["created_at"] == "1493933699"
    assert john["custom_attributes"] == {"role": "manager"}
    assert john["phone_number"] is None and john["organisation_id"] is None
    assert [c["customer_id"] for c in traitly.get("/api/v1/customer", {"plan": "Freemium"}).json()["data"]] == ["456"]
    assert [c["customer_id"] for c in traitly.get("/api/v1/customer", {"name": "John Smith"}).json()["data"]] == ["123"]
    assert [c["customer_id"] for c in traitly.get("/api/v1/customer", {"customer_id": "456"}).json()["data"]] == ["456"]


def test_create_customer_requires_the_documented_fields(traitly):
    response = traitly.post("/api/v1/customer", {"customer_id": "1", "name": "A", "email": "a@example.com"})
    assert response.status_code == 400
    assert response.json()["message"] == "plan: is required"


def test_create_and_list_events(traitly):
    response = traitly.post("/api/v1/event", {"customer_id": "1", "name": "Logged in", "created_at": 1493933699})
    assert response.status_code == 200
    body = response.json()
    assert body["object"] == "event"
    assert body["data"] == [{"customer_id": "1", "name": "Logged in", "created_at": "1493933699", "success": 1}]
    traitly.post("/api/v1/event", {"customer_id": "1", "name": "Logged in", "created_at": 1494020099})
    traitly.post("/api/v1/event", {"customer_id": "2", "name": "added user"})
    traitly.process()
    assert Event.objects.filter(type="track").count() == 3
    listed = traitly.get("/api/v1/event", {"customer_id": "1", "name": "Logged in"}).json()
    assert listed["object"] == "event" and "retrieved" in listed
    assert listed["data"] == [
        {"customer_id": "1", "name": "Logged in", "created_at": "1494020099", "success": 1},
        {"customer_id": "1", "name": "Logged in", "created_at": "1493933699", "success": 1},
    ]
    assert traitly.get("/api/v1/event", {"customer_id": "nobody"}).json()["data"] == []


def test_event_errors_use_the_api_error_shape(traitly):
    response = traitly.post("/api/v1/event", {"customer_id": "1"})
    assert response.status_code == 400
    assert response.json() == {"error": "bad_request", "code": "bad_request", "message": "name: is required"}
    response = traitly.post("/api/v1/event", {"customer_id": "1", "name": "x", "created_at": "soon"})
    assert response.json()["message"] == "created_at: must be a UNIX timestamp in seconds"


def test_token_is_required(traitly):
    traitly.client.defaults.pop("HTTP_AUTHORIZATION")
    assert traitly.get("/api/v1/customer").status_code == 401
