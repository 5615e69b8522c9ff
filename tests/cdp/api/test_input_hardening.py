"""Input that would hurt other people's data or the service: future dates, deep JSON, odd SDK labels."""

import gzip
import json
from datetime import UTC, datetime, timedelta

import pytest

from cdp.models import Command, Customer, Event
from timonier import clock

pytestmark = pytest.mark.django_db

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def _nested(levels: int) -> dict:
    value: dict = {}
    for _ in range(levels - 1):
        value = {"a": value}
    return value


def _error(response, status: int, message: str):
    assert response.status_code == status, response.content
    body = response.json()
    assert body["error"] == body["code"] and body["message"] == message, body
    return body


# --- Future timestamps ---------------------------------------------------------------------------


def test_identify_dated_in_the_far_future_does_not_pin_its_traits(api):
    with clock.travel(NOW) as traveller:
        attack = {
            "customer_id": "jane",
            "traits": {"email": "attacker@evil.example"},
            "timestamp": "8999-01-01T00:00:00Z",
        }
        assert api.post("/v1/identify", attack).status_code == 202
        traveller.advance(minutes=1)
        assert (
            api.post("/v1/identify", {"customer_id": "jane", "traits": {"email": "jane@example.com"}}).status_code
            == 202
        )
        api.process()
    assert Customer.objects.get(project=api.project, external_id="jane").traits["email"] == "jane@example.com"


def test_a_future_timestamp_is_set_to_the_receipt_and_kept_in_the_context(api):
    with clock.travel(NOW):
        body = {"customer_id": "u", "event": "e", "timestamp": "8999-01-01T00:00:00Z", "context": {"ip": "1.2.3.4"}}
        assert api.post("/v1/track", body).status_code == 202
        api.process()
    event = Event.objects.get(project=api.project)
    assert event.timestamp == NOW
    assert event.context == {"ip": "1.2.3.4", "original_timestamp": "8999-01-01T00:00:00Z"}


def test_a_timestamp_a_few_minutes_ahead_is_kept(api):
    with clock.travel(NOW):
        ahead = (NOW + timedelta(minutes=4)).isoformat()
        assert api.post("/v1/track", {"customer_id": "u", "event": "e", "timestamp": ahead}).status_code == 202
        api.process()
    event = Event.objects.get(project=api.project)
    assert event.timestamp == NOW + timedelta(minutes=4) and "original_timestamp" not in event.context


def test_old_timestamps_stay_valid_for_backfills(api):
    with clock.travel(NOW):
        body = {"customer_id": "u", "event": "e", "timestamp": "2001-05-01T10:00:00Z"}
        assert api.post("/v1/track", body).status_code == 202
        api.process()
    event = Event.objects.get(project=api.project)
    assert event.timestamp == datetime(2001, 5, 1, 10, 0, tzinfo=UTC) and event.context == {}


def test_the_future_is_judged_after_the_sent_at_correction(api):
    # A device clock a year ahead: timestamp and sentAt both in its future, the call itself is not.
    with clock.travel(NOW):
        device_now = NOW + timedelta(days=365)
        body = {
            "customer_id": "u",
            "event": "e",
            "timestamp": (device_now - timedelta(minutes=10)).isoformat(),
            "sentAt": device_now.isoformat(),
        }
        assert api.post("/v1/track", body).status_code == 202
        api.process()
    event = Event.objects.get(project=api.project)
    assert event.timestamp == NOW - timedelta(minutes=10) and "original_timestamp" not in event.context


def test_a_batch_item_dated_in_the_future_is_dated_at_receipt(api):
    with clock.travel(NOW):
        batch = {"batch": [{"type": "track", "userId": "u", "event": "e", "timestamp": "8999-01-01T00:00:00Z"}]}
        assert api.post("/v1/batch", batch).status_code == 200
        api.process()
    assert Event.objects.get(project=api.project).timestamp == NOW


# --- Deep JSON -----------------------------------------------------------------------------------


@pytest.mark.parametrize("field", ["properties", "context"])
def test_a_track_nested_300_levels_deep_is_400_naming_the_field(api, field):
    body = {"customer_id": "u", "event": "e", field: _nested(300)}
    _error(api.post("/v1/track", body), 400, f"{field}: exceeds maximum nesting depth of 5")
    assert not Command.objects.filter(project=api.project).exists()


def test_traits_nested_1000_levels_deep_are_400(api):
    # As text: Python's json cannot even write it; orjson reads up to 1,024 levels.
    body = '{"customer_id": "u", "traits": ' + '{"a": ' * 999 + "{}" + "}" * 999 + "}"
    _error(api.post("/v1/identify", body), 400, "traits: exceeds maximum nesting depth of 5")


def test_a_deep_item_of_a_batch_is_400_naming_the_item_and_nothing_is_stored(api):
    batch = {
        "batch": [
            {"type": "track", "userId": "u", "event": "fine"},
            {"type": "track", "userId": "u", "event": "deep", "properties": {"list": [_nested(299)]}},
        ]
    }
    _error(api.post("/v1/batch", batch), 400, "batch[1].properties: exceeds maximum nesting depth of 5")
    assert not Command.objects.filter(project=api.project).exists()


def test_a_deep_shared_batch_context_is_400(api):
    batch = {"batch": [{"type": "track", "userId": "u", "event": "e"}], "context": _nested(300)}
    _error(api.post("/v1/batch", batch), 400, "batch[0].context: exceeds maximum nesting depth of 5")


def test_traitly_calls_nested_300_levels_deep_are_400(api):
    api.client.defaults["HTTP_AUTHORIZATION"] = f"Token {api.key}"
    customer = {
        "customer_id": "1",
        "name": "J",
        "email": "j@example.com",
        "plan": "p",
        "custom_attributes": _nested(300),
    }
    _error(api.post("/api/v1/customer", customer), 400, "traits: exceeds maximum nesting depth of 5")
    event = {"customer_id": "1", "name": "bought", "item": _nested(300)}
    _error(api.post("/api/v1/event", event), 400, "properties: exceeds maximum nesting depth of 5")


# --- Content types -------------------------------------------------------------------------------


def test_gzipped_json_labelled_form_urlencoded_is_accepted_as_rudder_sdk_node_sends_it(api):
    batch = {"batch": [{"type": "identify", "userId": "r", "traits": {"plan": "pro"}}], "sentAt": NOW.isoformat()}
    data = gzip.compress(json.dumps(batch).encode())
    response = api.client.post(
        "/v1/batch", data=data, content_type="application/x-www-form-urlencoded", HTTP_CONTENT_ENCODING="gzip"
    )
    assert response.status_code == 200, response.content
    api.process()
    assert Customer.objects.get(project=api.project, external_id="r").traits == {"plan": "pro"}


def test_a_real_form_body_is_400_not_json(api):
    response = api.post("/v1/track", "customer_id=u&event=e", content_type="application/x-www-form-urlencoded")
    assert response.status_code == 400
    assert response.json()["message"].startswith("body: not valid JSON")
