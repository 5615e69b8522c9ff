"""The guide's segment through the real processes: the API under gunicorn stores it `building`,
the Celery worker computes its members, and the API then answers it `ready` with them."""

import pytest
import requests

from organizations.api_keys import api_key_create
from tests.factories import ProjectFactory
from tests.live import wait_for

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

BUILD_TIMEOUT = 30  # seconds from the 201 until the worker has built the segment

PRO_USERS = {
    "name": "Pro Users",
    "description": "Customers on the pro plan",
    "condition": {"type": "trait", "name": "plan", "op": "equals", "value": "pro"},
}


def test_guide_segment_is_built_by_the_worker_and_lists_user_001(api_server, celery_worker):
    project = ProjectFactory()
    _, key = api_key_create(project=project, name="segments-live")
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {key}"
    identify = {"customer_id": "user_001", "traits": {"email": "jane@example.com", "name": "Jane Doe", "plan": "pro"}}
    assert session.post(f"{api_server.url}/v1/identify", json=identify, timeout=10).status_code == 202
    celery_worker.wait_processed(project.pk)

    created = session.post(f"{api_server.url}/v1/segments", json=PRO_USERS, timeout=10)
    assert created.status_code == 201, created.text
    segment = created.json()
    assert (segment["status"], segment["member_count"]) == ("building", 0)

    def ready() -> dict | None:
        body = session.get(f"{api_server.url}/v1/segments/{segment['id']}", timeout=10).json()
        celery_worker.assert_running()
        return body if body["status"] == "ready" else None

    built = wait_for(ready, BUILD_TIMEOUT, interval=0.2, what="the segment to be ready")
    assert built["member_count"] == 1 and built["last_computed_at"] is not None
    members = session.get(f"{api_server.url}/v1/segments/{segment['id']}/members", timeout=10).json()
    assert [member["customer_id"] for member in members["members"]] == ["user_001"]
    customers = session.get(f"{api_server.url}/v1/customers", params={"segment": segment["id"]}, timeout=10).json()
    assert [customer["customer_id"] for customer in customers["customers"]] == ["user_001"]
