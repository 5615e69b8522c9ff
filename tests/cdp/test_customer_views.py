"""The platform pages of customers and events: list, profile, timeline, and the project dashboard."""

import html
import re
import uuid
from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from cdp.models import Customer, Event, Identity
from timonier import clock

pytestmark = pytest.mark.django_db


def make_customer(project, external_id=None, *, traits=None, anonymous_id=None, seen_ago=timedelta(0)):
    """A customer as the processor stores it: traits, their email/name copies, and identities."""
    traits = traits or {}
    at = clock.now() - seen_ago
    customer = Customer.objects.create(
        project=project,
        external_id=external_id,
        traits=traits,
        email=str(traits.get("email", "")).lower(),
        name=str(traits.get("name", "")),
        first_seen_at=at,
        last_seen_at=at,
    )
    if external_id:
        Identity.objects.create(project=project, kind=Identity.Kind.CUSTOMER_ID, value=external_id, customer=customer)
    if anonymous_id:
        Identity.objects.create(project=project, kind=Identity.Kind.ANONYMOUS_ID, value=anonymous_id, customer=customer)
    return customer


def make_event(customer, name="purchase", *, type="track", properties=None, ago=timedelta(0), context=None):
    at = clock.now() - ago
    return Event.objects.create(
        project=customer.project,
        customer=customer,
        type=type,
        name=name,
        properties=properties or {},
        context=context or {},
        timestamp=at,
        received_at=at,
        message_id=str(uuid.uuid4()),
    )


def jane(project):
    return make_customer(project, "user_001", traits={"email": "jane@example.com", "name": "Jane Doe", "plan": "pro"})


def project_url(project, path=""):
    return f"/o/{project.organization.slug}/{project.slug}/{path}"


def text(response) -> str:
    assert response.status_code == 200, response.status_code
    return html.unescape(response.content.decode())


def customer_ids(page: str) -> list[int]:
    return [int(pk) for pk in re.findall(r'data-customer-id="(\d+)"', page)]


def next_link(page: str, label: str) -> str | None:
    match = re.search(r'href="([^"]+)">' + re.escape(label) + "</a>", page)
    return html.unescape(match.group(1)) if match else None


# -- customer list -------------------------------------------------------------------------------


def test_customer_list_shows_jane_doe_with_her_external_id(personas):
    customer = jane(personas.project)
    page = text(personas.client("member").get(project_url(personas.project, "customers")))
    assert "Jane Doe" in page and "user_001" in page and "jane@example.com" in page
    assert f'href="{project_url(personas.project, f"customers/{customer.pk}")}"' in page
    assert "now" in page  # last seen, naturaltime


def test_sidebar_lists_the_project_sections_in_order(personas):
    page = text(personas.client("member").get(project_url(personas.project, "customers")))
    sidebar = re.search(r'<nav class="sidebar".*?</nav>', page, re.S).group(0)
    labels = re.findall(r">([^<>]+)</a>", sidebar)
    assert labels == ["Dashboard", "Customers", "Segments", "Email Templates", "Workflows", "API Keys", "Settings"]
    assert 'class="active" aria-current="page">Customers</a>' in sidebar


@pytest.mark.parametrize("search", ["jane@example.com", "JANE@example.com", "user_001", "Jane", "doe"])
def test_search_finds_a_customer_by_email_id_or_name(personas, search):
    customer = jane(personas.project)
    other = make_customer(personas.project, "user_002", traits={"email": "bob@example.com", "name": "Bob Stone"})
    page = text(personas.client("member").get(project_url(personas.project, "customers"), {"q": search}))
    assert customer_ids(page) == [customer.pk]
    assert other.pk not in customer_ids(page)


def test_search_without_a_match_says_so(personas):
    jane(personas.project)
    page = text(personas.client("member").get(project_url(personas.project, "customers"), {"q": "nobody"}))
    assert customer_ids(page) == []
    assert "No customer matches “nobody”" in page


def test_anonymous_customer_shows_anonymous_and_its_first_anonymous_id(personas):
    customer = make_customer(personas.project, anonymous_id="anon-7f3a")
    Identity.objects.create(
        project=personas.project, kind=Identity.Kind.ANONYMOUS_ID, value="anon-later", customer=customer
    )
    page = text(personas.client("member").get(project_url(personas.project, "customers")))
    row = re.search(rf'<tr data-customer-id="{customer.pk}">.*?</tr>', page, re.S).group(0)
    assert "Anonymous" in row and "anon-7f3a" in row and "anon-later" not in row


