"""The Segments API of the CDP API service: create, list, read, change, delete, members."""

from datetime import UTC, datetime, timedelta

import pytest

from segments.membership import membership_rebuild
from segments.models import Membership, Segment
from timonier.api.cursors import encode_cursor

pytestmark = pytest.mark.django_db

PRO = {"type": "trait", "name": "plan", "op": "equals", "value": "pro"}
GUIDE = {"name": "Pro Users", "description": "Customers on the pro plan", "condition": PRO}
T1 = datetime(2026, 3, 15, 12, 0, 0, tzinfo=UTC)


def create(api, name: str = "Pro Users", condition: dict = PRO, **fields) -> dict:
    response = api.post("/v1/segments", {"name": name, "condition": condition, **fields})
    assert response.status_code == 201, response.content
    return response.json()


def rebuild(segment: dict, *, now: datetime = T1) -> None:
    membership_rebuild(Segment.objects.get(pk=segment["id"]), now=now)


def assert_bad_request(response, *problems: str) -> list[str]:
    """A 400 in the error shape whose `errors` hold `problems`, all in `message` too."""
    assert response.status_code == 400, response.content
    body = response.json()
    assert body["error"] == body["code"] == "bad_request"
    assert body["message"] == "; ".join(body["errors"])
    for problem in problems:
        assert problem in body["errors"], (problem, body["errors"])
    return body["errors"]


# --- Create -------------------------------------------------------------------------------------


def test_create_answers_201_with_the_segment_building(api):
    response = api.post("/v1/segments", GUIDE)

    assert response.status_code == 201
    body = response.json()
    assert response["Location"] == f"/v1/segments/{body['id']}"
    assert {key: body[key] for key in ("name", "description", "condition", "status", "member_count")} == {
        **GUIDE,
        "status": "building",
        "member_count": 0,
    }
    assert body["last_computed_at"] is None
    assert body["created_at"].endswith("Z") and body["updated_at"].endswith("Z")
    stored = Segment.objects.get(pk=body["id"])
    assert (stored.project, stored.name, stored.condition) == (api.project, "Pro Users", PRO)


def test_create_without_description_stores_an_empty_one(api):
    assert create(api, condition=PRO)["description"] == ""


def test_create_with_an_unknown_operator_names_its_path_and_suggests_the_operator(api):
    condition = {"type": "trait", "name": "plan", "op": "eq", "value": "pro"}

    response = api.post("/v1/segments", {"name": "Pro Users", "condition": condition})

    problem = 'condition.op: unknown operator "eq"; did you mean "equals"?'
    assert_bad_request(response, problem)
    assert problem in response.json()["message"]
    assert not Segment.objects.exists()


def test_create_lists_every_problem_of_the_condition_and_the_name_with_their_paths(api):
    condition = {
        "type": "and",
        "conditions": [PRO, {"type": "trait", "name": "plan", "op": "eq", "value": "pro"}, {"type": "evnt"}],
    }

    response = api.post("/v1/segments", {"name": "x" * 101, "condition": condition})

    errors = assert_bad_request(
        response,
        'condition.conditions[1].op: unknown operator "eq"; did you mean "equals"?',
        "name: Ensure this value has at most 100 characters (it has 101).",
    )
    assert any(error.startswith("condition.conditions[2].type: unknown condition type") for error in errors)
    assert not Segment.objects.exists()


def test_create_refuses_unknown_fields_wrong_types_and_lists_the_condition_problems_too(api):
    body = {"name": 5, "descr": "typo", "description": None, "condition": {"type": "trait", "name": "plan", "op": "eq"}}

    response = api.post("/v1/segments", body)

    assert_bad_request(
        response,
        "descr: unknown field; expected one of: name, description, condition",
        "name: must be a string",
        "description: must be a string",
        'condition.op: unknown operator "eq"; did you mean "equals"?',
    )
    assert not Segment.objects.exists()


def test_create_requires_name_and_condition(api):
    assert_bad_request(api.post("/v1/segments", {}), "name: is required", "condition: is required")


def test_create_with_a_condition_that_is_not_an_object_names_the_field(api):
    assert_bad_request(api.post("/v1/segments", {"name": "X", "condition": []}), "condition: must be an object")


def test_create_with_a_blank_name_names_the_field(api):
    errors = assert_bad_request(api.post("/v1/segments", {"name": "", "condition": PRO}))
    assert errors == ["name: This field cannot be blank."]


