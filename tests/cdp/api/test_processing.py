"""What the worker makes of accepted calls: profiles, identities, timelines, merges, erasure."""

import io
from datetime import UTC, datetime, timedelta

import pytest

from cdp.models import Command, Customer, Event, Identity, Suppression
from cdp.processing import commands_process

pytestmark = pytest.mark.django_db


def _customer(api, customer_id: str) -> dict:
    response = api.get(f"/v1/customers/{customer_id}")
    assert response.status_code == 200, response.content
    return response.json()


def test_guide_calls_make_jane_with_a_purchase_on_her_timeline(api):
    api.post(
        "/v1/identify",
        {"customer_id": "user_001", "traits": {"email": "jane@example.com", "name": "Jane Doe", "plan": "pro"}},
    )
    api.post(
        "/v1/track",
        {
            "customer_id": "user_001",
            "event": "purchase",
            "properties": {"item": "T-Shirt", "amount": 29.99, "currency": "USD"},
        },
    )
    api.process()
    jane = _customer(api, "user_001")
    assert jane["traits"] == {"email": "jane@example.com", "name": "Jane Doe", "plan": "pro"}
    assert jane["identities"] == [{"type": "customer_id", "value": "user_001"}]
    events = api.get("/v1/customers/user_001/events").json()["events"]
    assert [e["type"] for e in events] == ["track", "identify"]
    assert events[0]["event"] == "purchase"
    assert events[0]["properties"] == {"item": "T-Shirt", "amount": 29.99, "currency": "USD"}
    assert not Command.objects.exists()


def test_identify_merges_traits_and_null_removes_one(api):
    api.post("/v1/identify", {"customer_id": "u", "traits": {"plan": "pro", "city": "Paris"}})
    api.post("/v1/identify", {"customer_id": "u", "traits": {"plan": "free", "city": None, "age": 30}})
    api.process()
    assert _customer(api, "u")["traits"] == {"plan": "free", "age": 30}


def test_identify_arriving_late_with_an_older_timestamp_does_not_overwrite_newer_traits(api):
    now = datetime.now(UTC)
    api.post("/v1/identify", {"customer_id": "u", "traits": {"plan": "pro"}, "timestamp": now.isoformat()})
    api.process()
    older = (now - timedelta(hours=1)).isoformat()
    api.post("/v1/identify", {"customer_id": "u", "traits": {"plan": "free", "city": "Oslo"}, "timestamp": older})
    api.process()
    assert _customer(api, "u")["traits"] == {"plan": "pro", "city": "Oslo"}


def test_out_of_order_events_keep_their_own_timestamps(api):
    now = datetime.now(UTC)
    api.post("/v1/track", {"customer_id": "u", "event": "second", "timestamp": now.isoformat()})
    api.post("/v1/track", {"customer_id": "u", "event": "first", "timestamp": (now - timedelta(days=2)).isoformat()})
    api.process()
    events = api.get("/v1/customers/u/events").json()["events"]
    assert [e["event"] for e in events] == ["second", "first"]
    customer = Customer.objects.get()
    assert customer.first_seen_at == now - timedelta(days=2)
    assert customer.last_seen_at == now


def test_anonymous_activity_is_attributed_when_identify_carries_both_ids(api):
    api.post("/v1/page", {"anonymous_id": "anon-1", "name": "Pricing", "properties": {"path": "/pricing"}})
    api.post("/v1/track", {"anonymous_id": "anon-1", "event": "Added to cart"})
    api.process()
    assert Customer.objects.get().external_id is None
    api.post("/v1/identify", {"customer_id": "u", "anonymous_id": "anon-1", "traits": {"plan": "pro"}})
    api.process()
    customer = Customer.objects.get()
    assert customer.external_id == "u"
    events = api.get("/v1/customers/u/events").json()["events"]
    assert {e["event"] for e in events} == {"Pricing", "Added to cart", ""}
    assert {(i["type"], i["value"]) for i in _customer(api, "u")["identities"]} == {
        ("customer_id", "u"),
        ("anonymous_id", "anon-1"),
    }


def test_anonymous_profile_merges_into_existing_customer(api):
    api.post("/v1/identify", {"customer_id": "u", "traits": {"plan": "pro"}})
    api.post("/v1/track", {"anonymous_id": "anon-2", "event": "Viewed"})
    api.process()
    assert Customer.objects.count() == 2
    api.post("/v1/identify", {"customer_id": "u", "anonymous_id": "anon-2", "traits": {}})
    api.process()
    assert Customer.objects.count() == 1
    assert Event.objects.filter(name="Viewed").get().customer.external_id == "u"


