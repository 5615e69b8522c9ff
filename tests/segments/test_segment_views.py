"""The platform pages of segments: list, new, edit, delete, preview, detail, and the customer page's segments."""

import html
import json
import re
import uuid
from datetime import timedelta

import pytest

from cdp.models import Customer, Event
from segments.membership import membership_rebuild
from segments.models import Membership, MembershipChange, Segment
from segments.services import segment_create
from timonier import clock

pytestmark = pytest.mark.django_db

PRO = {"type": "trait", "name": "plan", "op": "equals", "value": "pro"}
GUIDE_AND = {"type": "and", "conditions": [PRO, {"type": "event", "event_name": "purchase"}]}


def make_customer(project, external_id, **traits) -> Customer:
    now = clock.now()
    return Customer.objects.create(
        project=project,
        external_id=external_id,
        traits=traits,
        email=str(traits.get("email", "")).lower(),
        name=str(traits.get("name", "")),
        first_seen_at=now,
        last_seen_at=now,
    )


def make_event(customer, name, *, ago=timedelta(0)) -> Event:
    at = clock.now() - ago
    return Event.objects.create(
        project=customer.project,
        customer=customer,
        type="track",
        name=name,
        timestamp=at,
        received_at=at,
        message_id=str(uuid.uuid4()),
    )


def jane(project) -> Customer:
    return make_customer(project, "user_001", email="jane@example.com", name="Jane Doe", plan="pro")


def url(project, path="segments") -> str:
    return f"/o/{project.organization.slug}/{project.slug}/{path}"


def text(response) -> str:
    assert response.status_code == 200, response.status_code
    return html.unescape(response.content.decode())


def field_errors(page: str, field: str) -> list[str]:
    """The error lines shown under a field of the form."""
    block = re.search(rf'<ul class="errorlist"[^>]*id="id_{field}-errors"[^>]*>(.*?)</ul>', page, re.S)
    return re.findall(r"<li>(.*?)</li>", block.group(1), re.S) if block else []


def built(project, name, condition, **kwargs) -> Segment:
    segment = segment_create(project=project, name=name, condition=condition, **kwargs)
    membership_rebuild(segment)
    segment.refresh_from_db()
    return segment


# -- list --------------------------------------------------------------------------------------------


def test_sidebar_links_segments(personas):
    page = text(personas.client("member").get(url(personas.project)))
    sidebar = re.search(r'<nav class="sidebar".*?</nav>', page, re.S).group(0)
    assert f'<a href="{url(personas.project)}" class="active" aria-current="page">Segments</a>' in sidebar


def test_empty_list_explains_segments_and_offers_new_segment(personas):
    page = text(personas.client("member").get(url(personas.project)))
    assert "No segments yet" in page
    assert page.count(f'href="{url(personas.project, "segments/new")}">New Segment</a>') == 1


def test_list_shows_name_description_members_status_and_last_computed(personas):
    jane(personas.project)
    ready = built(personas.project, "Pro Users", PRO, description="Customers on the pro plan")
    building = segment_create(project=personas.project, name="Buyers", condition=GUIDE_AND)
    segment_create(project=personas.other_project, name="Elsewhere", condition=PRO)
    page = text(personas.client("member").get(url(personas.project)))
    rows = dict(re.findall(r'<tr data-segment-id="(\d+)">(.*?)</tr>', page, re.S))
    assert set(rows) == {str(ready.pk), str(building.pk)}
    assert "Elsewhere" not in page
    pro = rows[str(ready.pk)]
    assert f'href="{url(personas.project, f"segments/{ready.pk}")}">Pro Users</a>' in pro
    assert "Customers on the pro plan" in pro
    assert re.search(r">1</a>", pro)
    # naturaltime reads the wall clock: a slow machine renders "a second ago" for "now".
    assert "Ready" in pro and re.search(r"now|seconds? ago", pro)
    assert "Building" in rows[str(building.pk)] and "never" in rows[str(building.pk)]


# -- new ---------------------------------------------------------------------------------------------