def test_create_refuses_nul_characters_the_database_cannot_store(api):
    condition = {"type": "trait", "name": "plan", "op": "equals", "value": "p\u0000ro"}
    assert_bad_request(
        api.post("/v1/segments", {"name": "A\u0000", "condition": PRO}), "name: contains a NUL character"
    )
    assert_bad_request(
        api.post("/v1/segments", {"name": "A", "condition": condition}), "condition: contains a NUL character"
    )
    assert not Segment.objects.exists()


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ("[1, 2]", "body: must be a JSON object with name, description and condition"),
        ('"Pro Users"', "body: must be a JSON object with name, description and condition"),
        ("{nope", "body: not valid JSON"),
    ],
)
def test_create_with_a_body_that_is_not_a_json_object_is_a_400(api, data, message):
    response = api.post("/v1/segments", data)

    assert response.status_code == 400
    assert response.json()["message"].startswith(message)
    assert not Segment.objects.exists()


def test_create_refuses_a_segment_condition_naming_no_segment_of_the_project(api, other_api):
    foreign = create(other_api, name="Theirs")

    for segment_id in (foreign["id"], 999_999_999):
        response = api.post("/v1/segments", {"name": "X", "condition": {"type": "segment", "segment_id": segment_id}})
        assert_bad_request(response, f"condition.segment_id: no segment {segment_id} in this project")
    assert not Segment.objects.filter(project=api.project).exists()


# --- Read ---------------------------------------------------------------------------------------


def test_get_answers_the_segment(api):
    created = create(api, **{"description": "Customers on the pro plan"})

    response = api.get(f"/v1/segments/{created['id']}")

    assert response.status_code == 200
    assert response.json() == created


def test_get_after_the_build_is_ready_with_its_count(api):
    api.identify(customer_id="user_001", traits={"plan": "pro"})
    created = create(api)
    rebuild(created)

    body = api.get(f"/v1/segments/{created['id']}").json()

    assert (body["status"], body["member_count"]) == ("ready", 1)
    assert body["last_computed_at"] == "2026-03-15T12:00:00Z"


@pytest.mark.parametrize("segment_id", ["abc", "0", "-1", "1.5", "99999999999999999999999", "１"])
def test_malformed_or_unknown_id_is_a_404_in_the_error_shape(api, segment_id):
    for path in (f"/v1/segments/{segment_id}", f"/v1/segments/{segment_id}/members"):
        response = api.get(path)
        assert response.status_code == 404, path
        assert response.json() == {
            "error": "not_found",
            "code": "not_found",
            "message": f"segment_id: no segment {segment_id} in this project",
        }


def test_list_is_by_name_and_pages_follow_next_cursor(api):
    for name in ("Churned", "active", "Beta", "Zulu", "Alpha"):
        create(api, name=name)

    seen, cursor, pages = [], None, 0
    while True:
        response = api.get("/v1/segments", {"limit": 2, **({"cursor": cursor} if cursor else {})})
        assert response.status_code == 200
        seen += [segment["name"] for segment in response.json()["segments"]]
        cursor, pages = response.json()["next_cursor"], pages + 1
        if cursor is None:
            break

    expected = list(Segment.objects.filter(project=api.project).order_by("name", "pk").values_list("name", flat=True))
    assert seen == expected and sorted(seen) == sorted(["Churned", "active", "Beta", "Zulu", "Alpha"])
    assert pages == 3


def test_list_pages_through_segments_of_the_same_name(api):
    ids = [create(api, name="Same")["id"] for _ in range(3)]

    first = api.get("/v1/segments", {"limit": 2}).json()
    second = api.get("/v1/segments", {"limit": 2, "cursor": first["next_cursor"]}).json()

    assert [s["id"] for s in first["segments"] + second["segments"]] == ids
    assert second["next_cursor"] is None


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"limit": "0"}, "limit: must be an integer from 1 to 500"),
        ({"cursor": "nope"}, "cursor: not a cursor this API returned"),
        ({"cursor": encode_cursor(1)}, "cursor: not a cursor this API returned"),
        ({"cursor": encode_cursor("a", 2**63)}, "cursor: not a cursor this API returned"),
        ({"color": "red"}, "color: unknown parameter; expected limit or cursor"),
    ],
)
def test_list_refuses_bad_parameters_naming_them(api, params, message):
    response = api.get("/v1/segments", params)

    assert response.status_code == 400
    assert response.json()["message"] == message


# --- Change -------------------------------------------------------------------------------------