def test_merge_moves_identities_traits_and_events_and_the_merged_id_resolves(api):
    api.post("/v1/identify", {"customer_id": "primary", "traits": {"plan": "pro"}})
    api.post("/v1/identify", {"customer_id": "secondary", "traits": {"city": "Lyon"}})
    api.post("/v1/track", {"customer_id": "secondary", "event": "purchase"})
    api.process()
    response = api.post("/v1/merge", {"primary": {"customer_id": "primary"}, "secondary": {"customer_id": "secondary"}})
    assert response.status_code == 202
    api.process()
    assert Customer.objects.count() == 1
    merged = _customer(api, "secondary")
    assert merged["customer_id"] == "primary"
    assert merged["traits"] == {"plan": "pro", "city": "Lyon"}
    assert "purchase" in [e["event"] for e in api.get("/v1/customers/primary/events").json()["events"]]
    api.post("/v1/track", {"customer_id": "secondary", "event": "later"})
    api.process()
    assert Event.objects.get(name="later").customer.external_id == "primary"


def test_alias_links_the_previous_id(api):
    api.post("/v1/track", {"userId": "old-id", "event": "x"})
    api.process()
    api.post("/v1/alias", {"userId": "new-id", "previousId": "old-id"})
    api.process()
    assert Customer.objects.count() == 1
    assert _customer(api, "old-id")["traits"] == {}
    assert Identity.objects.filter(value="old-id").get().customer == Identity.objects.get(value="new-id").customer


def test_repeated_message_id_changes_nothing_the_second_time(api):
    call = {"customer_id": "u", "event": "purchase", "message_id": "m-1"}
    api.post("/v1/track", call)
    api.post("/v1/track", call)
    results = api.process()
    api.post("/v1/track", call)
    api.process()
    assert Event.objects.filter(name="purchase").count() == 1
    assert sum(r.duplicates for r in results) == 1


def test_repeated_identify_message_id_does_not_reapply_traits(api):
    api.post("/v1/identify", {"customer_id": "u", "traits": {"plan": "pro"}, "message_id": "m-2"})
    api.process()
    api.post("/v1/identify", {"customer_id": "u", "traits": {"plan": "free"}})
    api.post("/v1/identify", {"customer_id": "u", "traits": {"plan": "pro"}, "message_id": "m-2"})
    api.process()
    assert _customer(api, "u")["traits"] == {"plan": "free"}


def test_same_message_id_in_another_project_is_not_a_duplicate(api, other_api):
    for client in (api, other_api):
        client.post("/v1/track", {"customer_id": "u", "event": "purchase", "message_id": "shared"})
        client.process()
    assert Event.objects.filter(message_id="shared").count() == 2


def test_projects_never_see_each_others_customers(api, other_api):
    api.post("/v1/identify", {"customer_id": "u", "traits": {"secret": "mine"}})
    api.process()
    assert other_api.get("/v1/customers/u").status_code == 404
    assert other_api.get("/v1/customers/u/events").status_code == 404
    assert other_api.get("/v1/customers").json()["customers"] == []
    other_api.post("/v1/identify", {"customer_id": "u", "traits": {"secret": "theirs"}})
    other_api.process()
    assert _customer(api, "u")["traits"] == {"secret": "mine"}


def test_delete_erases_profile_and_events_and_suppresses_late_calls(api):
    api.post("/v1/identify", {"customer_id": "u", "anonymous_id": "a", "traits": {"email": "x@example.com"}})
    api.post("/v1/track", {"customer_id": "u", "event": "purchase"})
    api.process()
    response = api.delete("/v1/customers/u")
    assert response.status_code == 202 and response.json()["success"] is True
    api.post("/v1/track", {"customer_id": "u", "event": "late"})
    api.post("/v1/track", {"anonymous_id": "a", "event": "late anonymous"})
    api.process()
    assert not Customer.objects.exists() and not Event.objects.exists()
    assert set(Suppression.objects.values_list("kind", "value")) == {("customer_id", "u"), ("anonymous_id", "a")}
    assert api.get("/v1/customers/u").status_code == 404


def test_context_traits_are_read_when_traits_are_absent(api):
    api.post("/v1/identify", {"userId": "r", "context": {"traits": {"plan": "pro"}}})
    api.process()
    assert _customer(api, "r")["traits"] == {"plan": "pro"}


def test_clock_skew_is_corrected_from_sent_at(api):
    device_now = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
    api.post(
        "/v1/track",
        {
            "userId": "u",
            "event": "e",
            "timestamp": (device_now - timedelta(minutes=5)).isoformat(),
            "sentAt": device_now.isoformat(),
        },
    )
    api.process()
    event = Event.objects.get()
    # The device clock was years ahead; the event happened 5 minutes before it was received.
    assert abs((event.received_at - event.timestamp) - timedelta(minutes=5)) < timedelta(seconds=1)


def test_batch_of_mixed_calls_is_applied_in_order(api):
    batch = {
        "batch": [
            {"type": "identify", "userId": "u", "traits": {"plan": "free"}},
            {"type": "track", "userId": "u", "event": "upgrade"},
            {"type": "identify", "userId": "u", "traits": {"plan": "pro"}},
            {"type": "page", "userId": "u", "name": "Home"},
            {"type": "screen", "userId": "u", "name": "Main"},
            {"type": "group", "userId": "u", "groupId": "acme", "traits": {"size": 10}},
        ]
    }
    assert api.post("/v1/batch", batch).status_code == 200
    api.process()
    assert _customer(api, "u")["traits"] == {"plan": "pro"}
    assert Event.objects.count() == 6
    group = Event.objects.get(type="group")
    assert group.properties == {"group_id": "acme", "traits": {"size": 10}}