def test_new_segment_form_has_the_guides_labels_and_button(personas):
    page = text(personas.client("member").get(url(personas.project, "segments/new")))
    for label in ("Name", "Description", "Condition (JSON)"):
        assert re.search(rf"<label for=\"id_\w+\">{re.escape(label)}</label>", page), label
    assert re.search(r'<textarea name="condition"', page)
    assert '<button class="button" type="submit">Create Segment</button>' in page
    assert "js/segment_builder.js" in page
    assert 'id="segment-builder-config"' in page


def test_create_segment_saves_it_building_and_opens_its_page(personas):
    response = personas.client("member").post(
        url(personas.project, "segments/new"),
        {"name": "Pro Users", "description": "Customers on the pro plan", "condition": json.dumps(PRO)},
    )
    segment = Segment.objects.get(project=personas.project)
    assert response.status_code == 302
    assert response["Location"] == url(personas.project, f"segments/{segment.pk}")
    assert (segment.name, segment.description, segment.condition) == ("Pro Users", "Customers on the pro plan", PRO)
    assert segment.status == Segment.Status.BUILDING


def test_invalid_json_saves_nothing_and_keeps_what_was_typed(personas):
    typed = '{ "type": "trait", "name": "plan", "op": "equals", "value": pro }'
    page = text(
        personas.client("member").post(
            url(personas.project, "segments/new"), {"name": "Pro Users", "description": "Pro", "condition": typed}
        )
    )
    assert not Segment.objects.exists()
    assert field_errors(page, "condition") == ["$: not valid JSON: Expecting value at line 1, column 61"]
    assert typed in page and 'value="Pro Users"' in page


def test_condition_errors_are_shown_one_per_line_with_their_path(personas):
    condition = {
        "type": "and",
        "conditions": [{"type": "trait", "name": "plan", "op": "eq", "value": "pro"}, {"type": "event"}],
    }
    typed = json.dumps(condition, indent=2)
    page = text(personas.client("member").post(url(personas.project, "segments/new"), {"name": "", "condition": typed}))
    assert not Segment.objects.exists()
    assert field_errors(page, "condition") == [
        'conditions[0].op: unknown operator "eq"; did you mean "equals"?',
        "conditions[1].event_name: is required",
    ]
    assert field_errors(page, "name") == ["This field cannot be blank."]
    assert typed in page


def test_a_segment_of_another_project_cannot_be_used(personas):
    elsewhere = segment_create(project=personas.other_project, name="Elsewhere", condition=PRO)
    condition = {"type": "segment", "segment_id": elsewhere.pk}
    page = text(
        personas.client("member").post(
            url(personas.project, "segments/new"), {"name": "Copy", "condition": json.dumps(condition)}
        )
    )
    assert field_errors(page, "condition") == [f"segment_id: no segment {elsewhere.pk} in this project"]
    assert not Segment.objects.filter(project=personas.project).exists()


# -- edit and delete -----------------------------------------------------------------------------------


def test_edit_shows_the_condition_as_pretty_json_and_saves_changes(personas):
    segment = built(personas.project, "Pro Users", PRO)
    client = personas.client("member")
    page = text(client.get(url(personas.project, f"segments/{segment.pk}/edit")))
    assert json.dumps(PRO, indent=2) in page
    assert '<button class="button" type="submit">Save Segment</button>' in page
    response = client.post(
        url(personas.project, f"segments/{segment.pk}/edit"),
        {"name": "Pro Buyers", "description": "Pro and bought", "condition": json.dumps(GUIDE_AND)},
    )
    assert response.status_code == 302
    segment.refresh_from_db()
    assert (segment.name, segment.condition, segment.status) == ("Pro Buyers", GUIDE_AND, Segment.Status.BUILDING)


def test_edit_with_errors_changes_nothing_and_keeps_what_was_typed(personas):
    segment = built(personas.project, "Pro Users", PRO)
    typed = '{"type": "trait", "name": "plan", "op": "equals"}'
    page = text(
        personas.client("member").post(
            url(personas.project, f"segments/{segment.pk}/edit"), {"name": "Renamed", "condition": typed}
        )
    )
    assert field_errors(page, "condition") == ['value: is required with operator "equals"']
    assert typed in page and 'value="Renamed"' in page
    segment.refresh_from_db()
    assert (segment.name, segment.condition) == ("Pro Users", PRO)


