import json

import pytest

from tests.cdp.api.conftest import ApiClient, _api_urls  # noqa: F401  (autouse: the API's URL root)
from tests.cdp.api.test_openapi import live_api  # noqa: F401  (a real HTTP server of the API)


class SegmentsApiClient(ApiClient):
    """The CDP API test client, with PATCH."""

    def patch(self, path: str, body, *, content_type="application/json"):
        data = body if isinstance(body, (bytes, str)) else json.dumps(body)
        return self.client.patch(path, data=data, content_type=content_type)

    def identify(self, **call) -> None:
        """Ingest an identify call and apply it as the worker does."""
        response = self.post("/v1/identify", call)
        assert response.status_code == 202, response.content
        self.process()


@pytest.fixture
def api(db) -> SegmentsApiClient:
    return SegmentsApiClient.for_new_project("test")


@pytest.fixture
def other_api(db) -> SegmentsApiClient:
    return SegmentsApiClient.for_new_project("other")