def test_pagination_cursor_shows_the_next_page_without_duplicates(personas):
    now = clock.now()
    Customer.objects.bulk_create(
        Customer(project=personas.project, external_id=f"user_{i:03d}", first_seen_at=now, last_seen_at=now)
        for i in range(120)
    )
    client = personas.client("member")
    url, seen, pages = project_url(personas.project, "customers"), [], 0
    while url:
        page = text(client.get(url))
        seen += customer_ids(page)
        pages += 1
        url = next_link(page, "Next →")
        if pages > 1:
            assert next_link(page, "← Newest") == project_url(personas.project, "customers")
    assert pages == 3
    assert len(seen) == len(set(seen)) == 120
    assert seen == sorted(seen, reverse=True)


def test_pagination_keeps_the_search(personas):
    now = clock.now()
    Customer.objects.bulk_create(
        Customer(
            project=personas.project, external_id=f"user_{i:03d}", name=f"Ann {i}", first_seen_at=now, last_seen_at=now
        )
        for i in range(60)
    )
    make_customer(personas.project, "user_bob", traits={"name": "Bob"})
    client = personas.client("member")
    first = text(client.get(project_url(personas.project, "customers"), {"q": "ann"}))
    second = text(client.get(next_link(first, "Next →")))
    assert len(customer_ids(first)) == 50 and len(customer_ids(second)) == 10
    assert 'value="ann"' in second


def test_customer_list_does_not_count_rows(personas):
    jane(personas.project)
    with CaptureQueriesContext(connection) as queries:
        personas.client("member").get(project_url(personas.project, "customers"))
    assert not [q["sql"] for q in queries if "COUNT(" in q["sql"].upper()]


def test_empty_customer_list_explains_how_to_send_the_first_identify(personas, settings):
    settings.API_URL = "https://cdp.example.com"
    page = text(personas.client("owner").get(project_url(personas.project, "customers")))
    assert "curl -X POST https://cdp.example.com/v1/identify" in page
    assert "New API Key" in page


def test_customer_list_with_a_bad_cursor_is_a_bad_request(personas):
    client = personas.client("member")
    for cursor in ("not-a-cursor", "WyJ4Il0", "WzEsMl0"):  # garbage, ["x"], [1,2]
        response = client.get(project_url(personas.project, "customers"), {"cursor": cursor})
        assert response.status_code == 400, cursor


# -- customer detail -----------------------------------------------------------------------------


def test_detail_shows_attributes_identities_and_the_purchase_event(personas):
    customer = jane(personas.project)
    make_event(customer, "identify", type="identify", properties=customer.traits, ago=timedelta(minutes=5))
    make_event(customer, properties={"item": "T-Shirt", "amount": 29.99, "currency": "USD"})
    page = text(personas.client("member").get(project_url(personas.project, f"customers/{customer.pk}")))
    assert "<h1>Jane Doe</h1>" in page and "user_001" in page

    attributes = re.search(r">Attributes</h2>(.*?)</section>", page, re.S).group(1)
    for name, value in {"email": "jane@example.com", "name": "Jane Doe", "plan": "pro"}.items():
        assert f"<dt>{name}</dt><dd>{value}</dd>" in attributes
    assert "Customer ID" in page

    events = re.search(r">Events</h2>(.*?)</section>", page, re.S).group(1)
    purchase = re.search(r"<li data-event-id=.*?</li>", events, re.S).group(0)  # newest first
    assert ">track</span>" in purchase and ">purchase</a>" in purchase
    for name, value in {"item": "T-Shirt", "amount": "29.99", "currency": "USD"}.items():
        assert f"<dt>{name}</dt><dd>{value}</dd>" in purchase
    assert ">identify</span>" in events


def test_detail_shows_nested_values_as_compact_json(personas):
    customer = make_customer(personas.project, "user_009", traits={"address": {"city": "Lyon", "zip": "69001"}})
    make_event(customer, "checkout", properties={"items": [{"sku": "A1", "qty": 2}], "gift": True})
    page = text(personas.client("member").get(project_url(personas.project, f"customers/{customer.pk}")))
    assert '<dt>address</dt><dd>{"city":"Lyon","zip":"69001"}</dd>' in page
    assert '<dt>items</dt><dd>[{"qty":2,"sku":"A1"}]</dd>' in page
    assert "<dt>gift</dt><dd>true</dd>" in page


def test_detail_events_paginate_with_the_cursor(personas):
    customer = jane(personas.project)
    events = [make_event(customer, f"step_{i}", ago=timedelta(minutes=i)) for i in range(30)]
    client = personas.client("member")
    url = project_url(personas.project, f"customers/{customer.pk}")
    first = text(client.get(url))
    first_ids = [int(pk) for pk in re.findall(r'<li data-event-id="(\d+)"', first)]
    assert first_ids == [e.pk for e in events[:25]]
    second = text(client.get(next_link(first, "Older events →")))
    second_ids = [int(pk) for pk in re.findall(r'<li data-event-id="(\d+)"', second)]
    assert second_ids == [e.pk for e in events[25:]]
    assert next_link(second, "Older events →") is None
    assert "← Newest events" in second