def test_delete_asks_for_confirmation_then_deletes(personas):
    segment = built(personas.project, "Pro Users", PRO)
    client = personas.client("member")
    page = text(client.get(url(personas.project, f"segments/{segment.pk}/delete")))
    assert "Delete segment Pro Users?" in page and "Delete Segment</button>" in page
    assert Segment.objects.filter(pk=segment.pk).exists()
    response = client.post(url(personas.project, f"segments/{segment.pk}/delete"))
    assert response.status_code == 302 and response["Location"] == url(personas.project)
    assert not Segment.objects.filter(pk=segment.pk).exists()


def test_deleting_a_segment_used_by_another_is_refused_with_the_reason(personas):
    pro = built(personas.project, "Pro Users", PRO)
    built(personas.project, "Not Pro", {"type": "not", "condition": {"type": "segment", "segment_id": pro.pk}})
    client = personas.client("member")
    response = client.post(url(personas.project, f"segments/{pro.pk}/delete"), follow=True)
    page = text(response)
    assert response.redirect_chain == [(url(personas.project, f"segments/{pro.pk}"), 302)]
    assert 'This segment is used by the condition of "Not Pro": change that first.' in page
    assert Segment.objects.filter(pk=pro.pk).exists()


# -- preview -------------------------------------------------------------------------------------------


def test_preview_counts_the_projects_matching_customers(personas):
    jane(personas.project)
    make_customer(personas.project, "user_002", plan="free")
    jane(personas.other_project)
    response = personas.client("member").post(url(personas.project, "segments/preview"), {"condition": json.dumps(PRO)})
    assert response.status_code == 200
    assert response.json() == {"count": 1}
    assert not Segment.objects.exists()


def test_preview_answers_the_conditions_errors_with_their_paths(personas):
    client = personas.client("member")
    bad = client.post(url(personas.project, "segments/preview"), {"condition": '{"type": "trait"}'})
    assert bad.status_code == 400
    assert bad.json() == {"errors": ["name: is required", "op: is required"]}
    not_json = client.post(url(personas.project, "segments/preview"), {"condition": "{"})
    assert not_json.json()["errors"][0].startswith("$: not valid JSON")


def test_preview_refuses_another_projects_segment(personas):
    elsewhere = built(personas.other_project, "Elsewhere", PRO)
    condition = {"type": "segment", "segment_id": elsewhere.pk}
    response = personas.client("member").post(
        url(personas.project, "segments/preview"), {"condition": json.dumps(condition)}
    )
    assert response.json() == {"errors": [f"segment_id: no segment {elsewhere.pk} in this project"]}


def test_preview_needs_the_csrf_token(personas):
    client = personas.client("member")
    client.handler.enforce_csrf_checks = True
    response = client.post(url(personas.project, "segments/preview"), {"condition": json.dumps(PRO)})
    assert response.status_code == 403


# -- detail ----------------------------------------------------------------------------------------------


def test_detail_shows_the_condition_in_words_and_json_and_the_members(personas):
    customer = jane(personas.project)
    make_customer(personas.project, "user_002", plan="free")
    segment = built(personas.project, "Pro Users", PRO, description="Customers on the pro plan")
    page = text(personas.client("member").get(url(personas.project, f"segments/{segment.pk}")))
    assert "<h1>Pro Users</h1>" in page and "Customers on the pro plan" in page
    assert 'plan equals "pro"' in page
    assert json.dumps(PRO, indent=2) in page
    assert 'data-testid="member-count">1<' in page and "Ready" in page
    members = re.findall(r'<tr data-customer-id="(\d+)">(.*?)</tr>', page, re.S)
    assert [int(pk) for pk, _ in members] == [customer.pk]
    assert f'href="/o/{personas.organization.slug}/{personas.project.slug}/customers/{customer.pk}"' in members[0][1]
    for shown in ("user_001", "Jane Doe", "jane@example.com", "UTC"):
        assert shown in members[0][1]
    assert "http-equiv" not in page


def test_a_building_segment_says_so_and_refreshes_itself(personas):
    segment = segment_create(project=personas.project, name="Pro Users", condition=PRO)
    page = text(personas.client("member").get(url(personas.project, f"segments/{segment.pk}")))
    assert '<meta http-equiv="refresh" content="2">' in page
    assert "Computing the members of this segment" in page