def test_patch_name_alone_keeps_the_condition_and_the_members(api):
    api.identify(customer_id="user_001", traits={"plan": "pro"})
    created = create(api)
    rebuild(created)

    response = api.patch(f"/v1/segments/{created['id']}", {"name": "Pro customers", "description": "Paying"})

    assert response.status_code == 200
    body = response.json()
    assert (body["name"], body["description"], body["condition"]) == ("Pro customers", "Paying", PRO)
    assert (body["status"], body["member_count"]) == ("ready", 1)
    assert Segment.objects.get(pk=created["id"]).name == "Pro customers"


def test_patch_condition_puts_the_segment_back_to_building(api):
    created = create(api)
    rebuild(created)
    team = {"type": "trait", "name": "plan", "op": "in", "value": ["pro", "team"]}

    response = api.patch(f"/v1/segments/{created['id']}", {"condition": team})

    assert response.status_code == 200
    assert (response.json()["condition"], response.json()["status"]) == (team, "building")


def test_patch_with_an_invalid_condition_changes_nothing(api):
    created = create(api)
    condition = {"type": "or", "conditions": [PRO, {"type": "trait", "name": "plan", "op": "eq", "value": "x"}]}

    response = api.patch(f"/v1/segments/{created['id']}", {"name": "Renamed", "condition": condition})

    assert_bad_request(response, 'condition.conditions[1].op: unknown operator "eq"; did you mean "equals"?')
    stored = Segment.objects.get(pk=created["id"])
    assert (stored.name, stored.condition) == ("Pro Users", PRO)


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        ({}, "body: send at least one of: name, description, condition"),
        ({"status": "ready"}, "status: unknown field; expected one of: name, description, condition"),
        ({"name": None}, "name: must be a string"),
        ({"name": ""}, "name: This field cannot be blank."),
        ({"condition": None}, "condition: must be an object"),
    ],
)
def test_patch_refuses_bodies_that_change_nothing_or_name_unknown_fields(api, body, problem):
    created = create(api)

    assert_bad_request(api.patch(f"/v1/segments/{created['id']}", body), problem)
    assert Segment.objects.get(pk=created["id"]).name == "Pro Users"


def test_patch_refuses_a_cycle_between_two_segments(api):
    b = create(api, name="B")
    a = create(api, name="A", condition={"type": "segment", "segment_id": b["id"]})

    response = api.patch(
        f"/v1/segments/{b['id']}",
        {"condition": {"type": "not", "condition": {"type": "segment", "segment_id": a["id"]}}},
    )

    assert_bad_request(
        response, f"condition.condition.segment_id: this would make a cycle: segment {a['id']} uses this segment"
    )
    assert Segment.objects.get(pk=b["id"]).condition == PRO


def test_patch_refuses_a_segment_using_itself(api):
    a = create(api, name="A")

    response = api.patch(f"/v1/segments/{a['id']}", {"condition": {"type": "segment", "segment_id": a["id"]}})

    assert_bad_request(response, "condition.segment_id: a segment cannot use itself")


# --- Delete -------------------------------------------------------------------------------------


def test_delete_answers_204_and_the_segment_is_gone(api):
    created = create(api)

    response = api.delete(f"/v1/segments/{created['id']}")

    assert response.status_code == 204
    assert response.content == b""
    assert api.get(f"/v1/segments/{created['id']}").status_code == 404
    assert not Segment.objects.exists()


def test_delete_of_a_segment_another_one_uses_is_a_409_and_deletes_nothing(api):
    pro = create(api, name="Pro Users")
    create(
        api, name="Pro buyers", condition={"type": "and", "conditions": [{"type": "segment", "segment_id": pro["id"]}]}
    )

    response = api.delete(f"/v1/segments/{pro['id']}")

    assert response.status_code == 409
    assert response.json() == {
        "error": "conflict",
        "code": "conflict",
        "message": 'segment_id: This segment is used by the condition of "Pro buyers": change that first.',
    }
    assert Segment.objects.count() == 2


def test_other_methods_are_405_with_allow(api):
    created = create(api)
    for method, path, allow in [
        ("PUT", "/v1/segments", "GET, POST, OPTIONS"),
        ("DELETE", "/v1/segments", "GET, POST, OPTIONS"),
        ("POST", f"/v1/segments/{created['id']}", "GET, PATCH, DELETE, OPTIONS"),
        ("POST", f"/v1/segments/{created['id']}/members", "GET, OPTIONS"),
    ]:
        response = api.client.generic(method, path)
        assert response.status_code == 405, (method, path)
        assert response["Allow"] == allow
        assert response.json()["error"] == "method_not_allowed"