def test_detail_filters_events_by_name(personas):
    customer = jane(personas.project)
    purchase = make_event(customer, "purchase")
    make_event(customer, "viewed_product")
    page = text(
        personas.client("member").get(project_url(personas.project, f"customers/{customer.pk}"), {"name": "purchase"})
    )
    assert re.findall(r'<li data-event-id="(\d+)"', page) == [str(purchase.pk)]


def test_detail_of_an_anonymous_customer_lists_its_anonymous_id(personas):
    customer = make_customer(personas.project, anonymous_id="anon-42")
    page = text(personas.client("member").get(project_url(personas.project, f"customers/{customer.pk}")))
    assert "<h1>Anonymous</h1>" in page and "anon-42" in page and "Anonymous ID" in page


# -- scoping -------------------------------------------------------------------------------------


def test_outsider_gets_404_on_customer_pages_and_latest_events(personas):
    customer = jane(personas.project)
    make_event(customer)
    client = personas.client("outsider")
    for path in ("customers", f"customers/{customer.pk}", "events/latest", "events/latest?after=0"):
        assert client.get(project_url(personas.project, path)).status_code == 404, path


def test_customer_of_another_project_is_404_by_pk(personas):
    theirs = jane(personas.other_project)
    assert personas.client("owner").get(project_url(personas.project, f"customers/{theirs.pk}")).status_code == 404
    assert (
        personas.client("outsider").get(project_url(personas.other_project, f"customers/{theirs.pk}")).status_code
        == 200
    )


# -- dashboard -----------------------------------------------------------------------------------


def test_dashboard_shows_chart_counts_and_latest_events(personas):
    customer = jane(personas.project)
    old = make_customer(personas.project, "user_old")
    Customer.objects.filter(pk=old.pk).update(created_at=clock.now() - timedelta(days=30))
    # Two events in one hour of the chart: at half past and 29 past, two hours ago (so the test
    # does not depend on the minute it runs at).
    now = clock.now()
    half_past = now.replace(minute=30, second=0, microsecond=0) - timedelta(hours=2)
    make_event(customer, "purchase", ago=now - half_past)
    make_event(customer, "purchase", ago=now - half_past + timedelta(minutes=1))
    make_event(customer, "signup", ago=timedelta(days=8))  # outside the chart's window
    make_event(jane(personas.other_project), "not_ours")

    page = text(personas.client("member").get(project_url(personas.project)))
    chart = re.search(r'<svg [^>]*data-testid="events-chart".*?</svg>', page, re.S).group(0)
    assert chart.count('<rect class="bar"') == 168
    assert ": 2 events</title>" in chart
    assert re.search(r'data-testid="customers-total">2<', page)
    assert re.search(r'data-testid="customers-new">1<', page)
    assert re.search(r'data-testid="events-week">2<', page)
    latest = re.search(r"<table[^>]*data-latest-events.*?</table>", page, re.S).group(0)
    assert latest.count("<tr data-event-id=") == 3 and "purchase" in latest and "signup" in latest
    assert "not_ours" not in page
    assert "Get started" not in page and "/v1/identify" not in page
    assert "js/dashboard.js" in page


def test_dashboard_shows_the_identify_command_while_the_project_has_no_events(personas, settings):
    settings.API_URL = "https://cdp.example.com"
    jane(personas.project)  # a customer without events is not enough
    page = text(personas.client("owner").get(project_url(personas.project)))
    assert "Get started" in page
    assert "curl -X POST https://cdp.example.com/v1/identify" in page
    assert f'href="{project_url(personas.project, "api-keys/new")}">New API Key</a>' in page
    assert f"<h1>{personas.project.name}</h1>" in page


def test_latest_events_returns_only_events_after_the_given_id_of_this_project(personas):
    customer = jane(personas.project)
    seen = make_event(customer, "first", ago=timedelta(seconds=30))
    newer = [make_event(customer, f"next_{i}", ago=timedelta(seconds=10 - i)) for i in range(3)]
    make_event(jane(personas.other_project), "not_ours")
    response = personas.client("member").get(project_url(personas.project, "events/latest"), {"after": seen.pk})
    assert response.status_code == 200
    events = response.json()["events"]
    assert [e["id"] for e in events] == [e.pk for e in reversed(newer)]
    assert events[0]["name"] == "next_2" and events[0]["type"] == "track"
    assert events[0]["customer"] == {
        "label": "user_001",
        "anonymous": False,
        "url": project_url(personas.project, f"customers/{customer.pk}"),
    }
    last = events[0]["id"]
    assert personas.client("member").get(project_url(personas.project, "events/latest"), {"after": last}).json() == {
        "events": []
    }


def test_latest_events_rejects_an_after_that_is_not_an_id(personas):
    response = personas.client("member").get(project_url(personas.project, "events/latest"), {"after": "x"})
    assert response.status_code == 400
    assert response.json()["message"].startswith("after:")