def test_detail_describes_nested_conditions_with_segment_names(personas):
    pro = built(personas.project, "Pro Users", PRO)
    condition = {
        "type": "and",
        "conditions": [
            {
                "type": "event",
                "event_name": "purchase",
                "count": {"op": "greater_than_or_equals", "value": 3},
                "within": {"value": 30, "unit": "days"},
                "where": [{"name": "amount", "op": "greater_than", "value": 20}],
            },
            {"type": "not", "condition": {"type": "segment", "segment_id": pro.pk}},
        ],
    }
    segment = built(personas.project, "Big buyers", condition)
    page = text(personas.client("member").get(url(personas.project, f"segments/{segment.pk}")))
    words = "performed purchase at least 3 times in the last 30 days where amount greater than 20"
    assert f'{words} AND NOT (in segment "Pro Users")' in page


def test_members_are_paginated_50_per_page_newest_entries_first(personas):
    segment = built(personas.project, "Pro Users", PRO)
    now = clock.now()
    customers = [make_customer(personas.project, f"user_{i:03}", plan="pro") for i in range(60)]
    Membership.objects.bulk_create(
        Membership(segment=segment, customer=customer, entered_at=now - timedelta(minutes=i))
        for i, customer in enumerate(customers)
    )
    client = personas.client("member")
    first = text(client.get(url(personas.project, f"segments/{segment.pk}")))
    first_ids = [int(pk) for pk in re.findall(r'<tr data-customer-id="(\d+)">', first)]
    assert first_ids == [customer.pk for customer in customers[:50]]
    older = re.search(r'href="([^"]+)">Older members →</a>', first).group(1)
    second = text(client.get(html.unescape(older)))
    assert [int(pk) for pk in re.findall(r'<tr data-customer-id="(\d+)">', second)] == [c.pk for c in customers[50:]]
    assert "Older members →" not in second and "← Newest members" in second


def test_members_page_with_a_bad_cursor_is_a_bad_request(personas):
    segment = built(personas.project, "Pro Users", PRO)
    response = personas.client("member").get(url(personas.project, f"segments/{segment.pk}"), {"cursor": "nope"})
    assert response.status_code == 400


def test_chart_counts_members_per_day_from_the_history(personas):
    segment = built(personas.project, "Pro Users", PRO)
    now = clock.now()
    customers = [make_customer(personas.project, f"user_{i}", plan="pro") for i in range(3)]
    Membership.objects.bulk_create(Membership(segment=segment, customer=c, entered_at=now) for c in customers)
    Segment.objects.filter(pk=segment.pk).update(member_count=3)
    # Two entered 3 days ago, one 1 day ago; a fourth entered 5 days ago and left 2 days ago.
    changes = [(customers[0].pk, "entered", 3), (customers[1].pk, "entered", 3), (customers[2].pk, "entered", 1)]
    changes += [(999_999, "entered", 5), (999_999, "exited", 2)]
    MembershipChange.objects.bulk_create(
        MembershipChange(segment=segment, customer_id=pk, kind=kind, at=now - timedelta(days=days))
        for pk, kind, days in changes
    )
    page = text(personas.client("member").get(url(personas.project, f"segments/{segment.pk}")))
    titles = re.findall(r"<g class=\"hour\"><title>[^<]*: (\d+) members?</title>", page)
    assert len(titles) == 30
    assert [int(count) for count in titles[-7:]] == [0, 1, 1, 3, 2, 3, 3]


# -- the customer page -------------------------------------------------------------------------------------


def test_customer_page_lists_their_segments_and_entries_on_the_timeline(personas):
    customer = jane(personas.project)
    make_event(customer, "purchase", ago=timedelta(hours=1))
    pro = built(personas.project, "Pro Users", PRO)
    built(personas.project, "Free Users", {"type": "trait", "name": "plan", "op": "equals", "value": "free"})
    customer.traits = {**customer.traits, "plan": "free"}
    customer.save()
    membership_rebuild(pro)
    page = text(
        personas.client("member").get(
            f"/o/{personas.organization.slug}/{personas.project.slug}/customers/{customer.pk}"
        )
    )
    segments = re.search(r'data-testid="customer-segments">(.*?)</ul>', page, re.S).group(1)
    assert "Free Users" not in segments and "Pro Users" not in segments
    timeline = re.search(r'data-testid="events">(.*?)</ol>', page, re.S).group(1)
    lines = re.findall(r"(Entered|Left) segment <a [^>]*>([^<]+)</a>|data-event-id", timeline)
    assert [line for line in lines if line[0]] == [("Left", "Pro Users"), ("Entered", "Pro Users")]
    assert timeline.index("Left segment") < timeline.index("Entered segment") < timeline.index("purchase")


