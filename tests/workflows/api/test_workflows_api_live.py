"""Issue 10's "Through the API alone": the guide's Purchase Follow-Up created and activated with the
Workflows API of the real API process (gunicorn), the guide's identify and `track purchase` sent
to it, and the real Celery worker running the workflow: exactly one email reaches a real SMTP
server for jane@example.com; a second purchase sends none.

Only the email template is made through services (the API has no template operations). The test
publishes no trigger or executor wake-up itself: the worker wakes itself when its transactions
commit (the ingest batch wakes trigger processing, an enrolment the executor, a delivery its
send), which is what this test proves along with the API. `wait_processed` stands in for the
beat's inbox sweep only, as in every live test (tests/live.py).
"""

import json
import re
import time
from pathlib import Path

import pytest
import requests

from emails.models import Delivery
from organizations.api_keys import api_key_create
from tests.factories import ProjectFactory
from tests.live import WORKER_START_TIMEOUT, wait_for
from tests.smtp import smtp_server  # noqa: F401  (the real SMTP server fixture)
from tests.workflows.engine import published_template
from workflows.models import Trigger

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

GUIDE = Path(__file__).resolve().parents[3] / "docs" / "getting-started.txt"
EMAIL_TIMEOUT = 30  # s from the track call to the email at the SMTP server
QUIET_PERIOD = 5  # s a second purchase is given to (wrongly) send a second email


def guide_bodies() -> dict[str, dict]:
    """The JSON bodies of the guide's curl commands, by endpoint (`identify`, `track`)."""
    text = GUIDE.read_text()
    found = re.findall(r"^curl -X POST http://localhost:3030/v1/(\w+) \\\n.*?-d '(.*?)'$", text, re.M | re.S)
    return {endpoint: json.loads(body) for endpoint, body in found}


def guide_workflow(template_id: int) -> dict:
    """Section 6: Purchase Follow-Up, Event Occurred `purchase`, Once per customer, an email step
    sending the published Purchase Thank You."""
    return {
        "name": "Purchase Follow-Up",
        "description": "Send a thank-you email after a purchase",
        "definition": {
            "trigger": {"type": "event", "event_name": "purchase"},
            "frequency": {"type": "once"},
            "steps": [{"id": "thank_you", "type": "email", "name": "Thank you", "template_id": template_id}],
            "edges": [{"from": "trigger", "to": "thank_you"}],
        },
    }


@pytest.fixture
def mailing_worker(celery_worker, smtp_server):  # noqa: F811
    """The session's live worker, restarted to send its email to this test's SMTP server (the live
    processes have no EMAIL_URL, so they mail the console); restored afterwards for the next tests."""
    saved = celery_worker.env
    celery_worker.stop()
    celery_worker.env = {
        **saved,
        "EMAIL_URL": f"smtp://{smtp_server.host}:{smtp_server.port}",
        "PLATFORM_URL": "http://platform.test",
    }
    celery_worker.start()
    try:
        celery_worker.wait_until(celery_worker.ready, WORKER_START_TIMEOUT, 'did not log "ready" with the SMTP server')
        yield celery_worker
    finally:
        celery_worker.stop()
        celery_worker.env = saved
        celery_worker.start()
        celery_worker.wait_until(celery_worker.ready, WORKER_START_TIMEOUT, 'did not log "ready" again')


def test_the_guides_purchase_follow_up_through_the_api_alone_sends_one_email(
    api_server,
    mailing_worker,
    smtp_server,  # noqa: F811
):
    project = ProjectFactory()
    _, key = api_key_create(project=project, name="Backend Server")
    template = published_template(project)
    api = requests.Session()
    api.headers["Authorization"] = f"Bearer {key}"
    bodies = guide_bodies()

    created = api.post(f"{api_server.url}/v1/workflows", json=guide_workflow(template.pk), timeout=10)
    assert created.status_code == 201, created.text
    assert created.json()["problems"] == []
    workflow_url = f"{api_server.url}/v1/workflows/{created.json()['id']}"
    activated = api.post(f"{workflow_url}/activate", timeout=10)
    assert activated.status_code == 200, activated.text
    assert (activated.json()["status"], activated.json()["active_version"]["number"]) == ("active", 1)

    for endpoint in ("identify", "track"):
        response = api.post(f"{api_server.url}/v1/{endpoint}", json=bodies[endpoint], timeout=10)
        assert response.status_code == 202, response.text
    mailing_worker.wait_processed(project.pk)

    mail = smtp_server.wait_for("jane@example.com", timeout=EMAIL_TIMEOUT)
    assert mail.message["Subject"] == "Thanks Jane Doe"
    (run,) = wait_for(
        lambda: [r for r in api.get(f"{workflow_url}/runs", timeout=10).json()["runs"] if r["status"] == "completed"],
        10,
        what="the run to be completed",
    )
    assert (run["customer_id"], run["steps"][0]["outcome"]) == ("user_001", "sent")

    # "any customer who triggers a purchase event for the first time": a second purchase sends none.
    response = api.post(f"{api_server.url}/v1/track", json=bodies["track"], timeout=10)
    assert response.status_code == 202, response.text
    mailing_worker.wait_processed(project.pk)
    wait_for(lambda: not Trigger.objects.filter(project=project).exists(), 15, what="the second purchase's trigger")
    deadline = time.monotonic() + QUIET_PERIOD
    while time.monotonic() < deadline:
        mailing_worker.assert_running()
        assert len(smtp_server.to("jane@example.com")) == 1
        time.sleep(0.2)
    assert Delivery.objects.filter(project=project).count() == 1
    assert len(api.get(f"{workflow_url}/runs", timeout=10).json()["runs"]) == 1
