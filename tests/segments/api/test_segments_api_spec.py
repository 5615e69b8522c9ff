"""The Segments API's answers against `cdp/openapi.yaml`, on a real HTTP server: the statuses,
bodies and headers schemathesis rarely reaches with generated data (a segment that exists, one
in use, members), each checked by schemathesis' own checks."""

import pytest

from segments.membership import membership_rebuild
from segments.models import Segment
from tests.cdp.api.test_openapi import CHECKS, schema

PRO = {"type": "trait", "name": "plan", "op": "equals", "value": "pro"}
RECENT_PURCHASE = {"type": "event", "event_name": "purchase", "within": {"value": 30, "unit": "days"}}
BACKWARDS = {"type": "event", "event_name": "e", "between": {"from": "2024-02-01", "to": "2024-01-01"}}


def call(live, path: str, method: str, *, status: int, **data):
    """One request through schemathesis, validated by every check; the answer must be `status`."""
    media_type = "application/json" if "body" in data else None
    case = schema[path][method].Case(media_type=media_type, **data)
    response = case.call_and_validate(base_url=live.url, headers=live.auth, checks=CHECKS, timeout=10)
    assert response.status_code == status, response.text
    return response.json() if response.content else None


def test_every_segment_operation_answers_as_documented(live_api):
    created = call(live_api, "/v1/segments", "POST", status=201, body={"name": "Pro Users", "condition": PRO})
    one = {"path_parameters": {"segment_id": created["id"]}}
    uses_it = {"type": "and", "conditions": [{"type": "segment", "segment_id": created["id"]}, RECENT_PURCHASE]}
    user = call(live_api, "/v1/segments", "POST", status=201, body={"name": "Pro buyers", "condition": uses_it})
    live_api.post("/v1/identify", {"customer_id": "pro_1", "traits": {"plan": "pro"}})
    live_api.process()
    membership_rebuild(Segment.objects.get(pk=created["id"]))

    assert call(live_api, "/v1/segments", "GET", status=200, query={"limit": 1})["next_cursor"]
    assert call(live_api, "/v1/segments/{segment_id}", "GET", status=200, **one)["status"] == "ready"
    members = call(live_api, "/v1/segments/{segment_id}/members", "GET", status=200, **one)["members"]
    assert [member["customer_id"] for member in members] == ["pro_1"]
    customers = call(live_api, "/v1/customers", "GET", status=200, query={"segment": created["id"]})["customers"]
    assert [customer["customer_id"] for customer in customers] == ["pro_1"]
    call(live_api, "/v1/segments/{segment_id}", "PATCH", status=200, body={"description": "Paying"}, **one)
    conflict = call(live_api, "/v1/segments/{segment_id}", "DELETE", status=409, **one)
    assert conflict["error"] == "conflict"
    call(live_api, "/v1/segments/{segment_id}", "DELETE", status=204, path_parameters={"segment_id": user["id"]})
    call(live_api, "/v1/segments/{segment_id}", "DELETE", status=204, **one)
    for operation in ("/v1/segments/{segment_id}", "/v1/segments/{segment_id}/members"):
        call(live_api, operation, "GET", status=404, **one)
    call(live_api, "/v1/customers", "GET", status=404, query={"segment": created["id"]})


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "/v1/segments", {"name": "X", "condition": {"type": "trait", "name": "plan", "op": "eq"}}),
        ("POST", "/v1/segments", {"name": "X", "condition": {"type": "segment", "segment_id": 1}, "extra": 1}),
        ("POST", "/v1/segments", {"name": "X", "condition": BACKWARDS}),
        ("PATCH", "/v1/segments/{segment_id}", {}),
        ("PATCH", "/v1/segments/{segment_id}", {"condition": {"type": "not", "condition": {"type": "nope"}}}),
    ],
)
def test_validation_errors_are_documented_400s_with_errors(live_api, method, path, body):
    created = live_api.post("/v1/segments", {"name": "Pro Users", "condition": PRO}).json()

    answer = call(live_api, path, method, status=400, body=body, path_parameters={"segment_id": created["id"]})

    assert answer["errors"] and answer["message"] == "; ".join(answer["errors"])