def test_segment_changes_appear_on_the_timeline_page_of_their_period(personas):
    customer = jane(personas.project)
    pro = built(personas.project, "Pro Users", PRO)
    MembershipChange.objects.filter(segment=pro).delete()
    now = clock.now()
    events = [make_event(customer, f"event_{i}", ago=timedelta(minutes=i)) for i in range(1, 31)]  # 25 a page
    for kind, minutes in (("entered", 27.5), ("exited", 10.5), ("entered", 0.5)):
        MembershipChange.objects.create(
            segment=pro, customer_id=customer.pk, kind=kind, at=now - timedelta(minutes=minutes)
        )
    client = personas.client("member")
    customer_url = f"/o/{personas.organization.slug}/{personas.project.slug}/customers/{customer.pk}"

    def timeline(page: str) -> list[str]:
        block = re.search(r'data-testid="events">(.*?)</ol>', page, re.S).group(1)
        return re.findall(r'data-event-id="(\d+)"|(Entered|Left) segment', block)

    first = text(client.get(customer_url))
    lines = [kind or int(pk) for pk, kind in timeline(first)]
    assert lines == ["Entered", *[e.pk for e in events[:10]], "Left", *[e.pk for e in events[10:25]]]
    older = re.search(r'href="([^"]+)">Older events →</a>', first).group(1)
    second = text(client.get(html.unescape(older)))
    lines = [kind or int(pk) for pk, kind in timeline(second)]
    assert lines == [events[25].pk, events[26].pk, "Entered", events[27].pk, events[28].pk, events[29].pk]
    # Filtered by event name, the timeline shows those events only.
    filtered = text(client.get(customer_url, {"name": "event_1"}))
    assert [kind or int(pk) for pk, kind in timeline(filtered)] == [events[0].pk]


def test_customer_page_links_the_segments_they_are_in(personas):
    customer = jane(personas.project)
    pro = built(personas.project, "Pro Users", PRO)
    page = text(
        personas.client("member").get(
            f"/o/{personas.organization.slug}/{personas.project.slug}/customers/{customer.pk}"
        )
    )
    segments = re.search(r'data-testid="customer-segments">(.*?)</ul>', page, re.S).group(1)
    assert f'<a href="{url(personas.project, f"segments/{pro.pk}")}">Pro Users</a>' in segments


# -- tenancy -------------------------------------------------------------------------------------------------


def test_every_segment_url_is_not_found_for_an_outsider(personas):
    segment = built(personas.project, "Pro Users", PRO)
    client = personas.client("outsider")
    for path in (
        "segments",
        "segments/new",
        f"segments/{segment.pk}",
        f"segments/{segment.pk}/edit",
        f"segments/{segment.pk}/delete",
    ):
        assert client.get(url(personas.project, path)).status_code == 404, path
    for path in ("segments/new", "segments/preview", f"segments/{segment.pk}/edit", f"segments/{segment.pk}/delete"):
        response = client.post(url(personas.project, path), {"name": "x", "condition": json.dumps(PRO)})
        assert response.status_code == 404, path
    assert Segment.objects.get(pk=segment.pk).name == "Pro Users"


def test_another_projects_segment_is_not_found_in_this_project(personas):
    elsewhere = built(personas.other_project, "Elsewhere", PRO)
    client = personas.client("member")
    for path in (f"segments/{elsewhere.pk}", f"segments/{elsewhere.pk}/edit", f"segments/{elsewhere.pk}/delete"):
        assert client.get(url(personas.project, path)).status_code == 404, path
    assert client.post(url(personas.project, f"segments/{elsewhere.pk}/delete")).status_code == 404
    assert Segment.objects.filter(pk=elsewhere.pk).exists()