def test_every_operation_needs_a_key(api):
    created = create(api)
    anonymous = type(api)(api.project, "tk_not_a_key")
    for response in (
        anonymous.get("/v1/segments"),
        anonymous.post("/v1/segments", GUIDE),
        anonymous.get(f"/v1/segments/{created['id']}"),
        anonymous.patch(f"/v1/segments/{created['id']}", {"name": "Hijacked"}),
        anonymous.delete(f"/v1/segments/{created['id']}"),
        anonymous.get(f"/v1/segments/{created['id']}/members"),
    ):
        assert response.status_code == 401
        assert response.json()["error"] == "unauthorized"
    assert Segment.objects.get().name == "Pro Users"


# --- Members ------------------------------------------------------------------------------------


def test_members_are_the_customers_in_the_segment_latest_entries_first(api):
    api.identify(customer_id="user_001", traits={"plan": "pro"})
    api.identify(customer_id="user_002", traits={"plan": "free"})
    created = create(api)
    rebuild(created, now=T1)
    api.identify(anonymous_id="anon-7", traits={"plan": "pro"})
    rebuild(created, now=T1 + timedelta(minutes=5))

    response = api.get(f"/v1/segments/{created['id']}/members")

    assert response.status_code == 200
    assert response.json() == {
        "members": [
            {"customer_id": None, "anonymous_id": "anon-7", "entered_at": "2026-03-15T12:05:00Z"},
            {"customer_id": "user_001", "anonymous_id": None, "entered_at": "2026-03-15T12:00:00Z"},
        ],
        "next_cursor": None,
    }


def test_members_of_a_segment_still_building_is_an_empty_page(api):
    api.identify(customer_id="user_001", traits={"plan": "pro"})
    created = create(api)

    assert api.get(f"/v1/segments/{created['id']}/members").json() == {"members": [], "next_cursor": None}


def test_members_pages_follow_next_cursor_through_entries_of_the_same_time(api):
    for i in range(5):
        api.identify(customer_id=f"user_{i}", traits={"plan": "pro"})
    created = create(api)
    rebuild(created, now=T1)  # five entries at the same instant: the membership id breaks the tie

    seen, cursor = [], None
    while True:
        response = api.get(
            f"/v1/segments/{created['id']}/members", {"limit": 2, **({"cursor": cursor} if cursor else {})}
        )
        assert response.status_code == 200
        seen += [member["customer_id"] for member in response.json()["members"]]
        cursor = response.json()["next_cursor"]
        if cursor is None:
            break

    # Entries of the same instant come by membership id, the order the rebuild inserted them in.
    memberships = Membership.objects.filter(segment_id=created["id"]).order_by("-entered_at", "-pk")
    assert seen == list(memberships.values_list("customer__external_id", flat=True))
    assert sorted(seen) == [f"user_{i}" for i in range(5)]


@pytest.mark.parametrize(
    "cursor",
    [
        "nope",
        encode_cursor("2026-03-15T12:00:00+00:00"),
        encode_cursor("2026-03-15T12:00:00", 1),  # no offset
        encode_cursor("yesterday", 1),
        encode_cursor("2026-03-15T12:00:00+00:00", "1"),
        encode_cursor("2026-03-15T12:00:00+00:00", 2**63),
    ],
)
def test_members_refuse_cursors_this_api_did_not_return(api, cursor):
    created = create(api)

    response = api.get(f"/v1/segments/{created['id']}/members", {"cursor": cursor})

    assert response.status_code == 400
    assert response.json()["message"] == "cursor: not a cursor this API returned"


# --- Tenancy ------------------------------------------------------------------------------------


def test_another_projects_key_gets_404_on_every_operation_and_changes_nothing(api, other_api):
    api.identify(customer_id="user_001", traits={"plan": "pro"})
    mine = create(api)
    rebuild(mine)
    path = f"/v1/segments/{mine['id']}"

    for response in (
        other_api.get(path),
        other_api.patch(path, {"name": "Hijacked"}),
        other_api.delete(path),
        other_api.get(f"{path}/members"),
    ):
        assert response.status_code == 404
        assert response.json()["message"] == f"segment_id: no segment {mine['id']} in this project"
    assert other_api.get("/v1/segments").json() == {"segments": [], "next_cursor": None}
    stored = Segment.objects.get(pk=mine["id"])
    assert (stored.name, stored.member_count) == ("Pro Users", 1)


def test_each_key_lists_only_its_projects_segments(api, other_api):
    create(api, name="Mine")
    create(other_api, name="Theirs")

    assert [s["name"] for s in api.get("/v1/segments").json()["segments"]] == ["Mine"]
    assert [s["name"] for s in other_api.get("/v1/segments").json()["segments"]] == ["Theirs"]