def test_customers_list_filters_by_trait_and_paginates_with_a_cursor(api):
    batch = {
        "batch": [
            {"type": "identify", "userId": f"u{i}", "traits": {"plan": "pro" if i % 2 else "free"}} for i in range(7)
        ]
    }
    api.post("/v1/batch", batch)
    api.process()
    first = api.get("/v1/customers", {"traits.plan": "pro", "limit": 2}).json()
    assert [c["customer_id"] for c in first["customers"]] == ["u5", "u3"]
    second = api.get("/v1/customers", {"traits.plan": "pro", "limit": 2, "cursor": first["next_cursor"]}).json()
    assert [c["customer_id"] for c in second["customers"]] == ["u1"]
    assert second["next_cursor"] is None
    assert api.get("/v1/customers", {"cursor": "garbage"}).status_code == 400
    assert api.get("/v1/customers", {"plan": "pro"}).status_code == 400
    assert api.get("/v1/customers", {"limit": 0}).status_code == 400


def test_events_are_paginated_newest_first_and_filtered_by_name(api):
    base = datetime(2026, 1, 1, tzinfo=UTC)
    batch = {
        "batch": [
            {
                "type": "track",
                "userId": "u",
                "event": "purchase" if i % 2 else "view",
                "timestamp": (base + timedelta(minutes=i)).isoformat(),
            }
            for i in range(5)
        ]
    }
    api.post("/v1/batch", batch)
    api.process()
    page = api.get("/v1/customers/u/events", {"limit": 2}).json()
    assert [e["timestamp"] for e in page["events"]] == ["2026-01-01T00:04:00Z", "2026-01-01T00:03:00Z"]
    rest = api.get("/v1/customers/u/events", {"limit": 10, "cursor": page["next_cursor"]}).json()
    assert len(rest["events"]) == 3 and rest["next_cursor"] is None
    purchases = api.get("/v1/customers/u/events", {"event": "purchase"}).json()["events"]
    assert [e["event"] for e in purchases] == ["purchase", "purchase"]


def test_another_worker_holding_the_partition_is_skipped(api):
    api.post("/v1/track", {"customer_id": "u", "event": "e"})
    from django.db import connection

    if connection.vendor != "postgresql":
        pytest.skip("advisory locks are PostgreSQL's")
    from django.db import connections

    from cdp.inbox import partition_of
    from cdp.storage import partition_lock_key

    key = partition_lock_key(api.project.pk, partition_of({"customer_id": "u"}))
    other = connections.create_connection("default")
    try:
        with other.cursor() as cursor:
            cursor.execute("BEGIN; SELECT pg_advisory_lock(%s, %s)", key)
            assert commands_process(project_id=api.project.pk) is None
            cursor.execute("SELECT pg_advisory_unlock(%s, %s); COMMIT", key)
    finally:
        other.close()


def test_a_command_that_always_fails_is_set_aside_and_the_rest_flows(api):
    from django.core.management import call_command

    from cdp.models import FailedCommand

    Command.objects.create(project=api.project, payload='[{"type": "track"}]', message_count=1)  # unusable
    api.post("/v1/track", {"customer_id": "u", "event": "after"})
    for _attempt in (1, 2):
        with pytest.raises(KeyError):
            commands_process(project_id=api.project.pk)
    assert not FailedCommand.objects.exists()
    assert commands_process(project_id=api.project.pk).commands == 1  # the third failure sets it aside
    assert FailedCommand.objects.get(project=api.project).error.startswith("KeyError")
    api.process()
    assert Event.objects.filter(name="after").exists()

    call_command("replay_failed_commands", stdout=io.StringIO())
    assert Command.objects.filter(project=api.project).count() == 1
    assert not FailedCommand.objects.exists()


def test_text_with_tabs_newlines_and_backslashes_is_stored_exactly(api):
    tricky = 'a\tb\nc\rd\\e "quoted" \\n literal'
    api.post(
        "/v1/page",
        {"customer_id": "u", "name": tricky, "message_id": "m\\1\t2", "properties": {"k\t": tricky, "path": "C:\\x"}},
    )
    api.post("/v1/track", {"anonymous_id": "anon\\id", "event": "e", "context": {"ua": tricky}})
    api.process()
    page = Event.objects.get(type="page")
    assert page.name == tricky
    assert page.message_id == "m\\1\t2"
    assert page.properties == {"k\t": tricky, "path": "C:\\x"}
    assert Event.objects.get(type="track").context == {"ua": tricky}
    assert Identity.objects.filter(value="anon\\id").exists()
