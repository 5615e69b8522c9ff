"""The Segment-family Python SDKs, unchanged from PyPI, against the real API and worker.

Each SDK is configured only with the API's URL as its host and a project's API key as its write
key, as a customer would. Its calls go through its own consumer thread, batching, retries and
gzip to gunicorn, are stored as commands, and are applied by a Celery worker. What the SDK put on
the wire is recorded (by wrapping `requests.Session.send`, which all three use) and compared with
what the worker stored.
"""

import base64
import gzip
import importlib
import json
import threading
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta

import pytest
import requests

from cdp.models import Customer, Event, Identity
from organizations.api_keys import api_key_create
from tests.factories import ProjectFactory
from tests.live import wait_for

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

FLUSH_TIMEOUT = 30  # seconds for an SDK's flush(): its retries are bounded below, this bounds the rest

TRAITS = {"email": "Ada@Example.com", "name": "Ada Lovelace", "plan": "pro", "age": 36, "vip": True}
TRACK_PROPERTIES = {
    "amount": 12.5,
    "currency": "EUR",
    "items": [{"sku": "A-1", "quantity": 2}],
    "delivery": date(2026, 1, 31),  # the SDKs send dates as ISO 8601 strings
}
TRACK_TIMESTAMP = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)
PAGE_PROPERTIES = {"path": "/pricing", "title": "Pricing"}
SCREEN_PROPERTIES = {"tab": "feed"}
GROUP_TRAITS = {"name": "Acme", "employees": 12}


@dataclass(frozen=True)
class Sdk:
    package: str  # the PyPI distribution
    module: str  # where its Client is
    short: str
    gzip: bool  # whether it gzips batches as configured here
    options: dict = field(default_factory=dict)  # extra Client options
    identify_traits_in_context: bool = False  # rudder sends identify traits as context.traits

    def client_class(self):
        try:
            return importlib.import_module(self.module).Client
        except ImportError:
            pytest.fail(f"{self.package} is not installed: pip install -e '.[dev]'", pytrace=False)


SDKS = [
    Sdk(
        "segment-analytics-python",
        "segment.analytics",
        "segment",
        gzip=True,
        # Bound its waits: by default it retries a rate-limited batch for 30 minutes.
        options={"gzip": True, "max_rate_limit_duration": 10, "max_total_backoff_duration": 10},
    ),
    Sdk("customerio-cdp-analytics", "customerio.analytics", "customerio", gzip=False),
    Sdk("rudder-sdk-python", "rudderstack.analytics", "rudder", gzip=True, identify_traits_in_context=True),
]


@dataclass
class Exchange:
    """One HTTP request an SDK made, and the answer it got."""

    method: str
    url: str
    headers: dict
    body: bytes
    status: int
    response: bytes

    def payload(self) -> dict:
        body = gzip.decompress(self.body) if self.headers.get("Content-Encoding") == "gzip" else self.body
        return json.loads(body)


@pytest.fixture
def wire(monkeypatch) -> list[Exchange]:
    """Every request made through `requests` during the test (the SDKs' threads included)."""
    exchanges: list[Exchange] = []
    send = requests.Session.send

    def recording_send(session, request, **kwargs):
        response = send(session, request, **kwargs)
        body = request.body.encode() if isinstance(request.body, str) else (request.body or b"")
        exchanges.append(
            Exchange(request.method, request.url, dict(request.headers), body, response.status_code, response.content)
        )
        return response

    monkeypatch.setattr(requests.Session, "send", recording_send)
    return exchanges


def basic_auth(key: str) -> str:
    return "Basic " + base64.b64encode(f"{key}:".encode()).decode()


def sent(result) -> dict:
    """The message of an SDK call's `(success, message)`, which must say success."""
    success, message = result
    assert success is True, f"the SDK did not queue {message}"
    return message


def flush(client) -> None:
    """client.flush(), bounded: it waits on the queue with no timeout of its own."""
    thread = threading.Thread(target=client.flush, daemon=True)
    thread.start()
    thread.join(FLUSH_TIMEOUT)
    assert not thread.is_alive(), f"flush() did not return within {FLUSH_TIMEOUT} s"


