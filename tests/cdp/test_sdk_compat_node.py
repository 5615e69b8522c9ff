"""The Segment-family Node SDKs, unchanged from npm, against the real API and worker.

The Node twin of test_sdk_compat.py: `tests/cdp/node/send_calls.mjs` runs one SDK (installed by
`npm ci` at the versions package.json pins), configured only with the API's URL as its host and a
project's key as its write key, and sends identify, track, page, screen, group and alias through
its own batching and retries to gunicorn; a Celery worker applies them. What the API answered is
read from gunicorn's access log; what was stored, from the database.

@rudderstack/rudder-sdk-node 3.x posts its gzipped JSON batches labelled
`application/x-www-form-urlencoded` (axios's label for a Buffer): they must be accepted too.
"""

import json
import os
import shutil
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from cdp.models import Customer, Event, Identity
from organizations.api_keys import api_key_create
from tests.factories import ProjectFactory
from tests.live import wait_for

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = Path(__file__).resolve().parent / "node" / "send_calls.mjs"
NODE_TIMEOUT = 60  # seconds for one SDK's run; the script bounds its own flush at 20 s

TRAITS = {"email": "Ada@Example.com", "name": "Ada Lovelace", "plan": "pro", "age": 36, "vip": True}
TRACK_TIMESTAMP = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)

# Each SDK, with how it labels and encodes its batches, and the library name it puts in context.
SDKS = {
    "@segment/analytics-node": ("application/json", "", "@segment/analytics-node"),
    "@customerio/cdp-analytics-node": ("application/json", "", "@customerio/cdp-analytics-node"),
    "@rudderstack/rudder-sdk-node": ("application/x-www-form-urlencoded", "gzip", "analytics-node"),
}


@pytest.fixture(scope="module")
def node() -> str:
    """Node, and each SDK installed at the version package.json pins."""
    executable = shutil.which("node")
    if executable is None:
        pytest.fail("node is not installed (Node 20): see the README's `make test`", pytrace=False)
    pinned = json.loads((ROOT / "package.json").read_text())["devDependencies"]
    for package in SDKS:
        manifest = ROOT / "node_modules" / package / "package.json"
        installed = json.loads(manifest.read_text())["version"] if manifest.is_file() else None
        if installed != pinned[package]:
            pytest.fail(
                f"{package} {pinned[package]} is not installed in node_modules (found: {installed}): "
                f"run `npm ci` in {ROOT}",
                pytrace=False,
            )
    return executable


def send_calls(node: str, *, sdk: str, host: str, key: str, prefix: str) -> dict:
    config = json.dumps({"sdk": sdk, "host": host, "writeKey": key, "prefix": prefix})
    env = {"PATH": os.environ.get("PATH", ""), "HOME": os.environ.get("HOME", "/tmp"), "NO_PROXY": "127.0.0.1"}
    result = subprocess.run(
        [node, str(SCRIPT), config], capture_output=True, text=True, timeout=NODE_TIMEOUT, cwd=ROOT, env=env
    )
    assert result.returncode == 0, f"{sdk} failed:\n{result.stdout}\n{result.stderr}"
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("sdk", list(SDKS))
def test_node_sdk_calls_are_stored_as_customers_and_events(sdk, node, api_server, celery_worker):
    content_type, encoding, library = SDKS[sdk]
    project = ProjectFactory()
    _, key = api_key_create(project=project, name=sdk)
    prefix = sdk.split("/")[0].lstrip("@")
    user, anonymous, legacy = f"user_{prefix}", f"anon-{prefix}", f"legacy_{prefix}"
    mark = api_server.log_mark()

    report = send_calls(node, sdk=sdk, host=api_server.url, key=key, prefix=prefix)
    assert report["errors"] == [], report
    message_ids = report["messageIds"]

    # The API answered every batch 200, under the SDK's own label and encoding.
    def api_answered_the_batches():
        answered = {(r.method, r.path, r.status, r.content_type, r.content_encoding) for r in api_server.requests(mark)}
        assert answered == {("POST", "/v1/batch", 200, content_type, encoding)}
        return True

    wait_for(api_answered_the_batches, timeout=5)

    celery_worker.wait_processed(project.pk)

    customer = Customer.objects.get(project=project, external_id=user)
    assert customer.traits == TRAITS
    assert (customer.email, customer.name) == ("ada@example.com", "Ada Lovelace")
    assert set(Identity.objects.filter(project=project).values_list("kind", "value", "customer_id")) == {
        ("customer_id", user, customer.pk),
        ("anonymous_id", anonymous, customer.pk),
        ("customer_id", legacy, customer.pk),
    }

    events = {event.message_id: event for event in Event.objects.filter(project=project)}
    assert sorted(events) == sorted(message_ids.values())
    expected = {
        "identify": ("identify", "", TRAITS),
        "track": (
            "track",
            "Order Completed",
            {"amount": 12.5, "currency": "EUR", "items": [{"sku": "A-1", "quantity": 2}]},
        ),
        "page": ("page", "Pricing", {"path": "/pricing", "title": "Pricing"}),
        "screen": ("screen", "Home", {"tab": "feed"}),
        "group": ("group", "", {"group_id": "acme", "traits": {"name": "Acme", "employees": 12}}),
        "alias": ("alias", "", {"previous": {"customer_id": legacy}}),
    }
    for kind, (event_type, name, properties) in expected.items():
        event = events[message_ids[kind]]
        assert (event.type, event.name, event.properties) == (event_type, name, properties), kind
        assert event.customer_id == customer.pk, kind
        assert event.context["library"]["name"] == library, kind
    # The SDK's own timestamp, corrected by the (tiny) skew between its sentAt and the API's clock.
    assert abs(events[message_ids["track"]].timestamp - TRACK_TIMESTAMP) < timedelta(seconds=5)
