"""GET /v1/workflows lists a page of workflows with each one's problems in a fixed number of queries."""

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from tests.cdp.api.conftest import ApiClient, _api_urls  # noqa: F401  (autouse: the API's URL root)
from tests.workflows.engine import published_template
from workflows import services

pytestmark = pytest.mark.django_db


def _draft(project, index: int, template_id: int) -> None:
    """A draft naming a published template, a missing one and a missing segment: three lookups."""
    definition = {
        "trigger": {"type": "segment_entered", "segment_id": 900_000 + index},
        "frequency": {"type": "once"},
        "steps": [
            {"id": "ok", "type": "email", "template_id": template_id},
            {"id": "gone", "type": "email", "template_id": 800_000 + index},
        ],
        "edges": [{"from": "trigger", "to": "ok"}, {"from": "ok", "to": "gone"}],
    }
    services.workflow_create(project=project, name=f"Flow {index:02d}", definition=definition, user=None)


def _listed(api) -> tuple[list[dict], int]:
    with CaptureQueriesContext(connection) as queries:
        response = api.get("/v1/workflows", {"limit": 50})
    assert response.status_code == 200, response.content
    return response.json()["workflows"], len(queries.captured_queries)


def test_listing_workflows_takes_the_same_queries_for_one_or_ten_with_each_ones_problems(db):
    api = ApiClient.for_new_project("test")
    template = published_template(api.project)
    _draft(api.project, 0, template.pk)
    _listed(api)  # the first request also reads the API key (then cached)
    one, queries_for_one = _listed(api)
    for index in range(1, 10):
        _draft(api.project, index, template.pk)
    ten, queries_for_ten = _listed(api)
    assert len(one) == 1 and len(ten) == 10
    assert queries_for_ten == queries_for_one
    for index, workflow in enumerate(ten):
        assert workflow["problems"] == [
            f"steps[1].template_id: no published email template {800_000 + index} in this project",
            f"definition: segment {900_000 + index} does not exist in this project",
        ]