@pytest.mark.parametrize("sdk", SDKS, ids=[sdk.package for sdk in SDKS])
def test_sdk_calls_are_stored_as_customers_and_events(sdk, api_server, celery_worker, wire):
    project = ProjectFactory()
    _, key = api_key_create(project=project, name=sdk.package)
    user, anonymous, legacy = f"user_{sdk.short}", f"anon-{sdk.short}", f"legacy_{sdk.short}"
    errors = []
    mark = api_server.log_mark()

    client = sdk.client_class()(
        write_key=key,
        host=api_server.url,
        on_error=lambda error, batch: errors.append((error, batch)),
        max_retries=1,
        timeout=10,
        upload_interval=0.1,
        **sdk.options,
    )
    try:
        messages = {
            "identify": sent(client.identify(user, dict(TRAITS), anonymous_id=anonymous)),
            "track": sent(client.track(user, "Order Completed", dict(TRACK_PROPERTIES), timestamp=TRACK_TIMESTAMP)),
            "page": sent(client.page(user, category="Docs", name="Pricing", properties=dict(PAGE_PROPERTIES))),
            "screen": sent(client.screen(user, name="Home", properties=dict(SCREEN_PROPERTIES))),
            "group": sent(client.group(user, "acme", dict(GROUP_TRAITS))),
            "alias": sent(client.alias(previous_id=legacy, user_id=user)),
        }
        flush(client)
    finally:
        client.join()  # stop its consumer thread
    assert errors == [], f"{sdk.package} reported errors: {errors}"

    # What went over the wire: POST /v1/batch, Basic auth with the key as user name, gzip or not,
    # every message once, and 200 for each batch (customerio and rudder retry anything else).
    batches = [exchange for exchange in wire if exchange.url.startswith(api_server.url)]
    assert batches, f"{sdk.package} sent nothing to {api_server.url}: {[e.url for e in wire]}"
    on_wire = {}
    for exchange in batches:
        assert (exchange.method, exchange.url) == ("POST", f"{api_server.url}/v1/batch")
        assert exchange.headers["Authorization"] == basic_auth(key)
        assert exchange.headers["Content-Type"] == "application/json"
        assert exchange.headers.get("Content-Encoding") == ("gzip" if sdk.gzip else None)
        payload = exchange.payload()
        assert exchange.status == 200, exchange.response
        answer = json.loads(exchange.response)
        assert answer["success"] is True
        assert answer["accepted"] == len(payload["batch"])
        on_wire.update({message["messageId"]: message for message in payload["batch"]})
    message_ids = {kind: message["messageId"] for kind, message in messages.items()}
    assert sorted(on_wire) == sorted(message_ids.values())
    identify_on_wire = on_wire[message_ids["identify"]]
    if sdk.identify_traits_in_context:
        assert "traits" not in identify_on_wire
        assert identify_on_wire["context"]["traits"] == TRAITS
    else:
        assert identify_on_wire["traits"] == TRAITS

    # The API saw the same: gunicorn's access log of this test (written just after each answer).
    def api_answered_the_batches():
        answered = [(r.method, r.path, r.status, r.content_encoding) for r in api_server.requests(since=mark)]
        assert answered == [("POST", "/v1/batch", 200, "gzip" if sdk.gzip else "")] * len(batches)
        return True

    wait_for(api_answered_the_batches, timeout=5)

    celery_worker.wait_processed(project.pk)

    customer = Customer.objects.get(project=project, external_id=user)
    assert customer.traits == TRAITS
    assert (customer.email, customer.name) == ("ada@example.com", "Ada Lovelace")
    assert set(Identity.objects.filter(project=project).values_list("kind", "value", "customer_id")) == {
        ("customer_id", user, customer.pk),
        ("anonymous_id", anonymous, customer.pk),
        ("customer_id", legacy, customer.pk),  # the alias's previous id now resolves to the customer
    }

    events = {event.message_id: event for event in Event.objects.filter(project=project)}
    assert sorted(events) == sorted(message_ids.values())
    expected = {
        "identify": ("identify", "", TRAITS),
        "track": ("track", "Order Completed", {**TRACK_PROPERTIES, "delivery": "2026-01-31"}),
        "page": ("page", "Pricing", PAGE_PROPERTIES),
        "screen": ("screen", "Home", SCREEN_PROPERTIES),
        "group": ("group", "", {"group_id": "acme", "traits": GROUP_TRAITS}),
        "alias": ("alias", "", {"previous": {"customer_id": legacy}}),
    }
    for kind, (event_type, name, properties) in expected.items():
        event = events[message_ids[kind]]
        assert (event.type, event.name, event.properties) == (event_type, name, properties), kind
        assert event.customer_id == customer.pk, kind
        assert event.context["library"]["name"] == "analytics-python", kind
        # The SDK's timestamp, corrected by the (tiny) skew between its sentAt and the API's clock.
        assert abs(event.timestamp - datetime.fromisoformat(messages[kind]["timestamp"])) < timedelta(seconds=5), kind
    assert abs(events[message_ids["track"]].timestamp - TRACK_TIMESTAMP) < timedelta(seconds=5)
