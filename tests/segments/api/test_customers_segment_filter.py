"""`GET /v1/customers?segment=<id>`: the current members of one of the project's segments."""

from datetime import UTC, datetime

import pytest

from segments.membership import membership_rebuild
from segments.services import segment_create

pytestmark = pytest.mark.django_db

PRO = {"type": "trait", "name": "plan", "op": "equals", "value": "pro"}
NOW = datetime(2026, 3, 15, 12, 0, 0, tzinfo=UTC)


def built(api, condition: dict = PRO):
    segment = segment_create(project=api.project, name="Pro Users", condition=condition)
    membership_rebuild(segment, now=NOW)
    return segment


def customer_ids(response) -> list:
    assert response.status_code == 200, response.content
    return [customer["customer_id"] for customer in response.json()["customers"]]


def test_segment_filter_keeps_only_current_members_newest_first(api):
    for customer_id, plan in [("user_001", "pro"), ("user_002", "free"), ("user_003", "pro")]:
        api.identify(customer_id=customer_id, traits={"plan": plan, "city": "Lyon"})
    segment = built(api)

    assert customer_ids(api.get("/v1/customers", {"segment": segment.pk})) == ["user_003", "user_001"]


def test_segment_filter_combines_with_trait_filters_and_search(api):
    api.identify(customer_id="user_001", traits={"plan": "pro", "city": "Lyon"})
    api.identify(customer_id="user_002", traits={"plan": "pro", "city": "Oslo"})
    segment = built(api)

    assert customer_ids(api.get("/v1/customers", {"segment": segment.pk, "traits.city": "Oslo"})) == ["user_002"]
    assert customer_ids(api.get("/v1/customers", {"segment": segment.pk, "search": "user_001"})) == ["user_001"]


def test_segment_filter_pages_follow_next_cursor(api):
    for i in range(5):
        api.identify(customer_id=f"user_{i}", traits={"plan": "pro" if i != 2 else "free"})
    segment = built(api)

    seen, cursor = [], None
    while True:
        params = {"segment": segment.pk, "limit": 2, **({"cursor": cursor} if cursor else {})}
        response = api.get("/v1/customers", params)
        seen += customer_ids(response)
        cursor = response.json()["next_cursor"]
        if cursor is None:
            break

    assert seen == ["user_4", "user_3", "user_1", "user_0"]


def test_segment_filter_of_a_segment_still_building_finds_nobody(api):
    api.identify(customer_id="user_001", traits={"plan": "pro"})
    segment = segment_create(project=api.project, name="Pro Users", condition=PRO)

    assert customer_ids(api.get("/v1/customers", {"segment": segment.pk})) == []


def test_segment_filter_of_another_projects_segment_is_a_404(api, other_api):
    other_api.identify(customer_id="user_001", traits={"plan": "pro"})
    theirs = built(other_api)

    for segment_id in (theirs.pk, 999_999_999):
        response = api.get("/v1/customers", {"segment": segment_id})
        assert response.status_code == 404
        assert response.json() == {
            "error": "not_found",
            "code": "not_found",
            "message": f"segment: no segment {segment_id} in this project",
        }


@pytest.mark.parametrize("value", ["", "abc", "0", "-3", "1.0", "99999999999999999999", "²"])
def test_malformed_segment_filter_is_a_400_naming_it(api, value):
    response = api.get("/v1/customers", {"segment": value})

    assert response.status_code == 400
    assert response.json()["message"] == "segment: must be a segment's id (a positive integer)"
